"""The Dataverse setting group: which org, online or on-premises, and which Web API version.

Online (``crm_version`` CRMOnline) is an https org URL signed in to through Entra ID; on-premises
(CRM2011+) may carry the organization in the URL path, tops out at Web API v9.1, signs in with
Windows (NTLM or Kerberos) or AD FS, and may use plain http with ``allow_http``. On-premises, the endpoint is
the Web API (CRM 2016 and later) or the OData v2 endpoint ``OrganizationData.svc`` (CRM
2011-2015): ``api_version`` 2011 or an ``OrganizationData.svc`` URL ask for the latter, a Web API
version for the former, and without either the run probes the server (:attr:`DataverseSettings.endpoint`
is then ``auto``). Which combinations are allowed is declared in :data:`DATAVERSE_RULES`; the
URL's shape (which part is wrong, and what an OData v2 URL means) is checked in code.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

from singer_sdk import typing as th

from tap_dynamics.config.auth import ON_PREMISES_AUTH_SCHEMES
from tap_dynamics.config.common import MAX_PAGE_SIZE
from tap_dynamics.config.resource import Resource
from tap_dynamics.config.values import Explainer, checked_url, https_origin, refuse_userinfo
from tap_dynamics.errors import ConfigError

CRM_VERSIONS = ("CRMOnline", "CRM2011+")
API_VERSIONS = ("9.0", "9.1", "9.2")
DEFAULT_API_VERSION = "9.2"
# On-premises Web API: CRM 2016 (8.0-8.2) to Dynamics 365 CE on-premises 9.x, which tops out at 9.1.
# "2011": CRM 2011-2015's OData v2 endpoint (XRMServices/2011/OrganizationData.svc on all three).
ODATA_V2_VERSION = "2011"
ODATA_V2_PATH = "/XRMServices/2011/OrganizationData.svc"
ON_PREMISES_API_VERSIONS = ("8.0", "8.1", "8.2", "9.0", "9.1", ODATA_V2_VERSION)
DEFAULT_ON_PREMISES_API_VERSION = "9.1"
WEB_API, ODATA_V2, AUTO = "webapi", "odata2", "auto"
EXAMPLE_ON_PREMISES_URL = "https://crm.contoso.com/contoso"

DATAVERSE_PROPERTIES = th.PropertiesList(
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
        "api_version",
        th.StringType,
        title="Web API version",
        description=(
            "Web API version. Online: 9.0, 9.1 or 9.2 (default 9.2). On-premises: 8.0, 8.1, 8.2 "
            "(CRM 2016), 9.0 or 9.1, or 2011 for the OData v2 endpoint of CRM 2011-2015 "
            "(default: the Web API v9.1 when the server has one, else the OData v2 endpoint)"
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
        allowed_values=list(CRM_VERSIONS),
        title="CRM version",
        description=(
            "CRMOnline: Dynamics 365 / Dataverse online (the default for the Azure schemes). "
            "CRM2011+: an on-premises server, CRM 2011 or later (the Web API from CRM 2016 on, "
            "the OData v2 endpoint before; the default for auth_scheme NTLM, Kerberos and ADFS)"
        ),
    ),
    th.Property(
        "allow_http",
        th.BooleanType,
        default=False,
        title="Allow http://",
        description=(
            "On-premises (auth_scheme NTLM, Kerberos or ADFS) only: accept a plain http:// org URL. Every row "
            "then crosses the network unencrypted; use it only on a network you trust. Never "
            "allowed with the Azure schemes"
        ),
    ),
).to_dict()["properties"]


def _online_refuses(scheme: str, kind: str) -> dict[str, t.Any]:
    return {
        "not": {"const": scheme},
        "x-error": (
            f"setting 'auth_scheme' is {scheme} but crm_version is CRMOnline: Dynamics 365 online "
            f"does not accept {kind} sign-in — use auth_scheme AzureServicePrincipal for an "
            "online org, or crm_version CRM2011+ for an on-premises server"
        ),
    }


# Online or on-premises (crm_version, defaulted from auth_scheme before the check): the schemes
# and API versions each allows, and what url is when it is missing.
DATAVERSE_RULES: list[dict[str, t.Any]] = [
    {"properties": {"page_size": {"maximum": MAX_PAGE_SIZE}}},  # Dataverse pages hold at most 5000 rows
    {
        "if": {"properties": {"crm_version": {"const": "CRM2011+"}}, "required": ["crm_version"]},
        "then": {
            "properties": {
                "auth_scheme": {
                    "enum": list(ON_PREMISES_AUTH_SCHEMES),
                    "x-error": (
                        "setting 'crm_version' is 'CRM2011+' (on-premises) but auth_scheme is "
                        "{auth_scheme}, which signs in to the Microsoft cloud — for an on-premises "
                        "server set auth_scheme NTLM (username and password), Kerberos or ADFS (an "
                        "AD FS application); for Dynamics 365 online set crm_version CRMOnline"
                    ),
                },
                "api_version": {"enum": list(ON_PREMISES_API_VERSIONS)},
            },
            "required": ["url"],
            "x-missing": {"url": f"set it to the organization's URL, e.g. {EXAMPLE_ON_PREMISES_URL}"},
        },
        "else": {
            "properties": {
                "auth_scheme": {
                    "allOf": [
                        _online_refuses("NTLM", "Windows (NTLM)"),
                        _online_refuses("Kerberos", "Windows (Kerberos)"),
                        _online_refuses("ADFS", "AD FS"),
                    ]
                },
                "api_version": {"enum": list(API_VERSIONS)},
            },
            "required": ["url"],
            "x-missing": {"url": "set it to your org URL, e.g. https://myorg.crm.dynamics.com"},
        },
    },
    {
        # Plain http only where no Entra token travels: NTLM and Kerberos resist replay, AD FS tokens are
        # the deployment's own; access tokens for the Microsoft cloud must never go unencrypted.
        "if": {"properties": {"allow_http": {"const": True}}, "required": ["allow_http"]},
        "then": {
            "properties": {
                "auth_scheme": {
                    "enum": list(ON_PREMISES_AUTH_SCHEMES),
                    "x-error": (
                        "setting 'allow_http' is true but auth_scheme is {auth_scheme}: access "
                        "tokens for the Microsoft cloud must never travel unencrypted — remove "
                        "allow_http (it is only for on-premises servers with auth_scheme NTLM, Kerberos or ADFS)"
                    ),
                },
            },
        },
    },
]


def _explain_crm_version(value: t.Any, _config: t.Mapping[str, t.Any]) -> str | None:
    if str(value).lower() == "crm4.0":
        return (
            "setting 'crm_version' is 'CRM4.0': the CRM 4.0 (2007) endpoint is not supported — "
            "tap-dynamics reads on-premises CRM 2016 and later (crm_version CRM2011+) and "
            "Dynamics 365 online (CRMOnline)"
        )
    return None


def _explain_api_version(value: t.Any, config: t.Mapping[str, t.Any]) -> str | None:
    """On-premises, say why a version is out of reach (no 9.2 there; no Web API before 8.0)."""
    if config.get("crm_version") != "CRM2011+":
        return None
    try:
        number: float | None = float(value)
    except (TypeError, ValueError):
        number = None
    if number is not None and 9.1 < number < 2011:
        return (
            f"setting 'api_version' is {value!r}: on-premises servers top out at Web API v9.1 — "
            "set api_version 9.1 (Dynamics 365 CE on-premises 9.x) or 8.2 (CRM 2016)"
        )
    if number is not None and (number < 8.0 or number >= 2011):  # 2013/2015 or 5.0-7.x
        return (
            f"setting 'api_version' is {value!r}: CRM 2011-2015 have no Web API, only the OData v2 "
            "endpoint (XRMServices/2011/OrganizationData.svc, on all three) — set api_version 2011 "
            "to read it, or leave api_version out and the tap picks the endpoint the server has"
        )
    return f"setting 'api_version' is {value!r}; valid values on-premises: {', '.join(ON_PREMISES_API_VERSIONS)}"


DATAVERSE_EXPLAINERS: dict[str, Explainer] = {
    "crm_version": _explain_crm_version,
    "api_version": _explain_api_version,
}


def prepare_dataverse(config: dict[str, t.Any]) -> None:
    """Fill what the rules branch on: crm_version from auth_scheme, api_version as "9.2"."""
    if "crm_version" not in config:
        on_premises = config.get("auth_scheme") in ON_PREMISES_AUTH_SCHEMES
        config["crm_version"] = "CRM2011+" if on_premises else "CRMOnline"
    version = config.get("api_version")
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = str(version)  # "api_version": 9.2 in a JSON file means "9.2"
    if isinstance(version, str):
        config["api_version"] = version.lstrip("vV")


@dataclass(frozen=True)
class DataverseSettings:
    """Where the Dataverse Web API is: the org origin, the organization path and the version."""

    url: str  # scheme://host[:port], no trailing slash, no path
    api_version: str
    crm_version: str = "CRMOnline"
    # On-premises: the organization in the URL path ("/contoso" for https://crm.contoso.com/contoso;
    # "" for IFD/one-org servers).
    org_path: str = ""
    allow_http: bool = False
    # webapi, odata2 (OrganizationData.svc) or auto (on-premises without api_version: probe)
    endpoint: str = WEB_API
    # why the endpoint was chosen (the run logs it in one line)
    reason: str = ""

    @property
    def api_base(self) -> str:
        """The root every request goes to: the Web API's, or the OData v2 endpoint's."""
        if self.endpoint == ODATA_V2:
            return f"{self.url}{self.org_path}{ODATA_V2_PATH}"
        return self.web_api_base

    @property
    def web_api_base(self) -> str:
        """The Web API root of the configured (or default) version."""
        return f"{self.url}{self.org_path}/api/data/v{self.api_version}"

    @property
    def on_premises(self) -> bool:
        """An on-premises server (crm_version CRM2011+): no Entra ID, no online-only features."""
        return self.crm_version == "CRM2011+"

    @property
    def resource(self) -> Resource:
        """Tokens are for the org; a user's token carries Dataverse's one delegated permission."""
        return Resource(self.url, delegated_scopes=(f"{self.url}/user_impersonation",))


def load_dataverse(config: t.Mapping[str, t.Any]) -> DataverseSettings:
    """The Dataverse group from a schema-checked ``config``: the URL's shape is checked here."""
    crm_version = str(config["crm_version"])
    allow_http = bool(config.get("allow_http", False))
    if crm_version != "CRM2011+":
        return DataverseSettings(
            url=https_origin("url", config["url"]),
            api_version=str(config.get("api_version") or DEFAULT_API_VERSION),
        )
    url, org_path, names_v2 = _on_premises_url(str(config["url"]), allow_http)
    version = config.get("api_version")
    if names_v2 and version not in (None, ODATA_V2_VERSION):
        msg = (
            f"setting 'url' names the OData v2 endpoint (OrganizationData.svc) but api_version is "
            f"{version!r}, a Web API version — remove api_version (or set it to 2011), or give the "
            f"organization's URL (e.g. {EXAMPLE_ON_PREMISES_URL}) to read its Web API"
        )
        raise ConfigError(msg)
    if names_v2 or version == ODATA_V2_VERSION:
        endpoint = ODATA_V2
        reason = "url names it" if names_v2 else "api_version is 2011"
    else:
        endpoint = WEB_API if version else AUTO
        reason = f"api_version is {version}" if version else ""
    return DataverseSettings(
        url=url,
        api_version=str(version if version and version != ODATA_V2_VERSION else DEFAULT_ON_PREMISES_API_VERSION),
        crm_version=crm_version,
        org_path=org_path,
        allow_http=allow_http,
        endpoint=endpoint,
        reason=reason,
    )


def _on_premises_url(value: str, allow_http: bool) -> tuple[str, str, bool]:
    """The origin and the organization path of an on-premises org URL, and whether it names
    the OData v2 endpoint (``…/XRMServices/2011/OrganizationData.svc``).

    ``http://`` is accepted only with ``allow_http``: the NTLM handshake resists replay, but every
    row and the session would cross the network in clear text, so it must be a deliberate choice.
    """
    refuse_userinfo("url", value)  # before any message quotes the value
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_http:
        msg = (
            f"setting 'url' is a plain http:// URL ({value}): the sign-in and every row would "
            "cross the network unencrypted — use the server's https:// address, or, on a network "
            "you trust, set allow_http true to accept that risk"
        )
        raise ConfigError(msg)
    checked_url("url", value, ("http", "https"), EXAMPLE_ON_PREMISES_URL)
    segments = [s for s in parts.path.split("/") if s]
    lowered = [s.lower() for s in segments]
    names_v2 = False
    if "organizationdata.svc" in lowered or "xrmservices" in lowered:
        start = lowered.index("xrmservices") if "xrmservices" in lowered else -1
        if start > 1 or lowered[start:] != ["xrmservices", "2011", "organizationdata.svc"]:
            msg = (
                f"setting 'url' is not an OData v2 endpoint URL (got {value!r}) — give the organization's "
                f"URL (e.g. {EXAMPLE_ON_PREMISES_URL}), or its endpoint as "
                f"{EXAMPLE_ON_PREMISES_URL}{ODATA_V2_PATH}"
            )
            raise ConfigError(msg)
        segments, names_v2 = segments[:start], True
        lowered = lowered[:start]
    if "api" in lowered or len(segments) > 1:
        msg = (
            f"setting 'url' must be the organization's URL without /api/data/… (got {value!r}) — "
            f"e.g. {EXAMPLE_ON_PREMISES_URL} (organization in the path) or "
            "https://contoso.crm.contoso.com (IFD); set the version with api_version"
        )
        raise ConfigError(msg)
    org_path = f"/{segments[0]}" if segments else ""
    return f"{scheme}://{parts.netloc.lower()}", org_path, names_v2
