"""What NTLM and Kerberos sign-in share: answering an IIS challenge on its own connection, only
for the configured org origin.

IIS Windows authentication answers an anonymous request with 401 and ``WWW-Authenticate:
Negotiate`` (and, unless NTLM is switched off, ``WWW-Authenticate: NTLM``). Both schemes answer
the challenge on the connection that carried it (``response.connection.send``), inside the one
``session.get`` of the client: the handshake stays inside the client's in-flight slot, its
timeouts and its retry/backoff, follows no redirect, and signs that connection in, so later
requests on it need no handshake (IIS authenticates connections, for NTLM and, by default
with ``authPersistNonNTLM``, for Kerberos too).

Why a subclass of :class:`requests_ntlm.HttpNtlmAuth` for both: it already hooks the response
(rewinding a request body, keeping cookies) and reads the server certificate for channel
binding (Extended Protection); the schemes override only the answer to the challenge.
"""

from __future__ import annotations

import logging
import threading
import typing as t
from urllib.parse import urlsplit

import requests
import spnego
from requests_ntlm import HttpNtlmAuth

from tap_dynamics.errors import AuthError, SecurityError

if t.TYPE_CHECKING:
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


def origin_of(url: str) -> str:
    """scheme://host[:port] of ``url``, lower-cased: what the origin lock compares."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def offered(challenge: str) -> set[str]:
    """The schemes a ``WWW-Authenticate`` header offers (``{"negotiate", "ntlm"}``), lower-case.

    requests joins repeated headers with ``", "``; a scheme is the first word of each part (a
    part may also be a token or a parameter of the previous scheme, which has ``=`` or no word).
    """
    schemes = set()
    for part in challenge.split(","):
        word = part.strip().split(" ", 1)[0]
        if word and "=" not in word:
            schemes.add(word.lower())
    return schemes


def scheme_token(response: requests.Response, scheme: str, field: str = "www-authenticate") -> str | None:
    """The base64 token after ``scheme`` in the response's challenge header ``field``, if any."""
    prefix = f"{scheme} ".lower()
    return next(
        (
            value.strip()[len(prefix):]
            for value in response.headers.get(field, "").split(",")
            if value.strip().lower().startswith(prefix)
        ),
        None,
    )


class OriginLockedAuth(HttpNtlmAuth):
    """A Windows sign-in handler that only ever answers a challenge from the org origin."""

    def __init__(self, username: str, password: str, origin: str) -> None:
        super().__init__(username, password)
        self.origin = origin
        self.last_challenge = ""  # WWW-Authenticate of the last 401 seen, for the error message

    def remember(self, response: requests.Response) -> None:
        """Keep a 401's challenge for :meth:`rejected` messages."""
        if response.status_code == 401:
            self.last_challenge = response.headers.get("www-authenticate", "")

    def refuse_foreign(self, response: requests.Response) -> None:
        """Defence in depth: the client never sends off the org, and no handler answers there."""
        if origin_of(response.url) != self.origin:
            msg = (
                f"refusing to answer a Windows sign-in challenge from {origin_of(response.url)}: "
                f"it is not the configured org {self.origin}"
            )
            raise SecurityError(msg)

    def channel_bindings(self, response: requests.Response) -> spnego.channel_bindings.GssChannelBindings | None:
        """The TLS channel binding of the 401's connection (``tls-server-end-point``), if https."""
        certificate_hash = self._get_server_cert(response)
        if not certificate_hash:
            return None
        return spnego.channel_bindings.GssChannelBindings(
            application_data=b"tls-server-end-point:" + certificate_hash
        )

    @staticmethod
    def release(response: requests.Response) -> None:
        """Drain the body so the connection can carry the next leg of the handshake."""
        response.content  # read (and dropped) only to free the connection
        response.raw.release_conn()

    @staticmethod
    def resend(
        response: requests.Response, value: str, args: t.Mapping[str, t.Any], header: str = "Authorization"
    ) -> requests.Response:
        """The 401's request again, with ``header: value``, on the 401's connection."""
        request = response.request.copy()
        request.headers[header] = value
        return response.connection.send(request, **args)


H = t.TypeVar("H", bound=OriginLockedAuth)


class ConnectionCredential(t.Generic[H]):
    """What a Windows scheme is to the transport: no bearer token, and one handler per thread.

    One handler per thread because each client thread has its own ``requests.Session`` (and so
    its own connections, each signed in once), and a handler keeps per-handshake state. The
    handler answers challenges only from the resource's origin.
    """

    refreshable = False  # a second try with the same password is one more failed logon in AD
    scheme = ""  # the auth_scheme, for messages

    def __init__(self, http: HttpOptions, resource: Resource) -> None:
        self.http = http
        self.resource = resource
        self.origin = origin_of(resource.audience)
        self.host = urlsplit(resource.audience).hostname or ""
        self._local = threading.local()
        warn_if_plain_http(resource.audience)

    def token(self) -> str:
        """There is none: the scheme signs in each connection."""
        msg = f"auth_scheme {self.scheme} signs each connection in with Windows credentials; it has no bearer token"
        raise AuthError(msg)

    def invalidate(self) -> None:
        """Nothing is cached beyond the signed-in connections (and a Kerberos ticket) themselves."""

    def new_handler(self) -> H:
        """This thread's handler; each scheme builds its own."""
        raise NotImplementedError

    def handler(self) -> H:
        """The calling thread's handler, built on first use."""
        handler = getattr(self._local, "handler", None)
        if handler is None:
            handler = self.new_handler()
            self._local.handler = handler
        return t.cast("H", handler)

    def prepare(self, headers: dict[str, str]) -> requests.auth.AuthBase | None:
        """No header: the request goes anonymously and the handler answers the 401 challenge."""
        return self.handler()
