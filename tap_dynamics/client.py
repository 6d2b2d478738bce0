"""HTTP transport for the Dynamics Web APIs, and the base stream every table stream builds on.

Why not the SDK's ``RESTStream`` request loop: Dataverse paging and failure semantics need more
control than its hooks give. Empty pages can still carry a next or delta link (the SDK stops on
them), ``Retry-After`` must be honoured exactly, a 401 must trigger one token refresh and a resend,
the bearer token must never leave the org host, and ``verify=`` must be passed per request so that
the ``ca_bundle`` setting beats ``REQUESTS_CA_BUNDLE``. :class:`DataverseClient` owns all of that,
is shared by discovery and every stream of a run, and is thread-safe.
"""

from __future__ import annotations

import decimal
import logging
import random
import threading
import time
import typing as t
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import msgspec
import requests
from requests.adapters import HTTPAdapter
from singer_sdk.streams import Stream

from tap_dynamics.fastpath import OUTPUT_LOCK, fast_path_enabled, sync_records_fast
from tap_dynamics.prefetch import PageBudget
from tap_dynamics.summary import RunSummary
from tap_dynamics.errors import (
    AuthError,
    ConnectionProblem,
    DataverseError,
    SecurityError,
    TapDynamicsError,
)
from tap_dynamics.errors import NOT_A_MEMBER, no_application_user

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from singer_sdk.helpers.types import Context

    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.settings import Settings

LOGGER = logging.getLogger("tap-dynamics")

try:
    from importlib.metadata import version as _dist_version

    USER_AGENT = f"tap-dynamics/{_dist_version('tap-dynamics')}"
except Exception:  # pragma: no cover - running from a source tree without metadata
    USER_AGENT = "tap-dynamics/dev"

# Headers Microsoft recommends on every Web API call (compose-http-requests-handle-errors).
BASE_HEADERS = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "If-None-Match": "null",
    "User-Agent": USER_AGENT,
}

# Characters left as-is in query values: OData syntax reads better and Dataverse accepts them.
_QUERY_SAFE = "$,:'()=/*@"

# Decimal-preserving JSON decoder: Money/Decimal columns must survive bit-for-bit (0.1 stays 0.1).
_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)


def encode_query(params: Mapping[str, str]) -> str:
    """Encode OData query options with %20 for spaces (never '+') and readable OData syntax."""
    return "&".join(f"{key}={quote(str(value), safe=_QUERY_SAFE)}" for key, value in params.items())


@dataclass
class Page:
    """One page of a collection: its rows and the links that say what comes next."""

    records: list[dict[str, t.Any]]
    next_link: str | None
    delta_link: str | None
    request_id: str | None
    # Set by streams, applied once the page's records are written (see EntityStream):
    checkpoint: dict[str, t.Any] | None = None  # state keys to set (None values are removed)
    activate_version: int | None = None  # ACTIVATE_VERSION to emit after the page


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, reason: str, wait: float | None = None, *, throttled: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
        self.throttled = throttled


@dataclass
class RequestStats:
    """Counters for the whole run (shared by all threads; updated under a lock)."""

    requests: int = 0
    retries: int = 0
    throttled_seconds: float = 0.0


class DataverseClient:
    """Authenticated, retrying, origin-locked JSON client for one Dynamics org."""

    MAX_ATTEMPTS = 8  # transient failures (5xx, resets, bad JSON) before giving up
    MAX_THROTTLE_WAIT = 1800.0  # total seconds we are prepared to wait on 429s for one request
    DEFAULT_RETRY_AFTER = 5.0  # when a 429 comes without Retry-After
    BACKOFF_BASE = 1.0
    BACKOFF_CAP = 60.0

    def __init__(self, settings: Settings, tokens: TokenProvider, summary: RunSummary | None = None) -> None:
        self.settings = settings
        self.tokens = tokens
        self.origin = settings.url
        self.stats = RequestStats()
        self.summary = summary if summary is not None else RunSummary()
        self._stats_lock = threading.Lock()
        self._local = threading.local()
        # The global in-flight cap: every HTTP request of the run (discovery, pages of all
        # streams, prefetches) holds one slot while on the wire.
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        # Decoded pages alive at once (buffered, on the wire or being written), all streams
        # together: enough to keep every slot busy plus one page being emitted; a fixed number,
        # so memory stays flat whatever the table sizes and the number of tables.
        self.page_budget = PageBudget(settings.max_concurrency + 2)

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def session(self) -> requests.Session:
        """One session per thread: requests sessions are not guaranteed thread-safe."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=8, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._local.session = session
        return session

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        """Absolute Web API URL for ``path`` (relative to ``/api/data/vX.Y``) and query options."""
        url = f"{self.settings.api_base}/{path.lstrip('/')}"
        return f"{url}?{encode_query(params)}" if params else url

    def _check_origin(self, url: str) -> None:
        parts = urlsplit(url)
        origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        if origin != self.origin:
            msg = (
                f"refusing to send the access token to {origin}: it is not the configured org "
                f"{self.origin} (a nextLink or redirect pointed elsewhere)"
            )
            raise SecurityError(msg)

    def _count(self, table: str | None = None, *, retry: bool = False, throttled: float = 0.0) -> None:
        with self._stats_lock:
            self.stats.requests += 0 if retry else 1
            self.stats.retries += 1 if retry else 0
            self.stats.throttled_seconds += throttled
        if retry:
            self.summary.add(table, retries=1, throttled_seconds=throttled)

    # -- requests ---------------------------------------------------------------------------------
    def get_json(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        table: str | None = None,
    ) -> tuple[dict[str, t.Any], requests.Response]:
        """GET ``url`` and return its decoded JSON body, retrying what is worth retrying."""
        self._check_origin(url)
        refreshed = False
        attempt = 0
        throttled = 0.0
        self._count()
        while True:
            attempt += 1
            try:
                return self._attempt(url, headers, table, refreshed)
            except _TokenRejected:
                refreshed = True
                self.tokens.invalidate()
                LOGGER.info("Access token rejected (401); getting a fresh one and resending")
                self._count(table, retry=True)
            except _Retry as retry:
                if retry.throttled:
                    wait = retry.wait if retry.wait is not None else self.DEFAULT_RETRY_AFTER
                    if throttled + wait > self.MAX_THROTTLE_WAIT:
                        msg = (
                            f"{_where(table)}Dataverse kept throttling requests for "
                            f"{throttled:.0f} s (service protection limits); lower max "
                            "concurrency or run outside busy hours"
                        )
                        raise DataverseError(msg, status=429, table=table) from None
                    throttled += wait
                    LOGGER.warning("%sthrottled (429); waiting %.1f s as Retry-After asks", _where(table), wait)
                    self._count(table, retry=True, throttled=wait)
                    time.sleep(wait)
                    continue
                if attempt >= self.MAX_ATTEMPTS:
                    msg = f"{_where(table)}giving up after {attempt} attempts: {retry.reason}"
                    raise DataverseError(msg, table=table) from None
                wait = retry.wait if retry.wait is not None else self._backoff(attempt)
                LOGGER.warning(
                    "%s%s; retrying in %.1f s (attempt %d of %d)",
                    _where(table), retry.reason, wait, attempt + 1, self.MAX_ATTEMPTS,
                )
                self._count(table, retry=True)
                time.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff: spreads retries of parallel requests apart."""
        return random.uniform(0, min(self.BACKOFF_CAP, self.BACKOFF_BASE * 2 ** (attempt - 1)))

    def _attempt(
        self,
        url: str,
        headers: Mapping[str, str] | None,
        table: str | None,
        refreshed: bool,
    ) -> tuple[dict[str, t.Any], requests.Response]:
        request_headers = dict(BASE_HEADERS)
        if headers:
            request_headers.update(headers)
        request_headers["Authorization"] = f"Bearer {self.tokens.token()}"
        try:
            with self._slots:
                response = self.session.get(
                    url,
                    headers=request_headers,
                    timeout=self.settings.request_timeout,
                    verify=self.settings.verify,
                    allow_redirects=False,
                )
                # Read the body while holding the slot: the transfer is part of the request.
                response.content  # noqa: B018
        except requests.exceptions.SSLError:
            msg = (
                f"TLS verification failed for {self.origin} — if a proxy inspects TLS, set "
                "ca_bundle to a PEM file with its CA certificate"
            )
            raise ConnectionProblem(msg) from None
        except requests.exceptions.Timeout:
            raise _Retry(f"no response within {self.settings.request_timeout} s") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retry(f"connection failed ({_short(exc)})") from None

        status = response.status_code
        request_id = response.headers.get("x-ms-service-request-id") or response.headers.get("REQ_ID")
        if status == 200:
            content_type = response.headers.get("Content-Type", "")
            try:
                body = response.content
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
                raise _Retry(f"response body cut off ({_short(exc)})") from None
            if "json" not in content_type:
                raise _Retry(f"expected JSON but got {content_type or 'no content type'} (request id {request_id})")
            try:
                payload = _DECODER.decode(body)
            except msgspec.DecodeError:
                raise _Retry(f"invalid JSON in the response (request id {request_id})") from None
            if not isinstance(payload, dict):
                raise _Retry(f"unexpected JSON shape in the response (request id {request_id})")
            return payload, response
        if status in (301, 302, 303, 307, 308):
            location = response.headers.get("Location", "")
            self._check_origin(location)
            msg = f"{_where(table)}the org redirected to {location}; set url to the final org URL"
            raise DataverseError(msg, status=status, table=table)
        if status == 401:
            if not refreshed:
                raise _TokenRejected
            msg = (
                f"Dataverse rejected a freshly issued token (401) for {self.origin} — check that "
                "url is the org the app has access to and that the token's tenant is the org's tenant"
            )
            raise AuthError(msg)
        if status == 429:
            raise _Retry("throttled", _retry_after(response), throttled=True)
        if status in (500, 502, 503, 504):
            retry_after = _retry_after(response) if status == 503 else None
            raise _Retry(f"HTTP {status} {_error_message(response)} (request id {request_id})", retry_after)
        code, message = _error_code_message(response)
        if status == 403 and code == NOT_A_MEMBER:
            raise no_application_user(self.tokens.identity(), self.origin)
        raise DataverseError(
            f"{_where(table)}HTTP {status}: {message or response.reason}"
            + (f" (code {code})" if code else "")
            + (f" (request id {request_id})" if request_id else ""),
            status=status,
            code=code,
            request_id=request_id,
            table=table,
        )

    def iter_pages(
        self,
        url: str,
        *,
        prefer: str | None = None,
        table: str | None = None,
    ) -> Iterator[Page]:
        """Follow ``@odata.nextLink`` verbatim, with the same ``Prefer`` header, to the end.

        A next link seen before means the server is looping: stop with an error instead of
        reading forever.
        """
        headers = {"Prefer": prefer} if prefer else None
        seen: set[str] = set()
        next_url: str | None = url
        while next_url:
            payload, response = self.get_json(next_url, headers=headers, table=table)
            records = payload.get("value")
            if not isinstance(records, list):
                msg = f"{_where(table)}the response has no 'value' list (request id {_request_id(response)})"
                raise DataverseError(msg, table=table)
            next_link = payload.get("@odata.nextLink")
            if next_link is not None and not isinstance(next_link, str):
                msg = f"{_where(table)}malformed @odata.nextLink in the response"
                raise DataverseError(msg, table=table)
            if next_link:
                if next_link in seen:
                    msg = f"{_where(table)}the server returned a nextLink it had already returned; stopping a pagination loop"
                    raise DataverseError(msg, table=table)
                seen.add(next_link)
            delta_link = payload.get("@odata.deltaLink")
            yield Page(records, next_link or None, delta_link if isinstance(delta_link, str) else None, _request_id(response))
            next_url = next_link or None


class _TokenRejected(Exception):
    """Internal: Dataverse answered 401; refresh the token once and resend."""


def _where(table: str | None) -> str:
    return f"table {table}: " if table else ""


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _request_id(response: requests.Response) -> str | None:
    return response.headers.get("x-ms-service-request-id") or response.headers.get("REQ_ID")


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_code_message(response: requests.Response) -> tuple[str | None, str | None]:
    """Extract ``{"error":{"code","message"}}`` (OData) if the body has it."""
    try:
        payload = _DECODER.decode(response.content)
    except (msgspec.DecodeError, requests.exceptions.RequestException):
        return None, None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        return (str(code) if code else None), (" ".join(str(message).split()) if message else None)
    return None, None


def _error_message(response: requests.Response) -> str:
    _code, message = _error_code_message(response)
    return f"({message[:200]})" if message else ""


class DynamicsStream(Stream):
    """Base stream: every Dynamics stream reads through the run's shared :class:`DataverseClient`."""

    def __init__(
        self,
        tap: t.Any,
        *,
        client: DataverseClient,
        name: str,
        schema: dict[str, t.Any],
    ) -> None:
        self.client = client
        super().__init__(tap, schema=schema, name=name)

    @property
    def settings(self) -> Settings:
        """The run's validated settings."""
        return self.client.settings

    def get_pages(self, context: Context | None) -> Iterator[Page]:
        """The stream's pages, in order. Streams that read pages implement it (fast path)."""
        raise NotImplementedError

    def before_page_state(self, page: Page) -> None:
        """Called after a page's records are written, before its STATE message (under the lock)."""

    def page_done(self, page: Page, rows: int) -> None:
        """Called after a page's ``rows`` records were written (progress counters)."""
        self.client.summary.stream(self.name).live_rows += rows

    def _sync_records(
        self,
        context: Context | None = None,
        *,
        write_messages: bool = True,
    ) -> t.Generator[dict, t.Any, t.Any]:
        """Page-at-a-time record path when nothing needs the SDK's per-record one (fastpath.py)."""
        if (
            write_messages
            and type(self).get_pages is not DynamicsStream.get_pages
            and fast_path_enabled(self, context)
        ):
            return sync_records_fast(self, context)
        return super()._sync_records(context, write_messages=write_messages)

    def _write_schema_message(self) -> None:
        """SCHEMA under the output lock: streams synced in parallel never split a message."""
        with OUTPUT_LOCK:
            super()._write_schema_message()


__all__ = [
    "BASE_HEADERS",
    "DataverseClient",
    "DynamicsStream",
    "Page",
    "TapDynamicsError",
    "encode_query",
]
