"""Progress on stderr for long syncs.

Every ``progress_interval`` seconds, one log line per stream that is running — rows so far, rate,
and when the service reported a total (the system's totals hook, e.g. Dataverse's
``RetrieveTotalRecordCount``, a snapshot at most a day old) percent and ETA. Counters come from
the run summary, which streams update page by page.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

from tap_dynamics.engine import override

if t.TYPE_CHECKING:
    from tap_dynamics.engine.summary import RunSummary

LOGGER = logging.getLogger("tap-dynamics.progress")


def progress_line(name: str, rows: int, elapsed: float, expected: int | None) -> str:
    """``account: 120000 rows, 41000 rows/s, 60%, ETA 2 s``."""
    rate = rows / elapsed if elapsed > 0 else 0.0
    line = f"{name}: {rows} rows, {rate:.0f} rows/s"
    if expected:
        percent = min(100.0, 100.0 * rows / expected)
        line += f", {percent:.0f}% of ~{expected}"
        if rate > 0 and rows < expected:
            line += f", ETA {_duration((expected - rows) / rate)}"
    return line


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressReporter(threading.Thread):
    """Logs a progress line per running stream every ``interval`` seconds (daemon thread)."""

    def __init__(self, summary: RunSummary, interval: float) -> None:
        super().__init__(name="progress", daemon=True)
        self.summary = summary
        self.interval = interval
        self._stop = threading.Event()

    @override
    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def report(self) -> None:
        """One line per stream that has started and not finished."""
        now = time.monotonic()
        for entry in list(self.summary.streams.values()):
            if entry.started is None or entry.finished is not None:
                continue
            LOGGER.info("Progress %s", progress_line(entry.name, entry.live_rows, now - entry.started, entry.expected))

    def stop(self) -> None:
        self._stop.set()
