"""Access tokens for the Dynamics org, from Entra ID through MSAL.

One :class:`TokenProvider` per run is shared by discovery and every stream, so that MSAL's token
cache serves all of them and a token is only requested when the cached one is within five minutes
of expiry (MSAL's own margin). The MSAL application is built lazily because its constructor does
network I/O (tenant discovery), and it gets an HTTP client that passes ``verify=`` on every call:
a plain ``requests.Session`` would let ``REQUESTS_CA_BUNDLE`` override the ``ca_bundle`` setting.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import http.server
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import typing as t
from urllib import parse as urllib_parse
from urllib.parse import urlsplit

import msal
import requests
import urllib3

from tap_dynamics.errors import (
    AADSTS_GUIDANCE,
    AuthError,
    ConfigError,
    ConnectionProblem,
    TapDynamicsError,
    TokenServiceUnavailable,
    auth_error_from_response,
)

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


class TokenEndpointBusy(requests.exceptions.RequestException):
    """A transient failure of a token endpoint, raised inside MSAL's HTTP client.

    Raised from :class:`VerifyingSession` rather than letting MSAL see the answer, because MSAL
    turns a 5xx into a bare ``MsalServiceError``, a 429 with a JSON body into an ``error`` dict
    that looks like a wrong credential, and an HTML page into a ``ValueError`` — and it caches
    429/5xx answers for their ``Retry-After``, so a retry would be answered from that cache. An
    exception is never cached, and being a ``RequestException`` lets MSAL fall back to a still
    valid cached token during a proactive refresh. Providers turn it into
    :class:`TokenServiceUnavailable`, which the client retries like any other request.
    """

    def __init__(self, reason: str, retry_after: float | None = None, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.request_id = request_id


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP-date (RFC 9110 allows both)."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when no connection was made (DNS, refused, connect timeout): the host is wrong or
    unreachable, a setting to fix. False when it dropped after the request was sent."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def _is_permanent(response: requests.Response) -> bool:
    """A 5xx that carries a known Entra ID error (App Service's managed identity endpoint
    answers a wrong resource with 500 + AADSTS500011): a setting to fix, not a busy service."""
    code = _AADSTS_IN_TEXT.search(response.text[:4000])
    return code is not None and code.group(1) in AADSTS_GUIDANCE


_AADSTS_IN_TEXT = re.compile(r"AADSTS(\d+)")


class VerifyingSession(requests.Session):
    """MSAL's HTTP client: always sends its own ``verify`` and timeout; raises on a busy service.

    requests merges ``REQUESTS_CA_BUNDLE`` into every call that does not pass ``verify`` itself,
    overriding ``Session.verify``; MSAL never passes it. Passing it here makes the setting win.
    Transient answers (429, 5xx, a proxy's HTML page, a connection dropped mid-answer) raise
    :class:`TokenEndpointBusy` here, before MSAL misreads or caches them.
    """

    def __init__(self, verify: str | bool, timeout: float | tuple[float, float]) -> None:
        super().__init__()
        self._verify = verify
        self._timeout = timeout

    def request(self, method: str, url: str, *args: t.Any, **kwargs: t.Any) -> requests.Response:  # type: ignore[override]
        """Send with the configured CA bundle and a timeout, whatever the caller passed."""
        kwargs["verify"] = self._verify
        kwargs.setdefault("timeout", self._timeout)
        parts = urlsplit(url)
        where = f"the token request to {parts.scheme}://{parts.netloc}"
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.exceptions.SSLError:
            raise
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise
            raise TokenEndpointBusy(f"{where} lost its connection ({type(exc).__name__})") from None
        except requests.exceptions.Timeout:
            raise TokenEndpointBusy(f"{where} got no answer within the request timeout") from None
        except requests.exceptions.RequestException as exc:  # body cut off, bad encoding
            raise TokenEndpointBusy(f"{where} got a cut-off answer ({type(exc).__name__})") from None
        status = response.status_code
        request_id = response.headers.get("x-ms-request-id") or response.headers.get("client-request-id")
        content_type = response.headers.get("Content-Type", "")
        if status == 429 or (status >= 500 and not _is_permanent(response)):
            detail = _first_error_line(response) if "json" in content_type else ""
            if not detail:
                detail = f"{content_type.split(';')[0] or 'no content type'} page, probably from a proxy"
            raise TokenEndpointBusy(
                f"{where} got HTTP {status} ({detail})",
                retry_after_seconds(response.headers.get("Retry-After")),
                request_id,
            )
        if status == 200 and "json" not in content_type:
            raise TokenEndpointBusy(
                f"{where} got a {content_type.split(';')[0] or 'no content type'} page instead of "
                "JSON (a proxy or gateway usually sends those)",
                request_id=request_id,
            )
        return response


def _first_error_line(response: requests.Response) -> str:
    """The first line of an OAuth error body's description (no trace ids), for messages."""
    try:
        payload = response.json()
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    text = str(payload.get("error_description") or payload.get("message") or payload.get("error") or "")
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def evict_access_tokens(cache: msal.TokenCache) -> None:
    """Remove every access token from an MSAL cache (after a 401), keeping refresh tokens.

    ``list()`` first: ``search`` is a generator over the cache's live dict, and removing from
    it while iterating raises ``RuntimeError: dictionary changed size during iteration``.
    """
    for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
        cache.remove_at(item)


class TokenProvider:
    """Base class: hands out bearer tokens for the org and refreshes them when asked."""

    # Whether a 401 is worth one fresh credential and a resend: a new bearer token cures an
    # expired or revoked one, while a Windows password (NTLM) cannot change between two requests
    # and each wrong try counts towards the account's lockout.
    refreshable = True
    credential = "the access token"  # what the client refuses to send off the org host, for messages

    def prepare(self, headers: dict[str, str]) -> requests.auth.AuthBase | None:
        """Authorize one Web API request: set its headers, or return a requests auth handler.

        Called by the client inside its in-flight slot, so a token request (or a Windows
        handshake) counts against ``max_concurrency`` like any other request.
        """
        headers["Authorization"] = f"Bearer {self.token()}"
        return None

    def rejected(self, origin: str) -> TapDynamicsError:
        """The error for a 401 that a fresh credential did not cure."""
        msg = (
            f"Dataverse rejected a freshly issued token (401) for {origin} — check that "
            "url is the org the app has access to and that the token's tenant is the org's tenant"
        )
        return AuthError(msg)

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
    """Client-credentials flow (AuthScheme=AzureServicePrincipal) with a client secret or certificate."""

    RETRIES = 4  # for a token endpoint that cannot be reached at all; transient answers go to the client

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
            client_credential=client_credential(self._settings),
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

    def _network_error(self, exc: Exception) -> TapDynamicsError:
        return _network_error(self._settings, exc)

    def _acquire(self) -> dict[str, t.Any]:
        delay = 1.0
        for attempt in range(1, self.RETRIES + 1):
            try:
                if self._app is None:
                    self._app = self._build_app()
                return self._app.acquire_token_for_client(
                    scopes=[self._settings.scope], **self._token_request_options()
                )
            except ValueError as exc:
                # MSAL raises ValueError when tenant (OIDC) discovery gets a 4xx; the body is
                # Entra's JSON error (e.g. AADSTS90002 for an unknown tenant).
                raise self._fail(_discovery_failure(self._http, self.authority, str(exc))) from None
            except (requests.exceptions.SSLError, TokenEndpointBusy) as exc:
                raise self._network_error(exc) from None  # busy: the client retries it
            except (requests.exceptions.RequestException, OSError) as exc:
                if attempt == self.RETRIES:
                    raise self._network_error(exc) from None
                LOGGER.warning(
                    "Token request failed (%s); retrying in %.0f s", type(exc).__name__, delay
                )
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _token_request_options(self) -> dict[str, t.Any]:
        """Extra options of the token request (none for Entra ID)."""
        return {}

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
            # A new cache rather than evict_access_tokens: it holds only this app's tokens, and
            # MSAL's search() skips tokens whose request had extra body fields (ext_cache_key:
            # AD FS's `resource`), so an eviction would leave the rejected AD FS token in place.
            self._app.token_cache = msal.TokenCache()


def _discovery_failure(http: requests.Session, authority: str, text: str) -> dict[str, t.Any]:
    """Entra's own error for a failed tenant discovery.

    MSAL ≥ 1.3x raises ``ValueError('Unable to get authority configuration …')`` without the
    response body, so the body (e.g. AADSTS90002 for an unknown tenant) is fetched once more.
    """
    if "{" not in text:
        try:
            answer = http.get(f"{authority}/v2.0/.well-known/openid-configuration")
            payload = answer.json()
            if isinstance(payload, dict) and payload.get("error"):
                return payload
        except (requests.exceptions.RequestException, ValueError):
            pass
    return _payload_from_discovery_error(text)


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


# --- certificates ------------------------------------------------------------------------------


def client_credential(settings: Settings) -> str | dict[str, t.Any]:
    """What MSAL gets as ``client_credential``: the secret, or a certificate description.

    The certificate file is read here (before any network call) so that a wrong password, a PEM
    without its private key or a file that is not a certificate is one clear line, not an MSAL
    traceback. PFX files go to MSAL by path, which makes it sign with PS256 and send
    ``x5t#S256``; PEM keys go with their SHA-1 thumbprint (RS256 + ``x5t``), which Entra ID
    accepts for every registered certificate.
    """
    if not settings.certificate_path:
        return settings.client_secret
    info = load_certificate(settings)
    if settings.certificate_type == "PFXFILE":
        credential: dict[str, t.Any] = {"private_key_pfx_path": settings.certificate_path}
        if settings.certificate_password:
            credential["passphrase"] = settings.certificate_password
        return credential
    return {"private_key": info["private_key_pem"], "thumbprint": info["sha1"]}


def load_certificate(settings: Settings) -> dict[str, t.Any]:
    """Read the certificate and key; return thumbprints, expiry and an unencrypted key PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    path = str(settings.certificate_path)
    password = settings.certificate_password.encode() if settings.certificate_password else None
    with open(path, "rb") as handle:
        data = handle.read()
    if settings.certificate_type == "PFXFILE":
        try:
            key, cert, _extra = pkcs12.load_key_and_certificates(data, password)
        except ValueError:
            hint = "certificate_password is wrong" if password else "the file needs certificate_password"
            msg = (
                f"cannot open the PFX file {path}: {hint} (or it is not a PKCS#12 file — "
                "set certificate_type PEMKEY_FILE for PEM)"
            )
            raise ConfigError(msg) from None
    else:
        cert = None
        key = None
        try:
            certs = x509.load_pem_x509_certificates(data)
            cert = certs[0] if certs else None
        except ValueError:
            cert = None
        key_pem = _pem_block(data, b"PRIVATE KEY")
        if key_pem:
            try:
                key = serialization.load_pem_private_key(key_pem, password)
            except TypeError:
                msg = (
                    f"the private key in {path} is encrypted — set certificate_password"
                    if password is None
                    else f"the private key in {path} is not encrypted — remove certificate_password"
                )
                raise ConfigError(msg) from None
            except ValueError:
                msg = f"cannot read the private key in {path}: certificate_password is wrong or the key is damaged"
                raise ConfigError(msg) from None
        if key is None:
            msg = (
                f"the PEM file {path} has no private key — certificate_path needs the private key "
                "and the certificate in one file (PEMKEY_FILE), or use a PFX file"
            )
            raise ConfigError(msg)
    if cert is None:
        msg = (
            f"the file {path} has no certificate — include the certificate that is uploaded to "
            "the app registration next to the private key"
        )
        raise ConfigError(msg)
    der = cert.public_bytes(serialization.Encoding.DER)
    not_after = cert.not_valid_after_utc
    if not_after < dt.datetime.now(dt.timezone.utc):
        # Entra ID is the judge (and says AADSTS700027 with the reason); say it early in the log.
        LOGGER.warning("The certificate in %s expired on %s", path, not_after.date())
    return {
        "sha1": hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 - the thumbprint Azure shows
        "sha256": base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).rstrip(b"=").decode(),
        "not_after": not_after,
        "private_key_pem": key.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    }


def _pem_block(data: bytes, label_suffix: bytes) -> bytes:
    """The first PEM block whose label ends with ``label_suffix`` (e.g. ``PRIVATE KEY``)."""
    for chunk in data.split(b"-----BEGIN ")[1:]:
        label = chunk.split(b"-----", 1)[0]
        if label.endswith(label_suffix):
            end = chunk.index(b"-----END " + label + b"-----") + len(b"-----END " + label + b"-----")
            return b"-----BEGIN " + chunk[:end] + b"\n"
    return b""


# --- delegated (AzureAD) -------------------------------------------------------------------------


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


LOGIN_AGAIN = "run `tap-dynamics login --config …` again to sign in"


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    """Receives the browser's redirect with ``?code=…&state=…`` on the callback URL."""

    server: _CallbackServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
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

    def log_message(self, format: str, *args: t.Any) -> None:  # noqa: A002
        """Silence the default access log: the query string holds the authorization code."""


class _CallbackServer(http.server.HTTPServer):
    expected_path = "/"
    params: dict[str, str] | None = None



class DelegatedTokenProvider(TokenProvider):
    """AuthScheme=AzureAD: tokens of a signed-in user, kept in a persistent MSAL token cache.

    The first sign-in is interactive (``tap-dynamics login``: authorization code + PKCE on a
    local listener, or the device-code flow on a headless machine); afterwards every run refreshes
    silently from the cache file, and Entra ID's rotated refresh tokens are written back at once,
    so that a scheduled sync never needs a person until the refresh token is revoked or expires.
    """

    INTERACTIVE_TIMEOUT = 600  # seconds to wait for the browser redirect

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.RLock()
        self._app: msal.ClientApplication | None = None
        self._cache = msal.SerializableTokenCache()
        self._http = VerifyingSession(settings.verify, min(settings.request_timeout, 60))
        self._username: str | None = None
        self._used_refresh_token = False
        self._load_cache()

    # -- cache ---------------------------------------------------------------------------------
    def _load_cache(self) -> None:
        path = self._settings.token_cache_path
        if not os.path.exists(path):
            return
        try:
            with open(path, encoding="utf-8") as handle:
                self._cache.deserialize(handle.read())
        except (OSError, ValueError):
            msg = f"cannot read the token cache {path} — delete it and {LOGIN_AGAIN}"
            raise ConfigError(msg) from None
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)  # it holds refresh tokens: never group/world readable

    def _save_cache(self) -> None:
        if self._cache.has_state_changed:
            _write_private(self._settings.token_cache_path, self._cache.serialize())
            self._cache.has_state_changed = False

    # -- msal ----------------------------------------------------------------------------------
    @property
    def authority(self) -> str:
        return f"{self._settings.authority_host}/{self._settings.tenant_id}"

    def _build_app(self) -> msal.ClientApplication:
        host = urlsplit(self._settings.authority_host).hostname or ""
        common = {
            "authority": self.authority,
            "instance_discovery": host in MICROSOFT_AUTHORITY_HOSTS,
            "http_client": self._http,
            "token_cache": self._cache,
        }
        if self._settings.client_secret or self._settings.certificate_path:
            return msal.ConfidentialClientApplication(
                self._settings.client_id, client_credential=client_credential(self._settings), **common
            )
        return msal.PublicClientApplication(self._settings.client_id, **common)

    def _app_or_build(self) -> msal.ClientApplication:
        if self._app is None:
            try:
                self._app = self._build_app()
            except ValueError as exc:
                raise self._fail(_discovery_failure(self._http, self.authority, str(exc))) from None
            except requests.exceptions.SSLError as exc:
                raise _network_error(self._settings, exc) from None
            except (requests.exceptions.RequestException, OSError) as exc:
                raise _network_error(self._settings, exc) from None
        return self._app

    def _fail(self, payload: t.Mapping[str, t.Any], *, interactive: bool = False) -> AuthError:
        error = auth_error_from_response(
            payload,
            client_id=self._settings.client_id,
            tenant_id=self._settings.tenant_id,
            url=self._settings.url,
        )
        if payload.get("error") == "invalid_grant" and error.code not in ("65001",) and not interactive:
            if "tap-dynamics login" not in str(error):
                return AuthError(f"{error} — the saved sign-in is no longer valid; {LOGIN_AGAIN}", code=error.code)
        return error

    def _scopes(self) -> list[str]:
        return [self._settings.delegated_scope]

    def identity(self) -> str:
        return f"user {self._username}" if self._username else "the signed-in user"

    def _remember(self, result: t.Mapping[str, t.Any]) -> None:
        claims = result.get("id_token_claims") or {}
        self._username = claims.get("preferred_username") or claims.get("upn") or self._username

    # -- token ---------------------------------------------------------------------------------
    def token(self) -> str:
        settings = self._settings
        if settings.initiate_oauth == "OFF":
            return str(settings.access_token)
        with self._lock:
            try:
                result = self._silent()
                if result is None:
                    if settings.initiate_oauth == "REFRESH":
                        msg = (
                            f"no signed-in user in the token cache {settings.token_cache_path} and "
                            f"no refresh_token set (initiate_oauth REFRESH never signs in) — {LOGIN_AGAIN}"
                        )
                        raise AuthError(msg)
                    LOGGER.warning("No saved sign-in for %s; starting an interactive sign-in", settings.url)
                    result = self._interactive(device_code=False)
            finally:
                self._save_cache()
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
            if self._settings.refresh_token and not self._used_refresh_token:
                result = app.acquire_token_by_refresh_token(self._settings.refresh_token, self._scopes())
                # Only once it was answered: a transient failure (raised above) must be retried.
                self._used_refresh_token = True
                if "access_token" not in result:
                    raise self._fail(result)
                self._remember(result)
                return result
        except requests.exceptions.RequestException as exc:
            raise _network_error(self._settings, exc) from None
        return None

    def invalidate(self) -> None:
        with self._lock:
            evict_access_tokens(self._cache)

    # -- interactive ---------------------------------------------------------------------------
    def login(self, *, device_code: bool = False) -> str:
        """Sign in interactively (always), save the cache, and return who signed in."""
        with self._lock:
            try:
                self._interactive(device_code=device_code)
            finally:
                self._save_cache()
        return self._username or "the signed-in user"

    def _interactive(self, *, device_code: bool) -> dict[str, t.Any]:
        app = self._app_or_build()
        try:
            result = self._device_flow(app) if device_code else self._auth_code_flow(app)
        except requests.exceptions.RequestException as exc:
            raise _network_error(self._settings, exc) from None
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
        print(f"tap-dynamics: {flow.get('message')}", file=sys.stderr, flush=True)  # noqa: T201
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
        callback = urlsplit(self._settings.callback_url)
        port = callback.port or (443 if callback.scheme == "https" else 80)
        if callback.scheme != "http":
            msg = "callback_url must be an http://localhost URL for the tap's sign-in listener"
            raise ConfigError(msg)
        try:
            server = _CallbackServer(("127.0.0.1" if callback.hostname == "localhost" else callback.hostname or "", port), _CallbackHandler)
        except OSError as exc:
            msg = (
                f"cannot listen on {self._settings.callback_url} for the sign-in redirect "
                f"({exc.strerror or exc}) — free the port or change callback_url (and the app's "
                "Redirect URI) to another http://localhost port"
            )
            raise ConfigError(msg) from None
        server.expected_path = callback.path or "/"
        server.timeout = 1.0
        try:
            flow = app.initiate_auth_code_flow(self._scopes(), redirect_uri=self._settings.callback_url)
            if "auth_uri" not in flow:
                raise self._fail(flow, interactive=True)
            print(  # noqa: T201
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

    A sync retries through the client (:class:`TokenServiceUnavailable`); a sign-in has no
    client around it, and a person on the other end, so its token requests are retried here:
    ``Retry-After`` when given, else 1, 2, 4 … 30 s. The last failure is raised as it is.
    """
    for attempt in range(1, INTERACTIVE_ATTEMPTS + 1):
        try:
            return call()
        except TokenEndpointBusy as exc:
            if attempt == INTERACTIVE_ATTEMPTS:
                raise
            wait = exc.retry_after if exc.retry_after is not None else min(30.0, 2.0 ** (attempt - 1))
            LOGGER.warning("%s; retrying in %.1f s (attempt %d of %d)", exc.reason, wait, attempt + 1,
                           INTERACTIVE_ATTEMPTS)
            time.sleep(min(wait, 900.0))
    raise AssertionError("unreachable")  # pragma: no cover


# --- managed identity (AzureMSI) -----------------------------------------------------------------


class ManagedIdentityTokenProvider(TokenProvider):
    """AuthScheme=AzureMSI: the managed identity of the Azure host (VM, App Service, AKS…).

    MSAL's ``ManagedIdentityClient`` finds the local identity endpoint from the environment
    (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` on App Service and Functions, IMDS at
    169.254.169.254 on VMs) and caches the token. No secret exists anywhere.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._cache = msal.TokenCache()
        # A short connect timeout: off Azure, IMDS is an address nobody answers.
        self._http = VerifyingSession(settings.verify, (5.0, min(settings.request_timeout, 60)))
        identity: t.Any
        if settings.managed_identity_client_id:
            identity = msal.UserAssignedManagedIdentity(client_id=settings.managed_identity_client_id)
        else:
            identity = msal.SystemAssignedManagedIdentity()
        self._client = msal.ManagedIdentityClient(identity, http_client=self._http, token_cache=self._cache)
        self._app_id: str | None = None

    def identity(self) -> str:
        who = self._app_id or self._settings.managed_identity_client_id
        return f"managed identity {who}" if who else "the system-assigned managed identity"

    def token(self) -> str:
        with self._lock:
            try:
                result = self._client.acquire_token_for_client(resource=self._settings.url)
            except TokenEndpointBusy as exc:
                raise _busy(exc) from None
            except (requests.exceptions.RequestException, OSError, ValueError) as exc:
                msg = (
                    f"cannot reach the managed identity endpoint ({type(exc).__name__}) — "
                    "AzureMSI works only on an Azure host (VM, App Service, Functions, AKS) with a "
                    "managed identity turned on; elsewhere use AzureServicePrincipal"
                )
                raise ConnectionProblem(msg) from None
        if "access_token" not in result:
            description = str(result.get("error_description") or result.get("error") or "")
            first = description.strip().splitlines()[0] if description.strip() else "unknown error"
            msg = (
                f"the managed identity endpoint refused a token: {first} — check that the identity "
                "is assigned to this host and, for a user-assigned one, managed_identity_client_id"
            )
            raise AuthError(msg)
        self._app_id = _unverified_claim(result["access_token"], "appid") or self._app_id
        return str(result["access_token"])

    def invalidate(self) -> None:
        with self._lock:
            evict_access_tokens(self._cache)


def _unverified_claim(token: str, name: str) -> str | None:
    """Read one claim of a JWT for messages (who we are); never used for any decision."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    value = claims.get(name) if isinstance(claims, dict) else None
    return str(value) if value else None


def _busy(exc: TokenEndpointBusy) -> TokenServiceUnavailable:
    return TokenServiceUnavailable(exc.reason, retry_after=exc.retry_after, request_id=exc.request_id)


def _network_error(settings: Settings, exc: Exception) -> TapDynamicsError:
    if isinstance(exc, TokenEndpointBusy):
        return _busy(exc)
    host = settings.authority_host
    if isinstance(exc, requests.exceptions.SSLError):
        return ConnectionProblem(
            f"TLS verification failed for the authority host {host} — if a proxy inspects "
            "TLS, set ca_bundle to a PEM file with its CA certificate"
        )
    return ConnectionProblem(
        f"cannot reach the authority host {host} ({type(exc).__name__}) — check "
        "authority_host and the network/proxy settings"
    )


def build_token_provider(settings: Settings) -> TokenProvider:
    """Pick the token provider for ``auth_scheme``."""
    if settings.auth_scheme == "AzureServicePrincipal":
        return ServicePrincipalTokenProvider(settings)
    if settings.auth_scheme == "AzureAD":
        return DelegatedTokenProvider(settings)
    if settings.auth_scheme == "AzureMSI":
        return ManagedIdentityTokenProvider(settings)
    if settings.auth_scheme == "NTLM":
        from tap_dynamics.onprem.auth import NtlmAuthProvider

        return NtlmAuthProvider(settings)
    if settings.auth_scheme == "ADFS":
        from tap_dynamics.onprem.auth import AdfsTokenProvider

        return AdfsTokenProvider(settings)
    msg = f"auth_scheme {settings.auth_scheme!r} is not supported"
    raise AuthError(msg)
