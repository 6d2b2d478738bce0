"""On-premises Dynamics CRM / Dynamics 365 CE (Web API v8.x-9.1) behind Windows authentication.

What differs from the online emulator, as a real Active Directory deployment does it
(reference §3.2/§3.4):

- The organization is in the path: ``{server}/{org}/api/data/v8.2|v9.0|v9.1/``; v9.2 does not
  exist on-premises (404), and nextLinks/contexts carry the ``/{org}`` prefix.
- IIS Windows authentication: an anonymous request gets 401 with two challenges,
  ``WWW-Authenticate: Negotiate`` and ``WWW-Authenticate: NTLM``. The NTLM handshake
  (NEGOTIATE -> 401 CHALLENGE -> AUTHENTICATE) is verified for real with pyspnego's acceptor
  against the configured account and password, and it signs the *TCP connection* in: later
  requests on that keep-alive connection need no Authorization header, and a handshake split
  over two connections fails, as it does against IIS.
- Optionally plain ``http://`` (``tls=False``), for the ``allow_http`` opt-in.
- No service-protection headers (``x-ms-ratelimit-*``), no ``x-ms-service-request-id`` (only
  ``REQ_ID``), no ``TableType``/``IsElasticTable`` on ``EntityMetadata`` [unverified: both
  arrived online with elastic tables, after the last on-premises release], and
  ``RetrieveTotalRecordCount`` is absent on v8.x (404).

- ``auth="adfs"``: an internet-facing (claims-based) deployment instead: no Windows challenge,
  but ``WWW-Authenticate: Bearer authorization_uri=…/adfs/oauth2/authorize, resource_id=…`` and
  an AD FS on the same port under the authority host name (``https://localhost:PORT/adfs``):
  ``/adfs/.well-known/openid-configuration`` (no ``/v2.0``, as MSAL expects for AD FS) and
  ``/adfs/oauth2/token/`` for client credentials (secret in the body or Basic), taking the
  resource from ``resource=`` (AD FS 2016) or from the ``scope`` (AD FS 2019). Error texts
  (``MSIS…``) are illustrative [unverified].
- ``server_version`` is the product's newest Web API version: a 9.1 server serves v8.0-v9.1,
  a CRM 2016 one (8.2) v8.0-v8.2 and no virtual tables (they arrived with 9.0).

    with OnPremEmulator(rows={"account": 100}, tls=False) as emu:
        config = emu.tap_config()   # auth_scheme NTLM, username, password, url with /{org}
    python -m tests.emulator --onprem --onprem-http   # the same, out of process
"""

from __future__ import annotations

import base64
import os
import secrets
import time
import urllib.parse
import re
import shutil
import tempfile
import threading
from typing import Any

import orjson
import spnego
import spnego.exceptions

from . import Emulator
from .dataverse import Dataverse
from .entra import ISSUED_SECRETS, Entra
from .odata import ODataError
from .server import EmulatorServer, serve_in_thread
from .store import Store
from .tls import make_tls

DEFAULT_ORG = "contoso"
DEFAULT_USERNAME = "CONTOSO\\svc-tap"
DEFAULT_PASSWORD = "Winter-Pa55word!onprem"
DEFAULT_ADFS_CLIENT = "5f2b6c0e-7d1a-4c3b-9e8f-0a1b2c3d4e5f"
DEFAULT_ADFS_SECRET = "adfs-client-secret-ZX81-onprem"
ON_PREMISES_VERSIONS = ("v8.0", "v8.1", "v8.2", "v9.0", "v9.1")
ONLINE_ONLY_ENTITY_PROPS = frozenset({"TableType", "IsElasticTable", "IsVirtual"})
# Virtual entities (and the properties describing them) arrived with 9.0.
V9_ENTITY_PROPS = frozenset({"DataProviderId", "DataSourceId", "ExternalName", "ExternalCollectionName"})
CHALLENGES = [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")]
UNAUTHORIZED = b"<h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>"

# pyspnego's NTLM acceptor reads its accounts from the file named by NTLM_USER_FILE. The
# variable is set only while an acceptor steps, under this lock, so that emulators with
# different accounts coexist and no tap subprocess inherits a credential store it could
# silently fall back on.
_ACCEPTOR_LOCK = threading.Lock()


class OnPremDataverse(Dataverse):
    """The Web API as an on-premises server serves it (see the module docstring)."""

    request_version = threading.local()  # the version segment of the request being served

    def headers(self, ct: str | None = "application/json; odata.metadata=minimal") -> list[tuple[str, str]]:
        dropped = ("x-ms-ratelimit-", "x-ms-service-request-id")
        out = [(k, v) for k, v in super().headers(ct) if not k.lower().startswith(dropped)]
        if not self.emu.tls_enabled:
            out = [(k, v) for k, v in out if k != "Strict-Transport-Security"]
        return out

    def authenticate(self, req):  # noqa: ANN001, ANN201 - the base class's signature
        """Windows authentication already happened on the connection (OnPremEmulator.handle);
        with AD FS, the bearer token must be one the AD FS issued for this server."""
        if self.emu.auth == "adfs":
            auth = req.headers.get("authorization", "")
            challenge = [("WWW-Authenticate",
                          f"Bearer authorization_uri={self.emu.authority_host}/adfs/oauth2/authorize, "
                          f"resource_id={self.emu.server_url}/")]
            grant = self.emu.adfs_tokens.get(auth[7:].strip()) if auth.lower().startswith("bearer ") else None
            if grant is None or grant[1] < time.time() or not self.emu.entra.spend(auth[7:].strip()):
                return 401, self.headers(None) + challenge, b""
            req.headers["x-emulator-app"] = self.emu.client_id
            return None
        if not req.headers.get("x-emulator-windows-user"):
            return 401, self.headers(None) + CHALLENGES, b""
        req.headers["x-emulator-app"] = self.emu.client_id  # WhoAmI answers for this user
        return None

    def total_count(self, req, base, rest):  # noqa: ANN001, ANN201
        if "/api/data/v8." in base:
            raise ODataError(404, "0x8006088a",
                             "Resource not found for the segment 'RetrieveTotalRecordCount'.")
        return super().total_count(req, base, rest)

    def _project(self, d: dict, select: list[str] | None, allowed: list[str], type_name: str) -> dict:
        if type_name == "EntityMetadata":
            absent = ONLINE_ONLY_ENTITY_PROPS
            if getattr(self.request_version, "value", "").startswith("v8."):
                absent = absent | V9_ENTITY_PROPS
            allowed = [a for a in allowed if a not in absent]
            d = {k: v for k, v in d.items() if k not in absent}
        return Dataverse._project(d, select, allowed, type_name)


class OnPremEmulator(Emulator):
    """An on-premises server: Windows (NTLM) sign-in, organization in the path, optional http."""

    def __init__(self, rows: dict[str, int] | None = None, *, org: str = DEFAULT_ORG,
                 username: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD,
                 tls: bool = True, server_version: str = "9.1", auth: str = "ntlm", **kw: Any):
        super().__init__(rows, **kw)
        if auth not in ("ntlm", "adfs"):
            raise ValueError("auth must be 'ntlm' or 'adfs'")
        self.auth = auth
        self.adfs_clients = {DEFAULT_ADFS_CLIENT: DEFAULT_ADFS_SECRET}  # client_id -> secret
        self.adfs_tokens: dict[str, tuple[str, float]] = {}  # access token -> (client_id, expiry)
        self.adfs_token_requests = 0
        if server_version not in {v[1:] for v in ON_PREMISES_VERSIONS}:
            raise ValueError(f"server_version must be one of {ON_PREMISES_VERSIONS}")
        # The product's Web API: a 9.1 server serves v8.0-v9.1, a CRM 2016 (8.2) one v8.0-v8.2.
        self.server_version = server_version
        self.versions = tuple(v for v in ON_PREMISES_VERSIONS if float(v[1:]) <= float(server_version))
        self.org = org
        self.username = username
        self.password = password
        self.tls_enabled = tls
        self._connections: dict[str, dict[str, Any]] = {}
        self.windows_logons: list[str] = []  # accounts signed in, one entry per connection
        self.failed_logons = 0
        # A connection's Windows sign-in is forgotten after this many requests (None: never), as
        # when IIS recycles its worker process: the next request gets 401 and a new challenge.
        self.signin_max_requests: int | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> OnPremEmulator:
        self.store = Store(self._rows_cfg, self.seed, self.org_tables, self._clones)
        # No elastic tables on-premises at all, and no virtual tables before 9.0.
        absent = {"Elastic"} | ({"Virtual"} if self.server_version.startswith("8") else set())
        for name in [n for n, td in self.store.tables.items() if td.table_type in absent]:
            if self._rows_cfg.get(name):
                raise ValueError(f"table {name} ({self.store.tables[name].table_type}) does not exist on-premises")
            del self.store.tables[name]
            del self.store.t[name]
        self.tls = make_tls()
        self.ca_path = self.tls.ca_path
        self.server = EmulatorServer(self.host, self.port, self, self.tls.cert_path,
                                     self.tls.key_path, tls=self.tls_enabled)
        self.port = self.server.server_address[1]
        scheme = "https" if self.tls_enabled else "http"
        self.server_url = f"{scheme}://127.0.0.1:{self.port}"
        self.org_url = f"{self.server_url}/{self.org}"
        self.base_url = self.org_url
        self.authority_host = f"https://localhost:{self.port}"  # no Entra ID on-premises
        self.entra = Entra(self.authority_host, self.org_url, self.knobs["token_lifetime"])
        self.dataverse = OnPremDataverse(self)
        self.faults.entity_sets = {td.logical: td.entity_set for td in self.store.tables.values()}
        self._store_dir = tempfile.mkdtemp(prefix="onprem-ntlm-")
        self.user_file = os.path.join(self._store_dir, "ntlm-users")
        self._write_user_file()
        self._thread = serve_in_thread(self.server)
        return self

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(getattr(self, "_store_dir", ""), ignore_errors=True)

    def _write_user_file(self) -> None:
        domain, sep, user = self.username.partition("\\")
        line = f"{domain}:{user}:{self.password}" if sep else f":{self.username}:{self.password}"
        with open(self.user_file, "w", encoding="utf-8") as handle:
            handle.write(line + "\n")
        os.chmod(self.user_file, 0o600)

    def set_password(self, password: str) -> None:
        """Change the account's password (signed-in connections stay signed in, as in AD)."""
        self.password = password
        self._write_user_file()

    def tap_config(self) -> dict[str, Any]:
        if self.auth == "adfs":
            config: dict[str, Any] = {"url": self.org_url, "auth_scheme": "ADFS", "crm_version": "CRM2011+",
                                      "authority_host": self.authority_host,
                                      "client_id": DEFAULT_ADFS_CLIENT, "client_secret": DEFAULT_ADFS_SECRET}
        else:
            config = {"url": self.org_url, "auth_scheme": "NTLM", "crm_version": "CRM2011+",
                      "username": self.username, "password": self.password}
        if self.tls_enabled:
            config["ca_bundle"] = self.ca_path
        else:
            config["allow_http"] = True
        return config

    # ------------------------------------------------------------ Windows authentication
    def connection_closed(self, connection_id: str) -> None:
        with self._lock:
            self._connections.pop(connection_id, None)

    def _step(self, state: dict[str, Any], token: bytes) -> bytes | None:
        with _ACCEPTOR_LOCK:
            previous = os.environ.get("NTLM_USER_FILE")
            os.environ["NTLM_USER_FILE"] = self.user_file
            try:
                if token[8:12] == b"\x01\x00\x00\x00":  # NEGOTIATE: a new handshake
                    state["context"] = spnego.server(protocol="ntlm")
                context = state.get("context")
                if context is None:
                    raise spnego.exceptions.InvalidTokenError(context_msg="no handshake on this connection")
                out = context.step(token)
            finally:
                if previous is None:
                    os.environ.pop("NTLM_USER_FILE", None)
                else:
                    os.environ["NTLM_USER_FILE"] = previous
        if context.complete:
            state.pop("context", None)
            state["user"] = context.client_principal or self.username
        return out

    def _windows_auth(self, headers: dict[str, str]) -> tuple[int, list, bytes] | None:
        """None when the connection is signed in (now or before); else the 401 to send."""
        connection = headers.get("x-emulator-connection", "")
        with self._lock:
            state = self._connections.setdefault(connection, {})
        scheme, _, value = headers.get("authorization", "").strip().partition(" ")
        plain = [("Content-Type", "text/html")]
        if scheme.lower() not in ("ntlm", "negotiate") or not value.strip():
            if state.get("user"):
                state["requests"] = state.get("requests", 0) + 1
                if self.signin_max_requests is None or state["requests"] <= self.signin_max_requests:
                    headers["x-emulator-windows-user"] = state["user"]
                    return None
                state.clear()  # signed out: the 401 below starts a new handshake
            return 401, plain + CHALLENGES, UNAUTHORIZED
        try:
            token = base64.b64decode(value.strip(), validate=True)
        except ValueError:
            token = b""
        if not token.startswith(b"NTLMSSP\x00"):  # Kerberos or garbage: no KDC here
            state.clear()
            return 401, plain + CHALLENGES, UNAUTHORIZED
        try:
            out = self._step(state, token)
        except (spnego.exceptions.SpnegoError, ValueError):
            state.clear()
            with self._lock:
                self.failed_logons += 1
            return 401, plain + CHALLENGES, UNAUTHORIZED
        if "user" not in state:  # CHALLENGE leg
            return 401, plain + [("WWW-Authenticate", f"{scheme} {base64.b64encode(out or b'').decode()}")], b""
        with self._lock:
            self.windows_logons.append(state["user"])
        headers["x-emulator-windows-user"] = state["user"]
        return None

    # ------------------------------------------------------------ AD FS
    def _adfs(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes]:
        js = [("Content-Type", "application/json;charset=UTF-8"), ("Cache-Control", "no-store")]
        base = f"{self.authority_host}/adfs"
        if path.rstrip("/") == "/adfs/.well-known/openid-configuration" and method == "GET":
            return 200, js, orjson.dumps({
                "issuer": base, "authorization_endpoint": f"{base}/oauth2/authorize/",
                "token_endpoint": f"{base}/oauth2/token/", "jwks_uri": f"{base}/discovery/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic",
                                                          "private_key_jwt", "windows_client_authentication"],
                "response_types_supported": ["code", "id_token", "code id_token", "token"],
                "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
                                          "password", "urn:ietf:params:oauth:grant-type:device_code"],
                "access_token_issuer": f"http://{urllib.parse.urlsplit(base).netloc}/adfs/services/trust"})
        if path.rstrip("/") != "/adfs/oauth2/token" or method != "POST":
            return 404, [("Content-Type", "text/html")], b"<h2>404 - File or directory not found.</h2>"
        with self._lock:
            self.adfs_token_requests += 1
            self._stats["token_requests"] += 1
        fault = self.entra.token_fault()  # entra.py's token-endpoint faults apply to AD FS too
        if fault is not None:
            return fault
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            user, _, pwd = base64.b64decode(auth[6:]).decode("utf-8", "replace").partition(":")
            client_id, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(pwd)

        def error(status: int, code: str, text: str) -> tuple[int, list, bytes]:
            return status, js, orjson.dumps({"error": code, "error_description": text})

        if form.get("grant_type") != "client_credentials":
            return error(400, "unsupported_grant_type", "MSIS9611: The authorization server does not "
                         "support the requested 'grant_type'. The authorization server only supports "
                         "'client_credentials' in this emulator.")
        if client_id not in self.adfs_clients:
            return error(400, "invalid_client", "MSIS9223: Received invalid OAuth authorization request. "
                         "The received 'client_id' is invalid as no registered client was found with "
                         "this client identifier.")
        if secret != self.adfs_clients[client_id]:
            return error(401, "invalid_client", "MSIS9622: Client authentication failed. Please verify "
                         "the credential provided for client authentication is valid.")
        resource = form.get("resource") or ""
        if not resource:
            for scope in form.get("scope", "").split():
                if scope.endswith("/.default"):
                    resource = scope[: -len("/.default")]
        if resource.rstrip("/").lower() != self.server_url.lower():
            return error(400, "invalid_resource", "MSIS9602: The received 'resource' parameter is not "
                         f"valid: no relying party trust has the identifier '{resource}'.")
        token = "adfs." + secrets.token_urlsafe(32)
        lifetime = int(self.knobs["token_lifetime"])
        with self._lock:
            self.adfs_tokens[token] = (client_id, time.time() + lifetime)
            self.issued_tokens.append(token)
        ISSUED_SECRETS.add(token)
        return 200, js, orjson.dumps({"access_token": token, "token_type": "bearer",
                                      "expires_in": lifetime, "resource": resource})

    # ------------------------------------------------------------ dispatch
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes):
        if target.startswith("/_emulator/"):
            return super().handle(method, target, headers, body)
        headers.pop("x-emulator-windows-user", None)  # only _windows_auth may set it
        if self.auth == "adfs" and target.lower().startswith("/adfs/"):
            path = target.partition("?")[0]
            status, hdrs, payload = self._adfs(method, path, headers, body)
            with self._lock:
                self._stats["requests"] += 1
                self._log.append((method, path, status))
            return status, hdrs, payload
        prefix = f"/{self.org}"
        rest = target[len(prefix):] if target.lower().startswith(prefix.lower() + "/") else None
        # IIS authenticates the whole site first (Windows auth); AD FS tokens are checked per request.
        denied = self._windows_auth(headers) if self.auth == "ntlm" else None
        if denied is None and rest is not None:
            m = re.match(r"^/api/data/(v\d+\.\d+)(?:[/?]|$)", rest)
            if m and m.group(1) not in self.versions:
                err = {"error": {"code": "0x8006088a",
                                 "message": f"Resource not found for the segment '{m.group(1)}'."}}
                denied = 404, self.dataverse.headers(), orjson.dumps(err)
            elif m:
                self.dataverse.request_version.value = m.group(1)
                return super().handle(method, rest, headers, body)
        if denied is None:
            denied = 404, [("Content-Type", "text/html")], b"<h2>404 - File or directory not found.</h2>"
        status, hdrs, payload = denied
        with self._lock:  # counted like every other request (tests assert "no request at all")
            self._stats["requests"] += 1
            self._stats["errors_4xx"] += 1
            self._log.append((method, target.partition("?")[0], status))
        return status, hdrs, payload
