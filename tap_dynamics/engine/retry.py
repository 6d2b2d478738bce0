"""The retry budget of one request, for the ``backoff`` loop of the transport (engine/http.py).

A failed attempt raises :class:`RetryableError` (or :class:`TokenRejectedError` for a 401 worth one
refresh). The per-call :class:`RetryBudget` is the loop's give-up predicate and wait generator:
it classifies the failure, keeps what this call has spent, and says when the budget is gone.
The limits come from the client instance that made the call, never from shared state, so one
caller's smaller budget (a connection check) cannot change another's (the sync).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import time
import typing as t
from dataclasses import dataclass

import backoff

if t.TYPE_CHECKING:
    from tap_dynamics.engine.pages import PageSizer

# A connection check's budget (``check``, ``--test``): it should answer quickly, not ride out an
# outage. It is set on the check's own client, so the sync that ``--test`` runs afterwards keeps
# the full budget.
CHECK_ATTEMPTS = 2


class RetryableError(Exception):
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


class TokenRejectedError(Exception):
    """Internal: the service answered 401; refresh the token once and resend."""


@dataclass
class RetryBudget:
    """What one call may spend on retries, and what it has spent (never shared between calls).

    ``decide`` is the give-up predicate of the ``backoff`` loop: it classifies the failure, sets
    :attr:`kind` and :attr:`wait`, and says whether the budget is spent. ``waits`` is the loop's
    wait generator: a plain retry sleeps its backoff, a throttle its ``Retry-After`` (which the
    ``on_backoff`` handler has also made a run-wide pause: every other thread waits as long),
    and a token refresh or a smaller page resends at once.
    """

    max_attempts: int
    max_retry_seconds: float
    max_throttle_wait: float
    max_throttles: int
    default_retry_after: float
    max_retry_after: float
    backoff_base: float
    backoff_cap: float
    unreached_attempts: int = 3
    reached: t.Callable[[], bool] = lambda: True  # whether the service has answered in this run
    page_sizer: PageSizer | None = None
    attempt: int = 0  # failed attempts that count (not refreshes, throttles, smaller pages)
    slept: float = 0.0  # seconds of backoff sleeps so far
    throttled: float = 0.0  # seconds waited on 429s so far
    throttles: int = 0
    refreshed: bool = False  # the token was refreshed for the attempt in flight
    kind: str = ""  # what the last failure was: refresh, throttle, shrink, retry or unreached
    wait: float = 0.0  # how long the last failure makes this request wait
    reason: str = ""  # what the last failure was, for the log line
    had_retry_after: bool = False  # whether the service said how long to wait
    limit: int = 0  # the attempts the last failure is allowed (for the log line)

    def decide(self, exc: BaseException) -> bool:
        """Classify ``exc``; True when the budget is spent (the loop then re-raises it)."""
        if isinstance(exc, TokenRejectedError):
            self.kind, self.wait, self.refreshed = "refresh", 0.0, True
            return False
        assert isinstance(exc, RetryableError)
        self.reason, self.had_retry_after = exc.reason, exc.wait is not None
        self.refreshed = False  # the token worked; a later 401 deserves its own refresh
        if exc.throttled:
            wait = min(exc.wait if exc.wait is not None else self.default_retry_after, self.max_retry_after)
            self.throttles += 1
            if self.throttled + wait > self.max_throttle_wait or self.throttles > self.max_throttles:
                self.kind = "throttle"
                return True
            self.kind, self.wait = "throttle", wait
            self.throttled += wait  # throttling is bounded by time, not attempts
            return False
        if exc.shrink and self.page_sizer is not None and self.page_sizer.can_shrink():
            self.kind, self.wait = "shrink", 0.0  # a smaller page is a different request
            return False
        self.attempt += 1
        # Until the service has answered once in this run, a failure to connect at all is most
        # likely a wrong url or proxy, not an outage: a few attempts, then "cannot reach".
        unreached = exc.unconnected and not self.reached()
        self.limit = self.unreached_attempts if unreached else self.max_attempts
        if unreached and self.attempt >= self.limit:
            self.kind = "unreached"
            return True
        wait = exc.wait if exc.wait is not None else self.jittered(self.attempt)
        self.kind, self.wait = "retry", min(wait, self.max_retry_after)
        return self.attempt >= self.max_attempts or self.slept + self.wait > self.max_retry_seconds

    def jittered(self, attempt: int) -> float:
        """Full-jitter exponential backoff: spreads retries of parallel requests apart."""
        return backoff.full_jitter(min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))

    def waits(self) -> t.Generator[float, t.Any, None]:
        """The ``backoff`` wait generator: the sleep :meth:`decide` chose for the failure."""
        yield 0.0  # consumed when the loop primes the generator
        while True:
            yield self.wait if self.kind in ("retry", "throttle") else 0.0


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def number(value: str | None) -> float | None:
    """A header number such as ``5,999`` or ``1,199.99`` (None when absent or unreadable)."""
    if value is None:
        return None
    try:
        return float(value.replace(",", "").strip())
    except ValueError:
        return None


__all__ = ["RetryBudget", "RetryableError", "TokenRejectedError", "number", "retry_after_seconds"]
