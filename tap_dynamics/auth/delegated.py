"""auth_scheme AzureAD: a signed-in user's tokens, kept in a shared, locked token cache file.

Also the ``tap-dynamics login`` command's work (:func:`sign_in`): the interactive sign-in that
fills the cache for scheduled runs.
"""

from __future__ import annotations

import http.server
import logging
import math
import os
import sys
import tempfile
import threading
import time
import typing as t
from urllib import parse as urllib_parse
from urllib.parse import urlsplit

import msal
import requests
from msal_extensions import FilePersistence, PersistedTokenCache
from msal_extensions.persistence import PersistenceNotFound

from tap_dynamics.auth.base import BearerCredential, evict_access_tokens
from tap_dynamics.auth.certificates import client_credential
from tap_dynamics.auth.entra import discovery_failure, instance_discovery
from tap_dynamics.auth.guidance import LOGIN_AGAIN, auth_error_from_response
from tap_dynamics.auth.http import TokenEndpointBusy, VerifyingSession, network_error
from tap_dynamics.config.auth import DelegatedAuth
from tap_dynamics.engine import override
from tap_dynamics.errors import AuthError, ConfigError

if t.TYPE_CHECKING:
    from tap_dynamics.config.common import HttpOptions
    from tap_dynamics.config.resource import Resource
    from tap_dynamics.config.settings import Settings

LOGGER = logging.getLogger("tap-dynamics.auth")


def sign_in(settings: Settings, *, device_code: bool) -> str:
    """``tap-dynamics login``: sign in interactively, save the tokens, say where they are."""
    auth = settings.auth
    if not isinstance(auth, DelegatedAuth):
        msg = (
            f"login is for auth_scheme AzureAD (signing in as a user); auth_scheme "
            f"{settings.auth_scheme} needs no sign-in — run `tap-dynamics check` instead"
        )
        raise ConfigError(msg)
    who = DelegatedCredential(auth, settings.http, settings.resource).login(device_code=device_code)
    return f"signed in as {who}; tokens saved to {auth.token_cache_path} (mode 0600)"


def _write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (the file holds refresh tokens)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".token-cache.", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    os.chmod(path, 0o600)


def _signature(status: os.stat_result) -> tuple[int, int, int, int]:
    return (status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)


class _PrivateFilePersistence(FilePersistence):
    """msal-extensions' file persistence, written atomically with mode 0600, changes seen exactly.

    Its own ``save`` truncates the file in place (a reader in another process could see it half
    written) and keeps an existing file's mode; this one replaces the file whole, always 0600.
    And the cache reloads when the file's modification time is later than its last sync by the
    wall clock — but file times come from a coarse kernel clock, so another process's write a
    few milliseconds later can look older, and the next write would drop it. Here "modified" means
    "not the file this process last read or wrote" (device, inode, time, size): every save makes
    a new inode, so no change goes unseen.
    """

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self._seen: tuple[int, int, int, int] | None = None

    @override
    def save(self, content: str) -> None:
        _write_private(self.get_location(), content)
        self._seen = _signature(os.stat(self.get_location()))  # under the cache's lock

    @override
    def load(self) -> str:
        try:
            with open(self.get_location(), encoding="utf-8") as handle:
                status = os.fstat(handle.fileno())  # the inode read, even if replaced meanwhile
                content = handle.read()
        except FileNotFoundError:
            raise PersistenceNotFound(location=self.get_location()) from None
        self._seen = _signature(status)
        return content

    @override
    def time_last_modified(self) -> float:
        try:
            status = os.stat(self.get_location())
        except FileNotFoundError:
            raise PersistenceNotFound(location=self.get_location()) from None
        return 0.0 if _signature(status) == self._seen else math.inf


def open_token_cache(path: str) -> msal.SerializableTokenCache:
    """The user's token cache at ``path``: persisted under a cross-process lock, mode 0600.

    An unreadable or damaged file is one line now, not an MSAL error at the first token request;
    a file that became group- or world-readable is made private again (it holds refresh tokens).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    persistence = _PrivateFilePersistence(path)
    cache = PersistedTokenCache(persistence)
    if os.path.exists(path):
        try:
            cache.deserialize(persistence.load())
        except (OSError, ValueError):
            msg = f"cannot read the token cache {path} — delete it and {LOGIN_AGAIN}"
            raise ConfigError(msg) from None
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    return t.cast("msal.SerializableTokenCache", cache)


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    """Receives the browser's redirect with ``?code=…&state=…`` on the callback URL."""

    server: _CallbackServer

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        params = dict(urllib_parse.parse_qsl(query))
        if path.rstrip("/") != self.server.expected_path.rstrip("/") or not (
            "code" in params or "error" in params
        ):
            self.send_response(404)
            self.end_headers()
            return
        self.server.params = params
        ok = "code" in params
        body = (
            "<html><body><h3>tap-dynamics: "
            + ("signed in. You can close this window." if ok else "sign-in failed; see the terminal.")
            + "</h3></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @override
    def log_message(self, format: str, *args: t.Any) -> None:
        """Silence the default access log: the query string holds the authorization code."""


class _CallbackServer(http.server.HTTPServer):
    expected_path = "/"
    params: dict[str, str] | None = None



class DelegatedCredential(BearerCredential):
    """AuthScheme=AzureAD: tokens of a signed-in user, kept in a persistent MSAL token cache.

    The first sign-in is interactive (``tap-dynamics login``: authorization code + PKCE on a
    local listener, or the device-code flow on a headless machine); afterwards every run refreshes
    silently from the cache file, and Entra ID's rotated refresh tokens are written back at once,
    so that a scheduled sync never needs a person until the refresh token is revoked or expires.
    The cache is msal-extensions' persisted cache: every change is written under a cross-process
    lock and every read picks up another process's writes, so two runs sharing one cache file
    (two Airflow tasks) never lose each other's rotated refresh token.
    """

    INTERACTIVE_TIMEOUT = 600  # seconds to wait for the browser redirect

    def __init__(self, auth: DelegatedAuth, http: HttpOptions, resource: Resource) -> None:
        super().__init__(http, resource)
        self.auth = auth
        self._lock = threading.RLock()
        self._app: msal.ClientApplication | None = None
        self._cache = open_token_cache(auth.token_cache_path)
        self._http = VerifyingSession(http.verify, min(http.timeout, 60))
        self._username: str | None = None
        self._used_refresh_token = False

    # -- msal ----------------------------------------------------------------------------------
    @property
    def authority(self) -> str:
        """The tenant's authority (or ``organizations``: any work account)."""
        return f"{self.auth.authority_host}/{self.auth.tenant_id}"

    def _build_app(self) -> msal.ClientApplication:
        common: dict[str, t.Any] = {
            "authority": self.authority,
            "instance_discovery": instance_discovery(self.auth.authority_host),
            "http_client": self._http,
            "token_cache": self._cache,
        }
        if self.auth.client_secret or self.auth.certificate:
            return msal.ConfidentialClientApplication(
                self.auth.client_id,
                client_credential=client_credential(self.auth.client_secret, self.auth.certificate),
                **common,
            )
        return msal.PublicClientApplication(self.auth.client_id, **common)

    def _app_or_build(self) -> msal.ClientApplication:
        if self._app is None:
            try:
                self._app = self._build_app()
            except ValueError as exc:
                raise self._fail(discovery_failure(self._http, self.authority, str(exc))) from None
            except (requests.exceptions.RequestException, OSError) as exc:
                raise network_error(self.auth.authority_host, exc) from None
        return self._app

    def _fail(self, payload: t.Mapping[str, t.Any], *, interactive: bool = False) -> AuthError:
        error = auth_error_from_response(
            payload, client_id=self.auth.client_id, tenant_id=self.auth.tenant_id, url=self.resource.audience,
            wrong_resource=self.resource.wrong_resource,
            permission=self.resource.permission,
        )
        saved_sign_in_expired = payload.get("error") == "invalid_grant" and error.code != "65001"
        if saved_sign_in_expired and not interactive and "tap-dynamics login" not in str(error):
            return AuthError(f"{error} — the saved sign-in is no longer valid; {LOGIN_AGAIN}", code=error.code)
        return error

    def _scopes(self) -> list[str]:
        return self.resource.user_scopes

    @override
    def identity(self) -> str:
        return f"user {self._username}" if self._username else "the signed-in user"

    def _remember(self, result: t.Mapping[str, t.Any]) -> None:
        claims = result.get("id_token_claims") or {}
        self._username = claims.get("preferred_username") or claims.get("upn") or self._username

    # -- token ---------------------------------------------------------------------------------
    @override
    def token(self) -> str:
        auth = self.auth
        if auth.initiate_oauth == "OFF":
            return str(auth.access_token)
        with self._lock:
            result = self._silent()
            if result is None:
                if auth.initiate_oauth == "REFRESH":
                    msg = (
                        f"no signed-in user in the token cache {auth.token_cache_path} and "
                        f"no refresh_token set (initiate_oauth REFRESH never signs in) — {LOGIN_AGAIN}"
                    )
                    raise AuthError(msg)
                LOGGER.warning("No saved sign-in for %s; starting an interactive sign-in", self.resource.audience)
                result = self._interactive(device_code=False)
        return str(result["access_token"])

    def _silent(self) -> dict[str, t.Any] | None:
        """A token from the cache (refreshing it if needed) or from the refresh_token setting."""
        app = self._app_or_build()
        try:
            accounts = app.get_accounts()
            if accounts:
                account = accounts[0]
                self._username = account.get("username") or self._username
                result = app.acquire_token_silent_with_error(self._scopes(), account=account)
                if result and "access_token" in result:
                    return result
                if result:
                    raise self._fail(result)
            if self.auth.refresh_token and not self._used_refresh_token:
                result = app.acquire_token_by_refresh_token(self.auth.refresh_token, self._scopes())
                # Only once it was answered: a transient failure (raised above) must be retried.
                self._used_refresh_token = True
                if "access_token" not in result:
                    raise self._fail(result)
                self._remember(result)
                return result
        except requests.exceptions.RequestException as exc:
            raise network_error(self.auth.authority_host, exc) from None
        return None

    @override
    def invalidate(self) -> None:
        with self._lock:
            evict_access_tokens(self._cache)

    # -- interactive ---------------------------------------------------------------------------
    def login(self, *, device_code: bool = False) -> str:
        """Sign in interactively (always) and return who signed in; the cache saves itself."""
        with self._lock:
            self._interactive(device_code=device_code)
        return self._username or "the signed-in user"

    def _interactive(self, *, device_code: bool) -> dict[str, t.Any]:
        app = self._app_or_build()
        try:
            result = self._device_flow(app) if device_code else self._auth_code_flow(app)
        except requests.exceptions.RequestException as exc:
            raise network_error(self.auth.authority_host, exc) from None
        if "access_token" not in result:
            raise self._fail(result, interactive=True)
        self._remember(result)
        return result

    def _device_flow(self, app: msal.ClientApplication) -> dict[str, t.Any]:
        if not isinstance(app, msal.PublicClientApplication):
            # Entra ID only allows the device-code grant for public clients.
            msg = (
                "login --device-code needs a public client: remove client_secret/certificate_path "
                "for AzureAD and turn on 'Allow public client flows' under the app's Authentication page"
            )
            raise ConfigError(msg)
        flow = app.initiate_device_flow(scopes=self._scopes())
        if "user_code" not in flow:
            raise self._fail(flow, interactive=True)
        print(f"tap-dynamics: {flow.get('message')}", file=sys.stderr, flush=True)
        # The person may still be typing the code: a busy token endpoint must not end the login.
        result = _retry_busy(lambda: app.acquire_token_by_device_flow(flow))
        if result.get("error") == "expired_token":
            msg = (
                "the device code expired before the sign-in was finished — run `tap-dynamics login "
                "--device-code` again and complete the sign-in within 15 minutes"
            )
            raise AuthError(msg)
        if result.get("error") == "authorization_declined":
            raise AuthError("the sign-in was declined in the browser — run `tap-dynamics login` again and accept")
        return result

    def _auth_code_flow(self, app: msal.ClientApplication) -> dict[str, t.Any]:
        callback = urlsplit(self.auth.callback_url)
        port = callback.port or (443 if callback.scheme == "https" else 80)
        if callback.scheme != "http":
            msg = "callback_url must be an http://localhost URL for the tap's sign-in listener"
            raise ConfigError(msg)
        try:
            server = _CallbackServer(("127.0.0.1" if callback.hostname == "localhost" else callback.hostname or "", port), _CallbackHandler)
        except OSError as exc:
            msg = (
                f"cannot listen on {self.auth.callback_url} for the sign-in redirect "
                f"({exc.strerror or exc}) — free the port or change callback_url (and the app's "
                "Redirect URI) to another http://localhost port"
            )
            raise ConfigError(msg) from None
        server.expected_path = callback.path or "/"
        server.timeout = 1.0
        try:
            flow = app.initiate_auth_code_flow(self._scopes(), redirect_uri=self.auth.callback_url)
            if "auth_uri" not in flow:
                raise self._fail(flow, interactive=True)
            print(
                f"tap-dynamics: to sign in, open this URL in a browser: {flow['auth_uri']}",
                file=sys.stderr,
                flush=True,
            )
            if sys.stderr.isatty() and not os.environ.get("TAP_DYNAMICS_NO_BROWSER"):
                import webbrowser

                webbrowser.open(flow["auth_uri"])
            deadline = time.monotonic() + self.INTERACTIVE_TIMEOUT
            while server.params is None:
                if time.monotonic() > deadline:
                    msg = f"no sign-in within {self.INTERACTIVE_TIMEOUT} s — run `tap-dynamics login` again"
                    raise AuthError(msg)
                server.handle_request()
        finally:
            server.server_close()
        params = server.params
        if "error" in params:
            return dict(params)
        try:
            return _retry_busy(lambda: app.acquire_token_by_auth_code_flow(flow, params))
        except ValueError:
            msg = "the sign-in redirect did not match this login (state mismatch) — run `tap-dynamics login` again"
            raise AuthError(msg) from None


T = t.TypeVar("T")
INTERACTIVE_ATTEMPTS = 8  # token requests of an interactive sign-in, as many as the client's


def _retry_busy(call: t.Callable[[], T]) -> T:
    """Run one step of an interactive sign-in, retrying a busy token endpoint.

    A sync retries through the client (:class:`~tap_dynamics.errors.TokenServiceUnavailable`); a
    sign-in has no client around it, and a person on the other end, so its token requests are
    retried here: ``Retry-After`` when given, else 1, 2, 4 … 30 s. The last failure is raised as
    it is.
    """
    for attempt in range(1, INTERACTIVE_ATTEMPTS + 1):
        try:
            return call()
        except TokenEndpointBusy as exc:
            if attempt == INTERACTIVE_ATTEMPTS:
                raise
            wait = exc.retry_after if exc.retry_after is not None else min(30.0, 2.0 ** (attempt - 1))
            LOGGER.warning(
                "%s; retrying in %.1f s (attempt %d of %d)", exc.reason, wait, attempt + 1, INTERACTIVE_ATTEMPTS
            )
            time.sleep(min(wait, 900.0))
    raise AssertionError("unreachable")  # pragma: no cover
