"""The run summary: what each stream did, printed as one table at the end of a sync.

Streams record into a shared :class:`RunSummary` as they go (rows, deletes, pages, timing); the
HTTP client adds retries and throttled seconds per table. The table goes to stderr (the log), so
that it never mixes with the Singer messages on stdout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"


@dataclass
class StreamSummary:
    """Counters for one stream of one run."""

    name: str
    method: str = "FULL_TABLE"
    rows: int = 0
    deletes: int = 0
    pages: int = 0
    retries: int = 0
    throttled_seconds: float = 0.0
    started: float | None = None
    finished: float | None = None
    status: str = OK
    note: str = ""
    live_rows: int = 0  # rows written so far (progress), updated page by page
    expected: int | None = None  # the service's row count (a totals hook), for percent and ETA

    @property
    def duration(self) -> float:
        """Seconds the stream took (so far)."""
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started


@dataclass
class RunSummary:
    """All streams of a run. Thread-safe: pages may be fetched on worker threads."""

    streams: dict[str, StreamSummary] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stream(self, name: str) -> StreamSummary:
        """The entry for ``name`` (created on first use)."""
        with self._lock:
            entry = self.streams.get(name)
            if entry is None:
                entry = self.streams[name] = StreamSummary(name)
            return entry

    def add(self, name: str | None, **increments: float) -> None:
        """Add to counters of ``name`` (ignored for requests that belong to no stream)."""
        if not name:
            return
        entry = self.stream(name)
        with self._lock:
            for key, value in increments.items():
                setattr(entry, key, getattr(entry, key) + value)

    @property
    def failed(self) -> list[StreamSummary]:
        """Streams that failed."""
        return [s for s in self.streams.values() if s.status == FAILED]

    def table(self) -> str:
        """The summary as an aligned text table."""
        header = ("stream", "method", "rows", "deletes", "pages", "retries", "throttled_s", "duration_s", "status")
        lines: list[tuple[str, ...]] = [header]
        for s in sorted(self.streams.values(), key=lambda s: s.name):
            status = s.status + (f" ({s.note})" if s.note else "")
            lines.append(
                (
                    s.name,
                    s.method,
                    str(s.rows),
                    str(s.deletes),
                    str(s.pages),
                    str(s.retries),
                    f"{s.throttled_seconds:.1f}",
                    f"{s.duration:.1f}",
                    status,
                )
            )
        widths = [max(len(row[i]) for row in lines) for i in range(len(header) - 1)]
        out = []
        for row in lines:
            cells = [cell.ljust(widths[i]) if i == 0 or i == 1 else cell.rjust(widths[i]) for i, cell in enumerate(row[:-1])]
            out.append("  ".join([*cells, row[-1]]))
        return "\n".join(out)
