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
import secrets
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

DEFAULT_TENANT = "11111111-1111-4111-8111-111111111111"
DEFAULT_CLIENT = "22222222-2222-4222-8222-222222222222"
DEFAULT_SECRET = "emulator~secret.0123456789abcdefABCDEF"


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

    # ---------------------------------------------------------- registry
    def register_app(self, client_id: str, secret: str = DEFAULT_SECRET, tenant_id: str | None = None,
                     secret_expired: bool = False, consent: bool = True,
                     application_user: bool = True) -> App:
        tenant = tenant_id or DEFAULT_TENANT
        app = App(client_id.lower(), secret, tenant.lower(), secret_expired, consent,
                  application_user, str(uuid.uuid5(uuid.NAMESPACE_OID, "oid:" + client_id)),
                  str(uuid.uuid5(uuid.NAMESPACE_OID, "user:" + client_id)))
        self.apps[app.client_id] = app
        self.tenants.add(app.tenant_id)
        return app

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
        if secret is None:
            if form.get("client_assertion"):
                return self.error(7000218)  # certificate credentials are not emulated yet
            return self.error(7000218)
        if not hmac.compare_digest(secret.encode(), app.secret.encode()):
            return self.error(7000215, client_id=client_id)
        if app.secret_expired:
            return self.error(7000222, client_id=client_id)
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
    def issue(self, app: App, lifetime: int | None = None, audience: str | None = None) -> str:
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
        signing_input = (b64url(orjson.dumps(header)) + "." + b64url(orjson.dumps(payload))).encode()
        sig = hmac.new(self.signing_key, signing_input, hashlib.sha256).digest()
        return signing_input.decode() + "." + b64url(sig)

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
        return app, ""
