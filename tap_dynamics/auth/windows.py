"""auth_scheme NTLM: Windows sign-in to an on-premises Dynamics server, locked to its origin.

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
import sys
import threading
import typing as t
from urllib.parse import urlsplit

import requests
import spnego
from requests_ntlm import HttpNtlmAuth
from requests_ntlm.requests_ntlm import _auth_type_from_header

from tap_dynamics.errors import AuthError, SecurityError, TapDynamicsError

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from tap_dynamics.config.auth import WindowsAuth
    from tap_dynamics.config.common import HttpOptions
    from tap_dynamics.config.resource import Resource

LOGGER = logging.getLogger("tap-dynamics.auth")


def warn_if_plain_http(url: str) -> None:
    """The one warning of a run that talks to the org over plain http:// (allow_http)."""
    if url.startswith("http://"):
        LOGGER.warning(
            "Connecting to %s over plain http:// (allow_http is on): the rows read and the "
            "session are not encrypted on the network",
            url,
        )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class OriginLockedNtlmAuth(HttpNtlmAuth):
    """NTLM over HTTP that only ever answers a challenge from the configured org origin."""

    def __init__(self, username: str, password: str, origin: str) -> None:
        super().__init__(username, password)
        self.origin = origin
        self.last_challenge = ""  # WWW-Authenticate of the last 401 seen, for the error message

    @override
    def response_hook(self, r: requests.Response, **kwargs: t.Any) -> requests.Response:
        """Remember the challenge of a 401, then let requests_ntlm answer NTLM/Negotiate ones."""
        if r.status_code == 401:
            self.last_challenge = r.headers.get("www-authenticate", "")
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
        if _origin(response.url) != self.origin:
            msg = (
                f"refusing to answer a Windows sign-in challenge from {_origin(response.url)}: it "
                f"is not the configured org {self.origin}"
            )
            raise SecurityError(msg)
        if auth_header in response.request.headers:
            return response  # our AUTHENTICATE was refused: the caller reports the 401
        channel_bindings = None
        certificate_hash = self._get_server_cert(response)
        if certificate_hash:
            channel_bindings = spnego.channel_bindings.GssChannelBindings(
                application_data=b"tls-server-end-point:" + certificate_hash
            )
        response.content  # noqa: B018 - drain the body so the connection can carry the next leg
        response.raw.release_conn()
        request = response.request.copy()
        client = spnego.client(
            self.username,
            self.password,
            protocol="ntlm",
            channel_bindings=channel_bindings,
            hostname=urlsplit(response.url).hostname or "",
            service="http",
            options=spnego.NegotiateOptions.use_ntlm,
        )
        request.headers[auth_header] = f"{auth_type} {base64.b64encode(client.step() or b'').decode()}"
        second = response.connection.send(request, **dict(args, stream=False))
        second.content  # noqa: B018
        second.raw.release_conn()
        if second.status_code == 401:
            self.last_challenge = second.headers.get(auth_header_field, "")
        prefix = f"{auth_type} ".lower()
        token = next(
            (
                value.strip()
                for value in second.headers.get(auth_header_field, "").split(",")
                if value.strip().lower().startswith(prefix)
            ),
            None,
        )
        if second.status_code != 401 or not token:
            second.history.append(response)
            return second  # not a challenge (5xx, proxy page, plain 401): the client decides
        try:
            authenticate = client.step(base64.b64decode(token[len(prefix):]))
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


class WindowsCredential:
    """auth_scheme NTLM: a Windows account's sign-in, one handler per thread.

    One handler per thread because each client thread has its own ``requests.Session`` (and so
    its own connections, each signed in once), and a handler keeps per-handshake state. The
    handler answers challenges only from the resource's origin.
    """

    refreshable = False  # a second try with the same password is one more failed logon in AD
    credential = "Windows (NTLM) credentials"

    def __init__(self, auth: WindowsAuth, http: HttpOptions, resource: Resource) -> None:
        self.auth = auth
        self.http = http
        self.resource = resource
        self._local = threading.local()
        warn_if_plain_http(resource.audience)

    def identity(self) -> str:
        """The Windows account, as configured (DOMAIN\\user or user@domain)."""
        return f"Windows account {self.auth.username}"

    def token(self) -> str:
        """There is none: NTLM signs in each connection."""
        msg = "auth_scheme NTLM signs each connection in with Windows credentials; it has no bearer token"
        raise AuthError(msg)

    def invalidate(self) -> None:
        """Nothing is cached beyond the signed-in connections themselves."""

    def _handler(self) -> OriginLockedNtlmAuth:
        handler = getattr(self._local, "handler", None)
        if handler is None:
            handler = OriginLockedNtlmAuth(self.auth.username, self.auth.password, _origin(self.resource.audience))
            self._local.handler = handler
        return t.cast("OriginLockedNtlmAuth", handler)

    def prepare(self, headers: dict[str, str]) -> requests.auth.AuthBase | None:
        """No header: the request goes anonymously and the handler answers the 401 challenge."""
        return self._handler()

    def rejected(self, origin: str) -> TapDynamicsError:
        """Not a Windows challenge (wrong kind of server), or the account was refused."""
        challenge = self._handler().last_challenge.lower()
        if _auth_type_from_header(challenge) is None:
            offered = challenge.split(" ", 1)[0] if challenge else "no"
            msg = (
                f"{origin} answered 401 with {offered} sign-in, not Windows (NTLM/Negotiate) "
                "sign-in — is url an on-premises Dynamics server with Windows authentication? "
                "For Dynamics 365 online use auth_scheme AzureServicePrincipal"
            )
            return AuthError(msg)
        msg = (
            f"{origin} rejected the Windows sign-in of {self.auth.username} (HTTP 401 after "
            "the NTLM handshake) — check username (DOMAIN\\user or user@domain) and password, and "
            "that the account is enabled, not locked out, and a user of the Dynamics organization"
        )
        return AuthError(msg)
