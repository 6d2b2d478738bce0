"""HTTPS server: ``ThreadingHTTPServer`` + ``ssl`` with HTTP/1.1 keep-alive.

Why so plain: the tap under test uses ``requests``/MSAL over real TLS, so the emulator must
speak real HTTPS, keep connections alive (every response carries ``Content-Length``) and
serve concurrent requests (one thread per connection) so tests can observe the tap's
in-flight concurrency. The TLS handshake runs in the connection's thread, not in the accept
loop, so a slow client cannot stall the server.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .faults import CutBody

# Connection numbers: connection-oriented auth (NTLM signs a TCP connection in, not a request)
# needs to know which requests share a connection. Never reused, unlike thread ids or id().
_CONNECTION_IDS = itertools.count(1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = 300

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def setup(self) -> None:
        super().setup()
        self.connection_id = str(next(_CONNECTION_IDS))

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            closed = getattr(self.server.app, "connection_closed", None)
            if closed is not None:
                closed(self.connection_id)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        headers["x-emulator-connection"] = self.connection_id  # set here: a client cannot forge it
        status, hdrs, payload = self.server.app.handle(self.command, self.path, headers, body)
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        head = [f"HTTP/1.1 {status} {reason}"]
        head += [f"{k}: {v}" for k, v in hdrs]
        head.append(f"Content-Length: {len(payload)}")
        if self.close_connection:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if isinstance(payload, CutBody):  # fault: announce the whole body, send half, hang up
            self.wfile.write(data + payload[: payload.send])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if len(payload) < 65536:
            self.wfile.write(data + payload)
        else:
            self.wfile.write(data)
            self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch  # noqa: N815 - http.server's names


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, app: Any, cert_path: str, key_path: str,
                 tls: bool = True):
        super().__init__((host, port), Handler)
        self.app = app
        self.tls = tls  # False: plain http:// (the on-premises allow_http tests)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path, key_path)
        self.ssl_context = ctx

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.tls:
            return sock, addr
        return self.ssl_context.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if not self.tls:
            super().finish_request(request, client_address)
            return
        try:
            request.settimeout(30)
            request.do_handshake()
            request.settimeout(None)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # client disconnects mid-response are normal in tests


def serve_in_thread(server: EmulatorServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         name="dynamics-emulator", daemon=True)
    t.start()
    return t
