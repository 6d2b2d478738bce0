"""The tap's settings: declared once, validated up front.

``CONFIG_SCHEMA`` is the single declaration of every setting (the SDK prints it for ``--about``,
Meltano and the README mirror it). :func:`load_settings` turns the raw config dict into a typed
:class:`Settings` and rejects anything malformed with one line naming the setting and the fix,
before any network call is made.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import typing as t
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from singer_sdk import typing as th

from tap_dynamics.errors import ConfigError

AUTH_SCHEMES = ("AzureServicePrincipal",)
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
API_VERSIONS = ("9.0", "9.1", "9.2")
MAX_PAGE_SIZE = 5000

CONFIG_SCHEMA: dict[str, t.Any] = th.PropertiesList(
    th.Property(
        "url",
        th.StringType,
        required=True,
        title="Org URL",
        description=(
            "Root URL of the Dynamics 365 / Dataverse environment, exactly as the browser shows "
            "it, e.g. https://myorg.crm.dynamics.com"
        ),
    ),
    th.Property(
        "auth_scheme",
        th.StringType,
        default="AzureServicePrincipal",
        allowed_values=list(AUTH_SCHEMES),
        title="Auth scheme",
        description=(
            "How to authenticate. AzureServicePrincipal: an Entra ID app registration with a "
            "client secret (application permissions + an application user in the environment)."
        ),
    ),
    th.Property(
        "tenant_id",
        th.StringType,
        title="Azure tenant",
        description="Directory (tenant) ID, a GUID, or the tenant's domain (contoso.onmicrosoft.com)",
    ),
    th.Property(
        "client_id",
        th.StringType,
        title="Client ID",
        description="Application (client) ID of the Entra ID app registration (a GUID)",
    ),
    th.Property(
        "client_secret",
        th.StringType,
        secret=True,
        title="Client secret",
        description="The client secret's Value (not its Secret ID) from Certificates & secrets",
    ),
    th.Property(
        "authority_host",
        th.StringType,
        default=DEFAULT_AUTHORITY_HOST,
        title="Authority host",
        description=(
            "Entra ID login host. Public cloud: https://login.microsoftonline.com; US Government "
            "(GCC High/DoD): https://login.microsoftonline.us; China: https://login.chinacloudapi.cn"
        ),
    ),
    th.Property(
        "ca_bundle",
        th.StringType,
        title="CA bundle",
        description=(
            "Path to a PEM file of trusted CA certificates (e.g. a corporate TLS-inspecting "
            "proxy). Default: REQUESTS_CA_BUNDLE if set, else the system/certifi bundle."
        ),
    ),
    th.Property(
        "api_version",
        th.StringType,
        default="9.2",
        allowed_values=list(API_VERSIONS),
        title="Web API version",
        description="Dataverse Web API version (9.0, 9.1 or 9.2)",
    ),
    th.Property(
        "start_date",
        th.DateTimeType,
        title="Start date",
        description=(
            "Earliest modifiedon to extract on the first run of an incremental table "
            "(ISO-8601). Default: everything."
        ),
    ),
    th.Property(
        "entities",
        th.ArrayType(th.StringType),
        title="Tables",
        description=(
            "Logical names of the tables to discover, globs allowed (e.g. [\"account\", "
            "\"new_*\"]). Default: every readable table. Private, virtual, elastic and "
            "intersect tables are only included when named exactly."
        ),
    ),
    th.Property(
        "page_size",
        th.IntegerType,
        default=MAX_PAGE_SIZE,
        title="Page size",
        description="Rows per page requested with Prefer: odata.maxpagesize (1-5000)",
    ),
    th.Property(
        "max_concurrency",
        th.IntegerType,
        default=8,
        title="Max concurrency",
        description=(
            "Most HTTP requests in flight at once, across everything the tap does (Dataverse "
            "allows 52 per user; keep well under it)"
        ),
    ),
    th.Property(
        "request_timeout",
        th.IntegerType,
        default=300,
        title="Request timeout",
        description="Seconds to wait for one HTTP response before retrying it",
    ),
    th.Property(
        "strict",
        th.BooleanType,
        default=False,
        title="Strict",
        description=(
            "Stop the run at the first table that fails (403, provider error, retries "
            "exhausted) instead of skipping it with a warning and listing it in the run summary"
        ),
    ),
).to_dict()

_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


@dataclass(frozen=True)
class Settings:
    """Validated, normalised settings. Holds the secret, so it never goes into logs."""

    url: str  # scheme://host[:port], no trailing slash, no path
    auth_scheme: str
    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    authority_host: str
    verify: str | bool  # what requests/MSAL get as `verify=`
    api_version: str
    start_date: dt.datetime | None
    entities: tuple[str, ...] | None
    page_size: int
    request_timeout: int
    max_concurrency: int = 8
    strict: bool = False

    @property
    def api_base(self) -> str:
        """The Web API root every request goes to."""
        return f"{self.url}/api/data/v{self.api_version}"

    @property
    def scope(self) -> str:
        """The application scope for client-credential tokens."""
        return f"{self.url}/.default"


def _require(config: t.Mapping[str, t.Any], name: str, fix: str) -> str:
    value = config.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        msg = f"setting '{name}' is missing — {fix}"
        raise ConfigError(msg)
    if not isinstance(value, str):
        msg = f"setting '{name}' must be a string"
        raise ConfigError(msg)
    return value.strip()


def _normalise_https_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme.lower() != "https":
        msg = (
            f"setting '{name}' must be an https:// URL (got {value!r}) — e.g. "
            "https://myorg.crm.dynamics.com"
        )
        raise ConfigError(msg)
    if not parts.hostname:
        msg = f"setting '{name}' has no host name (got {value!r}) — e.g. https://myorg.crm.dynamics.com"
        raise ConfigError(msg)
    if parts.query or parts.fragment:
        msg = f"setting '{name}' must not contain a query string or fragment (got {value!r})"
        raise ConfigError(msg)
    return f"https://{parts.netloc.lower()}"


def _tenant(value: str) -> str:
    if value.lower() in {"common", "organizations", "consumers"}:
        msg = (
            f"setting 'tenant_id' is {value!r}; the tap needs your own tenant — use the "
            "Directory (tenant) ID GUID from Azure portal > Microsoft Entra ID > Overview"
        )
        raise ConfigError(msg)
    if _GUID_RE.match(value) or _DOMAIN_RE.match(value):
        return value
    msg = (
        f"setting 'tenant_id' is not a GUID or domain (got {value!r}) — use the Directory "
        "(tenant) ID from Azure portal > Microsoft Entra ID > Overview"
    )
    raise ConfigError(msg)


def _verify(config: t.Mapping[str, t.Any]) -> str | bool:
    """Pick the CA bundle. The setting wins over REQUESTS_CA_BUNDLE; both must be readable."""
    bundle = config.get("ca_bundle") or os.environ.get("REQUESTS_CA_BUNDLE")
    if not bundle:
        return True
    source = "setting 'ca_bundle'" if config.get("ca_bundle") else "REQUESTS_CA_BUNDLE"
    path = os.path.expanduser(str(bundle))
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        msg = f"{source} points to {bundle!r}, which is not a readable file — fix the path to a PEM CA bundle"
        raise ConfigError(msg)
    return path


def _start_date(value: t.Any) -> dt.datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        msg = f"setting 'start_date' is not an ISO-8601 date-time (got {value!r}) — e.g. 2024-01-01T00:00:00Z"
        raise ConfigError(msg) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def _int_setting(config: t.Mapping[str, t.Any], name: str, default: int, lo: int, hi: int) -> int:
    value = config.get(name, default)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        number = None
    if number is None or isinstance(value, bool) or str(number) != str(value).strip():
        msg = f"setting '{name}' must be a whole number from {lo} to {hi} (got {value!r})"
        raise ConfigError(msg)
    if not lo <= number <= hi:
        msg = f"setting '{name}' must be from {lo} to {hi} (got {number})"
        raise ConfigError(msg)
    return number


def _bool_setting(config: t.Mapping[str, t.Any], name: str, default: bool) -> bool:
    value = config.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    msg = f"setting '{name}' must be true or false (got {value!r})"
    raise ConfigError(msg)


def load_settings(config: t.Mapping[str, t.Any]) -> Settings:
    """Validate ``config`` and return typed settings, or raise :class:`ConfigError`."""
    url = _normalise_https_url("url", _require(config, "url", "set it to your org URL, e.g. https://myorg.crm.dynamics.com"))
    auth_scheme = str(config.get("auth_scheme") or "AzureServicePrincipal")
    if auth_scheme not in AUTH_SCHEMES:
        msg = f"setting 'auth_scheme' is {auth_scheme!r}; valid values: {', '.join(AUTH_SCHEMES)}"
        raise ConfigError(msg)
    tenant_id = _tenant(_require(config, "tenant_id", "set it to the Directory (tenant) ID of the Azure AD tenant"))
    client_id = _require(config, "client_id", "set it to the Application (client) ID of your app registration")
    if not _GUID_RE.match(client_id):
        msg = (
            f"setting 'client_id' is not a GUID (got {client_id!r}) — use the Application "
            "(client) ID from the app registration's Overview page"
        )
        raise ConfigError(msg)
    client_secret = _require(config, "client_secret", "set it to the client secret's Value from Certificates & secrets")
    authority_host = _normalise_https_url(
        "authority_host", str(config.get("authority_host") or DEFAULT_AUTHORITY_HOST)
    )
    api_version = str(config.get("api_version") or "9.2").lstrip("v")
    if api_version not in API_VERSIONS:
        msg = f"setting 'api_version' is {api_version!r}; valid values: {', '.join(API_VERSIONS)}"
        raise ConfigError(msg)
    entities = config.get("entities")
    if entities is not None:
        if isinstance(entities, str):
            entities = [part.strip() for part in entities.split(",") if part.strip()]
        if not isinstance(entities, list) or not all(isinstance(e, str) and e for e in entities):
            msg = "setting 'entities' must be a list of table logical names (globs allowed)"
            raise ConfigError(msg)
    return Settings(
        url=url,
        auth_scheme=auth_scheme,
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=client_secret,
        authority_host=authority_host,
        verify=_verify(config),
        api_version=api_version,
        start_date=_start_date(config.get("start_date")),
        entities=tuple(e.strip().lower() for e in entities) if entities else None,
        page_size=_int_setting(config, "page_size", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE),
        request_timeout=_int_setting(config, "request_timeout", 300, 1, 3600),
        max_concurrency=_int_setting(config, "max_concurrency", 8, 1, 32),
        strict=_bool_setting(config, "strict", False),
    )
