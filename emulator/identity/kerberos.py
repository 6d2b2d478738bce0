"""Windows (Kerberos) sign-in as IIS does it: ``Negotiate`` tickets verified with the site's keytab.

The client sends ``Authorization: Negotiate <token>`` (a Kerberos AP-REQ, raw or wrapped in
SPNEGO, as Windows' Negotiate package accepts both) for the web site's service principal. The
ticket is verified for real with MIT Kerberos (python-gssapi's acceptor) against the keytab of
that principal: a ticket for another service, a forged or replayed one, or one whose
authenticator is outside the clock skew is refused with 401. The success carries the server's
AP-REP in ``WWW-Authenticate: Negotiate <token>`` (mutual authentication), and the sign-in holds
for the TCP connection, as IIS does by default (``authPersistNonNTLM``).

The KDC is not part of the emulator: tests start a real one (``tests/kdc.py``), which issues
the tickets and holds the user's password and failure count.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from typing import Any


class KerberosRefused(Exception):
    """The ticket did not verify (wrong service, bad checksum, replay, clock skew)."""


class KerberosAcceptor:
    """The web site's service principal: its keytab, and the principals it signed in."""

    def __init__(self, keytab: str) -> None:
        self.keytab = keytab
        self._lock = threading.Lock()
        self.logons: list[str] = []  # client principals signed in, one entry per connection
        self.failed = 0  # tickets refused
        # False: the success carries no AP-REP, as when something other than the server (a
        # proxy holding no service key) answers in its place; the client must refuse that.
        self.mutual = True
        # The replay cache (authenticators seen) is the site's own, not the machine's default.
        self._dir = tempfile.mkdtemp(prefix="onprem-krb-")
        self.replay_cache = os.path.join(self._dir, "rcache")

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def _credentials(self) -> Any:
        import gssapi  # only a Kerberos deployment needs the GSSAPI library

        store = {b"keytab": self.keytab.encode(), b"rcache": f"file2:{self.replay_cache}".encode()}
        return gssapi.Credentials(usage="accept", store=store)

    def accept(self, token: bytes) -> tuple[str, bytes | None]:
        """The client principal of a one-leg Kerberos handshake and the AP-REP to send back."""
        import gssapi
        import gssapi.exceptions

        try:
            context = gssapi.SecurityContext(creds=self._credentials(), usage="accept")
            reply = context.step(token)
            complete = context.complete
            principal = str(context.initiator_name) if complete else ""
        except gssapi.exceptions.GSSError as exc:
            with self._lock:
                self.failed += 1
            raise KerberosRefused(str(exc)) from None
        if not complete:  # SPNEGO asking for another leg: IIS answers one leg for Kerberos
            with self._lock:
                self.failed += 1
            raise KerberosRefused("the Negotiate handshake needs more than one leg")
        with self._lock:
            self.logons.append(principal)
        return principal, reply if self.mutual else None
