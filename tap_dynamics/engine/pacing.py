"""Time in the transport: the run-wide pause (throttling, pacing) and the server's clock."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    import requests

    from tap_dynamics.engine.policy import Pacing

LOGGER = logging.getLogger("tap-dynamics")


class RunPause:
    """Every request of the run waits until the pause is over.

    A 429 holds back every thread (the services' limits are per user, not per request); near an
    empty rate-limit budget (the policy's :class:`~tap_dynamics.engine.policy.Pacing`), a short
    pause per request spreads what is left instead of running into a 429 and a long
    ``Retry-After``.
    """

    def __init__(self, service_name: str, max_pace: float) -> None:
        self.service_name = service_name
        self.max_pace = max_pace
        self._lock = threading.Lock()
        self._resume_at = 0.0
        self._slowing = False

    def hold(self, seconds: float) -> None:
        """Make every request of the run wait until ``seconds`` from now."""
        with self._lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    def wait(self) -> float:
        """Sleep until the pause is over; return the seconds slept."""
        with self._lock:
            delay = self._resume_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
            return delay
        return 0.0

    def observe(self, pacing: Pacing | None) -> float:
        """Slow down as the policy read the rate-limit headers; return the pause added."""
        if pacing is None or pacing.pressure <= 0:
            if self._slowing:
                self._slowing = False
                LOGGER.info("%s's service-protection budget recovered; full speed again", self.service_name)
            return 0.0
        pause = max(0.05, self.max_pace * pacing.pressure)
        if not self._slowing:
            self._slowing = True
            LOGGER.warning(
                "%s's service-protection budget is low (%s); pausing %.2f s between requests",
                self.service_name, pacing.detail, pause,
            )
        self.hold(pause)
        return pause


class ServerClock:
    """The server's time, from its ``Date`` headers (this machine's clock may be off)."""

    def __init__(self) -> None:
        self._clock: tuple[dt.datetime, float] | None = None  # (server time, monotonic when read)
        self._header = ""

    def now(self) -> dt.datetime:
        """The server's time now: its last ``Date`` plus the seconds since (this machine's UTC
        clock when no response carried one)."""
        clock = self._clock
        if clock is None:
            return dt.datetime.now(dt.timezone.utc)
        return clock[0] + dt.timedelta(seconds=time.monotonic() - clock[1])

    def observe(self, response: requests.Response) -> None:
        """Read a response's ``Date`` header."""
        header = response.headers.get("Date")
        if not header or header == self._header:
            return  # whole seconds: most responses repeat the last value
        try:
            stamp = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.timezone.utc)
        self._header = header
        self._clock = (stamp, time.monotonic())


__all__ = ["RunPause", "ServerClock"]
