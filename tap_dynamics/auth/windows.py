"""auth_scheme NTLM: Windows sign-in to an on-premises Dynamics server, locked to its origin.

A server that offers only ``Negotiate`` (NTLM switched off) gets Kerberos with the same account
(:mod:`tap_dynamics.auth.kerberos`) when this machine can do Kerberos.

An Active Directory deployment answers an anonymous request with 401 and the challenges
``WWW-Authenticate: Negotiate`` and ``WWW-Authenticate: NTLM``. NTLM authenticates the TCP
connection, not the request: the three legs (anonymous request, NEGOTIATE, AUTHENTICATE) must
ride one keep-alive connection, after which IIS serves that connection's later requests without
another handshake. ``requests_ntlm`` does exactly that inside one ``session.get`` call, so the
handshake stays inside the client's in-flight slot (``max_concurrency``), its timeouts and its
retry/backoff, and follows no redirect (the client sends with ``allow_redirects=False`` and
checks every URL against the org origin before sending, so credentials never leave the org host).

Why a subclass of :class:`requests_ntlm.HttpNtlmAuth`: its handshake raises ``KeyError`` or
``PermissionError`` when the server's second answer is not a challenge (a proxy's error page, a
503 during a restart), which would end the run as a crash. Here such an answer is handed back to
the client as it is, so its normal status handling (retry a 5xx, one line for a 401) applies.
"""

from __future__ import annotations

import base64
import logging
import typing as t
from urllib.parse import urlsplit

import requests
import spnego

from tap_dynamics.auth.kerberos import (
    KerberosSignIn,
    KerberosUnavailable,
    OriginLockedKerberosAuth,
    kerberos_rejected,
)
from tap_dynamics.auth.negotiate import (
    ConnectionCredential,
    OriginLockedAuth,
    offered,
    scheme_token,
)
from tap_dynamics.config.windows import KerberosAuth
from tap_dynamics.engine import override
from tap_dynamics.errors import AuthError, TapDynamicsError

if t.TYPE_CHECKING:
    from tap_dynamics.config.auth import WindowsAuth
    from tap_dynamics.config.common import HttpOptions
    from tap_dynamics.config.resource import Resource

LOGGER = logging.getLogger("tap-dynamics.auth")


class OriginLockedNtlmAuth(OriginLockedAuth):
    """NTLM over HTTP that only ever answers a challenge from the configured org origin.

    A server that offers only ``Negotiate`` (NTLM switched off in IIS or in the domain) gets
    Kerberos instead, with the same account, when ``kerberos`` is given and Kerberos is
    possible on this machine; when it is not (no Kerberos library, no KDC known for the realm),
    NTLM inside ``Negotiate`` is the one attempt, as before.
    """

    def __init__(
        self, username: str, password: str, origin: str, kerberos: OriginLockedKerberosAuth | None = None
    ) -> None:
        super().__init__(username, password, origin)
        self.kerberos = kerberos
        self.kerberos_unavailable: str | None = None  # why the fallback could not use Kerberos

    @override
    def response_hook(self, r: requests.Response, **kwargs: t.Any) -> requests.Response:
        """Remember the challenge of a 401, then answer NTLM/Negotiate ones (Kerberos when only
        Negotiate is offered and Kerberos is possible)."""
        self.remember(r)
        schemes = offered(self.last_challenge)
        only_negotiate = "negotiate" in schemes and "ntlm" not in schemes
        if r.status_code == 401 and only_negotiate and self.kerberos is not None and self.kerberos_unavailable is None:
            try:
                return self.kerberos.negotiate(r, kwargs)
            except KerberosUnavailable as exc:
                self.kerberos_unavailable = str(exc)
                LOGGER.info("%s offers only Negotiate and Kerberos is not possible here (%s): trying NTLM", self.origin, exc)
        return super().response_hook(r, **kwargs)

    @override
    def retry_using_http_NTLM_auth(
        self,
        auth_header_field: str,
        auth_header: str,
        response: requests.Response,
        auth_type: str,
        args: t.Any,
    ) -> requests.Response:
        """The NEGOTIATE/CHALLENGE/AUTHENTICATE legs on the 401's connection.

        The same steps as requests_ntlm's, with two changes: a challenge from any other origin
        is refused (defence in depth: the client never sends there), and a second answer that
        is not an NTLM challenge is returned as the result instead of raising.
        """
        self.refuse_foreign(response)
        if auth_header in response.request.headers:
            return response  # our AUTHENTICATE was refused: the caller reports the 401
        channel_bindings = self.channel_bindings(response)
        self.release(response)
        client = spnego.client(
            self.username,
            self.password,
            protocol="ntlm",
            channel_bindings=channel_bindings,
            hostname=urlsplit(response.url).hostname or "",
            service="http",
            options=spnego.NegotiateOptions.use_ntlm,
        )
        negotiate = f"{auth_type} {base64.b64encode(client.step() or b'').decode()}"
        second = self.resend(response, negotiate, dict(args, stream=False), auth_header)
        self.release(second)
        self.remember(second)
        token = scheme_token(second, auth_type, auth_header_field)
        if second.status_code != 401 or not token:
            second.history.append(response)
            return second  # not a challenge (5xx, proxy page, plain 401): the client decides
        try:
            authenticate = client.step(base64.b64decode(token))
        except (ValueError, spnego.exceptions.SpnegoError):
            msg = (
                f"{self.origin} sent a malformed NTLM challenge — is a proxy between the tap and "
                "the Dynamics server rewriting the WWW-Authenticate header?"
            )
            raise AuthError(msg) from None
        request = second.request.copy()
        if second.headers.get("set-cookie"):
            request.headers["Cookie"] = second.headers["set-cookie"]
        request.headers[auth_header] = f"{auth_type} {base64.b64encode(authenticate or b'').decode()}"
        third = second.connection.send(request, **args)
        third.history.extend([response, second])
        return third


class WindowsCredential(ConnectionCredential[OriginLockedNtlmAuth]):
    """auth_scheme NTLM: a Windows account's sign-in, one handler per thread."""

    scheme = "NTLM"
    credential = "Windows (NTLM) credentials"

    def __init__(self, auth: WindowsAuth, http: HttpOptions, resource: Resource) -> None:
        super().__init__(http, resource)
        self.auth = auth
        # For a server that offers only Negotiate: the same account, as a Kerberos principal.
        kerberos = KerberosAuth(username=kerberos_principal(auth.username), password=auth.password)
        self.kerberos = KerberosSignIn(kerberos, self.host)

    def identity(self) -> str:
        """The Windows account, as configured (DOMAIN\\user or user@domain)."""
        return f"Windows account {self.auth.username}"

    @override
    def new_handler(self) -> OriginLockedNtlmAuth:
        fallback = OriginLockedKerberosAuth(self.kerberos, self.origin)
        return OriginLockedNtlmAuth(self.auth.username, self.auth.password, self.origin, fallback)

    def rejected(self, origin: str) -> TapDynamicsError:
        """Not a Windows challenge (wrong kind of server), or the account was refused."""
        handler = self.handler()
        if handler.kerberos is not None and handler.kerberos.answered:
            return kerberos_rejected(origin, handler.kerberos, self.kerberos.principal)
        schemes = offered(handler.last_challenge)
        if not schemes & {"ntlm", "negotiate"}:
            named = ", ".join(sorted(schemes)) or "no"
            msg = (
                f"{origin} answered 401 with {named} sign-in, not Windows (NTLM/Negotiate) "
                "sign-in — is url an on-premises Dynamics server with Windows authentication? "
                "For Dynamics 365 online use auth_scheme AzureServicePrincipal"
            )
            return AuthError(msg)
        if "ntlm" not in schemes and handler.kerberos_unavailable:
            msg = (
                f"{origin} offers only Negotiate (NTLM is switched off there) and refused NTLM "
                f"inside it; Kerberos was not possible here: {handler.kerberos_unavailable}"
            )
            return AuthError(msg)
        msg = (
            f"{origin} rejected the Windows sign-in of {self.auth.username} (HTTP 401 after "
            "the NTLM handshake) — check username (DOMAIN\\user or user@domain) and password, and "
            "that the account is enabled, not locked out, and a user of the Dynamics organization"
        )
        return AuthError(msg)


def kerberos_principal(username: str) -> str:
    """The Kerberos principal of a Windows account: ``user@domain`` is ``user@DOMAIN`` (Active
    Directory realms are the DNS domain in capitals); ``DOMAIN\\user`` is ``user`` in the default
    realm of krb5.conf (a NetBIOS domain name is not a realm)."""
    _domain, backslash, user = username.partition("\\")
    if backslash:
        return user
    name, _, realm = username.rpartition("@")
    return f"{name}@{realm.upper()}"
