"""AD FS as an internet-facing (claims-based) on-premises deployment uses it, on the same port
under the authority host name (``https://localhost:PORT/adfs``):

- ``/adfs/.well-known/openid-configuration`` (no ``/v2.0``, as MSAL expects for AD FS);
- ``/adfs/oauth2/token/`` for client credentials (secret in the body or HTTP Basic), taking
  the resource from ``resource=`` (AD FS 2016) or from the ``scope`` (AD FS 2019). A token is
  issued only for a registered relying party trust, and a service accepts only tokens issued
  for its own identifier (:meth:`Adfs.validate`).

Error texts (``MSIS…``) are illustrative [unverified], as is the shape of its 429/503.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
import urllib.parse
from typing import Any

import orjson

from ..core.service import NOT_FOUND, FaultAdapter, Request, Response, Service
from . import ISSUED_SECRETS, Resources

DEFAULT_ADFS_CLIENT = "5f2b6c0e-7d1a-4c3b-9e8f-0a1b2c3d4e5f"
DEFAULT_ADFS_SECRET = "adfs-client-secret-ZX81-onprem"
JSON = [("Content-Type", "application/json;charset=UTF-8"), ("Cache-Control", "no-store")]


class AdfsFaults(FaultAdapter):
    """Faults of the token endpoint (an OAuth error body; AD FS's exact texts are unverified)."""

    script_group = "token"

    def applies(self, req: Request) -> bool:
        return req.method == "POST" and req.path.rstrip("/") == "/adfs/oauth2/token"

    def throttled(self, rng: Any, retry_after: str | None) -> tuple[Response, str | None]:
        return self._error(429, retry_after), None

    def unavailable(self, retry_after: str | None) -> Response:
        return self._error(503, retry_after)

    def success_filler(self) -> Response:
        return 200, JSON, orjson.dumps({"access_token": "adfs." + "x" * 1200, "token_type": "bearer",
                                        "expires_in": 3600})

    @staticmethod
    def _error(status: int, retry_after: str | None) -> Response:
        extra = [] if retry_after is None else [("Retry-After", retry_after)]
        return status, [*JSON, *extra], orjson.dumps({
            "error": "temporarily_unavailable",
            "error_description": "MSIS9000: The authorization server is temporarily unavailable."})


class Adfs(Service):
    name = "adfs"
    prefix = "/adfs/"
    fault_adapter_class = AdfsFaults

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.clients = {DEFAULT_ADFS_CLIENT: DEFAULT_ADFS_SECRET}  # client_id -> secret
        self.tokens: dict[str, tuple[str, float, str]] = {}  # token -> (client_id, expiry, audience)
        self.resources = Resources()
        self.token_requests = 0
        self._lock = threading.Lock()

    def register_resource(self, uri: str) -> str:
        """Add a relying party trust (its identifier is the audience of its tokens)."""
        return self.resources.register(uri)

    def validate(self, token: str, audience: str) -> str | None:
        """The client id a good, unexpired token for ``audience`` was issued to, or None."""
        grant = self.tokens.get(token)
        if grant is None or grant[1] < time.time() or self.resources.get(audience) != grant[2]:
            return None
        return grant[0] if self.host.faults.spend(token) else None

    def match(self, path: str) -> str | None:
        return path if path.lower().startswith("/adfs/") else None

    def received(self, req: Request) -> None:
        if req.path.rstrip("/") == "/adfs/oauth2/token" and req.method == "POST":
            with self._lock:
                self.token_requests += 1
            self.host.statistics.count("token_requests")

    def handle(self, req: Request) -> Response:
        path, method = req.path.rstrip("/"), req.method
        base = f"{self.host.authority_host}/adfs"
        if path == "/adfs/.well-known/openid-configuration" and method == "GET":
            return 200, JSON, orjson.dumps({
                "issuer": base, "authorization_endpoint": f"{base}/oauth2/authorize/",
                "token_endpoint": f"{base}/oauth2/token/", "jwks_uri": f"{base}/discovery/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic",
                                                          "private_key_jwt", "windows_client_authentication"],
                "response_types_supported": ["code", "id_token", "code id_token", "token"],
                "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
                                          "password", "urn:ietf:params:oauth:grant-type:device_code"],
                "access_token_issuer": f"http://{urllib.parse.urlsplit(base).netloc}/adfs/services/trust"})
        if path != "/adfs/oauth2/token" or method != "POST":
            return NOT_FOUND
        return self.token(req)

    def token(self, req: Request) -> Response:
        form = req.form()
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = req.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            user, _, pwd = base64.b64decode(auth[6:]).decode("utf-8", "replace").partition(":")
            client_id, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(pwd)

        def error(status: int, code: str, text: str) -> Response:
            return status, JSON, orjson.dumps({"error": code, "error_description": text})

        if form.get("grant_type") != "client_credentials":
            return error(400, "unsupported_grant_type", "MSIS9611: The authorization server does not "
                         "support the requested 'grant_type'. The authorization server only supports "
                         "'client_credentials' in this emulator.")
        if client_id not in self.clients:
            return error(400, "invalid_client", "MSIS9223: Received invalid OAuth authorization request. "
                         "The received 'client_id' is invalid as no registered client was found with "
                         "this client identifier.")
        if secret != self.clients[client_id]:
            return error(401, "invalid_client", "MSIS9622: Client authentication failed. Please verify "
                         "the credential provided for client authentication is valid.")
        resource = form.get("resource") or ""
        if not resource:
            for scope in form.get("scope", "").split():
                if scope.endswith("/.default"):
                    resource = scope[: -len("/.default")]
        audience = self.resources.get(resource)
        if audience is None:
            return error(400, "invalid_resource", "MSIS9602: The received 'resource' parameter is not "
                         f"valid: no relying party trust has the identifier '{resource}'.")
        token = "adfs." + secrets.token_urlsafe(32)
        lifetime = int(self.knobs["token_lifetime"])
        with self._lock:
            self.tokens[token] = (client_id, time.time() + lifetime, audience)
        ISSUED_SECRETS.add(token)
        self.host.token_issued(token)
        return 200, JSON, orjson.dumps({"access_token": token, "token_type": "bearer",
                                        "expires_in": lifetime, "resource": resource})
