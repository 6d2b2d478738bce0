"""The HTTP transport every service of the tap reads through.

Why not the SDK's ``RESTStream`` request loop: Microsoft's paging and failure semantics need more
control than its hooks give. Empty pages can still carry a next or delta link (the SDK stops on
them), ``Retry-After`` must be honoured exactly, a 401 must trigger one token refresh and a resend,
the bearer token must never leave the configured host, and ``verify=`` must be passed per request
so that the ``ca_bundle`` setting beats ``REQUESTS_CA_BUNDLE``. :class:`HttpTransport` owns all
of that, is shared by discovery and every stream of a run, and is thread-safe.

What is particular to one service (headers, request ids, what a status or error code means,
rate-limit headers, URLs, the page format) comes from its injected
:class:`~tap_dynamics.engine.policy.ServicePolicy`; the run's bookkeeping is in
:mod:`tap_dynamics.engine.run` (retries are reported to an ``on_retry`` callback). Retries run on
``backoff`` with a per-call :class:`RetryBudget` as give-up predicate and wait generator (a
connection check may pass a smaller budget without changing the sync's).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

import backoff
import msgspec
import requests
import urllib3
from requests.adapters import HTTPAdapter

from tap_dynamics.engine.pacing import RunPause, ServerClock
from tap_dynamics.engine.pages import JSON_DECODER, Page, PageSizer, requested_page_size, where
from tap_dynamics.engine.policy import Verdict
from tap_dynamics.engine.retry import (
    RetryableError,
    RetryBudget,
    TokenRejectedError,
    retry_after_seconds,
)
from tap_dynamics.engine.slots import ResourceSlots
from tap_dynamics.engine.wire import RawBody, connect_failure, never_connected, read_body, short
from tap_dynamics.errors import (
    ConnectionProblem,
    SecurityError,
    ServiceError,
    ServiceUnavailable,
    TapDynamicsError,
    TokenServiceUnavailable,
    cannot_reach,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from tap_dynamics.engine.formats import Cursor, PageFormat
    from tap_dynamics.engine.policy import ServicePolicy

LOGGER = logging.getLogger("tap-dynamics")
XML_BODY = RawBody("xml")  # as get_json's decoder: the body as bytes, checked to be XML


class Credential(t.Protocol):
    """What the transport needs from a sign-in method (see :mod:`tap_dynamics.auth`)."""

    refreshable: bool

    def prepare(self, headers: dict[str, str]) -> t.Any:
        """Add the credential to ``headers``; return a requests ``auth`` object or None."""
        ...

    def invalidate(self) -> None:
        """Forget the current token (the service rejected it)."""
        ...

    def rejected(self, origin: str) -> Exception:
        """The error for a token the service still rejects after a refresh."""
        ...

    def identity(self) -> str:
        """Who the requests run as, for messages."""
        ...


@dataclass
class RequestStats:
    """Counters for the whole run (shared by all threads; updated under a lock)."""

    requests: int = 0
    retries: int = 0
    throttled_seconds: float = 0.0
    paced_seconds: float = 0.0


class HttpTransport:
    """Authenticated, retrying, origin-locked JSON client for one service endpoint."""

    MAX_ATTEMPTS = 8  # transient failures (5xx, resets, bad JSON) before giving up
    # Until the service has answered once in this run, a failure to connect at all (refused,
    # DNS, no route) is most likely a wrong url or proxy, not an outage: give up after this many
    # attempts with "cannot reach", rather than minutes of backoff.
    UNREACHED_ATTEMPTS = 3
    MAX_RETRY_SECONDS = 300.0  # and at most this long in backoff sleeps for one request
    MAX_THROTTLE_WAIT = 1800.0  # total seconds we are prepared to wait on 429s for one request
    MAX_THROTTLES = 100  # and at most this many 429s (a Retry-After of 0 must not loop forever)
    DEFAULT_RETRY_AFTER = 5.0  # when a 429 comes without Retry-After
    MAX_RETRY_AFTER = 900.0  # a Retry-After beyond this is treated as this (a broken header)
    BACKOFF_BASE = 1.0
    BACKOFF_CAP = 60.0
    MAX_PACE = 2.0  # the longest proactive pause per request (policy pacing at full pressure)

    def __init__(
        self,
        policy: ServicePolicy,
        tokens: Credential,
        *,
        origin: str,
        timeout: float,
        verify: bool | str,
        max_concurrency: int,
        on_retry: Callable[[str | None, float], None] | None = None,
    ) -> None:
        self.policy = policy
        self.tokens = tokens
        self.origin = origin
        self.timeout = timeout
        self.verify = verify
        self.on_retry = on_retry
        self.stats = RequestStats()
        self._reached = False  # set once any HTTP response came back from the service
        self._stats_lock = threading.Lock()
        self._local = threading.local()
        # The global in-flight cap: every HTTP request of the run (discovery, pages of all
        # streams, prefetches) holds one slot while on the wire.
        self._slots = threading.BoundedSemaphore(max_concurrency)
        # The service's own cap per resource (Outlook: 4 at a time per mailbox), taken before a
        # global slot so that a request waiting for its mailbox holds no global slot.
        self._resource_slots = ResourceSlots(policy.per_key_limit)
        # Run-wide pause: a 429 (or a nearly spent budget) holds back every thread, because
        # the services' limits are per user, not per request.
        self.pause = RunPause(policy.service_name, self.MAX_PACE)
        self._sizers: dict[str, PageSizer] = {}
        # Cursor values are server timestamps, and this machine's clock may be off.
        self.clock = ServerClock()

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
        """Absolute URL for ``path`` (relative to the service's API root) and query options."""
        return self.policy.url(path, params)

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
        if retry and self.on_retry is not None and table:
            self.on_retry(table, throttled)

    def page_sizer(self, table: str, requested: int) -> PageSizer:
        """The adaptive page size of ``table`` (shared by every read of that table in the run)."""
        with self._stats_lock:
            sizer = self._sizers.get(table)
            if sizer is None or sizer.requested != requested:
                sizer = self._sizers[table] = PageSizer(requested)
            return sizer

    def server_time(self) -> dt.datetime:
        """The server's time now (its last ``Date`` header plus the seconds since)."""
        return self.clock.now()

    # -- requests ---------------------------------------------------------------------------------
    def retry_budget(self, page_sizer: PageSizer | None = None, max_attempts: int | None = None) -> RetryBudget:
        """A fresh budget for one call, from this client's limits (``max_attempts`` overrides)."""
        return RetryBudget(
            max_attempts=self.MAX_ATTEMPTS if max_attempts is None else max_attempts,
            max_retry_seconds=self.MAX_RETRY_SECONDS,
            max_throttle_wait=self.MAX_THROTTLE_WAIT,
            max_throttles=self.MAX_THROTTLES,
            default_retry_after=self.DEFAULT_RETRY_AFTER,
            max_retry_after=self.MAX_RETRY_AFTER,
            backoff_base=self.BACKOFF_BASE,
            backoff_cap=self.BACKOFF_CAP,
            unreached_attempts=self.UNREACHED_ATTEMPTS,
            reached=lambda: self._reached,
            page_sizer=page_sizer,
        )

    def get_json(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        table: str | None = None,
        page_sizer: PageSizer | None = None,
        decoder: msgspec.json.Decoder | RawBody | None = None,
        max_attempts: int | None = None,
    ) -> tuple[t.Any, requests.Response]:
        """GET ``url`` and return its decoded JSON body, retrying what is worth retrying.

        ``decoder`` (a typed msgspec decoder) replaces the plain one; a body that is valid JSON
        but not of its type comes back as plain JSON, for the caller's own checks to name. A
        :class:`RawBody` returns the body's bytes instead (e.g. an XML ``$metadata``).

        - throttled (429): wait exactly ``Retry-After`` (every thread of the run waits), any
          number of times up to :attr:`MAX_THROTTLE_WAIT` seconds in total.
        - 5xx, resets, cut-off or non-JSON bodies: full-jitter exponential backoff, at most
          :attr:`MAX_ATTEMPTS` attempts (or ``max_attempts``) and :attr:`MAX_RETRY_SECONDS`
          of sleeping.
        - read timeouts and "response too large": the next attempt asks for half the rows
          (``page_sizer``), without counting as an attempt while the page can still shrink.
        - 401: one fresh token and a resend; a 401 right after a fresh token is fatal.
        Then one :class:`ServiceUnavailable` naming the table and the last request id.
        """
        self._check_origin(url)
        request_headers = dict(headers or {})
        budget = self.retry_budget(page_sizer, max_attempts)
        self._count()

        def attempt() -> tuple[t.Any, requests.Response]:
            if page_sizer is not None and "Prefer" in request_headers:
                request_headers["Prefer"] = page_sizer.prefer(request_headers["Prefer"])
            self.pause.wait()
            return self._attempt(url, request_headers, table, budget.refreshed, decoder)

        def on_backoff(_details: t.Any) -> None:
            self._after_failure(budget, table)

        retrying = backoff.on_exception(
            budget.waits,
            (RetryableError, TokenRejectedError),
            max_tries=None,
            jitter=None,
            giveup=budget.decide,
            on_backoff=on_backoff,
            logger=None,
        )(attempt)
        try:
            payload, response = retrying()
        except RetryableError as retry:
            raise self._gave_up(budget, retry, table) from None
        if page_sizer is not None:
            page_sizer.success()
        paced = self.pause.observe(self.policy.pacing(response))
        if paced:
            with self._stats_lock:
                self.stats.paced_seconds += paced
        self.clock.observe(response)
        return payload, response

    def _after_failure(self, budget: RetryBudget, table: str | None) -> None:
        """The ``on_backoff`` handler: the token refresh, the run-wide pause, the page shrink."""
        kind = budget.kind
        if kind == "refresh":
            self.tokens.invalidate()
            LOGGER.info("Access token rejected (401); getting a fresh one and resending")
            self._count(table, retry=True)
        elif kind == "throttle":
            LOGGER.warning(
                "%sthrottled (429, %s); waiting %.1f s as Retry-After asks%s",
                where(table), budget.reason, budget.wait,
                "" if budget.had_retry_after else " (no Retry-After: default)",
            )
            self._count(table, retry=True, throttled=budget.wait)
            self.pause.hold(budget.wait)
        elif kind == "shrink":
            sizer = budget.page_sizer
            assert sizer is not None
            sizer.shrink()
            LOGGER.warning("%s%s; asking for %d rows per page instead", where(table), budget.reason, sizer.size)
            self._count(table, retry=True)
        else:
            LOGGER.warning(
                "%s%s; retrying in %.1f s (attempt %d of %d)",
                where(table), budget.reason, budget.wait, budget.attempt + 1, budget.limit,
            )
            self._count(table, retry=True)
            budget.slept += budget.wait

    def _gave_up(self, budget: RetryBudget, retry: RetryableError, table: str | None) -> TapDynamicsError:
        rid = f" (request id {retry.request_id})" if retry.request_id else ""
        if budget.kind == "unreached":
            return cannot_reach(self.origin, f"{retry.reason}; {budget.attempt} attempts")
        if budget.kind == "throttle":
            msg = (
                f"{where(table)}{self.policy.service_name} kept throttling requests for "
                f"{budget.throttled:.0f} s (service protection limits: {retry.reason})"
                f"{rid}; lower max_concurrency or run outside busy hours"
            )
            return ServiceUnavailable(msg, status=429, table=table, request_id=retry.request_id)
        msg = (
            f"{where(table)}giving up after {budget.attempt} attempts over "
            f"{budget.slept:.0f} s of retries: {retry.reason}{rid} — "
            "if this persists, open a support case with Microsoft quoting the "
            "request id"
        )
        return ServiceUnavailable(msg, table=table, request_id=retry.request_id)

    def _attempt(
        self,
        url: str,
        headers: Mapping[str, str] | None,
        table: str | None,
        refreshed: bool,
        decoder: msgspec.json.Decoder | RawBody | None = None,
    ) -> tuple[t.Any, requests.Response]:
        request_headers = dict(self.policy.base_headers)
        if headers:
            request_headers.update(headers)
        try:
            with self._resource_slots.hold(self.policy.concurrency_key(url)), self._slots:
                # The token request (when one is due) is an HTTP request too: it counts against
                # the in-flight cap like everything else.
                auth = self.tokens.prepare(request_headers)
                response = self.session.get(
                    url,
                    headers=request_headers,
                    auth=auth,
                    timeout=self.timeout,
                    verify=self.verify,
                    allow_redirects=False,
                    stream=True,
                )
                # Read the body while holding the slot: the transfer is part of the request.
                read_body(response)
        except TokenServiceUnavailable as exc:
            # The token endpoint was busy (429, 5xx, a proxy page, a dropped connection):
            # retried like this request's own failures, within the same budget.
            raise RetryableError(str(exc), exc.retry_after, request_id=exc.request_id) from None
        except requests.exceptions.SSLError:
            msg = (
                f"TLS verification failed for {self.origin} — if a proxy inspects TLS, set "
                "ca_bundle to a PEM file with its CA certificate"
            )
            raise ConnectionProblem(msg) from None
        except requests.exceptions.ConnectTimeout:
            raise RetryableError(f"no connection within {self.timeout} s", unconnected=True) from None
        except requests.exceptions.Timeout:
            raise RetryableError(f"no response within {self.timeout} s", shrink=True) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            if never_connected(exc):
                raise RetryableError(connect_failure(exc), unconnected=True) from None
            raise RetryableError(f"connection failed ({short(exc)})") from None
        except urllib3.exceptions.ReadTimeoutError:
            raise RetryableError(f"the response did not arrive within {self.timeout} s", shrink=True) from None
        except urllib3.exceptions.HTTPError as exc:
            raise RetryableError(f"response body cut off ({short(exc)})") from None

        self._reached = True
        status = response.status_code
        policy = self.policy
        request_id = policy.request_id(response)
        if status == 200:
            return self._decoded(response, decoder, request_id), response
        if status in (301, 302, 303, 307, 308):
            location = response.headers.get("Location", "")
            self._check_origin(location)
            msg = f"{where(table)}the org redirected to {location}; set url to the final org URL"
            raise ServiceError(msg, status=status, table=table)
        code, message = policy.error_code_message(response)
        verdict = policy.classify(status, code)
        if verdict is Verdict.REFRESH:
            if not refreshed and self.tokens.refreshable:
                raise TokenRejectedError
            # A fresh token refused too: the service may know why (F&O: app not registered).
            refusal = policy.refusal(status, code, self.tokens.identity(), self.origin)
            raise refusal or self.tokens.rejected(self.origin)
        if verdict is Verdict.THROTTLE:
            reason = code or "no error code"
            if message:
                reason += f": {message[:160]}"
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise RetryableError(reason, retry_after, throttled=True, request_id=request_id)
        if verdict in (Verdict.RETRY, Verdict.SHRINK):
            retry_after = (
                retry_after_seconds(response.headers.get("Retry-After"))
                if policy.honours_retry_after(status)
                else None
            )
            detail = f"({message[:200]})" if message else ""
            raise RetryableError(
                f"HTTP {status} {detail}".strip(),
                retry_after,
                shrink=verdict is Verdict.SHRINK,
                request_id=request_id,
            )
        refusal = policy.refusal(status, code, self.tokens.identity(), self.origin)
        if refusal is not None:
            raise refusal
        raise ServiceError(
            f"{where(table)}HTTP {status}: {message or response.reason}"
            + (f" (code {code})" if code else "")
            + (f" (request id {request_id})" if request_id else ""),
            status=status,
            code=code,
            request_id=request_id,
            table=table,
        )

    @staticmethod
    def _decoded(
        response: requests.Response, decoder: msgspec.json.Decoder | RawBody | None, request_id: str | None
    ) -> t.Any:
        content_type = response.headers.get("Content-Type", "")
        body = response.content  # already read (see wire.read_body)
        if isinstance(decoder, RawBody):
            if decoder.kind not in content_type or not body:
                got = f"{content_type.split(';')[0] or 'no content type'}{'' if body else ' (empty)'}"
                raise RetryableError(f"expected {decoder.kind} but got {got}", request_id=request_id)
            return body
        if "json" not in content_type:
            raise RetryableError(
                f"expected JSON but got {content_type.split(';')[0] or 'no content type'} "
                "(an HTML page usually comes from a proxy or gateway)",
                request_id=request_id,
            )
        try:
            try:
                payload = (decoder or JSON_DECODER).decode(body)
            except msgspec.ValidationError:  # valid JSON, unexpected shape: plain JSON
                payload = JSON_DECODER.decode(body)
        except msgspec.DecodeError:
            raise RetryableError("invalid or cut-off JSON in the response", request_id=request_id) from None
        if not isinstance(payload, (dict, msgspec.Struct)):
            raise RetryableError("unexpected JSON shape in the response", request_id=request_id)
        return payload

    def get_xml(self, url: str, *, table: str | None = None) -> bytes:
        """An XML document (CSDL ``$metadata``, parsed incrementally by the caller) as bytes, retried."""
        body, _response = self.get_json(url, headers={"Accept": "application/xml"}, table=table, decoder=XML_BODY)
        return t.cast("bytes", body)

    def iter_pages(
        self,
        url: str,
        *,
        prefer: str | None = None,
        table: str | None = None,
        required: tuple[str, ...] = (),
        cursor: Cursor | None = None,
        page_format: PageFormat | None = None,
    ) -> Iterator[Page]:
        """Follow the collection's next links verbatim, with the same ``Prefer`` header, to the end.

        A next link seen before means the server is looping: stop with an error instead of
        reading forever. When ``prefer`` asks for ``odata.maxpagesize``, the size adapts per
        table (see :class:`PageSizer`). ``required`` names the columns every row must carry,
        ``cursor`` the cursor column and the type of its values (see ``formats.check_cursor``).
        """
        page_format = page_format or self.policy.page_format
        headers = {"Prefer": prefer} if prefer else None
        sizer = None
        size = requested_page_size(prefer)
        if size is not None and table:
            sizer = self.page_sizer(table, size)
        seen: set[str] = {url}
        next_url: str | None = url
        while next_url:
            payload, response = self.get_json(
                next_url, headers=headers, table=table, page_sizer=sizer, decoder=page_format.decoder
            )
            request_id = self.policy.request_id(response)
            page = page_format.page(
                payload, table=table, request_id=request_id, seen=seen, required=required, cursor=cursor
            )
            pending = [page]
            del page
            del payload, response
            next_url = pending[0].next_link
            # Yield without keeping a reference: a prefetch feed may leave this generator
            # suspended long after the consumer is done with the page, and only the consumer
            # may decide how long a page lives (the page budget in prefetch.py counts on it).
            yield pending.pop()


__all__ = ["Credential", "HttpTransport", "RequestStats"]
