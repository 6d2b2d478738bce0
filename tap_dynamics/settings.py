"""The tap's settings: declared once, validated up front.

``CONFIG_SCHEMA`` is the single declaration of every setting (the SDK prints it for ``--about``,
Meltano and the README mirror it). :func:`load_settings` turns the raw config dict into a typed
:class:`Settings` and rejects anything malformed with one line naming the setting and the fix,
before any network call is made.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import re
import typing as t
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from singer_sdk import typing as th

from tap_dynamics.connection import merge_connection_string
from tap_dynamics.errors import ConfigError

AUTH_SCHEMES = ("AzureServicePrincipal", "AzureAD", "AzureMSI", "NTLM", "ADFS")
# Schemes of on-premises servers (Windows or AD FS sign-in): the only ones that may use crm_version
# CRM2011+ and, with allow_http, a plain http:// org URL.
ON_PREMISES_AUTH_SCHEMES = ("NTLM", "ADFS")
INITIATE_OAUTH = ("GETANDREFRESH", "REFRESH", "OFF")
CERTIFICATE_TYPES = ("PEMKEY_FILE", "PFXFILE")
CRM_VERSIONS = ("CRMOnline", "CRM2011+")
ON_PREMISES_CRM_VERSIONS = ("CRM2011+", "CRM4.0")
DEFAULT_CALLBACK_URL = "http://localhost:33333"
DEFAULT_TOKEN_CACHE = "~/.tap-dynamics/token-cache.json"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
API_VERSIONS = ("9.0", "9.1", "9.2")
# On-premises Web API: CRM 2016 (8.0-8.2) to Dynamics 365 CE on-premises 9.x, which tops out at 9.1.
ON_PREMISES_API_VERSIONS = ("8.0", "8.1", "8.2", "9.0", "9.1")
DEFAULT_ON_PREMISES_API_VERSION = "9.1"
MAX_PAGE_SIZE = 5000
# Date-time bookmarks stay this far behind the server's clock: Dataverse stamps modifiedon when a
# write starts and allows a synchronous plug-in 2 minutes, so a row may become visible that late.
DEFAULT_COMMIT_MARGIN = 300
MAX_COMMIT_MARGIN = 86400

CONFIG_SCHEMA: dict[str, t.Any] = th.PropertiesList(
    th.Property(
        "url",
        th.StringType,
        title="Org URL",
        description=(
            "Root URL of the Dynamics 365 / Dataverse environment, exactly as the browser shows "
            "it, e.g. https://myorg.crm.dynamics.com (or give it as resource or in "
            "connection_string)"
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
            "client secret or certificate (application permissions + an application user in the "
            "environment). AzureAD: delegated, as a signed-in user (tap-dynamics login). "
            "AzureMSI: the Azure managed identity of the machine the tap runs on. "
            "NTLM: on-premises Dynamics CRM / CE with Windows (Active Directory) sign-in, as "
            "username and password. ADFS: an internet-facing (claims-based) on-premises "
            "deployment, as an AD FS server application (client_id + client_secret at "
            "authority_host)."
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
        description=(
            "Application (client) ID of the Entra ID app registration (a GUID); ADFS: the client "
            "identifier of the AD FS server application"
        ),
    ),
    th.Property(
        "client_secret",
        th.StringType,
        secret=True,
        title="Client secret",
        description=(
            "The client secret's Value (not its Secret ID) from Certificates & secrets; ADFS: the "
            "AD FS server application's secret"
        ),
    ),
    th.Property(
        "authority_host",
        th.StringType,
        default=DEFAULT_AUTHORITY_HOST,
        title="Authority host",
        description=(
            "Entra ID login host. Public cloud: https://login.microsoftonline.com; US Government "
            "(GCC High/DoD): https://login.microsoftonline.us; China: https://login.chinacloudapi.cn. "
            "auth_scheme ADFS: your AD FS server, e.g. https://adfs.contoso.com"
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
        title="Web API version",
        description=(
            "Web API version. Online: 9.0, 9.1 or 9.2 (default 9.2). On-premises: 8.0, 8.1, 8.2 "
            "(CRM 2016), 9.0 or 9.1 (default 9.1)"
        ),
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
        "replication",
        th.ObjectType(additional_properties=th.StringType),
        title="Replication per table",
        description=(
            "Replication method per table logical name (globs allowed): change_tracking, "
            "full_table, modifiedon, versionnumber, or another date-time column such as "
            "createdon, e.g. {\"audit\": \"createdon\", \"new_*\": \"full_table\"}. Default: change "
            "tracking where the table has it enabled, else modifiedon, else full table."
        ),
    ),
    th.Property(
        "lookback_seconds",
        th.IntegerType,
        default=0,
        title="Lookback seconds",
        description=(
            "Re-read this many seconds before the bookmark of date-time cursors, to catch rows "
            "committed late (duplicates are possible, losses are not)"
        ),
    ),
    th.Property(
        "commit_margin_seconds",
        th.IntegerType(minimum=0, maximum=MAX_COMMIT_MARGIN),
        default=DEFAULT_COMMIT_MARGIN,
        title="Commit margin seconds",
        description=(
            "Date-time cursors never move past the server's time at the start of a read minus "
            "this many seconds, so the next run re-reads that margin and gets rows committed "
            "late (a long transaction, a synchronous plug-in: up to 2 minutes in Dataverse). "
            "Rows already emitted unchanged are not emitted again. 0 turns it off"
        ),
    ),
    th.Property(
        "first_load_windows",
        th.IntegerType,
        default=4,
        title="First-load windows",
        description=(
            "On the first load of a big table with a date-time cursor, read this many "
            "time windows of it concurrently (1 disables)"
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
        "exclude_entities",
        th.ArrayType(th.StringType),
        title="Excluded tables",
        description=(
            "Logical names of tables to leave out, globs allowed (e.g. [\"msdyn_*\", "
            "\"adx_*\"]); applied after 'entities'"
        ),
    ),
    th.Property(
        "annotations",
        th.BooleanType,
        default=False,
        title="Labels and lookup tables",
        description=(
            "Also extract formatted values (choice labels, lookup display names, formatted "
            "money/dates) as <column>__formatted and lookup target tables as "
            "_<lookup>_value__lookuplogicalname columns"
        ),
    ),
    th.Property(
        "label_languages",
        th.ArrayType(th.IntegerType),
        title="Label languages",
        description=(
            "Language codes (LCIDs, e.g. [1033, 1031]) of the labels in option_set_labels. "
            "Default: every language installed in the org"
        ),
    ),
    th.Property(
        "metadata_cache_path",
        th.StringType,
        title="Metadata cache file",
        description=(
            "File where discovered table schemas are cached between runs, so scheduled syncs do "
            "not rediscover. Default: no cache"
        ),
    ),
    th.Property(
        "metadata_cache_ttl",
        th.IntegerType,
        default=86400,
        title="Metadata cache TTL",
        description=(
            "Seconds a cached table schema is reused before it is read again (the cache is also "
            "dropped when the org's table list changes)"
        ),
    ),
    th.Property(
        "connection_string",
        th.StringType,
        secret=True,
        title="Connection string",
        description=(
            "The documented Key=Value;… form, e.g. URL=https://myorg.crm.dynamics.com/;"
            "AuthScheme=AzureServicePrincipal;AzureTenant=…;OAuthClientId=…;OAuthClientSecret=…;"
            "CRMVersion=CRMOnline. Explicit settings win over it."
        ),
    ),
    th.Property(
        "resource",
        th.StringType,
        title="Resource",
        description="Another name for url (the org URL), as some platforms call it",
    ),
    th.Property(
        "crm_version",
        th.StringType,
        title="CRM version",
        description=(
            "CRMOnline: Dynamics 365 / Dataverse online (the default for the Azure schemes). "
            "CRM2011+: an on-premises server with the Web API (CRM 2016 or later; the default "
            "for auth_scheme NTLM and ADFS)"
        ),
    ),
    th.Property(
        "username",
        th.StringType,
        title="Username",
        description=(
            "NTLM only: the Windows (Active Directory) account the tap signs in as, "
            "DOMAIN\\user or user@domain"
        ),
    ),
    th.Property(
        "password",
        th.StringType,
        secret=True,
        title="Password",
        description="NTLM only: the password of username",
    ),
    th.Property(
        "allow_http",
        th.BooleanType,
        default=False,
        title="Allow http://",
        description=(
            "On-premises (auth_scheme NTLM or ADFS) only: accept a plain http:// org URL. Every row "
            "then crosses the network unencrypted; use it only on a network you trust. Never "
            "allowed with the Azure schemes"
        ),
    ),
    th.Property(
        "certificate_path",
        th.StringType,
        title="Certificate path",
        description=(
            "AzureServicePrincipal with a certificate: path to a PEM file (private key + "
            "certificate) or a PFX/PKCS#12 file whose certificate is uploaded to the app registration"
        ),
    ),
    th.Property(
        "certificate_password",
        th.StringType,
        secret=True,
        title="Certificate password",
        description="Password of the PFX file or of the encrypted PEM private key, if any",
    ),
    th.Property(
        "certificate_type",
        th.StringType,
        allowed_values=list(CERTIFICATE_TYPES),
        title="Certificate type",
        description="PEMKEY_FILE or PFXFILE; inferred from the file when omitted",
    ),
    th.Property(
        "initiate_oauth",
        th.StringType,
        default="GETANDREFRESH",
        allowed_values=list(INITIATE_OAUTH),
        title="Initiate OAuth",
        description=(
            "AzureAD only. GETANDREFRESH: sign in interactively when there is no usable token, "
            "then refresh silently. REFRESH: refresh only, never interactive. OFF: use "
            "access_token as is."
        ),
    ),
    th.Property(
        "callback_url",
        th.StringType,
        default=DEFAULT_CALLBACK_URL,
        title="Callback URL",
        description=(
            "AzureAD only: the redirect URI registered for the app; the tap listens on it "
            "during sign-in (default http://localhost:33333)"
        ),
    ),
    th.Property(
        "token_cache_path",
        th.StringType,
        title="Token cache path",
        description=(
            "AzureAD only: file where the signed-in user's tokens are kept (mode 0600), "
            "refreshed tokens included. Default: ~/.tap-dynamics/token-cache.json"
        ),
    ),
    th.Property(
        "refresh_token",
        th.StringType,
        secret=True,
        title="Refresh token",
        description="AzureAD only: a refresh token to start from (e.g. moving from another tap)",
    ),
    th.Property(
        "access_token",
        th.StringType,
        secret=True,
        title="Access token",
        description="AzureAD with initiate_oauth OFF: a bearer token for the org, used as is",
    ),
    th.Property(
        "managed_identity_client_id",
        th.StringType,
        title="Managed identity client ID",
        description="AzureMSI only: client ID of a user-assigned managed identity (default: system-assigned)",
    ),
    th.Property(
        "progress_interval",
        th.NumberType,
        default=10,
        title="Progress interval",
        description=(
            "Seconds between progress lines on stderr (rows, rate, percent and ETA per running "
            "table); 0 turns them off"
        ),
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
    replication: tuple[tuple[str, str], ...] = ()
    lookback_seconds: int = 0
    commit_margin_seconds: int = DEFAULT_COMMIT_MARGIN
    first_load_windows: int = 4

    exclude_entities: tuple[str, ...] = ()
    annotations: bool = False
    label_languages: tuple[int, ...] | None = None
    metadata_cache_path: str | None = None
    metadata_cache_ttl: int = 86400
    certificate_path: str | None = None
    certificate_password: str | None = field(default=None, repr=False)
    certificate_type: str | None = None
    initiate_oauth: str = "GETANDREFRESH"
    callback_url: str = DEFAULT_CALLBACK_URL
    token_cache_path: str = DEFAULT_TOKEN_CACHE
    refresh_token: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    crm_version: str = "CRMOnline"
    managed_identity_client_id: str | None = None
    progress_interval: float = 10.0
    # On-premises (crm_version CRM2011+): the organization in the URL path ("/contoso" for
    # https://crm.contoso.com/contoso; "" for IFD/one-org servers), and the Windows account.
    org_path: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    allow_http: bool = False

    def replication_for(self, logical_name: str) -> str | None:
        """The configured method for a table: an exact name wins over the first matching glob."""
        for pattern, method in self.replication:
            if pattern == logical_name:
                return method
        for pattern, method in self.replication:
            if fnmatch.fnmatchcase(logical_name, pattern):
                return method
        return None
    strict: bool = False

    @property
    def api_base(self) -> str:
        """The Web API root every request goes to."""
        return f"{self.url}{self.org_path}/api/data/v{self.api_version}"

    @property
    def on_premises(self) -> bool:
        """An on-premises server (crm_version CRM2011+): no Entra ID, no online-only features."""
        return self.crm_version == "CRM2011+"

    @property
    def scope(self) -> str:
        """The application scope for client-credential tokens."""
        return f"{self.url}/.default"

    @property
    def delegated_scope(self) -> str:
        """The delegated (user) scope: Dataverse's one delegated permission."""
        return f"{self.url}/user_impersonation"


def _require(config: t.Mapping[str, t.Any], name: str, fix: str) -> str:
    value = config.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        msg = f"setting '{name}' is missing — {fix}"
        raise ConfigError(msg)
    if not isinstance(value, str):
        msg = f"setting '{name}' must be a string"
        raise ConfigError(msg)
    return value.strip()


def _checked_url(name: str, value: str, schemes: tuple[str, ...], example: str) -> SplitResult:
    """``value`` split, if its scheme is one of ``schemes`` and it has a host and no query."""
    parts = urlsplit(value)
    if parts.scheme.lower() not in schemes:
        msg = f"setting '{name}' must be an https:// URL (got {value!r}) — e.g. {example}"
        raise ConfigError(msg)
    if not parts.hostname:
        msg = f"setting '{name}' has no host name (got {value!r}) — e.g. {example}"
        raise ConfigError(msg)
    if parts.query or parts.fragment:
        msg = f"setting '{name}' must not contain a query string or fragment (got {value!r})"
        raise ConfigError(msg)
    return parts


def _normalise_https_url(name: str, value: str) -> str:
    parts = _checked_url(name, value, ("https",), "https://myorg.crm.dynamics.com")
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


def _progress_interval(config: t.Mapping[str, t.Any]) -> float:
    value = config.get("progress_interval", 10)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not 0 <= seconds <= 86400:
        msg = f"setting 'progress_interval' must be a number of seconds from 0 to 86400 (0 = off), got {value!r}"
        raise ConfigError(msg)
    return seconds


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


def _replication(value: t.Any) -> tuple[tuple[str, str], ...]:
    """Parse the per-table replication map (a JSON string is accepted from env vars)."""
    if value in (None, "", {}):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
    ):
        msg = (
            "setting 'replication' must map table names to a method, e.g. "
            '{"account": "change_tracking", "audit": "createdon"}'
        )
        raise ConfigError(msg)
    return tuple((k.strip().lower(), v.strip().lower()) for k, v in value.items())


def load_settings(config: t.Mapping[str, t.Any]) -> Settings:
    """Validate ``config`` and return typed settings, or raise :class:`ConfigError`."""
    config = merge_connection_string(config)
    auth_scheme = str(config.get("auth_scheme") or "AzureServicePrincipal")
    # Connection strings from other tools spell it freely (AzureAd, azuread): match case-insensitively.
    auth_scheme = next((a for a in AUTH_SCHEMES if a.lower() == auth_scheme.strip().lower()), auth_scheme)
    if auth_scheme not in AUTH_SCHEMES:
        msg = f"setting 'auth_scheme' is {auth_scheme!r}; valid values: {', '.join(AUTH_SCHEMES)}"
        raise ConfigError(msg)
    crm_version = _crm_version(config, auth_scheme)
    url, org_path = _org_url(config, auth_scheme, crm_version)
    scheme = _scheme_settings(config, auth_scheme)
    tenant_id, client_id, client_secret = scheme.pop("tenant_id"), scheme.pop("client_id"), scheme.pop("client_secret")
    authority_host = _normalise_https_url(
        "authority_host", str(config.get("authority_host") or DEFAULT_AUTHORITY_HOST)
    )
    api_version = str(config.get("api_version") or "9.2").lstrip("v")
    if crm_version == "CRM2011+":
        api_version = _on_premises_api_version(config)
    elif api_version not in API_VERSIONS:
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
        replication=_replication(config.get("replication")),
        lookback_seconds=_int_setting(config, "lookback_seconds", 0, 0, 7 * 24 * 3600),
        commit_margin_seconds=_int_setting(
            config, "commit_margin_seconds", DEFAULT_COMMIT_MARGIN, 0, MAX_COMMIT_MARGIN
        ),
        first_load_windows=_int_setting(config, "first_load_windows", 4, 1, 32),
        **_schema_settings(config),
        crm_version=crm_version,
        org_path=org_path,
        allow_http=_bool_setting(config, "allow_http", False),
        **scheme,
        progress_interval=_progress_interval(config),
        strict=_bool_setting(config, "strict", False),
    )


def _name_list(config: t.Mapping[str, t.Any], name: str) -> tuple[str, ...]:
    value = config.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(e, str) and e.strip() for e in value):
        msg = f"setting '{name}' must be a list of table logical names (globs allowed)"
        raise ConfigError(msg)
    return tuple(e.strip().lower() for e in value)


def _bool_setting(config: t.Mapping[str, t.Any], name: str, default: bool) -> bool:
    value = config.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0"}:
        return value.strip().lower() in {"true", "1"}
    msg = f"setting '{name}' must be true or false (got {value!r})"
    raise ConfigError(msg)


def _languages(value: t.Any) -> tuple[int, ...] | None:
    if value in (None, "", []):
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        codes = tuple(int(str(p).strip()) for p in parts if not isinstance(p, bool))
    except (TypeError, ValueError):
        codes = ()
    if not isinstance(parts, list | tuple | str) or len(codes) != len(parts) or not all(0 < c < 100000 for c in codes):
        msg = f"setting 'label_languages' must be a list of language codes such as [1033, 1031] (got {value!r})"
        raise ConfigError(msg)
    return codes


def _schema_settings(config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The discovery/label settings (issue 4), validated the same way as the others."""
    cache = config.get("metadata_cache_path")
    if cache is not None and (not isinstance(cache, str) or not cache.strip()):
        msg = "setting 'metadata_cache_path' must be a file path, e.g. .meltano/tap-dynamics-metadata.json"
        raise ConfigError(msg)
    return {
        "exclude_entities": _name_list(config, "exclude_entities"),
        "annotations": _bool_setting(config, "annotations", False),
        "label_languages": _languages(config.get("label_languages")),
        "metadata_cache_path": os.path.expanduser(cache.strip()) if cache else None,
        "metadata_cache_ttl": _int_setting(config, "metadata_cache_ttl", 86400, 0, 365 * 86400),
    }


def _crm_version(config: t.Mapping[str, t.Any], auth_scheme: str) -> str:
    """CRMOnline or CRM2011+, defaulted from the auth scheme (NTLM exists only on-premises)."""
    on_premises_scheme = auth_scheme in ON_PREMISES_AUTH_SCHEMES
    raw = config.get("crm_version")
    value = str(raw).strip() if raw not in (None, "") else ("CRM2011+" if on_premises_scheme else "CRMOnline")
    if value.lower() == "crm4.0":
        msg = (
            "setting 'crm_version' is 'CRM4.0': the CRM 4.0 (2007) endpoint is not supported — "
            "tap-dynamics reads on-premises CRM 2016 and later (crm_version CRM2011+) and "
            "Dynamics 365 online (CRMOnline)"
        )
        raise ConfigError(msg)
    if value.lower() == "crm2011+":
        if not on_premises_scheme:
            msg = (
                f"setting 'crm_version' is 'CRM2011+' (on-premises) but auth_scheme is {auth_scheme}, "
                "which signs in to the Microsoft cloud — for an on-premises server set auth_scheme "
                "NTLM (username and password) or ADFS (an AD FS application); for Dynamics 365 "
                "online set crm_version CRMOnline"
            )
            raise ConfigError(msg)
        return "CRM2011+"
    if value.lower() == "crmonline":
        if on_premises_scheme:
            kind = "Windows (NTLM)" if auth_scheme == "NTLM" else "AD FS"
            msg = (
                f"setting 'auth_scheme' is {auth_scheme} but crm_version is CRMOnline: Dynamics 365 "
                f"online does not accept {kind} sign-in — use auth_scheme "
                "AzureServicePrincipal for an online org, or crm_version CRM2011+ for an "
                "on-premises server"
            )
            raise ConfigError(msg)
        return "CRMOnline"
    msg = f"setting 'crm_version' is {value!r}; valid values: {', '.join(CRM_VERSIONS)}"
    raise ConfigError(msg)


_EXAMPLE_ON_PREMISES_URL = "https://crm.contoso.com/contoso"


def _org_url(config: t.Mapping[str, t.Any], auth_scheme: str, crm_version: str) -> tuple[str, str]:
    """The org origin (scheme://host[:port]) and, on-premises, the organization path.

    Online, only https:// is accepted. On-premises, the organization may be in the path
    (``https://server/contoso``) and ``http://`` is accepted only with ``allow_http``: the
    NTLM handshake resists replay, but every row and the session would cross the network in
    clear text, so it must be a deliberate choice.
    """
    allow_http = _bool_setting(config, "allow_http", False)
    if allow_http and auth_scheme not in ON_PREMISES_AUTH_SCHEMES:
        msg = (
            f"setting 'allow_http' is true but auth_scheme is {auth_scheme}: access tokens for "
            "the Microsoft cloud must never travel unencrypted — remove allow_http (it is only "
            "for on-premises servers with auth_scheme NTLM or ADFS)"
        )
        raise ConfigError(msg)
    if crm_version != "CRM2011+":
        return _normalise_https_url(
            "url", _require(config, "url", "set it to your org URL, e.g. https://myorg.crm.dynamics.com")
        ), ""
    value = _require(config, "url", f"set it to the organization's URL, e.g. {_EXAMPLE_ON_PREMISES_URL}")
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_http:
        msg = (
            f"setting 'url' is a plain http:// URL ({value}): the sign-in and every row would "
            "cross the network unencrypted — use the server's https:// address, or, on a network "
            "you trust, set allow_http true to accept that risk"
        )
        raise ConfigError(msg)
    _checked_url("url", value, ("http", "https"), _EXAMPLE_ON_PREMISES_URL)
    segments = [s for s in parts.path.split("/") if s]
    lowered = [s.lower() for s in segments]
    if "organizationdata.svc" in lowered or "xrmservices" in lowered:
        msg = (
            "setting 'url' points to the CRM 2011-2015 OData v2 endpoint (OrganizationData.svc), "
            "which tap-dynamics does not read yet — give the organization's URL (e.g. "
            f"{_EXAMPLE_ON_PREMISES_URL}) of a CRM 2016 or later server, whose Web API it reads"
        )
        raise ConfigError(msg)
    if "api" in lowered or len(segments) > 1:
        msg = (
            f"setting 'url' must be the organization's URL without /api/data/… (got {value!r}) — "
            f"e.g. {_EXAMPLE_ON_PREMISES_URL} (organization in the path) or "
            "https://contoso.crm.contoso.com (IFD); set the version with api_version"
        )
        raise ConfigError(msg)
    org_path = f"/{segments[0]}" if segments else ""
    return f"{scheme}://{parts.netloc.lower()}", org_path


def _on_premises_api_version(config: t.Mapping[str, t.Any]) -> str:
    """The on-premises Web API version: 8.0-9.1, default 9.1 (on-premises has no 9.2)."""
    raw = config.get("api_version")
    if raw in (None, ""):
        return DEFAULT_ON_PREMISES_API_VERSION
    value = str(raw).strip().lstrip("vV")
    if value in ON_PREMISES_API_VERSIONS:
        return value
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None and 9.1 < number < 2011:
        msg = (
            f"setting 'api_version' is {value!r}: on-premises servers top out at Web API v9.1 — "
            "set api_version 9.1 (Dynamics 365 CE on-premises 9.x) or 8.2 (CRM 2016)"
        )
        raise ConfigError(msg)
    if number is not None and (number < 8.0 or number >= 2011):  # 2011/2013/2015 or 5.0-7.x
        msg = (
            f"setting 'api_version' is {value!r}: CRM 2011-2015 have no Web API, only the OData v2 "
            "endpoint (OrganizationData.svc), which tap-dynamics does not read yet — it reads CRM "
            "2016 (8.0) and later; use api_version 8.0-9.1"
        )
        raise ConfigError(msg)
    msg = f"setting 'api_version' is {value!r}; valid values on-premises: {', '.join(ON_PREMISES_API_VERSIONS)}"
    raise ConfigError(msg)


_WINDOWS_ACCOUNT_RE = re.compile(r"^[^\\@\s]+\\[^\\@\s]+$|^[^\\@\s]+@[^\\@\s]+\.[^\\@\s]+$")


def _adfs_application(config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """client_id/client_secret of the AD FS server application, and an AD FS authority_host."""
    from tap_dynamics.auth import MICROSOFT_AUTHORITY_HOSTS

    host = _normalise_https_url("authority_host", str(config.get("authority_host") or DEFAULT_AUTHORITY_HOST))
    if urlsplit(host).hostname in MICROSOFT_AUTHORITY_HOSTS:
        msg = (
            "setting 'authority_host' must be your AD FS server for auth_scheme ADFS (it is "
            f"{host}) — e.g. https://adfs.contoso.com"
        )
        raise ConfigError(msg)
    client_id = _require(
        config, "client_id", "set it to the client identifier of the AD FS server application "
        "(AD FS Management > Application Groups)"
    )
    secret = _optional(config, "client_secret")
    if not secret:
        msg = (
            "setting 'client_secret' is missing — set it to the secret AD FS generated for the "
            "server application (AD FS Management > Application Groups > the application)"
        )
        raise ConfigError(msg)
    return {"client_id": client_id, "client_secret": secret}


def _windows_account(config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """username and password for NTLM: one line for what is missing, never the password."""
    username = _require(
        config, "username", "set it to the Windows account the tap signs in as, e.g. CONTOSO\\svc-tap"
    )
    if not _WINDOWS_ACCOUNT_RE.match(username):
        msg = (
            f"setting 'username' is {username!r}: give the Windows account with its domain, as "
            "CONTOSO\\user or user@contoso.com"
        )
        raise ConfigError(msg)
    password = config.get("password")
    if password is None or (isinstance(password, str) and not password):
        msg = (
            "setting 'password' is missing — set it to the Windows password of username (e.g. "
            "from a secret store through TAP_DYNAMICS_PASSWORD)"
        )
        raise ConfigError(msg)
    if not isinstance(password, str):
        msg = "setting 'password' must be a string"
        raise ConfigError(msg)
    return {"username": username, "password": password}


def _optional(config: t.Mapping[str, t.Any], name: str) -> str | None:
    value = config.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        msg = f"setting '{name}' must be a string"
        raise ConfigError(msg)
    return value.strip()


def _client_id(config: t.Mapping[str, t.Any], name: str = "client_id") -> str:
    client_id = _require(config, name, "set it to the Application (client) ID of your app registration")
    if not _GUID_RE.match(client_id):
        msg = (
            f"setting '{name}' is not a GUID (got {client_id!r}) — use the Application "
            "(client) ID from the app registration's Overview page"
        )
        raise ConfigError(msg)
    return client_id


def _choice(config: t.Mapping[str, t.Any], name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = _optional(config, name)
    if value is None:
        return default
    for choice in choices:
        if value.upper() == choice.upper():
            return choice
    msg = f"setting '{name}' is {value!r}; valid values: {', '.join(choices)}"
    raise ConfigError(msg)


def _certificate(config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    path = _optional(config, "certificate_path")
    if path is None:
        return {}
    path = os.path.expanduser(path)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        msg = (
            f"setting 'certificate_path' points to {path!r}, which is not a readable file — give "
            "the path of the PEM (private key + certificate) or PFX file"
        )
        raise ConfigError(msg)
    kind = _choice(config, "certificate_type", CERTIFICATE_TYPES, None)
    if kind is None:  # infer: PEM files are text with BEGIN markers, PFX is DER binary
        with open(path, "rb") as handle:
            head = handle.read(4096)
        kind = "PEMKEY_FILE" if b"-----BEGIN" in head else "PFXFILE"
    return {
        "certificate_path": path,
        "certificate_type": kind,
        "certificate_password": config.get("certificate_password") or None,
    }


def _callback_url(config: t.Mapping[str, t.Any]) -> str:
    value = _optional(config, "callback_url") or DEFAULT_CALLBACK_URL
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        msg = (
            f"setting 'callback_url' must be a URL such as http://localhost:33333 (got {value!r}) "
            "— use the Redirect URI registered for the app"
        )
        raise ConfigError(msg)
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1"):
        msg = (
            f"setting 'callback_url' is {value!r}: the tap can only listen on http://localhost "
            "(Entra ID allows plain http only for localhost) — e.g. http://localhost:33333"
        )
        raise ConfigError(msg)
    return value.rstrip("/") if parts.path in ("", "/") else value


def _scheme_settings(config: t.Mapping[str, t.Any], auth_scheme: str) -> dict[str, t.Any]:
    """The settings each auth scheme needs, with one-line errors for what is missing."""
    out: dict[str, t.Any] = {"tenant_id": "", "client_id": "", "client_secret": ""}
    if auth_scheme == "AzureServicePrincipal":
        out["tenant_id"] = _tenant(_require(config, "tenant_id", "set it to the Directory (tenant) ID of the Azure AD tenant"))
        out["client_id"] = _client_id(config)
        out.update(_certificate(config))
        secret = _optional(config, "client_secret")
        if secret and out.get("certificate_path"):
            msg = (
                "settings 'client_secret' and 'certificate_path' are both set — a service "
                "principal signs in with one credential; remove one of them"
            )
            raise ConfigError(msg)
        if not secret and not out.get("certificate_path"):
            msg = (
                "setting 'client_secret' is missing — set it to the client secret's Value from "
                "Certificates & secrets, or set certificate_path to use a certificate"
            )
            raise ConfigError(msg)
        out["client_secret"] = secret or ""
    elif auth_scheme == "AzureAD":
        tenant = _require(config, "tenant_id", "set it to the Directory (tenant) ID of the Azure AD tenant")
        # A signed-in user may use 'organizations' (any work account); 'common'/'consumers'
        # would admit personal Microsoft accounts, which Dataverse never accepts.
        out["tenant_id"] = tenant if tenant.lower() == "organizations" else _tenant(tenant)
        out["client_id"] = _client_id(config)
        out.update(_certificate(config))
        out["client_secret"] = _optional(config, "client_secret") or ""
        mode = _choice(config, "initiate_oauth", INITIATE_OAUTH, "GETANDREFRESH")
        out["initiate_oauth"] = mode
        out["callback_url"] = _callback_url(config)
        out["token_cache_path"] = os.path.expanduser(_optional(config, "token_cache_path") or DEFAULT_TOKEN_CACHE)
        out["refresh_token"] = _optional(config, "refresh_token")
        out["access_token"] = _optional(config, "access_token")
        if mode == "OFF" and not out["access_token"]:
            msg = (
                "setting 'access_token' is missing — initiate_oauth OFF uses the given access "
                "token as is; set access_token, or use initiate_oauth GETANDREFRESH"
            )
            raise ConfigError(msg)
    elif auth_scheme == "NTLM":
        out.update(_windows_account(config))
    elif auth_scheme == "ADFS":
        out.update(_adfs_application(config))
    elif auth_scheme == "AzureMSI":
        identity = _optional(config, "managed_identity_client_id")
        if identity is not None:
            _client_id(config, "managed_identity_client_id")
        out["managed_identity_client_id"] = identity
        out["tenant_id"] = _optional(config, "tenant_id") or ""
        out["client_id"] = identity or ""
    return out
