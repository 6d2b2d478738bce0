"""The host: one TLS port serving many Microsoft services, routed by path.

A request goes one way through the host (:meth:`Host.handle`):

    /_emulator/…  → control API (no auth, not counted)
    route         → the first registered service whose :meth:`~Service.match` takes the path
    gate          → the web server in front of it (IIS Windows sign-in, served versions)
    serve_body    → a scripted answer for the path, if one is configured
    faults.before → revoked token, the service's own refusals, rate faults (the service's
                    adapter shapes them), the service's too-large-request failure
    service       → the real answer
    faults.after  → damage on the way out (dropped connection, truncated or malformed body)

and every request, whoever answers it, is counted once in :class:`~.stats.Stats` and in the
request log (with the path the service saw). A deployment (``emulator.online.Emulator``,
``emulator.onprem.OnPremEmulator``) subclasses :class:`Host`, lists its service classes in
``service_classes`` (their knobs become constructor keywords) and builds them in :meth:`build`.
"""

from __future__ import annotations

import shutil
import time
import traceback
from typing import Any, ClassVar

import orjson

from .control import control
from .faults import DEFAULTS as FAULT_DEFAULTS
from .faults import Faults
from .gates import Gate
from .server import EmulatorServer, serve_in_thread
from .service import INTERNAL_ERROR, NOT_FOUND, Request, Response, Service
from .stats import Stats
from .tls import make_tls

CORE_KNOBS: dict[str, Any] = {
    "latency_ms": 0,
    # "all": latency_ms delays every request; "pages": only data pages (large pages are what is
    # slow to serve; metadata and token calls stay fast)
    "latency_scope": "all",
    "token_lifetime": 3600,
}


class Host:
    """Services on one port. ``start()`` creates the TLS material, binds, builds and serves."""

    service_classes: ClassVar[tuple[type[Service], ...]] = ()

    def __init__(self, port: int = 0, host: str = "127.0.0.1", tls: bool = True, **knobs: Any):
        self.port = port
        self.host = host
        self.tls_enabled = tls
        self.knobs: dict[str, Any] = {**CORE_KNOBS, **FAULT_DEFAULTS}
        for cls in self.service_classes:
            self.knobs.update(cls.KNOBS)
            self.knobs.update(cls.fault_adapter_class.KNOBS)
        unknown = set(knobs) - set(self.knobs)
        if unknown:
            raise TypeError(f"unknown emulator options {sorted(unknown)}; "
                            f"knobs: {sorted(self.knobs)}")
        self.knobs.update(knobs)
        self.faults = Faults(self.knobs)
        self.statistics = Stats()
        self.issued_tokens: list[str] = []  # every access token handed out (secret-leak checks)
        self.services: dict[str, Service] = {}
        self.routes: list[Service] = []
        self.server: EmulatorServer | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Any:
        self.tls = make_tls()
        self.ca_path = self.tls.ca_path
        self.server = EmulatorServer(self.host, self.port, self, self.tls.cert_path, self.tls.key_path,
                                     tls=self.tls_enabled)
        self.port = self.server.server_address[1]
        scheme = "https" if self.tls_enabled else "http"
        self.server_url = f"{scheme}://127.0.0.1:{self.port}"
        # The identity provider's host name: another name for the same port, so tests can check
        # that bearer tokens only go to the service's host. Always https (MSAL insists).
        self.authority_host = f"https://localhost:{self.port}"
        try:
            self.build()
        except BaseException:
            self.stop()
            raise
        self._thread = serve_in_thread(self.server)
        return self

    def build(self) -> None:
        """Create and :meth:`register` the services (the port and URLs are known here)."""

    def register(self, service: Service) -> Service:
        """Serve ``service``: routes are tried in registration order."""
        if service.name in self.services:
            raise ValueError(f"a service named {service.name!r} is already registered")
        self.services[service.name] = service
        self.routes.append(service)
        return service

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
            shutil.rmtree(self.tls.directory, ignore_errors=True)
            for service in self.routes:
                service.stop()

    def __enter__(self) -> Any:
        return self.start() if self.server is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def tap_config(self) -> dict[str, Any]:
        """The tap's config for this deployment (the deployment knows its auth scheme)."""
        raise NotImplementedError

    # ------------------------------------------------------------ knobs, stats, tokens
    def set(self, **knobs: Any) -> None:
        unknown = set(knobs) - set(self.knobs)
        if unknown:
            raise ValueError(f"unknown knobs {sorted(unknown)}; known: {sorted(self.knobs)}")
        self.knobs.update(knobs)

    def reset_stats(self) -> None:
        self.statistics.reset()
        self.faults.reset()

    def stats(self) -> dict[str, Any]:
        return self.statistics.snapshot()

    def request_log(self) -> list[tuple[str, str, int]]:
        """(method, path as its service saw it, status) of the requests since reset_stats()."""
        return self.statistics.log()

    def query_log(self) -> list[tuple[str, str, str]]:
        """(decoded path, raw query, Prefer header) of the data requests since reset_stats()."""
        return self.statistics.queries()

    def gate(self, pattern: str, open_at: int | None = None, timeout_s: float = 120.0) -> Gate:
        """Hold admitted requests matching ``pattern`` (a regex on the decoded path and query)
        in flight until the gate opens (see :class:`~emulator.core.gates.Gate`)."""
        gate = Gate(pattern, open_at, timeout_s)
        self.faults.gates.append(gate)
        return gate

    def hold(self, target: str) -> None:
        """Called by a service for each request it admitted (the gates may keep it waiting)."""
        for gate in list(self.faults.gates):
            gate.hold(target)

    def count_page(self, rows: int) -> None:
        lat = self.knobs["latency_ms"]
        if lat and self.knobs["latency_scope"] == "pages":
            time.sleep(lat / 1000.0)  # the page's serving time (no lock held here)
        self.statistics.page(rows)

    def token_issued(self, token: str) -> None:
        """A token endpoint handed ``token`` out (leak checks, ``token_revoke_after_s``)."""
        self.issued_tokens.append(token)
        self.faults.issued_at[token] = time.time()

    def connection_closed(self, connection_id: str) -> None:
        for service in self.routes:
            service.connection_closed(connection_id)

    # ------------------------------------------------------------ dispatch
    def route(self, path: str) -> tuple[Service, str] | tuple[None, None]:
        for service in self.routes:
            rest = service.match(path)
            if rest is not None:
                return service, rest
        return None, None

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        if target.startswith("/_emulator/"):
            req = Request.parse(method, target, headers, body)
            try:
                return control(self, req)
            except Exception as e:  # control API errors are for humans
                return 400, [("Content-Type", "application/json")], orjson.dumps(
                    {"error": type(e).__name__, "message": str(e)})
        # Only the server and the gates may set these (a client cannot forge a sign-in).
        for name in [h for h in headers if h.startswith("x-emulator-") and h != "x-emulator-connection"]:
            del headers[name]
        self.statistics.begin()
        status, log_path, payload = 500, target.partition("?")[0], b""
        service: Service | None = None
        try:
            lat = self.knobs["latency_ms"]
            if lat and self.knobs["latency_scope"] != "pages":
                time.sleep(lat / 1000.0)
            req = Request.parse(method, target, headers, body)
            service, rest = self.route(req.path)
            if service is None:
                status, hdrs, payload = self.faults.served(req.path) or NOT_FOUND
                return status, hdrs, payload
            mount_len = len(req.path) - len(rest)
            if mount_len:  # the service sees paths relative to its mount
                req = Request.parse(method, target[mount_len:], headers, body, mount=req.path[:mount_len])
            log_path = req.path
            status, hdrs, payload = self._serve(service, req)
            return status, hdrs, payload
        except Exception:
            traceback.print_exc()
            status, hdrs, payload = service.internal_error() if service is not None else INTERNAL_ERROR
            return status, hdrs, payload
        finally:
            self.statistics.end(method, log_path, status, len(payload))

    def _serve(self, service: Service, req: Request) -> Response:
        denied = service.gate(req)
        if denied is not None:
            return denied
        service.received(req)
        answer = self.faults.served(req.path)
        if answer is None:
            injected, decision = self.faults.before(service, req)
            answer = injected if injected is not None else self.faults.after(decision, service.handle(req))
        status, hdrs, payload = service.respond(req, answer)
        return status, [*hdrs, *req.response_headers], payload
