"""auth_scheme Kerberos: Windows sign-in with Kerberos tickets (SPNEGO ``Negotiate``), locked to
the org's origin.

An Active Directory deployment challenges with ``WWW-Authenticate: Negotiate``; the client
answers on the same connection with ``Authorization: Negotiate <AP-REQ>`` for the service
principal ``HTTP/<host of url>``, and the server's success carries ``WWW-Authenticate:
Negotiate <AP-REP>``, which the tap verifies (mutual authentication: a server without the
service's key, an impostor, is refused). IIS then serves the connection's later requests
without another handshake.

The credential comes from pyspnego (GSSAPI with MIT/Heimdal Kerberos on Linux and macOS, SSPI
on Windows), from one of three sources:

* a password: the ticket-granting ticket is requested once per run (one AS exchange, one
  password attempt at the KDC) and kept in memory — no ``kinit``, and no ticket cache file is
  ever written, so the user's own tickets stay untouched;
* a keytab (``kerberos_keytab``): the same, with the key from the file;
* an existing ticket cache (``kinit`` done beforehand): ``kerberos_ticket_cache``, else
  ``KRB5CCNAME`` or the system's default cache. Read only.

The one-attempt rule, as with NTLM: the sign-in happens once, under a lock, for every thread;
a failure is remembered and every later connection gets the same one-line error without a
second try, so a wrong password is one failed attempt at the KDC (no account lockout from
retries). Each error says what to fix; the password never appears in a message or a log.
"""

from __future__ import annotations

import base64
import logging
import os
import sys
import threading
import typing as t
from urllib.parse import urlsplit

import requests
import spnego
import spnego.exceptions

from tap_dynamics.auth.negotiate import (
    ConnectionCredential,
    OriginLockedAuth,
    offered,
    scheme_token,
)
from tap_dynamics.engine import override
from tap_dynamics.errors import AuthError, SecurityError, TapDynamicsError

if t.TYPE_CHECKING:
    from tap_dynamics.config.common import HttpOptions
    from tap_dynamics.config.resource import Resource
    from tap_dynamics.config.windows import KerberosAuth

LOGGER = logging.getLogger("tap-dynamics.auth")

INSTALL_FIX = (
    "pip install 'tap-dynamics[kerberos]' (it builds the gssapi and krb5 packages against MIT "
    "Kerberos: apt-get install libkrb5-dev gcc, or dnf install krb5-devel gcc, first)"
)


def _code(value: int) -> int:
    return value & 0xFFFFFFFF  # GSSAPI minor codes are unsigned, krb5 error codes signed


# MIT krb5 error codes (krb5.h) the messages below name.
C_PRINCIPAL_UNKNOWN = _code(-1765328378)  # KDC_ERR_C_PRINCIPAL_UNKNOWN
S_PRINCIPAL_UNKNOWN = _code(-1765328377)  # KDC_ERR_S_PRINCIPAL_UNKNOWN
CLIENT_REVOKED = _code(-1765328366)  # KDC_ERR_CLIENT_REVOKED: disabled or locked out
KEY_EXPIRED = _code(-1765328361)  # KDC_ERR_KEY_EXP: the password has expired
PREAUTH_FAILED = _code(-1765328360)  # KDC_ERR_PREAUTH_FAILED: wrong password
BAD_INTEGRITY = _code(-1765328353)  # KRB_AP_ERR_BAD_INTEGRITY: wrong password, no preauth
TICKET_EXPIRED = _code(-1765328352)  # KRB_AP_ERR_TKT_EXPIRED
CLOCK_SKEW = _code(-1765328347)  # KRB_AP_ERR_SKEW
CC_NOTFOUND = _code(-1765328243)  # KRB5_CC_NOTFOUND: no ticket for that principal
REALM_UNKNOWN = _code(-1765328230)  # KRB5_REALM_UNKNOWN: no KDC known for the realm
KDC_UNREACHABLE = _code(-1765328228)  # KRB5_KDC_UNREACH
KT_NOTFOUND = _code(-1765328203)  # KRB5_KT_NOTFOUND: the keytab has no key for the principal
FCC_NOFILE = _code(-1765328189)  # KRB5_FCC_NOFILE: no ticket cache
REALM_CANT_RESOLVE = _code(-1765328164)  # KRB5_REALM_CANT_RESOLVE
NO_DEFAULT_REALM = _code(-1765328160)  # KRB5_CONFIG_NODEFREALM
# Failures before any password or ticket reached anyone: Kerberos is not set up on this machine.
UNAVAILABLE = frozenset({REALM_UNKNOWN, KDC_UNREACHABLE, REALM_CANT_RESOLVE, NO_DEFAULT_REALM})


class KerberosUnavailable(AuthError):
    """Kerberos is not possible on this machine (library, realm or KDC): no attempt was made."""


def kerberos_library_missing() -> str | None:
    """The one line saying that pyspnego cannot do Kerberos here (the gssapi/krb5 packages are
    missing) and how to fix it, or None."""
    if sys.platform == "win32":
        return None  # SSPI, part of Windows
    try:
        import gssapi  # optional: only auth_scheme Kerberos needs it
        import krb5
    except ImportError as exc:
        missing = f"the Python {exc.name or 'gssapi'} library is not installed"
        return f"auth_scheme Kerberos needs the GSSAPI library: {missing} — {INSTALL_FIX}"
    return None


def kerberos_errors() -> tuple[type[BaseException], ...]:
    """What GSSAPI, krb5 and SSPI raise through pyspnego for a refused or impossible sign-in
    (anything else is a bug, and stays a traceback)."""
    errors: list[type[BaseException]] = [spnego.exceptions.SpnegoError, OSError]  # OSError: SSPI
    try:
        import gssapi.raw  # optional: only auth_scheme Kerberos needs it
        import krb5
    except ImportError:
        return tuple(errors)
    return (*errors, gssapi.raw.GSSError, krb5.Krb5Error)


def error_code(exc: BaseException) -> int | None:
    """The Kerberos error code inside a pyspnego, GSSAPI or krb5 exception, if any."""
    base = getattr(exc, "base_error", None) or exc  # pyspnego wraps the GSSAPI error
    for attribute in ("min_code", "err_code"):  # gssapi.GSSError, krb5.Krb5Error
        value = getattr(base, attribute, None)
        if isinstance(value, int) and value:
            return _code(value)
    return None


def _detail(exc: BaseException) -> str:
    base = getattr(exc, "base_error", None) or exc
    text = " ".join(str(base).split())
    return text[:200]


class KerberosSignIn:
    """The run's Kerberos credential: acquired once, shared by every thread's connections."""

    def __init__(self, auth: KerberosAuth, host: str) -> None:
        self.auth = auth
        self.host = host
        # Who signs in, for messages: the principal, or where the tap takes it from.
        self.principal = auth.username or (
            f"the first principal of {auth.keytab}" if auth.keytab else "the principal of the ticket cache"
        )
        self._lock = threading.RLock()  # fail() is called with and without it held
        self._template: spnego.ContextProxy | None = None
        self._failure: TapDynamicsError | None = None

    def context(self) -> spnego.ContextProxy:
        """A fresh initiator context for one connection, from the run's one credential."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._template is None:
                missing = kerberos_library_missing()
                if missing is not None:
                    self._failure = KerberosUnavailable(missing)
                    raise self._failure
                try:
                    self._template = spnego.client(
                        self._credentials(),
                        hostname=self.host,
                        service="HTTP",
                        protocol="kerberos",
                        context_req=spnego.ContextReq.mutual_auth | spnego.ContextReq.sequence_detect,
                    )
                except kerberos_errors() as exc:
                    raise self.fail(exc) from None
            return self._template.new_context()

    def _credentials(self) -> list[spnego.Credential]:
        auth = self.auth
        if auth.password is not None:
            return [spnego.Password(username=auth.username or "", password=auth.password)]
        if auth.keytab is not None:
            return [spnego.KerberosKeytab(keytab=auth.keytab, principal=auth.username)]
        if auth.ticket_cache is not None:
            return [spnego.KerberosCCache(ccache=auth.ticket_cache, principal=auth.username)]
        return [spnego.CredentialCache(username=auth.username)]

    def fail(self, exc: BaseException) -> TapDynamicsError:
        """The one-line error for ``exc``, remembered: no later connection tries again."""
        with self._lock:
            if self._failure is None:
                self._failure = self.explain(exc)
            return self._failure

    def explain(self, exc: BaseException) -> TapDynamicsError:
        """What went wrong, and what to fix, in one line."""
        who, code = self.principal, error_code(exc)
        realm = who.rpartition("@")[2] if "@" in who else "the default realm"
        source = self.auth.source
        if source == "the default ticket cache" and os.environ.get("KRB5CCNAME"):
            source = f"the ticket cache {os.environ['KRB5CCNAME']} (KRB5CCNAME)"
        messages: dict[int, str] = {
            PREAUTH_FAILED: (
                f"the KDC rejected the password of {who} (KDC_ERR_PREAUTH_FAILED) — check "
                "password; the tap tried once and stops, so it does not lock the account out"
            ),
            C_PRINCIPAL_UNKNOWN: (
                f"the KDC of {realm} does not know the principal {who} "
                "(KDC_ERR_C_PRINCIPAL_UNKNOWN) — check username: user@REALM, the realm in capitals"
            ),
            CLIENT_REVOKED: (
                f"the KDC refused {who}: the account is disabled or locked out "
                "(KDC_ERR_CLIENT_REVOKED) — ask the domain administrators to enable or unlock it"
            ),
            KEY_EXPIRED: f"the password of {who} has expired (KDC_ERR_KEY_EXP) — change it, then update password",
            CLOCK_SKEW: (
                "the clocks of this machine and the KDC or the Dynamics server differ by more "
                "than Kerberos allows (KRB_AP_ERR_SKEW, 5 minutes by default) — synchronise this "
                "machine's clock (NTP)"
            ),
            S_PRINCIPAL_UNKNOWN: (
                f"the KDC has no service principal HTTP/{self.host} "
                "(KDC_ERR_S_PRINCIPAL_UNKNOWN) — register it for the account the Dynamics web "
                f"site runs as (setspn -S HTTP/{self.host} DOMAIN\\account), or set url to the "
                "host name the SPN is registered for"
            ),
            KDC_UNREACHABLE: (
                f"no KDC of {realm} answered — check the KDC addresses for the realm in krb5.conf "
                "(KRB5_CONFIG) or its DNS SRV records, and that port 88 is reachable"
            ),
            REALM_UNKNOWN: (
                f"no KDC is known for {realm} — add the realm to krb5.conf [realms] (KRB5_CONFIG), "
                "or turn on dns_lookup_kdc, and check the realm in username"
            ),
            NO_DEFAULT_REALM: (
                "username has no realm and krb5.conf names no default_realm — write username as "
                "user@REALM, e.g. svc-tap@CONTOSO.COM"
            ),
            FCC_NOFILE: (
                f"there is no Kerberos ticket in {source} — run kinit for the principal first, or "
                "set password or kerberos_keytab"
            ),
            CC_NOTFOUND: (
                f"{source} holds no ticket for {who} — run kinit for it, or set password or "
                "kerberos_keytab"
            ),
            TICKET_EXPIRED: (
                f"the Kerberos ticket in {source} has expired — renew it (kinit -R, or kinit), "
                "or set password or kerberos_keytab so the tap signs in itself"
            ),
            KT_NOTFOUND: (
                f"{source} has no key for {who} — export one (ktutil, or ktpass on Windows) or "
                "set username to a principal the keytab holds"
            ),
        }
        messages[BAD_INTEGRITY] = messages[PREAUTH_FAILED].replace("KDC_ERR_PREAUTH_FAILED", "KRB_AP_ERR_BAD_INTEGRITY")
        messages[REALM_CANT_RESOLVE] = messages[KDC_UNREACHABLE]
        if code == CC_NOTFOUND and not self.auth.username:
            code = FCC_NOFILE  # no principal named: the cache has no ticket at all
        text = messages.get(code) if code is not None else None
        if text is None:
            if isinstance(exc, spnego.exceptions.CredentialsExpiredError):
                text = messages[TICKET_EXPIRED]
            elif isinstance(exc, spnego.exceptions.NoCredentialError):
                text = messages[FCC_NOFILE]
            else:
                text = (
                    f"Kerberos sign-in of {who} to {self.host} failed: {_detail(exc)} — check "
                    "krb5.conf (KRB5_CONFIG), username and the credential"
                )
        msg = f"Kerberos: {text}"
        return KerberosUnavailable(msg) if code in UNAVAILABLE else AuthError(msg)


class OriginLockedKerberosAuth(OriginLockedAuth):
    """Kerberos over HTTP (SPNEGO ``Negotiate``) that only answers the org origin's challenges."""

    def __init__(self, signin: KerberosSignIn, origin: str) -> None:
        super().__init__("", "", origin)
        self.signin = signin
        self.answered = False  # a ticket was sent (so a 401 after it is a refusal, not a mismatch)

    @override
    def response_hook(self, r: requests.Response, **kwargs: t.Any) -> requests.Response:
        """Answer a 401 that offers Negotiate; anything else goes back to the client as it is."""
        self.remember(r)
        if r.status_code != 401 or "negotiate" not in offered(self.last_challenge):
            return r
        return self.negotiate(r, kwargs)

    def negotiate(self, response: requests.Response, args: t.Mapping[str, t.Any]) -> requests.Response:
        """Send a ticket on the 401's connection and verify the server's mutual authentication."""
        self.refuse_foreign(response)
        if "Authorization" in response.request.headers:
            return response  # our ticket was refused: the caller reports the 401
        context = self.signin.context()
        bindings = self.channel_bindings(response)
        try:
            ticket = context.step(channel_bindings=bindings) if bindings else context.step()
        except kerberos_errors() as exc:
            raise self.signin.fail(exc) from None
        self.release(response)
        self.answered = True
        answer = self.resend(response, f"Negotiate {base64.b64encode(ticket or b'').decode()}", args)
        answer.history.append(response)
        self.remember(answer)
        if answer.status_code == 401 or answer.status_code >= 500:
            return answer  # refused, or the server failed: the client's status handling decides
        self._verify(context, answer)
        return answer

    def _verify(self, context: spnego.ContextProxy, answer: requests.Response) -> None:
        """Mutual authentication: the server proves it holds the service key (its AP-REP)."""
        token = scheme_token(answer, "Negotiate")
        problem = None
        if not token:
            problem = "sent no mutual-authentication token (WWW-Authenticate: Negotiate …)"
        else:
            try:
                context.step(base64.b64decode(token))
            except (ValueError, spnego.exceptions.SpnegoError):
                problem = "sent a mutual-authentication token that does not verify"
            else:
                if not context.complete:
                    problem = "did not complete mutual authentication"
        if problem is not None:
            answer.close()
            msg = (
                f"{self.origin} accepted the Kerberos ticket but {problem}: it could not prove "
                f"it is the service HTTP/{self.signin.host} — refusing its answer (is a proxy "
                "between the tap and the Dynamics server answering in its place?)"
            )
            raise SecurityError(msg)


class KerberosCredential(ConnectionCredential[OriginLockedKerberosAuth]):
    """auth_scheme Kerberos: one sign-in per run, one handler per thread (its connections)."""

    scheme = "Kerberos"
    credential = "Windows (Kerberos) credentials"

    def __init__(self, auth: KerberosAuth, http: HttpOptions, resource: Resource) -> None:
        super().__init__(http, resource)
        self.auth = auth
        self.signin = KerberosSignIn(auth, self.host)
        missing = kerberos_library_missing()
        if missing is not None:  # before any request: nothing else can work
            raise AuthError(missing)

    def identity(self) -> str:
        """The principal, as configured (or where it comes from)."""
        return f"Kerberos principal {self.signin.principal}"

    @override
    def new_handler(self) -> OriginLockedKerberosAuth:
        return OriginLockedKerberosAuth(self.signin, self.origin)

    def rejected(self, origin: str) -> TapDynamicsError:
        """Not a Negotiate challenge (wrong kind of server), or the ticket was refused."""
        return kerberos_rejected(origin, self.handler(), self.signin.principal)


def kerberos_rejected(origin: str, handler: OriginLockedKerberosAuth, principal: str) -> TapDynamicsError:
    """The one line for a 401 after a Kerberos handshake, or for a server without Negotiate."""
    schemes = offered(handler.last_challenge)
    if "negotiate" not in schemes:
        named = ", ".join(sorted(schemes)) or "no"
        fix = "use auth_scheme NTLM" if "ntlm" in schemes else "is url an on-premises Dynamics server with Windows authentication?"
        msg = f"{origin} answered 401 with {named} sign-in, not Kerberos (Negotiate) — {fix}"
        return AuthError(msg)
    msg = (
        f"{origin} refused the Kerberos ticket of {principal} (HTTP 401 after the Negotiate "
        "handshake) — check that the account is a user of the Dynamics organization and that "
        f"HTTP/{urlsplit(origin).hostname} is registered for the account the web site runs as"
    )
    return AuthError(msg)
