"""The sign-in settings, shared by every Microsoft system the tap reads.

Declared once: :data:`AUTH_PROPERTIES` (types, enums, secrets) and :data:`AUTH_RULES`, the
discriminated union on ``auth_scheme`` that says which settings each scheme needs (JSON Schema
``if``/``then``, with the fix for each missing setting next to the rule). :func:`load_auth` then
does what a schema cannot (an https authority host that, for AD FS, is not Microsoft's; a
certificate file that is readable; a callback URL the tap can listen on) and returns the one
settings object of the chosen scheme: a service principal never carries a token cache path,
a Windows account never a tenant.
"""

from __future__ import annotations

import os
import typing as t
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from singer_sdk import typing as th

from tap_dynamics.config.resource import MICROSOFT_AUTHORITY_HOSTS
from tap_dynamics.config.values import GUID_PATTERN, Explainer, https_origin, refuse_userinfo
from tap_dynamics.config.windows import (
    WINDOWS_EXPLAINERS,
    WINDOWS_MESSAGES,
    WINDOWS_PROPERTIES,
    WINDOWS_RULES,
    KerberosAuth,
    WindowsAuth,
    load_windows,
)
from tap_dynamics.errors import ConfigError

AUTH_SCHEMES = ("AzureServicePrincipal", "AzureAD", "AzureMSI", "NTLM", "Kerberos", "ADFS")
DEFAULT_AUTH_SCHEME = "AzureServicePrincipal"
# Schemes of on-premises servers: Windows (Active Directory) or AD FS sign-in.
WINDOWS_SCHEMES = ("NTLM", "Kerberos")
ON_PREMISES_AUTH_SCHEMES = (*WINDOWS_SCHEMES, "ADFS")
INITIATE_OAUTH = ("GETANDREFRESH", "REFRESH", "OFF")
CERTIFICATE_TYPES = ("PEMKEY_FILE", "PFXFILE")
DEFAULT_CALLBACK_URL = "http://localhost:33333"
DEFAULT_TOKEN_CACHE = "~/.tap-dynamics/token-cache.json"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"

_DOMAIN = r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
TENANT_PATTERN = rf"^({GUID_PATTERN[1:-1]}|{_DOMAIN})$"
# A signed-in user may use 'organizations' (any work account); 'common'/'consumers' would admit
# personal Microsoft accounts, which Dataverse never accepts.
USER_TENANT_PATTERN = rf"^({GUID_PATTERN[1:-1]}|{_DOMAIN}|(?i:organizations))$"

_APP_PROPERTIES = th.PropertiesList(
    th.Property(
        "auth_scheme",
        th.StringType,
        default=DEFAULT_AUTH_SCHEME,
        allowed_values=list(AUTH_SCHEMES),
        title="Auth scheme",
        description=(
            "How to authenticate. AzureServicePrincipal: an Entra ID app registration with a "
            "client secret or certificate (application permissions + an application user in the "
            "environment). AzureAD: delegated, as a signed-in user (tap-dynamics login). "
            "AzureMSI: the Azure managed identity of the machine the tap runs on. "
            "NTLM: on-premises Dynamics CRM / CE with Windows (Active Directory) sign-in, as "
            "username and password. Kerberos: the same servers with Kerberos (SPNEGO Negotiate) "
            "sign-in, with a password, a keytab or an existing ticket cache. ADFS: an internet-facing (claims-based) on-premises "
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
).to_dict()["properties"]

_CLIENT_PROPERTIES = th.PropertiesList(
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
).to_dict()["properties"]
AUTH_PROPERTIES: dict[str, t.Any] = {**_APP_PROPERTIES, **WINDOWS_PROPERTIES, **_CLIENT_PROPERTIES}


def _entra_app(tenant_pattern: str, **more: t.Any) -> dict[str, t.Any]:
    """What an Entra ID app registration needs: a tenant and the app's GUID."""
    return {
        "required": ["tenant_id", "client_id"],
        "x-missing": {
            "tenant_id": "set it to the Directory (tenant) ID of the Azure AD tenant",
            "client_id": "set it to the Application (client) ID of your app registration",
        },
        "properties": {
            "tenant_id": {"pattern": tenant_pattern},
            "client_id": {"pattern": GUID_PATTERN},
        },
        **more,
    }


def _when(scheme: str, then: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"if": {"properties": {"auth_scheme": {"const": scheme}}, "required": ["auth_scheme"]}, "then": then}


# The discriminated union on auth_scheme: what each scheme needs, and the fix when it is missing.
AUTH_RULES: list[dict[str, t.Any]] = [
    _when(
        "AzureServicePrincipal",
        _entra_app(
            TENANT_PATTERN,
            allOf=[
                {
                    "anyOf": [{"required": ["client_secret"]}, {"required": ["certificate_path"]}],
                    "x-error": (
                        "setting 'client_secret' is missing — set it to the client secret's Value "
                        "from Certificates & secrets, or set certificate_path to use a certificate"
                    ),
                },
                {
                    "not": {"required": ["client_secret", "certificate_path"]},
                    "x-error": (
                        "settings 'client_secret' and 'certificate_path' are both set — a service "
                        "principal signs in with one credential; remove one of them"
                    ),
                },
            ],
        ),
    ),
    _when(
        "AzureAD",
        _entra_app(
            USER_TENANT_PATTERN,
            # initiate_oauth OFF: the given access token is used as is, so it must be given.
            allOf=[
                {
                    "if": {"properties": {"initiate_oauth": {"const": "OFF"}}, "required": ["initiate_oauth"]},
                    "then": {
                        "required": ["access_token"],
                        "x-missing": {
                            "access_token": (
                                "initiate_oauth OFF uses the given access token as is; set "
                                "access_token, or use initiate_oauth GETANDREFRESH"
                            ),
                        },
                    },
                },
            ],
        ),
    ),
    _when("AzureMSI", {"properties": {"managed_identity_client_id": {"pattern": GUID_PATTERN}}}),
    _when(
        "ADFS",
        {
            "required": ["client_id", "client_secret"],
            "x-missing": {
                "client_id": (
                    "set it to the client identifier of the AD FS server application "
                    "(AD FS Management > Application Groups)"
                ),
                "client_secret": (
                    "set it to the secret AD FS generated for the server application "
                    "(AD FS Management > Application Groups > the application)"
                ),
            },
        },
    ),
    *WINDOWS_RULES,
]

_APP_ID_MESSAGE = (
    "setting '{name}' is not a GUID (got {value!r}) — use the Application (client) ID from the "
    "app registration's Overview page"
)
AUTH_MESSAGES: dict[str, dict[str, str]] = {
    **WINDOWS_MESSAGES,
    "client_id": {"pattern": _APP_ID_MESSAGE},
    "managed_identity_client_id": {"pattern": _APP_ID_MESSAGE},
    "tenant_id": {
        "pattern": (
            "setting 'tenant_id' is not a GUID or domain (got {value!r}) — use the Directory "
            "(tenant) ID from Azure portal > Microsoft Entra ID > Overview"
        ),
    },
}


def _explain_tenant(value: t.Any, _config: t.Mapping[str, t.Any]) -> str | None:
    if isinstance(value, str) and value.lower() in ("common", "organizations", "consumers"):
        return (
            f"setting 'tenant_id' is {value!r}; the tap needs your own tenant — use the "
            "Directory (tenant) ID GUID from Azure portal > Microsoft Entra ID > Overview"
        )
    return None


AUTH_EXPLAINERS: dict[str, Explainer] = {"tenant_id": _explain_tenant, **WINDOWS_EXPLAINERS}


@dataclass(frozen=True)
class Certificate:
    """A certificate credential: a PEM (key + certificate) or PFX file, checked readable."""

    path: str
    kind: str  # PEMKEY_FILE or PFXFILE
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class EntraAppAuth:
    """An Entra ID app registration: where to sign in, and the app's own credential if any."""

    authority_host: str
    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)  # "" with a certificate, or for a public client
    certificate: Certificate | None = None


@dataclass(frozen=True, kw_only=True)
class ServicePrincipalAuth(EntraAppAuth):
    """AzureServicePrincipal: an app registration's client credentials."""

    scheme: t.ClassVar[str] = "AzureServicePrincipal"


@dataclass(frozen=True, kw_only=True)
class DelegatedAuth(EntraAppAuth):
    """AzureAD: a signed-in user, whose tokens live in a token cache file."""

    scheme: t.ClassVar[str] = "AzureAD"
    initiate_oauth: str
    callback_url: str
    token_cache_path: str
    refresh_token: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ManagedIdentityAuth:
    """AzureMSI: the Azure host's managed identity (system-assigned unless a client ID is set)."""

    scheme: t.ClassVar[str] = "AzureMSI"
    client_id: str | None = None


@dataclass(frozen=True)
class AdfsAuth:
    """ADFS: an AD FS server application's client credentials (internet-facing deployments)."""

    scheme: t.ClassVar[str] = "ADFS"
    authority_host: str
    client_id: str
    client_secret: str = field(repr=False)


AuthSettings = ServicePrincipalAuth | DelegatedAuth | ManagedIdentityAuth | WindowsAuth | KerberosAuth | AdfsAuth


def load_auth(config: t.Mapping[str, t.Any]) -> AuthSettings:
    """The chosen scheme's settings from a schema-checked ``config``: the checks left to code."""
    scheme = str(config.get("auth_scheme") or DEFAULT_AUTH_SCHEME)
    authority_host = https_origin("authority_host", str(config.get("authority_host") or DEFAULT_AUTHORITY_HOST))
    if scheme in ("AzureServicePrincipal", "AzureAD"):
        app: dict[str, t.Any] = {  # the app registration both schemes sign in with
            "authority_host": authority_host,
            "tenant_id": config["tenant_id"],
            "client_id": config["client_id"],
            "client_secret": config.get("client_secret") or "",
            "certificate": _certificate(config),
        }
        if scheme == "AzureServicePrincipal":
            return ServicePrincipalAuth(**app)
        return DelegatedAuth(
            **app,
            initiate_oauth=config.get("initiate_oauth") or "GETANDREFRESH",
            callback_url=_callback_url(config),
            token_cache_path=os.path.expanduser(config.get("token_cache_path") or DEFAULT_TOKEN_CACHE),
            refresh_token=config.get("refresh_token"),
            access_token=config.get("access_token"),
        )
    if scheme == "AzureMSI":
        return ManagedIdentityAuth(client_id=config.get("managed_identity_client_id"))
    if scheme in WINDOWS_SCHEMES:
        return load_windows(scheme, config)
    if urlsplit(authority_host).hostname in MICROSOFT_AUTHORITY_HOSTS:  # ADFS
        msg = (
            "setting 'authority_host' must be your AD FS server for auth_scheme ADFS (it is "
            f"{authority_host}) — e.g. https://adfs.contoso.com"
        )
        raise ConfigError(msg)
    return AdfsAuth(authority_host=authority_host, client_id=config["client_id"], client_secret=config["client_secret"])


def _certificate(config: t.Mapping[str, t.Any]) -> Certificate | None:
    """The certificate file, if one is set: readable, with its type inferred when not given."""
    path = config.get("certificate_path")
    if path is None:
        return None
    path = os.path.expanduser(path)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        msg = (
            f"setting 'certificate_path' points to {path!r}, which is not a readable file — give "
            "the path of the PEM (private key + certificate) or PFX file"
        )
        raise ConfigError(msg)
    kind = config.get("certificate_type")
    if kind is None:  # infer: PEM files are text with BEGIN markers, PFX is DER binary
        with open(path, "rb") as handle:
            head = handle.read(4096)
        kind = "PEMKEY_FILE" if b"-----BEGIN" in head else "PFXFILE"
    return Certificate(path=path, kind=kind, password=config.get("certificate_password") or None)


def _callback_url(config: t.Mapping[str, t.Any]) -> str:
    """The redirect URI the sign-in listens on: http only for localhost, as Entra ID allows."""
    value = str(config.get("callback_url") or DEFAULT_CALLBACK_URL)
    refuse_userinfo("callback_url", value)
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
