"""Entra ID (login.microsoftonline.com) as MSAL Python uses it: instance and tenant discovery,
the token endpoint (client credentials here; user flows in :mod:`.userflows`, managed identity
in :mod:`.msi`), AADSTS error bodies (:mod:`.aadsts`), and access tokens (HS256 JWTs signed
with an emulator secret) that the services validate.

A registry of *resources* (application ID URIs) stands for the service principals of the
tenant: a token is issued only for a registered resource's ``/.default`` scope (else
AADSTS500011), its ``aud`` is that resource, and each service accepts only tokens whose
``aud`` is its own (:meth:`Entra.validate`). A deployment registers one resource per service
(Dataverse: the org URL; F&O: the environment URL; Graph: ``https://graph.microsoft.com``).

Why HS256 with a private secret: a service only needs to tell "token issued by us, for this
audience, not expired" from everything else; a real RSA key and JWKS would add cost without
changing what the tap sees (it never validates the token itself).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson
from cryptography import x509

from ..core.service import FaultAdapter, Request, Response, Service
from . import (
    DEFAULT_CLIENT,
    DEFAULT_SECRET,
    DEFAULT_TENANT,
    DEFAULT_USER,
    ISSUED_SECRETS,
    MSI_CLIENT,
    Resources,
    b64url,
    b64url_decode,
    user_object_id,
)
from .aadsts import aadsts_error
from .assertion import verify_assertion
from .controls import TokenFaultControls
from .msi import ManagedIdentity
from .userflows import UserFlows

if TYPE_CHECKING:
    import random

    from ..core.host import Host


@dataclass
class App:
    client_id: str
    secret: str
    tenant_id: str
    secret_expired: bool = False
    consent: bool = True
    application_user: bool = True
    object_id: str = ""
    user_id: str = ""
    certificates: list = field(default_factory=list)  # x509.Certificate objects uploaded
    redirect_uris: list = field(default_factory=list)
    public_client: bool = True  # "Allow public client flows"
    # Tables (logical names; "organization" too) that the security role of the app's user has
    # no Read privilege on: Dataverse answers 403 PrivilegeDenied (dataverse/service.py).
    read_denied: frozenset = frozenset()
    # Resources (audiences) whose API permission the app lacks or was never admin-consented for
    # (e.g. Dynamics ERP while Dynamics CRM is consented): AADSTS65001 for their tokens only.
    unconsented: frozenset = frozenset()

    def consented(self, audience: str) -> bool:
        """Whether the app may get a token for ``audience``."""
        return self.consent and audience not in self.unconsented


JSON = [("Content-Type", "application/json; charset=utf-8")]
TOKEN_ENDPOINT = ["oauth2", "v2.0", "token"]
MSI_PATHS = ("/msi/token", "/metadata/identity/oauth2/token")
TENANT_SUFFIXES = (["v2.0", ".well-known", "openid-configuration"], ["discovery", "v2.0", "keys"],
                   ["oauth2", "v2.0", "token"], ["oauth2", "v2.0", "authorize"],
                   ["oauth2", "v2.0", "devicecode"])


class EntraFaults(FaultAdapter):
    """Faults of the token endpoints (the OAuth token endpoint and managed identity's), in
    Entra ID's words: AADSTS90055 (throttled) and AADSTS90033 (transient error)."""

    script_group = "token"

    def applies(self, req: Request) -> bool:
        if req.path in MSI_PATHS:
            return req.method == "GET"
        parts = req.path.strip("/").split("/")
        return req.method == "POST" and len(parts) == 4 and parts[1:] == TOKEN_ENDPOINT

    def throttled(self, rng: random.Random, retry_after: str | None) -> tuple[Response, str | None]:
        return self._error(90055, retry_after), "AADSTS90055"

    def unavailable(self, retry_after: str | None) -> Response:
        return self._error(90033, retry_after)

    def success_filler(self) -> Response:
        filler = orjson.dumps({"token_type": "Bearer", "expires_in": 3599, "access_token": "x" * 1200})
        return 200, [*JSON, *_ests()], filler

    def _error(self, code: int, retry_after: str | None) -> Response:
        status, body = aadsts_error(self.service.host.authority_host, code)
        extra = [] if retry_after is None else [("Retry-After", retry_after)]
        return status, [*JSON, ("Cache-Control", "no-store"), *_ests(), *extra], orjson.dumps(body)


def _ests() -> list[tuple[str, str]]:
    return [("x-ms-request-id", str(uuid.uuid4())), ("x-ms-ests-server", "2.1.emulated")]


class Entra(UserFlows, ManagedIdentity, TokenFaultControls, Service):
    name = "entra"
    prefix = "/"
    fault_adapter_class = EntraFaults

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.tenant_id = DEFAULT_TENANT
        self.signing_key = secrets.token_bytes(32)
        self.apps: dict[str, App] = {}
        self.tenants: set[str] = set()
        self.resources = Resources()
        self.register_app(DEFAULT_CLIENT, DEFAULT_SECRET, DEFAULT_TENANT)
        # User flows: one signed-in user, codes, refresh tokens, device codes.
        self.user = DEFAULT_USER
        self.user_oid = user_object_id(DEFAULT_USER)
        self.codes: dict[str, dict] = {}
        self.refresh_tokens: dict[str, dict] = {}
        self.device_codes: dict[str, dict] = {}
        self.used_jti: dict[str, str] = {}  # jti -> the assertion that carried it
        self.assertion_headers: list[dict] = []  # the JOSE header of every client assertion seen
        # Knobs: what happens to the next refresh-token redemption ("expired" → AADSTS700082,
        # "revoked" → AADSTS50173, "mfa" → AADSTS50076), whether redeeming a refresh token
        # invalidates it (Entra ID does not; some tenants' policies and other IdPs do), the
        # device-code poll interval/lifetime and a script of poll answers ("slow_down", …).
        self.refresh_token_state: str | None = None
        self.single_use_refresh_tokens = False
        self.device_interval = 5
        self.device_lifetime = 900
        self.device_script: list[str] = []
        # Managed identity: the App Service header secret, and identities by client id.
        self.msi_header = secrets.token_urlsafe(24)
        ISSUED_SECRETS.add(self.msi_header)
        self.system_identity = self.register_app(MSI_CLIENT, secrets.token_urlsafe(32), DEFAULT_TENANT)
        self.user_identities: dict[str, App] = {}

    @property
    def authority_host(self) -> str:
        return self.host.authority_host

    @property
    def token_lifetime(self) -> int:
        return int(self.host.knobs["token_lifetime"])

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        self.host.knobs["token_lifetime"] = seconds

    # ---------------------------------------------------------- resources
    def register_resource(self, uri: str) -> str:
        """Register a resource (a service principal of the tenant) tokens may be issued for."""
        return self.resources.register(uri)

    def resource(self, uri: str) -> str | None:
        """The registered resource ``uri`` names (case and trailing slash ignored), or None."""
        return self.resources.get(uri)

    @property
    def default_audience(self) -> str:
        return self.resources.first()

    # ---------------------------------------------------------- registry
    def register_app(self, client_id: str, secret: str = DEFAULT_SECRET, tenant_id: str | None = None,
                     secret_expired: bool = False, consent: bool = True,
                     application_user: bool = True, certificate: Any = None,
                     redirect_uris: list[str] | None = None, public_client: bool = True,
                     managed_identity: bool = False, read_denied: list[str] | None = None,
                     unconsented: list[str] | None = None) -> App:
        """Register an app. ``certificate``: PEM bytes/str or x509 objects (one or a list)
        uploaded under Certificates & secrets. ``managed_identity``: a user-assigned identity.
        ``read_denied``: tables its application user's role cannot read. ``unconsented``:
        resource URLs it has no admin-consented permission for."""
        tenant = tenant_id or DEFAULT_TENANT
        app = App(client_id.lower(), secret, tenant.lower(), secret_expired, consent,
                  application_user, str(uuid.uuid5(uuid.NAMESPACE_OID, "oid:" + client_id)),
                  user_object_id(client_id))
        certs = certificate if isinstance(certificate, list) else ([certificate] if certificate else [])
        for cert in certs:
            if isinstance(cert, str):
                cert = cert.encode()
            if isinstance(cert, bytes):
                cert = x509.load_pem_x509_certificate(cert)
            app.certificates.append(cert)
        app.redirect_uris = list(redirect_uris or ["http://localhost:33333"])
        app.public_client = public_client
        app.read_denied = frozenset(name.lower() for name in read_denied or ())
        app.unconsented = frozenset(self.resource(uri) or uri.rstrip("/") for uri in unconsented or ())
        if secret:
            ISSUED_SECRETS.add(secret)
        self.apps[app.client_id] = app
        self.tenants.add(app.tenant_id)
        if managed_identity:
            self.user_identities[app.client_id] = app
        return app

    # ---------------------------------------------------------- endpoints
    def known_tenant(self, tenant: str) -> bool:
        return tenant.lower() in self.tenants

    def openid_configuration(self, tenant: str) -> tuple[int, dict]:
        if not self.known_tenant(tenant):
            return self.error(90002, tenant=tenant)
        base = f"{self.authority_host}/{tenant}"
        return 200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.authority_host}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True, "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net", "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def instance_discovery(self, query: dict[str, str]) -> tuple[int, dict]:
        host = urllib.parse.urlsplit(self.authority_host).netloc
        endpoint = query.get("authorization_endpoint", "")
        if endpoint and urllib.parse.urlsplit(endpoint).netloc not in (host, "login.microsoftonline.com"):
            return self.error(50049)
        tenant = "common"
        parts = urllib.parse.urlsplit(endpoint).path.strip("/").split("/")
        if parts and parts[0]:
            tenant = parts[0]
        return 200, {
            "tenant_discovery_endpoint":
                f"{self.authority_host}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }

    def token(self, tenant: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, dict]:
        if not self.known_tenant(tenant):
            return self.error(90002, tenant=tenant)
        grant = form.get("grant_type")
        if not grant:
            return self.error(900144, param="grant_type")
        if grant in ("authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"):
            return self.user_token(tenant, grant, form, headers)
        if grant != "client_credentials":
            return self.error(70003, grant=grant)
        client_id = form.get("client_id", "")
        secret = form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                cid, _, sec = base64.b64decode(auth[6:]).decode().partition(":")
                client_id = client_id or urllib.parse.unquote_plus(cid)
                secret = secret or urllib.parse.unquote_plus(sec)
            except Exception:
                pass
        if not client_id:
            return self.error(900144, param="client_id")
        app = self.apps.get(client_id.lower())
        if app is None or app.tenant_id != tenant.lower():
            return self.error(700016, client_id=client_id, tenant=tenant)
        failed = self.authenticate_client(app, tenant, form, secret, require=True)
        if failed:
            return failed
        scope = form.get("scope", "")
        if not scope:
            return self.error(900144, param="scope")
        scopes = scope.split()
        if len(scopes) != 1:
            return self.error(700022, scope=scope)
        if not scopes[0].endswith("/.default"):
            return self.error(1002012, scope=scope)
        resource = scopes[0][: -len("/.default")].rstrip("/")
        if not resource.startswith("https://") and not resource.startswith("api://"):
            return self.error(70011, scope=scope)
        audience = self.resource(resource)
        if audience is None:
            return self.error(500011, resource=resource, tenant=tenant)
        if not app.consented(audience):
            return self.error(65001, client_id=client_id)
        lifetime = int(self.token_lifetime)
        return 200, {
            "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": self.issue(app, lifetime, audience),
        }

    # ---------------------------------------------------------- JWTs
    def issue(self, app: App, lifetime: int | None = None, audience: str | None = None,
              user: bool = False) -> str:
        """A signed access token for ``audience`` (default: the first registered resource)."""
        now = int(time.time())
        lifetime = self.token_lifetime if lifetime is None else lifetime
        header = {"typ": "JWT", "alg": "HS256", "kid": "emulator"}
        payload = {
            "aud": audience or self.default_audience, "iss": f"https://sts.windows.net/{app.tenant_id}/",
            "iat": now, "nbf": now, "exp": now + int(lifetime), "aio": "emulated",
            "app_displayname": "tap-dynamics", "appid": app.client_id, "appidacr": "1",
            "idp": f"https://sts.windows.net/{app.tenant_id}/", "idtyp": "app",
            "oid": app.object_id, "rh": "0.emulated.", "sub": app.object_id,
            "tid": app.tenant_id, "uti": b64url(secrets.token_bytes(16)), "ver": "1.0",
        }
        if user:  # a delegated token: the user's identity, the app only as appid
            payload.update({"idtyp": "user", "oid": self.user_oid, "sub": self.user_oid,
                            "upn": self.user, "unique_name": self.user, "scp": "user_impersonation"})
        signing_input = (b64url(orjson.dumps(header)) + "." + b64url(orjson.dumps(payload))).encode()
        sig = hmac.new(self.signing_key, signing_input, hashlib.sha256).digest()
        token = signing_input.decode() + "." + b64url(sig)
        ISSUED_SECRETS.add(token)
        self.host.token_issued(token)
        return token

    def validate(self, token: str, audience: str) -> tuple[App | None, str]:
        """Return (app, "") for a good token issued for ``audience`` or (None, reason); the
        audience compares loosely (case, trailing slash), as Dataverse does."""
        parts = token.split(".")
        if len(parts) != 3:
            return None, "malformed"
        signing_input = (parts[0] + "." + parts[1]).encode()
        try:
            sig = b64url_decode(parts[2])
            payload = orjson.loads(b64url_decode(parts[1]))
        except Exception:
            return None, "malformed"
        expected = hmac.new(self.signing_key, signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(sig, expected):
            return None, "signature"
        if payload.get("exp", 0) <= time.time():
            return None, "expired"
        if str(payload.get("aud", "")).rstrip("/").lower() != audience.rstrip("/").lower():
            return None, "audience"
        app = self.apps.get(str(payload.get("appid", "")).lower())
        if app is None:
            return None, "unknown app"
        if not self.host.faults.spend(token):
            return None, "revoked"
        if payload.get("idtyp") == "user":
            # A user is a member of the org: the application-user requirement is the app's.
            return replace(app, application_user=True), ""
        return app, ""

    # ---------------------------------------------------------- client authentication
    def authenticate_client(self, app: App, tenant: str, form: dict[str, str], secret: str | None,
                            require: bool) -> tuple[int, dict] | None:
        """Check the client secret or certificate assertion; None when the client is fine.

        ``require=False`` is for public clients in user flows (no credential sent)."""
        if form.get("client_assertion") or form.get("client_assertion_type"):
            return verify_assertion(self, app, tenant, form)
        if secret is None:
            if require or not app.public_client:
                return self.error(7000218)
            return None
        if not hmac.compare_digest(secret.encode(), app.secret.encode()):
            return self.error(7000215, client_id=app.client_id)
        if app.secret_expired:
            return self.error(7000222, client_id=app.client_id)
        return None

    def error(self, code: int, **fmt: Any) -> tuple[int, dict]:
        return aadsts_error(self.authority_host, code, **fmt)

    # ---------------------------------------------------------- routing
    def match(self, path: str) -> str | None:
        parts = path.strip("/").split("/")
        if path == "/common/discovery/instance" or path in MSI_PATHS:
            return path
        return path if len(parts) == 4 and parts[1:] in TENANT_SUFFIXES else None

    def received(self, req: Request) -> None:
        parts = req.path.strip("/").split("/")
        if req.method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
            self.host.statistics.count("token_requests")

    def handle(self, req: Request) -> Response:
        path, method = req.path, req.method
        parts = path.strip("/").split("/")
        js = [*JSON, ("Cache-Control", "no-store, no-cache"), ("x-ms-request-id", str(uuid.uuid4())),
              ("x-ms-ests-server", "2.1.emulated")]
        if path == "/common/discovery/instance":
            status, obj = self.instance_discovery(req.query)
            return status, js, orjson.dumps(obj)
        tenant, endpoint = parts[0], parts[1:]
        if endpoint == ["v2.0", ".well-known", "openid-configuration"]:
            status, obj = self.openid_configuration(tenant)
            return status, js, orjson.dumps(obj)
        if endpoint == ["discovery", "v2.0", "keys"]:
            return 200, js, b'{"keys":[]}'
        if endpoint == ["oauth2", "v2.0", "token"]:
            if method != "POST":
                return 405, js, b'{"error":"invalid_request"}'
            status, obj = self.token(tenant, req.form(), req.headers)
            return status, js, orjson.dumps(obj)
        plain = [*JSON, ("Cache-Control", "no-store")]
        if path in MSI_PATHS and method == "GET":
            status, obj = self.managed_identity(path, req.query, req.headers)
            return status, plain, orjson.dumps(obj)
        if endpoint == ["oauth2", "v2.0", "authorize"] and method == "GET":
            return self.authorize(tenant, req.query)
        if endpoint == ["oauth2", "v2.0", "devicecode"] and method == "POST":
            status, obj = self.device_authorization(tenant, req.form())
            return status, plain, orjson.dumps(obj)
        return 404, [("Content-Type", "text/html")], b"<h2>404 - File or directory not found.</h2>"

    def control(self, method: str, parts: list[str], data: Any) -> Response | None:
        if parts == ["apps"] and method == "POST":
            app = self.register_app(**data)
            return 200, JSON, orjson.dumps({"client_id": app.client_id, "tenant_id": app.tenant_id})
        return None
