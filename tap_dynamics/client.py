"""HTTP transport for the Dynamics Web APIs, and the base stream every table stream builds on.

Why not the SDK's ``RESTStream`` request loop: Dataverse paging and failure semantics need more
control than its hooks give. Empty pages can still carry a next or delta link (the SDK stops on
them), ``Retry-After`` must be honoured exactly, a 401 must trigger one token refresh and a resend,
the bearer token must never leave the org host, and ``verify=`` must be passed per request so that
the ``ca_bundle`` setting beats ``REQUESTS_CA_BUNDLE``. :class:`DataverseClient` owns all of that,
is shared by discovery and every stream of a run, and is thread-safe.
"""

from __future__ import annotations

import datetime as dt
import decimal
import email.utils
import logging
import random
import re
import threading
import time
import typing as t
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import msgspec
import requests
import urllib3
from requests.adapters import HTTPAdapter
from singer_sdk.streams import Stream

from tap_dynamics.fastpath import OUTPUT_LOCK, fast_path_enabled, sync_records_fast
from tap_dynamics.prefetch import PageBudget
from tap_dynamics.summary import RunSummary
from tap_dynamics.errors import (
    ConnectionProblem,
    DataverseError,
    SecurityError,
    ServiceUnavailable,
    TapDynamicsError,
    TokenServiceUnavailable,
)
from tap_dynamics.errors import NOT_A_MEMBER, cannot_reach, no_application_user

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from singer_sdk.helpers.types import Context

    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.config import Settings

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

# Dataverse's generic "unexpected error" code, also returned for timeouts and oversized responses.
TOO_LARGE_CODE = "0x80040216"
# An expired change-tracking token: final whatever the status (the stream re-baselines).
EXPIRED_TOKEN_CODE = "0x80044352"
# What a date-time cursor value looks like (the sort check and the bookmark compare them as text).
_DATETIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)\Z")

# Characters left as-is in query values: OData syntax reads better and Dataverse accepts them.
_QUERY_SAFE = "$,:'()=/*@"

# Decimal-preserving JSON decoder: Money/Decimal columns must survive bit-for-bit (0.1 stays 0.1).
_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)


class _PageBody(msgspec.Struct):
    """A collection page as read off the wire: the links, and each row still as raw JSON.

    msgspec checks the whole document (a cut-off or malformed body is still caught, and
    retried, where it arrives) but leaves the rows undecoded: see :class:`Rows`.
    """

    value: list[msgspec.Raw]
    next_link: str | None = msgspec.field(name="@odata.nextLink", default=None)
    delta_link: str | None = msgspec.field(name="@odata.deltaLink", default=None)


_PAGE_DECODER = msgspec.json.Decoder(_PageBody)


class Rows(Sequence):
    """A page's rows: raw JSON until first used, then decoded once, in the thread that uses them.

    Why: pages wait in the prefetch buffer (prefetch.py) for their turn to be written. A
    5,000-row ``account`` page is 5.7 MB of JSON but 13 MB of decoded dicts, so buffered pages
    are kept raw and only the page being written is decoded: the same CPU (decoding row by row
    costs no more than the whole body at once), half the memory. The row checks run when the
    rows are decoded and raise the same errors they raised on arrival.
    """

    __slots__ = ("__weakref__", "_check", "_raw", "_rows")

    def __init__(self, raw: list[msgspec.Raw], check: t.Callable[[list[t.Any]], None]) -> None:
        self._raw: list[msgspec.Raw] | None = raw
        self._rows: list[dict[str, t.Any]] | None = None
        self._check: t.Callable[[list[t.Any]], None] | None = check

    def decoded(self) -> list[dict[str, t.Any]]:
        """The rows as dicts (decoded and checked on the first call)."""
        rows = self._rows
        if rows is None:
            decode = _DECODER.decode
            decoded = [decode(raw) for raw in self._raw or ()]
            if self._check is not None:
                self._check(decoded)
            self._rows = rows = decoded
            self._raw = self._check = None
        return rows

    def __len__(self) -> int:
        return len(self._rows) if self._rows is not None else len(self._raw or ())

    def __getitem__(self, index: t.Any) -> t.Any:
        return self.decoded()[index]

    def __iter__(self) -> Iterator[dict[str, t.Any]]:
        return iter(self.decoded())

    def __repr__(self) -> str:
        state = "decoded" if self._rows is not None else "raw"
        return f"<Rows: {len(self)} rows, {state}>"


def encode_query(params: Mapping[str, str]) -> str:
    """Encode OData query options with %20 for spaces (never '+') and readable OData syntax."""
    return "&".join(f"{key}={quote(str(value), safe=_QUERY_SAFE)}" for key, value in params.items())


@dataclass
class Page:
    """One page of a collection: its rows and the links that say what comes next."""

    records: Sequence[dict[str, t.Any]]  # a list, or raw rows decoded on first use (Rows)
    next_link: str | None
    delta_link: str | None
    request_id: str | None
    # Set by streams, applied once the page's records are written (see EntityStream):
    checkpoint: dict[str, t.Any] | None = None  # state keys to set (None values are removed)
    activate_version: int | None = None  # ACTIVATE_VERSION to emit after the page
    deletes: int = 0  # how many of the records are deletion markers (change tracking)


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying.

    ``shrink`` marks failures that a smaller page may avoid (read timeouts, "response too
    large"); ``request_id`` is kept so that the final error can name it for a support case.
    """

    def __init__(
        self,
        reason: str,
        wait: float | None = None,
        *,
        throttled: bool = False,
        shrink: bool = False,
        request_id: str | None = None,
        unconnected: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
        self.throttled = throttled
        self.shrink = shrink
        self.request_id = request_id
        self.unconnected = unconnected  # no TCP/TLS connection at all (refused, DNS, no route)


_MAXPAGESIZE_RE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)")


class PageSizer:
    """The adaptive ``odata.maxpagesize`` of one stream.

    Why: a page of wide rows can take longer than the request timeout or exceed the response
    size limit; the same query with fewer rows per page works. Halve on such a failure, and
    double back (up to what was asked) after :attr:`GROW_AFTER` good pages in a row, so that
    one slow page does not slow the whole table down for good. Only the ``Prefer`` header
    changes: nextLinks are still followed verbatim (Dataverse's paging cookie holds the
    position, not the page size).
    """

    MIN_SIZE = 10
    GROW_AFTER = 10

    def __init__(self, requested: int) -> None:
        self.requested = requested
        self.size = requested
        self._good = 0
        self._lock = threading.Lock()

    def shrink(self) -> bool:
        """Halve the page size; False when it cannot get any smaller."""
        with self._lock:
            self._good = 0
            if self.size <= self.MIN_SIZE:
                return False
            self.size = max(self.MIN_SIZE, self.size // 2)
            return True

    def success(self) -> None:
        """One good page: after enough of them, grow back towards the requested size."""
        with self._lock:
            if self.size >= self.requested:
                return
            self._good += 1
            if self._good >= self.GROW_AFTER:
                self._good = 0
                self.size = min(self.requested, self.size * 2)

    def prefer(self, prefer: str) -> str:
        """``prefer`` with its maxpagesize replaced by the current size."""
        return _MAXPAGESIZE_RE.sub(f"odata.maxpagesize={self.size}", prefer)


@dataclass
class RequestStats:
    """Counters for the whole run (shared by all threads; updated under a lock)."""

    requests: int = 0
    retries: int = 0
    throttled_seconds: float = 0.0
    paced_seconds: float = 0.0


class DataverseClient:
    """Authenticated, retrying, origin-locked JSON client for one Dynamics org."""

    MAX_ATTEMPTS = 8  # transient failures (5xx, resets, bad JSON) before giving up
    # Until the org has answered once in this run, a failure to connect at all (refused, DNS,
    # no route) is most likely a wrong url or proxy, not an outage: give up after this many
    # attempts with "cannot reach", rather than minutes of backoff.
    UNREACHED_ATTEMPTS = 3
    MAX_RETRY_SECONDS = 300.0  # and at most this long in backoff sleeps for one request
    MAX_THROTTLE_WAIT = 1800.0  # total seconds we are prepared to wait on 429s for one request
    MAX_THROTTLES = 100  # and at most this many 429s (a Retry-After of 0 must not loop forever)
    DEFAULT_RETRY_AFTER = 5.0  # when a 429 comes without Retry-After
    MAX_RETRY_AFTER = 900.0  # a Retry-After beyond this is treated as this (a broken header)
    BACKOFF_BASE = 1.0
    BACKOFF_CAP = 60.0
    # Proactive slowdown: below these remaining budgets (x-ms-ratelimit-* headers) every
    # request of the run waits a little, more the closer the budget is to zero.
    LOW_BURST_REQUESTS = 200
    LOW_TIME_SECONDS = 60.0
    MAX_PACE = 2.0

    def __init__(self, settings: Settings, tokens: TokenProvider, summary: RunSummary | None = None) -> None:
        self.settings = settings
        self.tokens = tokens
        self.origin = settings.url
        self.stats = RequestStats()
        self.summary = summary if summary is not None else RunSummary()
        self._stats_lock = threading.Lock()
        self._reached = False  # set once any HTTP response came back from the org
        self._local = threading.local()
        # The global in-flight cap: every HTTP request of the run (discovery, pages of all
        # streams, prefetches) holds one slot while on the wire.
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        # Decoded pages alive at once (buffered, on the wire or being written), all streams
        # together: enough to keep every slot busy plus one page being emitted; a fixed number,
        # so memory stays flat whatever the table sizes and the number of tables.
        self.page_budget = PageBudget(settings.max_concurrency + 2)
        # Run-wide pause: a 429 (or a nearly spent budget) holds back every thread, because
        # Dataverse's limits are per user, not per request.
        self._pace_lock = threading.Lock()
        self._resume_at = 0.0
        self._slowing = False
        self._sizers: dict[str, PageSizer] = {}
        # Columns every row of a table must carry (the primary key): registered by the table's
        # stream; a row without them is a malformed response, not a row to emit. The cursor may
        # be null (such rows are emitted without moving the bookmark), but when it has a value
        # the value must be of the cursor's type: registered as (column, type).
        self.required_columns: dict[str, tuple[str, ...]] = {}
        self.cursor_columns: dict[str, tuple[str, type] | None] = {}
        # The server's clock (the Date header), as (server time, time.monotonic() when read):
        # cursor values are server timestamps, and this machine's clock may be off.
        self._server_clock: tuple[dt.datetime, float] | None = None
        self._server_date = ""

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
            credential = getattr(self.tokens, "credential", "the access token")
            msg = (
                f"refusing to send {credential} to {origin}: it is not the configured org "
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

    def server_time(self) -> dt.datetime:
        """The server's time now: its last ``Date`` header plus the seconds since (this
        machine's UTC clock when no response carried one)."""
        clock = self._server_clock
        if clock is None:
            return dt.datetime.now(dt.timezone.utc)
        return clock[0] + dt.timedelta(seconds=time.monotonic() - clock[1])

    def _observe_date(self, response: requests.Response) -> None:
        header = response.headers.get("Date")
        if not header or header == self._server_date:
            return  # whole seconds: most responses repeat the last value
        try:
            stamp = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.timezone.utc)
        self._server_date = header
        self._server_clock = (stamp, time.monotonic())

    # -- requests ---------------------------------------------------------------------------------
    def page_sizer(self, table: str, requested: int) -> PageSizer:
        """The adaptive page size of ``table`` (shared by every read of that table in the run)."""
        with self._stats_lock:
            sizer = self._sizers.get(table)
            if sizer is None or sizer.requested != requested:
                sizer = self._sizers[table] = PageSizer(requested)
            return sizer

    def _hold(self, seconds: float) -> None:
        """Make every request of the run wait until ``seconds`` from now."""
        with self._pace_lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    def _wait_for_pace(self) -> float:
        """Sleep until the run-wide pause is over; return the seconds slept."""
        with self._pace_lock:
            delay = self._resume_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
            return delay
        return 0.0

    def _observe_budget(self, response: requests.Response) -> None:
        """Slow down before Dataverse throttles: read the remaining service-protection budget.

        ``x-ms-ratelimit-burst-remaining-xrm-requests`` is how many requests are left in the
        5-minute window, ``x-ms-ratelimit-time-remaining-xrm-requests`` how many seconds of
        execution time. Near zero, a short pause per request spreads what is left instead of
        running into a 429 and a long ``Retry-After``.
        """
        burst = _number(response.headers.get("x-ms-ratelimit-burst-remaining-xrm-requests"))
        budget = _number(response.headers.get("x-ms-ratelimit-time-remaining-xrm-requests"))
        pressure = 0.0
        if burst is not None and burst < self.LOW_BURST_REQUESTS:
            pressure = max(pressure, 1 - burst / self.LOW_BURST_REQUESTS)
        if budget is not None and budget < self.LOW_TIME_SECONDS:
            pressure = max(pressure, 1 - budget / self.LOW_TIME_SECONDS)
        if pressure <= 0:
            if self._slowing:
                self._slowing = False
                LOGGER.info("Dataverse's service-protection budget recovered; full speed again")
            return
        pause = max(0.05, self.MAX_PACE * pressure)
        if not self._slowing:
            self._slowing = True
            LOGGER.warning(
                "Dataverse's service-protection budget is low (%s requests, %s s of execution "
                "time left in the 5-minute window); pausing %.2f s between requests",
                "?" if burst is None else f"{burst:.0f}",
                "?" if budget is None else f"{budget:.0f}",
                pause,
            )
        with self._stats_lock:
            self.stats.paced_seconds += pause
        self._hold(pause)

    def get_json(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        table: str | None = None,
        page_sizer: PageSizer | None = None,
        decoder: msgspec.json.Decoder | None = None,
    ) -> tuple[t.Any, requests.Response]:
        """GET ``url`` and return its decoded JSON body, retrying what is worth retrying.

        ``decoder`` (a typed msgspec decoder) replaces the plain one; a body that is valid JSON
        but not of its type comes back as plain JSON, for the caller's own checks to name.

        - 429: wait exactly ``Retry-After`` (every thread of the run waits), any number of
          times up to :attr:`MAX_THROTTLE_WAIT` seconds in total.
        - 5xx, resets, cut-off or non-JSON bodies: full-jitter exponential backoff, at most
          :attr:`MAX_ATTEMPTS` attempts and :attr:`MAX_RETRY_SECONDS` of sleeping.
        - read timeouts and "response too large": the next attempt asks for half the rows
          (``page_sizer``), without counting as an attempt while the page can still shrink.
        - 401: one fresh token and a resend; a 401 right after a fresh token is fatal.
        Then one :class:`ServiceUnavailable` naming the table and the last request id.
        """
        self._check_origin(url)
        request_headers = dict(headers or {})
        refreshed = False
        attempt = 0
        throttled = 0.0
        throttles = 0
        slept = 0.0
        self._count()
        while True:
            attempt += 1
            if page_sizer is not None and "Prefer" in request_headers:
                request_headers["Prefer"] = page_sizer.prefer(request_headers["Prefer"])
            self._wait_for_pace()
            try:
                payload, response = self._attempt(url, request_headers, table, refreshed, decoder)
            except _TokenRejected:
                refreshed = True
                attempt -= 1  # a token refresh is not a failed attempt
                self.tokens.invalidate()
                LOGGER.info("Access token rejected (401); getting a fresh one and resending")
                self._count(table, retry=True)
                continue
            except _Retry as retry:
                refreshed = False  # the token worked; a later 401 deserves its own refresh
                if retry.throttled:
                    wait = retry.wait if retry.wait is not None else self.DEFAULT_RETRY_AFTER
                    wait = min(wait, self.MAX_RETRY_AFTER)
                    throttles += 1
                    if throttled + wait > self.MAX_THROTTLE_WAIT or throttles > self.MAX_THROTTLES:
                        msg = (
                            f"{_where(table)}Dataverse kept throttling requests for "
                            f"{throttled:.0f} s (service protection limits: {retry.reason})"
                            f"{_rid(retry.request_id)}; lower max_concurrency or run outside "
                            "busy hours"
                        )
                        raise ServiceUnavailable(
                            msg, status=429, table=table, request_id=retry.request_id
                        ) from None
                    throttled += wait
                    attempt -= 1  # throttling is bounded by time, not attempts
                    LOGGER.warning(
                        "%sthrottled (429, %s); waiting %.1f s as Retry-After asks%s",
                        _where(table), retry.reason, wait,
                        "" if retry.wait is not None else " (no Retry-After: default)",
                    )
                    self._count(table, retry=True, throttled=wait)
                    self._hold(wait)
                    continue
                if retry.shrink and page_sizer is not None and page_sizer.shrink():
                    attempt -= 1  # a smaller page is a different request, not a repeat
                    LOGGER.warning(
                        "%s%s; asking for %d rows per page instead",
                        _where(table), retry.reason, page_sizer.size,
                    )
                    self._count(table, retry=True)
                    continue
                unreached = retry.unconnected and not self._reached
                budget = self.UNREACHED_ATTEMPTS if unreached else self.MAX_ATTEMPTS
                if unreached and attempt >= budget:
                    raise cannot_reach(self.origin, f"{retry.reason}; {attempt} attempts") from None
                wait = retry.wait if retry.wait is not None else self._backoff(attempt)
                wait = min(wait, self.MAX_RETRY_AFTER)
                if attempt >= self.MAX_ATTEMPTS or slept + wait > self.MAX_RETRY_SECONDS:
                    msg = (
                        f"{_where(table)}giving up after {attempt} attempts over "
                        f"{slept:.0f} s of retries: {retry.reason}{_rid(retry.request_id)} — "
                        "if this persists, open a support case with Microsoft quoting the "
                        "request id"
                    )
                    raise ServiceUnavailable(msg, table=table, request_id=retry.request_id) from None
                LOGGER.warning(
                    "%s%s; retrying in %.1f s (attempt %d of %d)",
                    _where(table), retry.reason, wait, attempt + 1, budget,
                )
                self._count(table, retry=True)
                slept += wait
                time.sleep(wait)
                continue
            if page_sizer is not None:
                page_sizer.success()
            self._observe_budget(response)
            self._observe_date(response)
            return payload, response

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff: spreads retries of parallel requests apart."""
        return random.uniform(0, min(self.BACKOFF_CAP, self.BACKOFF_BASE * 2 ** (attempt - 1)))

    def _attempt(
        self,
        url: str,
        headers: Mapping[str, str] | None,
        table: str | None,
        refreshed: bool,
        decoder: msgspec.json.Decoder | None = None,
    ) -> tuple[t.Any, requests.Response]:
        request_headers = dict(BASE_HEADERS)
        if headers:
            request_headers.update(headers)
        try:
            with self._slots:
                # The token request (when one is due) is an HTTP request too: it counts against
                # the in-flight cap like everything else.
                auth = self.tokens.prepare(request_headers)
                response = self.session.get(
                    url,
                    headers=request_headers,
                    auth=auth,
                    timeout=self.settings.request_timeout,
                    verify=self.settings.verify,
                    allow_redirects=False,
                    stream=True,
                )
                # Read the body while holding the slot: the transfer is part of the request.
                _read_body(response)
        except TokenServiceUnavailable as exc:
            # The token endpoint was busy (429, 5xx, a proxy page, a dropped connection):
            # retried like this request's own failures, within the same budget.
            raise _Retry(str(exc), exc.retry_after, request_id=exc.request_id) from None
        except requests.exceptions.SSLError:
            msg = (
                f"TLS verification failed for {self.origin} — if a proxy inspects TLS, set "
                "ca_bundle to a PEM file with its CA certificate"
            )
            raise ConnectionProblem(msg) from None
        except requests.exceptions.ConnectTimeout:
            raise _Retry(
                f"no connection within {self.settings.request_timeout} s", unconnected=True
            ) from None
        except requests.exceptions.Timeout:
            raise _Retry(f"no response within {self.settings.request_timeout} s", shrink=True) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            if _never_connected(exc):
                raise _Retry(_connect_failure(exc), unconnected=True) from None
            raise _Retry(f"connection failed ({_short(exc)})") from None
        except urllib3.exceptions.ReadTimeoutError:
            raise _Retry(
                f"the response did not arrive within {self.settings.request_timeout} s", shrink=True
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _Retry(f"response body cut off ({_short(exc)})") from None

        self._reached = True
        status = response.status_code
        request_id = response.headers.get("x-ms-service-request-id") or response.headers.get("REQ_ID")
        if status == 200:
            content_type = response.headers.get("Content-Type", "")
            body = response.content  # already read (see _read_body)
            if "json" not in content_type:
                raise _Retry(
                    f"expected JSON but got {content_type.split(';')[0] or 'no content type'} "
                    "(an HTML page usually comes from a proxy or gateway)",
                    request_id=request_id,
                )
            try:
                try:
                    payload = (decoder or _DECODER).decode(body)
                except msgspec.ValidationError:  # valid JSON, unexpected shape: plain JSON
                    payload = _DECODER.decode(body)
            except msgspec.DecodeError:
                raise _Retry("invalid or cut-off JSON in the response", request_id=request_id) from None
            if not isinstance(payload, (dict, _PageBody)):
                raise _Retry("unexpected JSON shape in the response", request_id=request_id)
            return payload, response
        if status in (301, 302, 303, 307, 308):
            location = response.headers.get("Location", "")
            self._check_origin(location)
            msg = f"{_where(table)}the org redirected to {location}; set url to the final org URL"
            raise DataverseError(msg, status=status, table=table)
        if status == 401:
            if not refreshed and self.tokens.refreshable:
                raise _TokenRejected
            raise self.tokens.rejected(self.origin)
        if status == 429:
            code, message = _error_code_message(response)
            reason = code or "no error code"
            if message:
                reason += f": {message[:160]}"
            raise _Retry(reason, _retry_after(response), throttled=True, request_id=request_id)
        code, message = _error_code_message(response)
        if status in (500, 502, 503, 504) and code != EXPIRED_TOKEN_CODE:
            retry_after = _retry_after(response) if status == 503 else None
            # 0x80040216 on a 500 is how Dataverse reports a page it could not build in time
            # (or too big a response): a smaller page is the cure.
            shrink = status == 500 and code == TOO_LARGE_CODE
            raise _Retry(
                f"HTTP {status} {_error_message(response)}".strip(),
                retry_after,
                shrink=shrink,
                request_id=request_id,
            )
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
        reading forever. When ``prefer`` asks for ``odata.maxpagesize``, the size adapts per
        table (see :class:`PageSizer`).
        """
        headers = {"Prefer": prefer} if prefer else None
        sizer = None
        match = _MAXPAGESIZE_RE.search(prefer or "")
        if match and table:
            sizer = self.page_sizer(table, int(match.group(1)))
        seen: set[str] = {url}
        next_url: str | None = url
        while next_url:
            pending = [self._read_page(next_url, headers, table, sizer, seen)]
            next_url = pending[0].next_link
            # Yield without keeping a reference: a prefetch feed may leave this generator
            # suspended long after the consumer is done with the page, and only the consumer
            # may decide how long a page lives (the page budget in prefetch.py counts on it).
            yield pending.pop()

    def _read_page(
        self,
        url: str,
        headers: Mapping[str, str] | None,
        table: str | None,
        sizer: PageSizer | None,
        seen: set[str],
    ) -> Page:
        """One page of a collection, checked; its rows stay raw JSON until used (see Rows)."""
        payload, response = self.get_json(url, headers=headers, table=table, page_sizer=sizer,
                                          decoder=_PAGE_DECODER)
        request_id = _request_id(response)
        if isinstance(payload, _PageBody):
            next_link = payload.next_link
            self._check_loop(next_link, table, seen)

            def check(rows: list[t.Any]) -> None:
                self._check_rows(rows, table, request_id)

            return Page(Rows(payload.value, check), next_link or None, payload.delta_link, request_id)
        # Valid JSON that is not a page: the checks below say what is wrong with it.
        records = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(records, list):
            msg = f"{_where(table)}the response has no 'value' list (request id {request_id})"
            raise DataverseError(msg, table=table)
        self._check_rows(records, table, request_id)
        next_link = payload.get("@odata.nextLink")
        if next_link is not None and not isinstance(next_link, str):
            msg = f"{_where(table)}malformed @odata.nextLink in the response"
            raise DataverseError(msg, table=table)
        self._check_loop(next_link, table, seen)
        delta_link = payload.get("@odata.deltaLink")
        return Page(records, next_link or None, delta_link if isinstance(delta_link, str) else None, request_id)

    @staticmethod
    def _check_loop(next_link: str | None, table: str | None, seen: set[str]) -> None:
        """A next link seen before means the server is looping: stop instead of reading forever."""
        if next_link:
            if next_link in seen:
                msg = f"{_where(table)}the server returned a nextLink it had already returned; stopping a pagination loop"
                raise DataverseError(msg, table=table)
            seen.add(next_link)


    def _check_rows(self, records: list[t.Any], table: str | None, request_id: str | None) -> None:
        """Rows are JSON objects carrying their table's required columns (deleted-row stubs excepted)."""
        if not all(isinstance(record, dict) for record in records):
            msg = (
                f"{_where(table)}the response's 'value' list holds something other than rows "
                f"(JSON objects) (request id {request_id})"
            )
            raise DataverseError(msg, table=table)
        required = self.required_columns.get(table or "")
        if required:
            for number, record in enumerate(records, start=1):
                if record.get("reason") == "deleted" or "@removed" in record:
                    continue
                missing = [name for name in required if record.get(name) is None]
                if missing:
                    raise _malformed_row(table, number, f"has no {', '.join(missing)}", request_id)
        cursor = self.cursor_columns.get(table or "")
        if cursor:
            self._check_cursor(records, cursor, table, request_id)

    @staticmethod
    def _check_cursor(
        records: list[dict[str, t.Any]], cursor: tuple[str, type], table: str | None, request_id: str | None
    ) -> None:
        """Cursor values are null or of the cursor's type: they are compared and bookmarked.

        Null is a value (the column is empty); a row without the column at all is not what was
        asked for, as Dataverse returns every ``$select``-ed column, null or not.
        """
        name, kind = cursor
        match = _DATETIME_RE.match
        for number, record in enumerate(records, start=1):
            value = record.get(name, _ABSENT)
            if value is None:
                continue
            if value is _ABSENT:
                raise _malformed_row(table, number, f"has no {name}", request_id)
            if kind is str:
                if value.__class__ is str and match(value):
                    continue
                expected = "a date-time"
            else:
                if value.__class__ is int:
                    continue
                expected = "a whole number"
            raise _malformed_row(table, number, f"has {name} = {str(value)[:40]!r}, which is not {expected}", request_id)


_ABSENT = object()  # a column missing from a row (not null: missing)


def _malformed_row(table: str | None, number: int, problem: str, request_id: str | None) -> DataverseError:
    """The one line for a row that cannot be emitted as served (it fails its table)."""
    msg = f"{_where(table)}row {number} of a page {problem}{_rid(request_id)}; the response is malformed"
    return DataverseError(msg, table=table)


def _read_body(response: requests.Response) -> None:
    """Read the whole body in one call and keep it where ``response.content`` finds it.

    Why not ``response.content``: requests reads it in 10 KB chunks and joins them, which for a
    5 MB page costs about a third more CPU and twice the memory while it is read. Errors are
    urllib3's (a cut-off body, a read timeout); on one the connection is closed, not reused.
    """
    try:
        body = response.raw.read(decode_content=True)
    except BaseException:
        response.close()
        raise
    response._content = body  # noqa: SLF001 - what requests itself does once a body is read
    response._content_consumed = True  # noqa: SLF001


class _TokenRejected(Exception):
    """Internal: Dataverse answered 401; refresh the token once and resend."""


def _where(table: str | None) -> str:
    return f"table {table}: " if table else ""


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _never_connected(exc: requests.exceptions.RequestException) -> bool:
    """Whether the request failed before any connection existed (refused, DNS, no route, proxy).

    requests wraps urllib3's ``MaxRetryError`` whose ``reason`` says what happened; a reset
    after connecting (``ProtocolError``) means the host is there, just flaky.
    """
    if isinstance(exc, requests.exceptions.ProxyError):
        return True
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", None)
    return isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    )


def _connect_failure(exc: requests.exceptions.RequestException) -> str:
    """A short, stable reason for a failed connection (no object addresses, no retry text)."""
    if isinstance(exc, requests.exceptions.ProxyError):
        return "the proxy refused or could not be reached"
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "the host name does not resolve"
    text = str(reason or exc)
    if "refused" in text.lower():
        return "connection refused"
    return "no connection"


def _request_id(response: requests.Response) -> str | None:
    return response.headers.get("x-ms-service-request-id") or response.headers.get("REQ_ID")


def _rid(request_id: str | None) -> str:
    return f" (request id {request_id})" if request_id else ""


def _number(value: str | None) -> float | None:
    """A header number such as ``5,999`` or ``1,199.99`` (None when absent or unreadable)."""
    if value is None:
        return None
    try:
        return float(value.replace(",", "").strip())
    except ValueError:
        return None


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
    def cursor_column(self) -> tuple[str, type] | None:
        """The cursor column and the JSON type of its values, for ``_check_rows`` (None: none)."""
        return None

    def sync(self, context: t.Any = None) -> None:
        """Register what every row must carry, then sync (see ``_check_rows``).

        Only the primary key is required: a cursor column may be null (see EntityStream).
        """
        self.client.required_columns[self.name] = tuple(self.primary_keys or ())
        self.client.cursor_columns[self.name] = self.cursor_column()
        super().sync(context)


__all__ = [
    "BASE_HEADERS",
    "DataverseClient",
    "DynamicsStream",
    "Page",
    "PageSizer",
    "TapDynamicsError",
    "encode_query",
]
