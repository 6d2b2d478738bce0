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

- ``server_version`` is the product's newest Web API version: a 9.1 server serves v8.0-v9.1,
  a CRM 2016 one (8.2) v8.0-v8.2 and no virtual tables (they arrived with 9.0).

    with OnPremEmulator(rows={"account": 100}, tls=False) as emu:
        config = emu.tap_config()   # auth_scheme NTLM, username, password, url with /{org}
    python -m tests.emulator --onprem --onprem-http   # the same, out of process
"""

from __future__ import annotations

import base64
import os
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
from .entra import Entra
from .odata import ODataError
from .server import EmulatorServer, serve_in_thread
from .store import Store
from .tls import make_tls

DEFAULT_ORG = "contoso"
DEFAULT_USERNAME = "CONTOSO\\svc-tap"
DEFAULT_PASSWORD = "Winter-Pa55word!onprem"
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
        """Windows authentication already happened on the connection (OnPremEmulator.handle)."""
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
                 tls: bool = True, server_version: str = "9.1", **kw: Any):
        super().__init__(rows, **kw)
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
        config: dict[str, Any] = {"url": self.org_url, "auth_scheme": "NTLM", "crm_version": "CRM2011+",
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
                headers["x-emulator-windows-user"] = state["user"]
                return None
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

    # ------------------------------------------------------------ dispatch
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes):
        if target.startswith("/_emulator/"):
            return super().handle(method, target, headers, body)
        prefix = f"/{self.org}"
        rest = target[len(prefix):] if target.lower().startswith(prefix.lower() + "/") else None
        denied = self._windows_auth(headers)  # IIS authenticates the whole site first
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
