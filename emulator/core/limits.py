"""Service protection: how a service really limits its callers — per caller, per web server,
over a sliding window — as opposed to the injected faults of :mod:`.faults`.

Three measures, as Dataverse documents them (F&O's user-based limits mirror them): the number
of requests and their combined execution time over the last ``limit_window_s`` seconds, and the
number of concurrent requests. A refused request is answered 429 (in the service's words, by
its :class:`~emulator.core.service.FaultAdapter`) with a whole-seconds ``Retry-After``: when the
window has room again (the oldest request or execution leaves it), 1 s for concurrency.
Refused requests use no budget; a refusal that reaches a caller still asked to wait by an
earlier one is marked ``early`` (a client that honours ``Retry-After`` for all its threads sends
few: only requests already under way). Two identities never share a budget; every thread of
one identity does.

=========================  ==============================================================
``limit_requests``         requests per caller per window (6000)
``limit_execution_s``      seconds of execution time per caller per window (1200)
``limit_concurrent``       concurrent requests per caller (52)
``limit_window_s``         the sliding window, in seconds (300)
=========================  ==============================================================
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import FaultAdapter, Response

DEFAULTS: dict[str, Any] = {
    "limit_requests": 6000,
    "limit_execution_s": 1200.0,
    "limit_concurrent": 52,
    "limit_window_s": 300.0,
}


@dataclass
class Refusal:
    """One 429 of the service-protection limits (server clock: time.monotonic())."""

    at: float
    caller: str
    code: str
    retry_after: int
    early: bool  # the caller was still asked to wait (by an earlier 429) when this one came


@dataclass
class _Caller:
    arrivals: deque = field(default_factory=deque)  # admitted requests in the window
    executions: deque = field(default_factory=deque)  # (finished at, seconds) in the window
    executed: float = 0.0  # the sum of the seconds in ``executions`` (kept, not summed per request)
    in_flight: int = 0
    blocked_until: float = 0.0


class ServiceProtection:
    def __init__(self, knobs: dict[str, Any]):
        self.knobs = knobs
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._callers: dict[str, _Caller] = {}
            self.refusals: list[Refusal] = []
            self.admitted: dict[str, int] = {}

    def _prune(self, c: _Caller, now: float) -> None:
        cutoff = now - float(self.knobs["limit_window_s"])
        while c.arrivals and c.arrivals[0] <= cutoff:
            c.arrivals.popleft()
        while c.executions and c.executions[0][0] <= cutoff:
            c.executed -= c.executions.popleft()[1]

    def admit(self, caller: str, adapter: FaultAdapter) -> Response | None:
        """Count a request of ``caller`` in, or return the 429 (``adapter``'s words) refusing it."""
        k = self.knobs
        window = float(k["limit_window_s"])
        now = time.monotonic()
        with self._lock:
            c = self._callers.setdefault(caller, _Caller())
            self._prune(c, now)
            early = now < c.blocked_until
            measure = None
            wait = 0.0
            if c.in_flight >= int(k["limit_concurrent"]):
                measure, wait = "concurrency", 1.0
            elif len(c.arrivals) >= int(k["limit_requests"]):
                measure, wait = "requests", c.arrivals[0] + window - now
            elif c.executed >= float(k["limit_execution_s"]):
                measure, wait = "execution", c.executions[0][0] + window - now
            if measure is None:
                c.arrivals.append(now)
                c.in_flight += 1
                self.admitted[caller] = self.admitted.get(caller, 0) + 1
                return None
            retry_after = max(1, math.ceil(wait))
            c.blocked_until = max(c.blocked_until, now + retry_after)
            code = adapter.limit_codes[measure]
            self.refusals.append(Refusal(now, caller, code, retry_after, early))
        return adapter.limited(code, retry_after)

    def done(self, caller: str, seconds: float) -> None:
        """An admitted request of ``caller`` finished after ``seconds`` of execution."""
        now = time.monotonic()
        with self._lock:
            c = self._callers[caller]
            c.in_flight -= 1
            c.executions.append((now, seconds))
            c.executed += seconds

    def remaining(self, caller: str) -> tuple[int, float]:
        """The caller's remaining requests and execution seconds in the window."""
        k = self.knobs
        with self._lock:
            c = self._callers.get(caller) or _Caller()
            self._prune(c, time.monotonic())
            return int(k["limit_requests"]) - len(c.arrivals), float(k["limit_execution_s"]) - c.executed
