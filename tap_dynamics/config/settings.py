"""The tap's settings: the shared part (sign-in, HTTP, the run) plus each system's part.

``CONFIG_SCHEMA`` is the single declaration of every setting and of its value rules (the SDK
prints it for ``--about``; Meltano and the README mirror it). :func:`load_settings` merges the
connection string, lets JSON Schema judge the result, runs the few checks a schema cannot
express, and returns a typed :class:`Settings`, or raises one line naming the setting and the
fix, before any network call is made.

A new system (F&O with ``edition`` FinOpsOnline/FinOpsOnPremise, Graph with ``edition``
Office365 and ``azure_environment``, the CRM 2011-2015 OData v2 endpoint) adds one module beside
:mod:`tap_dynamics.config.dataverse`: its properties and rules join :data:`CONFIG_SCHEMA`, its
settings object joins :class:`Settings`, and its :class:`~tap_dynamics.config.auth.Resource`
tells the credential which audience to ask for.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import typing as t
from dataclasses import dataclass

from tap_dynamics.config.auth import (
    AUTH_EXPLAINERS,
    AUTH_MESSAGES,
    AUTH_PROPERTIES,
    AUTH_RULES,
    DEFAULT_AUTH_SCHEME,
    AuthSettings,
    load_auth,
)
from tap_dynamics.config.clouds import CLOUD_PROPERTIES, prepare_cloud
from tap_dynamics.config.common import (
    COMMON_MESSAGES,
    COMMON_PROPERTIES,
    HttpOptions,
    names,
    replication_setting,
    start_date_setting,
    verify_setting,
)
from tap_dynamics.config.connection import merge_connection_string
from tap_dynamics.config.dataverse import (
    DATAVERSE_EXPLAINERS,
    DATAVERSE_PROPERTIES,
    DATAVERSE_RULES,
    DataverseSettings,
    load_dataverse,
    prepare_dataverse,
)
from tap_dynamics.config.finops import FINOPS_PROPERTIES, FINOPS_RULES, load_finops
from tap_dynamics.config.finops import MAX_PAGE_SIZE as FINOPS_PAGE_SIZE
from tap_dynamics.config.graph import GRAPH_PROPERTIES, GRAPH_RULES, load_graph
from tap_dynamics.config.resource import Resource
from tap_dynamics.config.system import (
    DATAVERSE,
    EDITIONS,
    FINOPS,
    GRAPH,
    SYSTEM_PROPERTIES,
    for_editions,
    prepare_system,
    system_of,
)
from tap_dynamics.config.values import Explainer, check, normalise
from tap_dynamics.errors import ConfigError

# Rules are checked in this order after every setting's own type/range: the deployment (online
# or on-premises) first, then what the chosen auth_scheme needs — the order a person fixes them.
CONFIG_SCHEMA: dict[str, t.Any] = {
    "type": "object",
    "properties": {
        **SYSTEM_PROPERTIES, **DATAVERSE_PROPERTIES, **FINOPS_PROPERTIES, **AUTH_PROPERTIES, **COMMON_PROPERTIES,
        **CLOUD_PROPERTIES, **GRAPH_PROPERTIES,
    },
    "allOf": [
        for_editions(DATAVERSE, DATAVERSE_RULES),
        for_editions(FINOPS, FINOPS_RULES),
        *AUTH_RULES,
        for_editions(GRAPH, GRAPH_RULES),
    ],
}
_MESSAGES: dict[str, dict[str, str]] = {**AUTH_MESSAGES, **COMMON_MESSAGES}
_EXPLAINERS: dict[str, Explainer] = {**AUTH_EXPLAINERS, **DATAVERSE_EXPLAINERS}


class SystemSettings(t.Protocol):
    """What the transport and the credential need of any system's setting group."""

    @property
    def url(self) -> str:
        """The service origin, scheme://host[:port]: the one host tokens go to."""
        ...

    @property
    def api_base(self) -> str:
        """The root every API request goes to."""
        ...

    @property
    def resource(self) -> Resource:
        """The audience the run's tokens are for."""
        ...


# Each system's setting group, built from the schema-checked config (its rules already held).
_SYSTEM_LOADERS: dict[str, t.Callable[[t.Mapping[str, t.Any]], SystemSettings]] = {
    DATAVERSE: load_dataverse,
    FINOPS: load_finops,
    GRAPH: load_graph,
}
# A system whose pages may be larger than the schema's default page_size.
_DEFAULT_PAGE_SIZES: dict[str, int] = {FINOPS: FINOPS_PAGE_SIZE}


def _default(name: str) -> t.Any:
    return CONFIG_SCHEMA["properties"][name].get("default")


@dataclass(frozen=True)
class Settings:
    """Validated, normalised settings. Holds secrets (in ``auth``), so it never goes into logs."""

    auth: AuthSettings
    edition: str  # the documented Edition value, given or inferred from url
    service: SystemSettings  # the system's own group (DataverseSettings, …)
    verify: str | bool  # what requests/MSAL get as `verify=`
    request_timeout: int
    max_concurrency: int
    page_size: int
    start_date: dt.datetime | None
    entities: tuple[str, ...] | None
    exclude_entities: tuple[str, ...]
    replication: tuple[tuple[str, str], ...]
    lookback_seconds: int
    commit_margin_seconds: int
    first_load_windows: int
    annotations: bool
    label_languages: tuple[int, ...] | None
    metadata_cache_path: str | None
    metadata_cache_ttl: int
    progress_interval: float
    strict: bool

    def replication_for(self, logical_name: str) -> str | None:
        """The configured method for a table: an exact name wins over the first matching glob."""
        for pattern, method in self.replication:
            if pattern == logical_name:
                return method
        for pattern, method in self.replication:
            if fnmatch.fnmatchcase(logical_name, pattern):
                return method
        return None

    @property
    def auth_scheme(self) -> str:
        """The sign-in scheme (``auth`` is that scheme's settings object)."""
        return self.auth.scheme

    @property
    def http(self) -> HttpOptions:
        """Trust anchor and timeout, for every HTTP client the run builds."""
        return HttpOptions(self.verify, self.request_timeout)

    @property
    def transport(self) -> dict[str, t.Any]:
        """The keywords every system's transport takes from the settings (origin lock, timeout,
        trust anchor, in-flight cap)."""
        return {
            "origin": self.url,
            "timeout": self.request_timeout,
            "verify": self.verify,
            "max_concurrency": self.max_concurrency,
        }

    @property
    def system(self) -> str:
        """Which system the run reads (``dataverse``, …): see :mod:`tap_dynamics.config.system`."""
        return EDITIONS[self.edition]

    @property
    def dataverse(self) -> DataverseSettings:
        """The Dataverse group; only a Dataverse run has one."""
        if not isinstance(self.service, DataverseSettings):
            msg = f"a {self.system} run has no Dataverse settings"
            raise TypeError(msg)
        return self.service

    # The system's part, as the transport and the credential read it.
    @property
    def resource(self) -> Resource:
        """The audience the run's tokens are for."""
        return self.service.resource

    @property
    def url(self) -> str:
        """The service origin, scheme://host[:port]: the one host tokens and credentials go to."""
        return self.service.url

    @property
    def api_base(self) -> str:
        """The API root every request goes to."""
        return self.service.api_base

    @property
    def on_premises(self) -> bool:
        """An on-premises server: no Entra ID, no online-only features."""
        return self.dataverse.on_premises

    @property
    def api_version(self) -> str:
        """The Web API version (9.2 online by default, 9.1 on-premises)."""
        return self.dataverse.api_version

    @property
    def crm_version(self) -> str:
        """CRMOnline or CRM2011+ (on-premises)."""
        return self.dataverse.crm_version

    @property
    def org_path(self) -> str:
        """On-premises: the organization in the URL path ("/contoso"), else ""."""
        return self.dataverse.org_path

    @property
    def allow_http(self) -> bool:
        """Whether plain http:// was allowed (on-premises only)."""
        return self.dataverse.allow_http

    @property
    def scope(self) -> str:
        """The application scope of the run's client-credential tokens."""
        return self.resource.app_scopes[0]


def validate_config(config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """``config`` merged with its connection string, normalised and checked against the schema.

    Returns the normalised config; raises :class:`~tap_dynamics.errors.ConfigError` (one line).
    The SDK's own check of the raw config is replaced by this one (see ``TapDynamics``), because
    the raw config may hold half its values in ``connection_string``.
    """
    merged = normalise(merge_connection_string(config), CONFIG_SCHEMA)
    merged.setdefault("auth_scheme", DEFAULT_AUTH_SCHEME)
    prepare_system(merged)  # before the rules: they branch on edition
    edition = merged["edition"]
    system = EDITIONS.get(edition) if isinstance(edition, str) else None  # a bad value: the schema says so
    if system == DATAVERSE:
        prepare_dataverse(merged)
    prepare_cloud(merged, graph=system == GRAPH)  # the cloud's login (and Graph) host
    check(merged, CONFIG_SCHEMA, _MESSAGES, _EXPLAINERS)
    return merged


def load_settings(config: t.Mapping[str, t.Any]) -> Settings:
    """Validate ``config`` and return typed settings, or raise :class:`ConfigError`."""
    checked = validate_config(config)
    system = system_of(checked)
    loader = _SYSTEM_LOADERS.get(system)
    if loader is None:
        msg = f"setting 'edition' is {checked['edition']}: this version of tap-dynamics does not read it yet"
        raise ConfigError(msg)
    service = loader(checked)  # the deployment first: its errors come first
    auth = load_auth(checked)

    def get(name: str) -> t.Any:
        return checked.get(name, _default(name))

    cache = checked.get("metadata_cache_path")
    return Settings(
        auth=auth,
        edition=str(checked["edition"]),
        service=service,
        verify=verify_setting(checked),
        request_timeout=int(get("request_timeout")),
        max_concurrency=int(get("max_concurrency")),
        page_size=int(checked.get("page_size", _DEFAULT_PAGE_SIZES.get(system, _default("page_size")))),
        start_date=start_date_setting(checked.get("start_date")),
        entities=names(checked["entities"]) if "entities" in checked else None,
        exclude_entities=names(checked.get("exclude_entities")),
        replication=replication_setting(checked.get("replication")),
        lookback_seconds=int(get("lookback_seconds")),
        commit_margin_seconds=int(get("commit_margin_seconds")),
        first_load_windows=int(get("first_load_windows")),
        annotations=bool(get("annotations")),
        label_languages=tuple(checked["label_languages"]) if "label_languages" in checked else None,
        metadata_cache_path=os.path.expanduser(cache) if cache else None,
        metadata_cache_ttl=int(get("metadata_cache_ttl")),
        progress_interval=float(get("progress_interval")),
        strict=bool(get("strict")),
    )
