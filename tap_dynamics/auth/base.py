"""What the transport asks of a credential, whatever the scheme and whatever the service.

The client calls :meth:`TokenProvider.prepare` inside its in-flight slot for every request, so a
token request (or a Windows handshake) counts against ``max_concurrency`` like any other request;
after a 401 it calls :meth:`~TokenProvider.invalidate` and resends once if the credential is
:attr:`~TokenProvider.refreshable`, and reports :meth:`~TokenProvider.rejected` if that did not
cure it. Every credential is built for one explicit :class:`~tap_dynamics.config.auth.Resource`:
an F&O or Graph token is for another audience than the Dataverse org, from the same sign-in.
"""

from __future__ import annotations

import typing as t

import msal
import requests

from tap_dynamics.errors import AuthError, TapDynamicsError

if t.TYPE_CHECKING:
    from tap_dynamics.config.common import HttpOptions
    from tap_dynamics.config.resource import Resource


@t.runtime_checkable
class TokenProvider(t.Protocol):
    """The credential interface of the transport."""

    # Whether a 401 is worth one fresh credential and a resend: a new bearer token cures an
    # expired or revoked one, while a Windows password (NTLM) cannot change between two requests
    # and each wrong try counts towards the account's lockout.
    refreshable: bool
    credential: str  # what the client refuses to send off the resource's host, for messages

    def prepare(self, headers: dict[str, str]) -> requests.auth.AuthBase | None:
        """Authorize one request: set its headers, or return a requests auth handler."""

    def rejected(self, origin: str) -> TapDynamicsError:
        """The error for a 401 that a fresh credential did not cure."""

    def token(self) -> str:
        """A valid access token (cached when possible)."""

    def invalidate(self) -> None:
        """Forget cached tokens, so that the next :meth:`token` call gets a fresh one."""

    def identity(self) -> str:
        """Who the credential is, for messages (never a secret)."""


class BearerCredential:
    """Base of the token schemes: ``Authorization: Bearer`` for :attr:`resource`."""

    refreshable = True
    credential = "the access token"

    def __init__(self, http: HttpOptions, resource: Resource) -> None:
        self.http = http
        self.resource = resource
        self._last_token: str | None = None  # the last token sent (a refused one is named by its aud)

    def prepare(self, headers: dict[str, str]) -> requests.auth.AuthBase | None:
        """Set the bearer header; no requests auth handler is needed."""
        self._last_token = token = self.token()
        headers["Authorization"] = f"Bearer {token}"
        return None

    def rejected(self, origin: str) -> TapDynamicsError:
        """A fresh token refused: a token for another resource, or for another org or tenant."""
        audience = unverified_claim(self._last_token, "aud") if self._last_token else None
        # Only a URL audience is compared: v2 tokens may name the resource by its app id (a GUID).
        wrong = audience.rstrip("/").lower() != self.resource.audience.rstrip("/").lower() if audience else False
        if audience and audience.startswith(("https://", "http://")) and wrong:
            msg = (
                f"{self.resource.service} rejected the access token (401): it is for {audience}, not for "
                f"{self.resource.audience} — a token for the wrong resource; use one for "
                f"{self.resource.audience} (scope {self.resource.app_scopes[0]})"
            )
            return AuthError(msg)
        msg = (
            f"{self.resource.service} rejected a freshly issued token (401) for {origin} — check that "
            "url is the service the app has access to and that the token's tenant is its tenant"
        )
        return AuthError(msg)

    def token(self) -> str:
        """A valid access token; each scheme gets it its own way."""
        raise NotImplementedError

    def invalidate(self) -> None:
        """Forget cached tokens; each scheme keeps them its own way."""
        raise NotImplementedError

    def identity(self) -> str:
        """Who the tokens are for; each scheme knows its own."""
        raise NotImplementedError


def evict_access_tokens(cache: msal.TokenCache) -> None:
    """Remove every access token from an MSAL cache (after a 401), keeping refresh tokens.

    ``list()`` first: ``search`` is a generator over the cache's live dict, and removing from
    it while iterating raises ``RuntimeError: dictionary changed size during iteration``.
    """
    for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
        cache.remove_at(item)


def unverified_claim(token: str, name: str) -> str | None:
    """One claim of a JWT, for messages (who we are); never used for any decision.

    The signature is not checked: the token came straight from the identity endpoint over TLS,
    and the only use is to name the identity in a log line.
    """
    import jwt  # here: only managed identities read a claim, and PyJWT costs 20 ms to import

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    value = claims.get(name) if isinstance(claims, dict) else None
    return str(value) if value else None
