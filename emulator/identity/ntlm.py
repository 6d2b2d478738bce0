"""Windows sign-in as IIS does it in front of an on-premises server: NTLM, and Kerberos.

An anonymous request gets 401 with two challenges, ``WWW-Authenticate: Negotiate`` and
``WWW-Authenticate: NTLM``. The NTLM handshake (NEGOTIATE -> 401 CHALLENGE -> AUTHENTICATE)
is verified for real with pyspnego's acceptor against the configured account and password,
and it signs the *TCP connection* in: later requests on that keep-alive connection need no
Authorization header, and a handshake split over two connections fails, as it does against IIS.

With a Kerberos acceptor (:mod:`.kerberos`), ``Negotiate`` also takes Kerberos tickets; with
NTLM switched off (IIS's providers list without NTLM, or NTLM blocked in the domain) the only
challenge is ``WWW-Authenticate: Negotiate`` and an NTLM token, in either header, is refused.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import threading
from typing import Any

import spnego
import spnego.exceptions

from ..core.service import Request, Response
from . import user_object_id
from .kerberos import KerberosAcceptor, KerberosRefused

CHALLENGES = [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")]
KERBEROS_ONLY_CHALLENGES = [("WWW-Authenticate", "Negotiate")]
UNAUTHORIZED = b"<h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>"

# pyspnego's NTLM acceptor reads its accounts from the file named by NTLM_USER_FILE. The
# variable is set only while an acceptor steps, under this lock, so that emulators with
# different accounts coexist and no tap subprocess inherits a credential store it could
# silently fall back on.
_ACCEPTOR_LOCK = threading.Lock()


class WindowsSignIn:
    """One Windows account and the connections it signed in (NTLM, and Kerberos if given)."""

    def __init__(self, username: str, password: str, *, ntlm: bool = True,
                 kerberos: KerberosAcceptor | None = None) -> None:
        if not ntlm and kerberos is None:
            raise ValueError("Windows sign-in needs NTLM or a Kerberos acceptor")
        self.username = username
        self.password = password
        self.ntlm = ntlm
        self.kerberos = kerberos
        self.challenges = CHALLENGES if ntlm else KERBEROS_ONLY_CHALLENGES
        self.refused_ntlm = 0  # NTLM tokens refused because NTLM is switched off
        self._lock = threading.Lock()
        self._connections: dict[str, dict[str, Any]] = {}
        self.windows_logons: list[str] = []  # accounts signed in, one entry per connection
        self.failed_logons = 0
        # A connection's sign-in is forgotten after this many requests (None: never), as when
        # IIS recycles its worker process: the next request gets 401 and a new challenge.
        self.max_requests: int | None = None
        self._store_dir = tempfile.mkdtemp(prefix="onprem-ntlm-")
        self.user_file = os.path.join(self._store_dir, "ntlm-users")
        self._write_user_file()

    def close(self) -> None:
        shutil.rmtree(self._store_dir, ignore_errors=True)
        if self.kerberos is not None:
            self.kerberos.close()

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

    def gate(self, req: Request) -> Response | None:
        """None when the request's connection is signed in (now or before; ``req.user_id`` is
        set); else the 401 to send."""
        headers = req.headers
        connection = headers.get("x-emulator-connection", "")
        with self._lock:
            state = self._connections.setdefault(connection, {})
        scheme, _, value = headers.get("authorization", "").strip().partition(" ")
        plain = [("Content-Type", "text/html")]
        if scheme.lower() not in ("ntlm", "negotiate") or not value.strip():
            if state.get("user"):
                state["requests"] = state.get("requests", 0) + 1
                if self.max_requests is None or state["requests"] <= self.max_requests:
                    req.user_id = user_object_id(state["user"])
                    return None
                state.clear()  # signed out: the 401 below starts a new handshake
            return 401, plain + self.challenges, UNAUTHORIZED
        try:
            token = base64.b64decode(value.strip(), validate=True)
        except ValueError:
            token = b""
        if not token.startswith(b"NTLMSSP\x00"):  # Kerberos (a ticket), or garbage
            state.clear()
            if self.kerberos is None or scheme.lower() != "negotiate":
                return 401, plain + self.challenges, UNAUTHORIZED
            try:
                principal, reply = self.kerberos.accept(token)
            except KerberosRefused:
                return 401, plain + self.challenges, UNAUTHORIZED
            return self._signed_in(req, state, principal, reply)
        if not self.ntlm:  # NTLM switched off: the provider does not even look at the token
            state.clear()
            with self._lock:
                self.refused_ntlm += 1
            return 401, plain + self.challenges, UNAUTHORIZED
        try:
            out = self._step(state, token)
        except (spnego.exceptions.SpnegoError, ValueError):
            state.clear()
            with self._lock:
                self.failed_logons += 1
            return 401, plain + self.challenges, UNAUTHORIZED
        if "user" not in state:  # CHALLENGE leg
            return 401, [*plain, ("WWW-Authenticate", f"{scheme} {base64.b64encode(out or b'').decode()}")], b""
        with self._lock:
            self.windows_logons.append(state["user"])
        req.user_id = user_object_id(state["user"])
        return None

    def _signed_in(self, req: Request, state: dict[str, Any], principal: str, reply: bytes | None) -> None:
        """A verified Kerberos ticket: the connection is signed in, and the answer will carry
        the server's mutual-authentication token."""
        state["user"] = principal
        state["requests"] = 0
        if reply:
            req.response_headers.append(("WWW-Authenticate", f"Negotiate {base64.b64encode(reply).decode()}"))
        req.user_id = user_object_id(principal)
        return None
