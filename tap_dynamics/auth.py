"""Access tokens for the Dynamics org, from Entra ID through MSAL.

One :class:`TokenProvider` per run is shared by discovery and every stream, so that MSAL's token
cache serves all of them and a token is only requested when the cached one is within five minutes
of expiry (MSAL's own margin). The MSAL application is built lazily because its constructor does
network I/O (tenant discovery), and it gets an HTTP client that passes ``verify=`` on every call:
a plain ``requests.Session`` would let ``REQUESTS_CA_BUNDLE`` override the ``ca_bundle`` setting.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import typing as t
from urllib.parse import urlsplit

import msal
import requests

from tap_dynamics.errors import AuthError, ConnectionProblem, auth_error_from_response

if t.TYPE_CHECKING:
    from tap_dynamics.settings import Settings

LOGGER = logging.getLogger("tap-dynamics.auth")

# Hosts MSAL validates itself; for anything else (sovereign proxies, the test emulator) instance
# discovery would call login.microsoftonline.com, so it is turned off.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login-us.microsoftonline.com",
        "login.usgovcloudapi.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


class VerifyingSession(requests.Session):
    """A session that always sends its own ``verify`` and timeout.

    requests merges ``REQUESTS_CA_BUNDLE`` into every call that does not pass ``verify`` itself,
    overriding ``Session.verify``; MSAL never passes it. Passing it here makes the setting win.
    """

    def __init__(self, verify: str | bool, timeout: float) -> None:
        super().__init__()
        self._verify = verify
        self._timeout = timeout

    def request(self, method: str, url: str, *args: t.Any, **kwargs: t.Any) -> requests.Response:  # type: ignore[override]
        """Send with the configured CA bundle and a timeout, whatever the caller passed."""
        kwargs["verify"] = self._verify
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


class TokenProvider:
    """Base class: hands out bearer tokens for the org and refreshes them when asked."""

    def token(self) -> str:
        """Return a valid access token (cached when possible)."""
        raise NotImplementedError

    def invalidate(self) -> None:
        """Forget cached tokens, so that the next :meth:`token` call gets a fresh one."""
        raise NotImplementedError

    def identity(self) -> str:
        """Who the tokens are for, for messages (never a secret)."""
        raise NotImplementedError


class ServicePrincipalTokenProvider(TokenProvider):
    """Client-credentials flow (AuthScheme=AzureServicePrincipal) with a client secret."""

    RETRIES = 4  # for 5xx/connection failures of the token endpoint only; 4xx are final

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._app: msal.ConfidentialClientApplication | None = None
        self._http = VerifyingSession(settings.verify, min(settings.request_timeout, 60))

    def identity(self) -> str:
        return f"application {self._settings.client_id}"

    @property
    def authority(self) -> str:
        """The tenant-specific authority URL (never ``common`` for client credentials)."""
        return f"{self._settings.authority_host}/{self._settings.tenant_id}"

    def _build_app(self) -> msal.ConfidentialClientApplication:
        host = urlsplit(self._settings.authority_host).hostname or ""
        return msal.ConfidentialClientApplication(
            self._settings.client_id,
            client_credential=self._settings.client_secret,
            authority=self.authority,
            instance_discovery=host in MICROSOFT_AUTHORITY_HOSTS,
            http_client=self._http,
        )

    def _fail(self, payload: t.Mapping[str, t.Any]) -> AuthError:
        return auth_error_from_response(
            payload,
            client_id=self._settings.client_id,
            tenant_id=self._settings.tenant_id,
            url=self._settings.url,
        )

    def _network_error(self, exc: Exception) -> ConnectionProblem:
        host = self._settings.authority_host
        if isinstance(exc, requests.exceptions.SSLError):
            return ConnectionProblem(
                f"TLS verification failed for the authority host {host} — if a proxy inspects "
                "TLS, set ca_bundle to a PEM file with its CA certificate"
            )
        return ConnectionProblem(
            f"cannot reach the authority host {host} ({type(exc).__name__}) — check "
            "authority_host and the network/proxy settings"
        )

    def _acquire(self) -> dict[str, t.Any]:
        delay = 1.0
        for attempt in range(1, self.RETRIES + 1):
            try:
                if self._app is None:
                    self._app = self._build_app()
                return self._app.acquire_token_for_client(scopes=[self._settings.scope])
            except ValueError as exc:
                # MSAL raises ValueError when tenant (OIDC) discovery gets a 4xx; the body is
                # Entra's JSON error (e.g. AADSTS90002 for an unknown tenant).
                raise self._fail(_payload_from_discovery_error(str(exc))) from None
            except requests.exceptions.SSLError as exc:
                raise self._network_error(exc) from None
            except (requests.exceptions.RequestException, OSError) as exc:
                if attempt == self.RETRIES:
                    raise self._network_error(exc) from None
                LOGGER.warning(
                    "Token request failed (%s); retrying in %.0f s", type(exc).__name__, delay
                )
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def token(self) -> str:
        with self._lock:
            result = self._acquire()
        if "access_token" not in result:
            raise self._fail(result)
        return str(result["access_token"])

    def invalidate(self) -> None:
        with self._lock:
            if self._app is None:
                return
            cache = self._app.token_cache
            # list(): removing while iterating the cache's live dict fails with 2+ tokens cached.
            for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                cache.remove_at(item)


def _payload_from_discovery_error(text: str) -> dict[str, t.Any]:
    """Extract Entra's JSON error from MSAL's 'OIDC Discovery failed … Error: {json}' text."""
    start = text.find("{")
    if start >= 0:
        try:
            payload = json.loads(text[start:])
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            return payload
    return {"error": "invalid_request", "error_description": text.splitlines()[0] if text else ""}


def build_token_provider(settings: Settings) -> TokenProvider:
    """Pick the token provider for ``auth_scheme``."""
    if settings.auth_scheme == "AzureServicePrincipal":
        return ServicePrincipalTokenProvider(settings)
    msg = f"auth_scheme {settings.auth_scheme!r} is not supported"
    raise AuthError(msg)
