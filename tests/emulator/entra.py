"""Entra ID (login.microsoftonline.com) as MSAL Python uses it: tenant discovery,
client-credentials token endpoint, AADSTS error bodies, and access tokens (HS256 JWTs signed
with an emulator secret) that the Dataverse side validates.

Why HS256 with a private secret: the Dataverse emulator only needs to tell "token issued by
us, for this audience, not expired" from everything else; a real RSA key and JWKS would add
cost without changing what the tap sees (it never validates the token itself).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import email.utils
import secrets
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

import orjson

from .faults import GATEWAY_PAGE, cut_body

DEFAULT_TENANT = "11111111-1111-4111-8111-111111111111"
DEFAULT_CLIENT = "22222222-2222-4222-8222-222222222222"
DEFAULT_SECRET = "emulator~secret.0123456789abcdefABCDEF"
DEFAULT_USER = "alex@contoso.onmicrosoft.com"
MSI_CLIENT = "33333333-3333-4333-8333-333333333333"

# Every credential the emulator ever hands out or accepts (secrets, access/refresh tokens, codes),
# process-wide: tests/taprun.py greps every tap run's output for them.
ISSUED_SECRETS: set[str] = set()


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
    # no Read privilege on: Dataverse answers 403 PrivilegeDenied (dataverse.py).
    read_denied: frozenset = frozenset()


@dataclass
class TokenFault:
    """``count`` token-endpoint requests that fail with ``kind``, after ``after`` answered ones.

    kinds: "429" (throttled, AADSTS90055, Retry-After), "503" (AADSTS90033 "transient error",
    Retry-After, as Entra ID sends it), "proxy_html" (a proxy's 502 HTML page), "drop" (the
    connection closes half-way through the answer). ``retry_after`` is sent as seconds, or as
    an HTTP-date that many seconds ahead when ``retry_after_form`` is "date".
    """

    kind: str
    count: int = 1
    after: int = 0
    retry_after: float | None = 1
    retry_after_form: str = "seconds"

    def __post_init__(self) -> None:
        if self.kind not in TOKEN_FAULT_KINDS:
            raise ValueError(f"unknown token fault {self.kind!r}; known: {TOKEN_FAULT_KINDS}")
        if self.retry_after_form not in ("seconds", "date"):
            raise ValueError("retry_after_form must be 'seconds' or 'date'")


TOKEN_FAULT_KINDS = ("429", "503", "proxy_html", "drop")


AADSTS = {
    7000215: ("invalid_client", 401,
              "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
              "request is the client secret value, not the client secret ID, for a secret added "
              "to app '{client_id}'."),
    7000222: ("invalid_client", 401,
              "AADSTS7000222: The provided client secret keys for app '{client_id}' are expired. "
              "Visit the Azure portal to create new keys for your app: "
              "https://aka.ms/NewClientSecret, or consider using certificate credentials for "
              "added security: https://aka.ms/certCreds."),
    7000218: ("invalid_client", 401,
              "AADSTS7000218: The request body must contain the following parameter: "
              "'client_assertion' or 'client_secret'."),
    700016: ("unauthorized_client", 400,
             "AADSTS700016: Application with identifier '{client_id}' was not found in the "
             "directory '{tenant}'. This can happen if the application has not been installed "
             "by the administrator of the tenant or consented to by any user in the tenant. You "
             "may have sent your authentication request to the wrong tenant."),
    90002: ("invalid_request", 400,
            "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct "
            "tenant ID and are signing into the correct cloud. Check with your subscription "
            "administrator, this may happen if there are no active subscriptions for the tenant."),
    500011: ("invalid_resource", 400,
             "AADSTS500011: The resource principal named {resource} was not found in the tenant "
             "named {tenant}. This can happen if the application has not been installed by the "
             "administrator of the tenant or consented to by any user in the tenant. You might "
             "have sent your authentication request to the wrong tenant."),
    65001: ("invalid_grant", 400,
            "AADSTS65001: The user or administrator has not consented to use the application "
            "with ID '{client_id}' named 'tap-dynamics'. Send an interactive authorization "
            "request for this user and resource."),
    70011: ("invalid_scope", 400,
            "AADSTS70011: The provided request must include a 'scope' input parameter. The "
            "provided value for the input parameter 'scope' is not valid. The scope {scope} is "
            "not valid."),
    1002012: ("invalid_scope", 400,
              "AADSTS1002012: The provided value for scope {scope} is not valid. Client "
              "credential flows must have a scope value with /.default suffixed to the resource "
              "identifier (application ID URI)."),
    700022: ("invalid_scope", 400,
             "AADSTS700022: The provided value for the input parameter scope is not valid because "
             "it contains more than one resource. Scope {scope} is not valid."),
    900144: ("invalid_request", 400,
             "AADSTS900144: The request body must contain the following parameter: '{param}'."),
    70003: ("unsupported_grant_type", 400,
            "AADSTS70003: The app requested an unsupported grant type '{grant}'."),
    50049: ("invalid_instance", 400,
            "AADSTS50049: Unknown or invalid instance."),
    # --- certificate credentials (text as Entra ID returns it; reasons vary by case)
    700027: ("invalid_client", 401,
             "AADSTS700027: Client assertion contains an invalid signature. [Reason - {reason}, "
             "Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, "
             "Graph Explorer or directly use MS Graph to see configured keys for app Id "
             "'{client_id}'. Review the documentation at "
             "https://docs.microsoft.com/en-us/graph/api/application-get?view=graph-rest-1.0&tabs=http "
             "to learn how to fetch application keys.]"),
    700024: ("invalid_client", 401,
             "AADSTS700024: Client assertion is not within its valid time range. Current time: "
             "{now}, assertion valid from {nbf}, expiry time of assertion {exp}."),
    700021: ("invalid_client", 401,
             "AADSTS700021: Client assertion application identifier doesn't match 'client_id' "
             "parameter. Review the documentation at https://docs.microsoft.com/en-us/azure/"
             "active-directory/develop/active-directory-certificate-credentials ."),
    # Emulator choice: Entra ID's exact code for a wrong `aud` or a replayed `jti` is not
    # documented; both are rejected as a malformed assertion.
    50027: ("invalid_client", 401,
            "AADSTS50027: JWT token is invalid or malformed. {reason}"),
    # --- user flows
    50011: ("invalid_request", 400,
            "AADSTS50011: The redirect URI '{redirect_uri}' specified in the request does not "
            "match the redirect URIs configured for the application '{client_id}'. Make sure "
            "the redirect URI sent in the request matches one added to your application in the "
            "Azure portal."),
    501481: ("invalid_grant", 400,
             "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the "
             "authorization request."),
    54005: ("invalid_grant", 400,
            "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a "
            "new valid code or use an existing refresh token."),
    70000: ("invalid_grant", 400,
            "AADSTS70000: The provided value for the 'code' parameter is not valid."),
    9002313: ("invalid_grant", 400,
              "AADSTS9002313: Invalid request. Request is malformed or invalid."),
    700082: ("invalid_grant", 400,
             "AADSTS700082: The refresh token has expired due to inactivity. The token was issued "
             "on {issued} and was inactive for 90.00:00:00."),
    50173: ("invalid_grant", 400,
            "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth "
            "token is needed. The user might have changed or reset their password. The grant was "
            "issued on '{issued}' and the TokensValidFrom date (before which tokens are not valid) "
            "for this user is '{now}'."),
    50076: ("invalid_grant", 400,
            "AADSTS50076: Due to a configuration change made by your administrator, or because "
            "you moved to a new location, you must use multi-factor authentication to access "
            "'{resource}'."),
    70016: ("authorization_pending", 400,
            "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling."),
    70020: ("expired_token", 400,
            "AADSTS70020: The provided value for the input parameter 'device_code' is not valid. "
            "This device code has expired."),
    # --- transient failures of the service itself (token-endpoint faults)
    90033: ("temporarily_unavailable", 503,
            "AADSTS90033: A transient error has occurred. Please try again."),
    90055: ("temporarily_unavailable", 429,
            "AADSTS90055: TenantThrottlingError - There are too many incoming requests. This "
            "exception is thrown for blocked tenants."),
    # Emulator choice: the number Entra ID attaches to slow_down is not documented.
    70019: ("slow_down", 400,
            "AADSTS70019: Slow down: the client is polling too often."),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Entra:
    def __init__(self, authority_host: str, org_url: str, token_lifetime: int = 3600):
        self.authority_host = authority_host
        self.org_url = org_url
        self.token_lifetime = token_lifetime
        self.signing_key = secrets.token_bytes(32)
        self.apps: dict[str, App] = {}
        self.tenants: set[str] = set()
        self.register_app(DEFAULT_CLIENT, DEFAULT_SECRET, DEFAULT_TENANT)
        # User flows: one signed-in user, codes, refresh tokens, device codes.
        self.user = DEFAULT_USER
        self.user_oid = str(uuid.uuid5(uuid.NAMESPACE_OID, "user:" + DEFAULT_USER))
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
        # Faults of the token endpoints (see fail_token_requests) and revocation by use count.
        self.token_faults: list[TokenFault] = []
        self.token_fault_log: list[str] = []  # the kind of every injected token fault, in order
        self.revoke_after_uses: int | None = None
        self._token_uses: dict[str, int] = {}
        self.revoked_uses = 0  # requests refused because their token was revoked by use count
        self._fault_lock = threading.Lock()

    # ---------------------------------------------------------- registry
    def register_app(self, client_id: str, secret: str = DEFAULT_SECRET, tenant_id: str | None = None,
                     secret_expired: bool = False, consent: bool = True,
                     application_user: bool = True, certificate: Any = None,
                     redirect_uris: list[str] | None = None, public_client: bool = True,
                     managed_identity: bool = False, read_denied: list[str] | None = None) -> App:
        """Register an app. ``certificate``: PEM bytes/str or x509 objects (one or a list)
        uploaded under Certificates & secrets. ``managed_identity``: a user-assigned identity.
        ``read_denied``: tables its application user's role cannot read."""
        tenant = tenant_id or DEFAULT_TENANT
        app = App(client_id.lower(), secret, tenant.lower(), secret_expired, consent,
                  application_user, str(uuid.uuid5(uuid.NAMESPACE_OID, "oid:" + client_id)),
                  str(uuid.uuid5(uuid.NAMESPACE_OID, "user:" + client_id)))
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
        if secret:
            ISSUED_SECRETS.add(secret)
        self.apps[app.client_id] = app
        self.tenants.add(app.tenant_id)
        if managed_identity:
            self.user_identities[app.client_id] = app
        return app

    # ---------------------------------------------------------- token endpoint faults
    def fail_token_requests(self, kind: str, count: int = 1, after: int = 0,
                            retry_after: float | None = 1, retry_after_form: str = "seconds") -> None:
        """Make token requests fail: ``count`` of them with ``kind``, after ``after`` that are
        answered normally (``after=1``: the run's first token works, a refresh fails). Covers
        every token endpoint: Entra ID's, the managed identity ones and AD FS's."""
        with self._fault_lock:
            self.token_faults.append(TokenFault(kind, int(count), int(after), retry_after, retry_after_form))

    def token_fault(self) -> tuple[int, list, bytes] | None:
        """The answer to the current token request when a fault is due, else None."""
        with self._fault_lock:
            if not self.token_faults:
                return None
            fault = self.token_faults[0]
            if fault.after > 0:
                fault.after -= 1
                return None
            fault.count -= 1
            if fault.count <= 0:
                self.token_faults.pop(0)
            self.token_fault_log.append(fault.kind)
        headers = [("x-ms-request-id", str(uuid.uuid4())), ("x-ms-ests-server", "2.1.emulated")]
        if fault.retry_after is not None and fault.kind in ("429", "503"):
            if fault.retry_after_form == "date":
                # HTTP-date has whole seconds: round up so the client never waits too little.
                value = email.utils.formatdate(time.time() + float(fault.retry_after) + 1, usegmt=True)
            else:
                value = str(int(fault.retry_after)) if float(fault.retry_after).is_integer() else str(fault.retry_after)
            headers.append(("Retry-After", value))
        if fault.kind in ("429", "503"):
            status, body = self.error(90055 if fault.kind == "429" else 90033)
            js = [("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "no-store")]
            return status, [*js, *headers], orjson.dumps(body)
        if fault.kind == "proxy_html":
            return 502, [("Content-Type", "text/html")], GATEWAY_PAGE
        # "drop": a success announced in full, cut off half-way (no real token in it).
        filler = orjson.dumps({"token_type": "Bearer", "expires_in": 3599, "access_token": "x" * 1200})
        return 200, [("Content-Type", "application/json; charset=utf-8"), *headers], cut_body(filler)

    def spend(self, token: str) -> bool:
        """Count one use of an access token; False once it was revoked (``revoke_after_uses``)."""
        limit = self.revoke_after_uses
        if limit is None:
            return True
        with self._fault_lock:
            used = self._token_uses.get(token, 0) + 1
            self._token_uses[token] = used
            if used > int(limit):
                self.revoked_uses += 1
                return False
        return True

    # ---------------------------------------------------------- errors
    def error(self, code: int, **fmt: Any) -> tuple[int, dict]:
        err, status, text = AADSTS[code]
        now = dt.datetime.now(dt.timezone.utc)
        ts = now.strftime("%Y-%m-%d %H:%M:%SZ")
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        fmt.setdefault("client_id", "")
        fmt.setdefault("tenant", "")
        msg = text.format(**fmt)
        body = {
            "error": err,
            "error_description": f"{msg}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\n"
                                 f"Timestamp: {now.strftime('%Y-%m-%d %H:%M:%S')}Z",
            "error_codes": [code], "timestamp": ts, "trace_id": trace, "correlation_id": corr,
            "error_uri": f"{self.authority_host}/error?code={code}",
        }
        if code == 65001:
            body["suberror"] = "consent_required"
        return status, body

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
        if resource.lower() != self.org_url.lower().rstrip("/"):
            return self.error(500011, resource=resource, tenant=tenant)
        if not app.consent:
            return self.error(65001, client_id=client_id)
        lifetime = int(self.token_lifetime)
        return 200, {
            "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": self.issue(app, lifetime),
        }

    # ---------------------------------------------------------- JWTs
    def issue(self, app: App, lifetime: int | None = None, audience: str | None = None,
              user: bool = False) -> str:
        now = int(time.time())
        lifetime = self.token_lifetime if lifetime is None else lifetime
        header = {"typ": "JWT", "alg": "HS256", "kid": "emulator"}
        payload = {
            "aud": audience or self.org_url, "iss": f"https://sts.windows.net/{app.tenant_id}/",
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
        return token

    def validate(self, token: str) -> tuple[App | None, str]:
        """Return (app, "") for a good token or (None, reason)."""
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
        if str(payload.get("aud", "")).rstrip("/").lower() != self.org_url.rstrip("/").lower():
            return None, "audience"
        app = self.apps.get(str(payload.get("appid", "")).lower())
        if app is None:
            return None, "unknown app"
        if not self.spend(token):
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
            return self.verify_assertion(app, tenant, form)
        if secret is None:
            if require or not app.public_client:
                return self.error(7000218)
            return None
        if not hmac.compare_digest(secret.encode(), app.secret.encode()):
            return self.error(7000215, client_id=app.client_id)
        if app.secret_expired:
            return self.error(7000222, client_id=app.client_id)
        return None

    def verify_assertion(self, app: App, tenant: str, form: dict[str, str]) -> tuple[int, dict] | None:
        """Verify a private_key_jwt client assertion the way Entra ID does: signature against
        a certificate uploaded for the app (found by x5t / x5t#S256), aud = token endpoint,
        iss = sub = client_id, exp/nbf, and jti not seen before."""
        cid = app.client_id
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return self.error(50027, reason="client_assertion_type must be jwt-bearer.")
        parts = form.get("client_assertion", "").split(".")
        try:
            header = orjson.loads(b64url_decode(parts[0]))
            claims = orjson.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except Exception:
            return self.error(50027, reason="The assertion is not a JWT.")
        self.assertion_headers.append(dict(header))
        # RFC 7515 says unpadded base64url; MSAL sends it padded. Entra ID accepts both.
        thumb_s256 = str(header.get("x5t#S256") or "").rstrip("=") or None
        thumb_sha1 = str(header.get("x5t") or "").rstrip("=") or None
        shown = thumb_s256 or thumb_sha1 or ""
        cert = None
        for candidate in app.certificates:
            if thumb_s256 and b64url(candidate.fingerprint(hashes.SHA256())) == thumb_s256:
                cert = candidate
            elif thumb_sha1 and b64url(candidate.fingerprint(hashes.SHA1())) == thumb_sha1:  # noqa: S303
                cert = candidate
        if shown and len(shown) < 60:  # show it the way Azure shows thumbprints: upper hex
            try:
                shown = b64url_decode(shown).hex().upper()
            except Exception:
                pass
        if cert is None:
            return self.error(700027, reason="The key was not found.", thumbprint=shown, client_id=cid)
        now = time.time()
        if cert.not_valid_after_utc.timestamp() < now:
            return self.error(700027, reason=(
                "The key used is expired., Found key 'Start=" +
                cert.not_valid_before_utc.strftime("%m/%d/%Y %H:%M:%S") + ", End=" +
                cert.not_valid_after_utc.strftime("%m/%d/%Y %H:%M:%S") + "'"),
                thumbprint=shown, client_id=cid)
        signing_input = (parts[0] + "." + parts[1]).encode()
        alg = header.get("alg")
        key = cert.public_key()
        try:
            if alg == "RS256":
                key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            elif alg == "PS256":
                key.verify(signature, signing_input,
                           padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                       salt_length=padding.PSS.AUTO), hashes.SHA256())
            else:
                return self.error(50027, reason=f"Unsupported signing algorithm '{alg}'.")
        except InvalidSignature:
            return self.error(700027, reason="Signature validation failed.", thumbprint=shown,
                              client_id=cid)
        if claims.get("iss") != claims.get("sub") or str(claims.get("iss", "")).lower() != cid:
            return self.error(700021)
        expected_aud = f"{self.authority_host}/{tenant}/oauth2/v2.0/token".lower()
        if str(claims.get("aud", "")).lower() != expected_aud:
            return self.error(50027, reason=f"Invalid audience '{claims.get('aud')}' (expected the token endpoint).")
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
        if not isinstance(exp, (int, float)) or exp < now - 300 or (nbf or 0) > now + 300:
            fmt = lambda v: dt.datetime.fromtimestamp(v or 0, dt.timezone.utc).strftime("%m/%d/%Y %H:%M:%S")  # noqa: E731
            return self.error(700024, now=fmt(now), nbf=fmt(nbf), exp=fmt(exp if isinstance(exp, (int, float)) else 0))
        # MSAL reuses one assertion for its whole lifetime (create_regenerative_assertion, up to
        # 10 min), so the same assertion again is fine, as Entra ID accepts it; a different
        # assertion with a jti seen before is a replay. Emulator choice: the exact rule is not
        # documented.
        jti = claims.get("jti")
        assertion = form.get("client_assertion", "")
        if not jti or self.used_jti.get(jti, assertion) != assertion:
            return self.error(50027, reason="The assertion's jti was already used (replay).")
        self.used_jti[jti] = assertion
        return None

    # ---------------------------------------------------------- user flows
    def _resource_from_scope(self, scope: str) -> str | None:
        for item in scope.split():
            if item.startswith("https://") or item.startswith("api://"):
                return item.rsplit("/", 1)[0]
        return None

    def authorize(self, tenant: str, query: dict[str, str]) -> tuple[int, list, bytes]:
        """GET /authorize: the emulated user is already signed in and consents at once, so the
        answer is the redirect to ``redirect_uri`` with a code (or an error page)."""
        def page(code: int, **fmt: Any) -> tuple[int, list, bytes]:
            _status, body = self.error(code, **fmt)
            return 400, [("Content-Type", "application/json")], orjson.dumps(body)
        if not self.known_tenant(tenant):
            return page(90002, tenant=tenant)
        app = self.apps.get(query.get("client_id", "").lower())
        if app is None or app.tenant_id != tenant.lower():
            return page(700016, client_id=query.get("client_id", ""), tenant=tenant)
        redirect = query.get("redirect_uri", "")
        if redirect not in app.redirect_uris:
            return page(50011, redirect_uri=redirect, client_id=app.client_id)
        if query.get("response_type") != "code":
            return page(900144, param="response_type=code")
        if not query.get("code_challenge") and app.public_client:
            return page(900144, param="code_challenge")  # PKCE is mandatory for public clients
        code = "0.A" + b64url(secrets.token_bytes(48))
        self.codes[code] = {"client_id": app.client_id, "redirect_uri": redirect,
                            "challenge": query.get("code_challenge"),
                            "method": query.get("code_challenge_method", "plain"),
                            "scope": query.get("scope", ""), "nonce": query.get("nonce"),
                            "expires": time.time() + 600, "used": False}
        ISSUED_SECRETS.add(code)
        params = {"code": code, "state": query.get("state", ""), "session_state": str(uuid.uuid4())}
        location = redirect + ("&" if "?" in redirect else "?") + urllib.parse.urlencode(params)
        return 302, [("Location", location), ("Content-Length", "0")], b""

    def device_authorization(self, tenant: str, form: dict[str, str]) -> tuple[int, dict]:
        if not self.known_tenant(tenant):
            return self.error(90002, tenant=tenant)
        app = self.apps.get(form.get("client_id", "").lower())
        if app is None or app.tenant_id != tenant.lower():
            return self.error(700016, client_id=form.get("client_id", ""), tenant=tenant)
        device_code = "DAQABAAEAAAD" + b64url(secrets.token_bytes(48))
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
        ISSUED_SECRETS.add(device_code)
        self.device_codes[device_code] = {"client_id": app.client_id, "user_code": user_code,
                                          "scope": form.get("scope", ""), "approved": False,
                                          "declined": False, "used": False,
                                          "expires": time.time() + self.device_lifetime}
        return 200, {"user_code": user_code, "device_code": device_code,
                     "verification_uri": "https://microsoft.com/devicelogin",
                     "expires_in": self.device_lifetime, "interval": self.device_interval,
                     "message": f"To sign in, use a web browser to open the page "
                                f"https://microsoft.com/devicelogin and enter the code {user_code} "
                                f"to authenticate."}

    def approve_device(self, user_code: str, decline: bool = False) -> None:
        """The user enters the code in a browser and signs in (or declines)."""
        for entry in self.device_codes.values():
            if entry["user_code"] == user_code:
                entry["declined" if decline else "approved"] = True
                return
        raise KeyError(user_code)

    def user_token(self, tenant: str, grant: str, form: dict[str, str],
                   headers: dict[str, str]) -> tuple[int, dict]:
        client_id = form.get("client_id", "")
        app = self.apps.get(client_id.lower())
        if app is None or app.tenant_id != tenant.lower():
            return self.error(700016, client_id=client_id, tenant=tenant)
        failed = self.authenticate_client(app, tenant, form, form.get("client_secret"), require=False)
        if failed:
            return failed
        scope = form.get("scope", "")
        issued = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=91)
        if grant == "authorization_code":
            entry = self.codes.get(form.get("code", ""))
            if entry is None or entry["client_id"] != app.client_id or entry["expires"] < time.time():
                return self.error(70000)
            if entry["used"]:
                return self.error(54005)
            if form.get("redirect_uri") != entry["redirect_uri"] or entry["redirect_uri"] not in app.redirect_uris:
                # Also checked against the registration now: removed since the sign-in started.
                return self.error(50011, redirect_uri=form.get("redirect_uri", ""), client_id=app.client_id)
            verifier = form.get("code_verifier", "")
            if entry["challenge"]:
                computed = (b64url(hashlib.sha256(verifier.encode()).digest())
                            if entry["method"] == "S256" else verifier)
                if not verifier or not hmac.compare_digest(computed, entry["challenge"]):
                    return self.error(501481)
            entry["used"] = True
            scope = scope or entry["scope"]
            nonce = entry["nonce"]
        elif grant == "refresh_token":
            rt = form.get("refresh_token", "")
            entry = self.refresh_tokens.get(rt)
            if entry is None or entry["client_id"] != app.client_id or entry["revoked"]:
                return self.error(9002313)
            resource = self._resource_from_scope(scope) or self.org_url
            state = self.refresh_token_state
            when = issued.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
            if state == "expired":
                return self.error(700082, issued=when)
            if state == "revoked":
                return self.error(50173, issued=when, now=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z"))
            if state == "mfa":
                status, body = self.error(50076, resource=resource)
                body["suberror"] = "basic_action"
                return status, body
            if self.single_use_refresh_tokens:
                entry["revoked"] = True
            nonce = None
        else:  # device code: MSAL sends the code as both device_code and code
            code = form.get("device_code") or form.get("code") or ""
            entry = self.device_codes.get(code)
            if entry is None or entry["client_id"] != app.client_id or entry["used"]:
                return self.error(9002313)
            if self.device_script:
                return self.error({"slow_down": 70019, "authorization_pending": 70016}[self.device_script.pop(0)])
            if entry["expires"] < time.time():
                return self.error(70020)
            if entry["declined"]:
                return 400, {"error": "authorization_declined",
                             "error_description": "AADSTS70000: The user declined the sign-in.",
                             "error_codes": [70000]}
            if not entry["approved"]:
                return self.error(70016)
            entry["used"] = True
            scope = scope or entry["scope"]
            nonce = None
        resource = self._resource_from_scope(scope)
        if resource is None:
            return self.error(70011, scope=scope)
        if resource.lower() != self.org_url.lower().rstrip("/"):
            return self.error(500011, resource=resource, tenant=tenant)
        if not app.consent:
            return self.error(65001, client_id=app.client_id)
        return 200, self.user_response(app, resource, nonce)

    def user_response(self, app: App, resource: str, nonce: str | None) -> dict:
        lifetime = int(self.token_lifetime)
        refresh = "1.A" + b64url(secrets.token_bytes(64))
        ISSUED_SECRETS.add(refresh)
        self.refresh_tokens[refresh] = {"client_id": app.client_id, "revoked": False}
        now = int(time.time())
        id_claims = {"aud": app.client_id, "iss": f"{self.authority_host}/{app.tenant_id}/v2.0",
                     "iat": now, "nbf": now, "exp": now + 3600, "name": "Alex Wilber",
                     "oid": self.user_oid, "preferred_username": self.user, "sub": self.user_oid,
                     "tid": app.tenant_id, "ver": "2.0"}
        if nonce:
            id_claims["nonce"] = nonce
        id_token = (b64url(orjson.dumps({"typ": "JWT", "alg": "RS256", "kid": "emulator"})) + "." +
                    b64url(orjson.dumps(id_claims)) + "." + b64url(secrets.token_bytes(64)))
        client_info = b64url(orjson.dumps({"uid": self.user_oid, "utid": app.tenant_id}))
        return {"token_type": "Bearer", "scope": f"{resource}/user_impersonation",
                "expires_in": lifetime, "ext_expires_in": lifetime,
                "access_token": self.issue(app, lifetime, user=True),
                "refresh_token": refresh, "id_token": id_token, "client_info": client_info}

    # ---------------------------------------------------------- managed identity
    def managed_identity(self, path: str, query: dict[str, str],
                         headers: dict[str, str]) -> tuple[int, dict]:
        """App Service (``IDENTITY_ENDPOINT`` + ``X-IDENTITY-HEADER``, api-version 2019-08-01)
        and IMDS (``/metadata/identity/oauth2/token`` + ``Metadata: true``) token endpoints."""
        app_service = path == "/msi/token"
        if app_service:
            if headers.get("x-identity-header") != self.msi_header:
                return 401, {"statusCode": 401, "message": "Unauthorized: the X-IDENTITY-HEADER is missing or wrong."}
        elif headers.get("metadata", "").lower() != "true":
            return 400, {"error": "invalid_request", "error_description": "Required metadata header not specified"}
        wanted = query.get("client_id")
        identity = self.user_identities.get(wanted.lower()) if wanted else self.system_identity
        if identity is None:
            if app_service:
                return 400, {"statusCode": 400, "message": "No User Assigned or Delegated Managed "
                             "Identity found for specified ClientId/ResourceId/PrincipalId.",
                             "correlationId": str(uuid.uuid4())}
            return 400, {"error": "invalid_request", "error_description": "Identity not found"}
        resource = query.get("resource", "").rstrip("/")
        if resource.lower() != self.org_url.lower():
            status, body = self.error(500011, resource=resource, tenant=identity.tenant_id)
            if app_service:
                return 500, {"statusCode": 500, "message": body["error_description"].splitlines()[0],
                             "correlationId": body["correlation_id"]}
            return 400, body
        lifetime = int(self.token_lifetime)
        token = self.issue(identity, lifetime)
        expires_on = str(int(time.time()) + lifetime)
        if app_service:
            return 200, {"access_token": token, "expires_on": expires_on, "resource": resource,
                         "token_type": "Bearer", "client_id": identity.client_id}
        return 200, {"access_token": token, "refresh_token": "", "expires_in": str(lifetime),
                     "expires_on": expires_on, "not_before": str(int(time.time())),
                     "resource": resource, "token_type": "Bearer"}

    # ---------------------------------------------------------- routing of the above
    def route(self, method: str, path: str, query: str, headers: dict[str, str],
              body: bytes) -> tuple[int, list, bytes] | None:
        js = [("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "no-store")]
        parts = path.strip("/").split("/")
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if path in ("/msi/token", "/metadata/identity/oauth2/token") and method == "GET":
            fault = self.token_fault()
            if fault is not None:
                return fault
            status, obj = self.managed_identity(path, q, headers)
            return status, js, orjson.dumps(obj)
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "authorize"] and method == "GET":
            return self.authorize(parts[0], q)
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "devicecode"] and method == "POST":
            form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            status, obj = self.device_authorization(parts[0], form)
            return status, js, orjson.dumps(obj)
        return None
