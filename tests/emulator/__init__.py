"""Microsoft cloud emulator for tap-dynamics: Entra ID + Dataverse Web API over real HTTPS.

One server, one port, two host names: the org URL ``https://127.0.0.1:PORT`` and the
authority host ``https://localhost:PORT`` (so tests can check that bearer tokens only go to
the org). Routing is by path; any Host header is accepted.

    from tests.emulator import Emulator
    with Emulator(rows={"account": 1000}) as emu:
        requests.get(emu.org_url + "/api/data/v9.2/WhoAmI", verify=emu.ca_path, ...)

See ``dataverse.py`` / ``entra.py`` for the protocol, ``store.py`` for data and mutations and
the ``/_emulator/`` control API below for out-of-process use.
"""

from __future__ import annotations

import re
import shutil
import collections
import email.utils
import threading
import time
import traceback
import urllib.parse
from typing import Any

import orjson

from .dataverse import Dataverse, Request
from .entra import DEFAULT_CLIENT, DEFAULT_SECRET, DEFAULT_TENANT, Entra
from .faults import DEFAULTS as FAULT_DEFAULTS
from .faults import Faults, Gate
from .server import EmulatorServer, serve_in_thread
from .store import Store
from .tls import make_tls

__all__ = ["Emulator"]

DEFAULT_ROWS = {"account": 200, "contact": 100, "systemuser": 10}


class Emulator:
    """In-process emulator. ``start()`` generates data, creates TLS material and serves."""

    def __init__(self, rows: dict[str, int] | None = None, seed: int = 42, latency_ms: float = 0,
                 token_lifetime: int = 3600, port: int = 0, host: str = "127.0.0.1",
                 change_tracking_expiry_seconds: float = 7 * 86400, top_wins: bool = True,
                 org_tables: int = 0, clones: dict[str, int] | None = None,
                 latency_scope: str = "all", **faults: Any):
        self._rows_cfg = dict(DEFAULT_ROWS if rows is None else rows)
        self.org_tables = org_tables  # extra synthetic ~150-column tables (discovery benchmark)
        # table -> N: also serve <table>_1..<table>_N with the same rows (benchmarks)
        self._clones = dict(clones or {})
        self.seed = seed
        self.port = port
        self.host = host
        self.knobs: dict[str, Any] = {
            "latency_ms": latency_ms, "token_lifetime": token_lifetime,
            "change_tracking_expiry_seconds": change_tracking_expiry_seconds,
            # the HTTP status of the expired-token error (observed: 400; the code is what counts)
            "change_tracking_expiry_status": 400,
            "top_wins": top_wins,
            # "all": latency_ms delays every request; "pages": only data pages (large pages are
            # what is slow to serve; metadata and token calls stay fast)
            "latency_scope": latency_scope,
        }
        unknown = set(faults) - set(FAULT_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown emulator options {sorted(unknown)}; faults: {sorted(FAULT_DEFAULTS)}")
        self.knobs.update({**FAULT_DEFAULTS, **faults})
        self.faults = Faults(self.knobs)
        self.issued_tokens: list[str] = []  # every access token handed out (secret-leak checks)
        self.tenant_id, self.client_id, self.client_secret = DEFAULT_TENANT, DEFAULT_CLIENT, DEFAULT_SECRET
        self._lock = threading.Lock()
        self.reset_stats()
        self.server: EmulatorServer | None = None
        self.store: Store | None = None
        self.entra: Entra | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Emulator:
        self.store = Store(self._rows_cfg, self.seed, self.org_tables, self._clones)
        self.tls = make_tls()
        self.ca_path = self.tls.ca_path
        self.server = EmulatorServer(self.host, self.port, self, self.tls.cert_path, self.tls.key_path)
        self.port = self.server.server_address[1]
        self.org_url = f"https://127.0.0.1:{self.port}"
        self.base_url = self.org_url
        self.authority_host = f"https://localhost:{self.port}"
        self.entra = Entra(self.authority_host, self.org_url, self.knobs["token_lifetime"])
        self.dataverse = Dataverse(self)
        self.faults.entity_sets = {td.logical: td.entity_set for td in self.store.tables.values()}
        self._thread = serve_in_thread(self.server)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
            shutil.rmtree(self.tls.directory, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start() if self.server is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------ public API
    def tap_config(self) -> dict[str, str]:
        return {"url": self.org_url, "tenant_id": self.tenant_id, "client_id": self.client_id,
                "client_secret": self.client_secret, "authority_host": self.authority_host,
                "ca_bundle": self.ca_path}

    def register_app(self, client_id: str, secret: str = DEFAULT_SECRET, tenant_id: str | None = None,
                     secret_expired: bool = False, consent: bool = True,
                     application_user: bool = True, **more):
        """``more``: certificate=, redirect_uris=, public_client=, managed_identity= (entra.py)."""
        return self.entra.register_app(client_id, secret, tenant_id, secret_expired, consent,
                                       application_user, **more)

    def issue_token(self, client_id: str | None = None, lifetime: int | None = None,
                    audience: str | None = None) -> str:
        """A bearer token minted directly (tests of expiry / audience without a token call)."""
        app = self.entra.apps[(client_id or self.client_id).lower()]
        return self.entra.issue(app, lifetime, audience)

    def insert(self, table: str, values: dict | None = None, *, commit_after: float = 0) -> dict:
        """Insert a row; ``commit_after`` > 0: a late commit (see :meth:`Store.insert`)."""
        return self.store.insert(table, values, commit_after=commit_after)

    def update(self, table: str, row_id: str, values: dict, *, commit_after: float = 0) -> dict:
        """Update a row; ``commit_after`` > 0: a late commit (see :meth:`Store.insert`)."""
        return self.store.update(table, row_id, values, commit_after=commit_after)

    def delete(self, table: str, row_id: str) -> None:
        self.store.delete(table, row_id)

    def advance_clock(self, seconds: float) -> None:
        self.store.advance_clock(seconds)

    def rows(self, table: str) -> list[dict]:
        return self.store.rows(table)

    def set(self, **knobs: Any) -> None:
        unknown = set(knobs) - set(self.knobs)
        if unknown:
            raise ValueError(f"unknown knobs {sorted(unknown)}; known: {sorted(self.knobs)}")
        self.knobs.update(knobs)
        if "token_lifetime" in knobs and self.entra is not None:
            self.entra.token_lifetime = knobs["token_lifetime"]

    # ------------------------------------------------------------ stats
    def reset_stats(self) -> None:
        with self._lock:
            self._stats = {"requests": 0, "data_pages": 0, "rows_served": 0, "token_requests": 0,
                           "max_in_flight": 0, "errors_4xx": 0, "errors_5xx": 0,
                           "bytes_served": 0}
            self._log: collections.deque = collections.deque(maxlen=100_000)
            self._queries: collections.deque = collections.deque(maxlen=100_000)
            self._in_flight = 0
            self._in_flight_since = time.perf_counter()
            self._in_flight_seconds = 0.0  # the integral of in-flight requests over time
            self._first_page: float | None = None
            self._last_page: float | None = None
        if hasattr(self, "faults"):
            self.faults.reset()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = dict(self._stats)
            s["in_flight"] = self._in_flight
            self._flight(0)
            s["in_flight_seconds"] = round(self._in_flight_seconds, 3)
            span = (self._last_page - self._first_page) if self._first_page else 0.0
            s["data_seconds"] = round(span, 4)
            s["pages_per_s"] = round(s["data_pages"] / span, 2) if span > 0 else 0.0
            s["rows_per_s"] = round(s["rows_served"] / span, 1) if span > 0 else 0.0
        return s

    def _flight(self, change: int) -> None:
        """Change the in-flight count (lock held), integrating it over time for the benchmark:
        in-flight seconds / data seconds is the concurrency a client really achieved."""
        now = time.perf_counter()
        self._in_flight_seconds += self._in_flight * (now - self._in_flight_since)
        self._in_flight_since = now
        self._in_flight += change

    def request_log(self) -> list[tuple[str, str, int]]:
        """(method, decoded path, status) of the API requests since the last reset_stats()."""
        with self._lock:
            return list(self._log)

    def query_log(self) -> list[tuple[str, str, str]]:
        """(decoded path, raw query, Prefer header) of the Web API requests since reset_stats()."""
        with self._lock:
            return list(self._queries)

    def count_page(self, rows: int) -> None:
        lat = self.knobs["latency_ms"]
        if lat and self.knobs["latency_scope"] == "pages":
            time.sleep(lat / 1000.0)  # the page's serving time (no lock held here)
        now = time.perf_counter()
        with self._lock:
            self._stats["data_pages"] += 1
            self._stats["rows_served"] += rows
            if self._first_page is None:
                self._first_page = self._request_started.get(threading.get_ident(), now)
            self._last_page = now

    def gate(self, pattern: str, open_at: int | None = None, timeout_s: float = 120.0) -> Gate:
        """Hold Web API requests matching ``pattern`` (a regex on the decoded path and query)
        in flight until the gate opens (see :class:`~tests.emulator.faults.Gate`)."""
        gate = Gate(pattern, open_at, timeout_s)
        self.faults.gates.append(gate)
        return gate

    # ------------------------------------------------------------ dispatch
    _request_started: dict[int, float] = {}

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes):
        path_raw, _, query = target.partition("?")
        path = urllib.parse.unquote(path_raw)
        if path.startswith("/_emulator/"):
            try:
                return self.control(method, path, query, body)
            except Exception as e:  # control API errors are for humans
                return 400, [("Content-Type", "application/json")], orjson.dumps(
                    {"error": type(e).__name__, "message": str(e)})
        with self._lock:
            self._flight(+1)
            self._stats["requests"] += 1
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._in_flight)
        self._request_started[threading.get_ident()] = time.perf_counter()
        try:
            lat = self.knobs["latency_ms"]
            if lat and self.knobs["latency_scope"] != "pages":
                time.sleep(lat / 1000.0)
            try:
                injected, nth, may_fault = self.faults.before(method, path, target, headers)
                if injected is None:
                    injected = self._oversized(path, target, headers)
                if injected is not None:
                    status, hdrs, payload = injected
                else:
                    status, hdrs, payload = self._route(method, path, query, headers, body)
                    if path.startswith("/api/data/"):
                        status, hdrs, payload = self.faults.after(target, nth, may_fault,
                                                                  (status, hdrs, payload))
            except Exception:
                traceback.print_exc()
                status, hdrs, payload = 500, [("Content-Type", "application/json")], orjson.dumps(
                    {"error": {"code": "0x80040216", "message": "An unexpected error occurred."}})
            if path.startswith("/api/data/"):
                # Dataverse dates every response; here by the emulator's clock, which is the
                # clock its rows are stamped with (a tap compares its bookmarks with it).
                hdrs = [*hdrs, ("Date", email.utils.formatdate(self.store.clock, usegmt=True))]
            with self._lock:
                self._log.append((method, path, status))
                if path.startswith("/api/data/"):
                    self._queries.append((path, query, headers.get("prefer", "")))
                self._stats["bytes_served"] += len(payload)
                if 400 <= status < 500:
                    self._stats["errors_4xx"] += 1
                elif status >= 500:
                    self._stats["errors_5xx"] += 1
            return status, hdrs, payload
        finally:
            with self._lock:
                self._flight(-1)

    def _oversized(self, path: str, target: str, headers: dict[str, str]):
        """The page-size fault: a collection page bigger than ``page_size_limit`` fails."""
        if self.knobs["page_size_limit"] is None or not path.startswith("/api/data/"):
            return None
        if not re.match(r"^/api/data/v9\.\d/(?!EntityDefinitions)[A-Za-z_]\w*$", path):
            return None
        m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", headers.get("prefer", ""))
        size = int(m.group(1)) if m else 5000
        top = re.search(r"(?:^|[?&])(?:\$|%24)top=(\d+)", target)
        if top:  # a $top query answers at most that many rows, whatever the page size
            size = min(size, int(top.group(1)))
        answer = self.faults.oversized(target, size)
        if answer is not None and self.knobs["page_size_limit_mode"] == "timeout":
            with self._lock:
                self._flight(-1)  # the server gave up on it; so (we expect) did the client
            try:
                time.sleep(float(self.knobs["page_size_limit_delay_s"]))
            finally:
                with self._lock:
                    self._flight(+1)
        return answer

    def _route(self, method, path, query, headers, body):
        if path.startswith("/api/data/"):
            q = {}
            for piece in query.split("&"):
                if piece:
                    k, _, v = piece.partition("=")
                    q[urllib.parse.unquote_plus(k)] = urllib.parse.unquote_plus(v)
            return self.dataverse.handle(Request(method, path, query, dict(headers), body, q))
        parts = path.strip("/").split("/")
        js = [("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "no-store, no-cache"),
              ("x-ms-request-id", _uuid()), ("x-ms-ests-server", "2.1.emulated")]
        if path == "/common/discovery/instance":
            q = dict(urllib.parse.parse_qsl(query))
            status, obj = self.entra.instance_discovery(q)
            return status, js, orjson.dumps(obj)
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            status, obj = self.entra.openid_configuration(parts[0])
            return status, js, orjson.dumps(obj)
        if len(parts) == 4 and parts[1:] == ["discovery", "v2.0", "keys"]:
            return 200, js, b'{"keys":[]}'
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            if method != "POST":
                return 405, js, b'{"error":"invalid_request"}'
            with self._lock:
                self._stats["token_requests"] += 1
            fault = self.entra.token_fault()
            if fault is not None:
                return fault
            form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            status, obj = self.entra.token(parts[0], form, headers)
            if isinstance(obj, dict) and obj.get("access_token"):
                self.issued_tokens.append(str(obj["access_token"]))
                self.faults.issued_at[str(obj["access_token"])] = time.time()
            return status, js, orjson.dumps(obj)
        routed = self.entra.route(method, path, query, dict(headers), body)  # user flows, MSI
        if routed is not None:
            return routed
        return 404, [("Content-Type", "text/html")], b"<h2>404 - File or directory not found.</h2>"

    # ------------------------------------------------------------ control API (no auth)
    def control(self, method: str, path: str, query: str, body: bytes):
        js = [("Content-Type", "application/json")]
        data = orjson.loads(body) if body else {}
        parts = path.strip("/").split("/")[1:]
        if parts == ["stats"] and method == "GET":
            return 200, js, orjson.dumps(self.stats())
        if parts == ["stats", "reset"] and method == "POST":
            self.reset_stats()
            return 200, js, orjson.dumps(self.stats())
        if parts == ["config"] and method == "GET":
            return 200, js, orjson.dumps(self.tap_config())
        if parts == ["clock", "advance"] and method == "POST":
            self.advance_clock(float(data.get("seconds", 0)))
            return 200, js, orjson.dumps({"clock": self.store.now_iso()})
        if parts == ["set"] and method == "POST":
            self.set(**data)
            return 200, js, orjson.dumps(self.knobs)
        if parts == ["token_faults"] and method == "POST":  # entra.py: fail_token_requests
            self.entra.fail_token_requests(**data)
            return 200, js, orjson.dumps({"pending": len(self.entra.token_faults)})
        if parts == ["apps"] and method == "POST":
            app = self.register_app(**data)
            return 200, js, orjson.dumps({"client_id": app.client_id, "tenant_id": app.tenant_id})
        if len(parts) >= 3 and parts[0] == "tables" and parts[2] == "rows":
            table = parts[1]
            if len(parts) == 3 and method == "GET":
                ts = self.store.table(table)
                blobs = [r.blob for r in sorted(list(ts.rows.values()), key=lambda r: r.pk)]
                return 200, js, b'{"value":[' + b",".join(blobs) + b"]}"
            if len(parts) == 3 and method == "POST":
                return 201, js, orjson.dumps(self.insert(table, data or None), default=_frag)
            if len(parts) == 4 and method == "PATCH":
                return 200, js, orjson.dumps(self.update(table, parts[3], data), default=_frag)
            if len(parts) == 4 and method == "DELETE":
                self.delete(table, parts[3])
                return 204, [], b""
        return 404, js, b'{"error":"unknown control endpoint"}'


def _uuid() -> str:
    import uuid
    return str(uuid.uuid4())


def _frag(o: Any) -> Any:
    """Decimals as exact JSON numbers in control-API answers."""
    return orjson.Fragment(str(o))
