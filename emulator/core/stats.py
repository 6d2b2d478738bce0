"""Request statistics of a host: counters, the request log, in-flight concurrency over time.

One object for every service on the port, so that a request is counted the same way whether
Dataverse, Entra ID, AD FS or an IIS sign-in challenge answered it.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

COUNTERS = ("requests", "data_pages", "rows_served", "token_requests", "max_in_flight",
            "errors_4xx", "errors_5xx", "bytes_served")


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = threading.local()  # when the current thread's request arrived
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(COUNTERS, 0)
            self._log: collections.deque = collections.deque(maxlen=100_000)
            self._queries: collections.deque = collections.deque(maxlen=100_000)
            self._in_flight = 0
            self._in_flight_since = time.perf_counter()
            self._in_flight_seconds = 0.0  # the integral of in-flight requests over time
            self._first_page: float | None = None
            self._last_page: float | None = None

    # ------------------------------------------------------------ recording
    def _flight(self, change: int) -> None:
        """Change the in-flight count (lock held), integrating it over time for the benchmark:
        in-flight seconds / data seconds is the concurrency a client really achieved."""
        now = time.perf_counter()
        self._in_flight_seconds += self._in_flight * (now - self._in_flight_since)
        self._in_flight_since = now
        self._in_flight += change

    def begin(self) -> None:
        """A request arrived."""
        self._started.at = time.perf_counter()
        with self._lock:
            self._flight(+1)
            self._counts["requests"] += 1
            self._counts["max_in_flight"] = max(self._counts["max_in_flight"], self._in_flight)

    def end(self, method: str, path: str, status: int, size: int) -> None:
        """The request was answered (``path``: as the service saw it, relative to its mount)."""
        with self._lock:
            self._log.append((method, path, status))
            self._counts["bytes_served"] += size
            if 400 <= status < 500:
                self._counts["errors_4xx"] += 1
            elif status >= 500:
                self._counts["errors_5xx"] += 1
            self._flight(-1)

    def query(self, path: str, query: str, prefer: str) -> None:
        """A data request's query (what a test checks the client asked for)."""
        with self._lock:
            self._queries.append((path, query, prefer))

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def page(self, rows: int) -> None:
        """A data page was served."""
        now = time.perf_counter()
        with self._lock:
            self._counts["data_pages"] += 1
            self._counts["rows_served"] += rows
            if self._first_page is None:
                self._first_page = getattr(self._started, "at", now)
            self._last_page = now

    def idle(self, seconds: float) -> None:
        """Sleep outside the in-flight count (the client is expected to have given up)."""
        with self._lock:
            self._flight(-1)
        try:
            time.sleep(seconds)
        finally:
            with self._lock:
                self._flight(+1)

    # ------------------------------------------------------------ reading
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            s: dict[str, Any] = dict(self._counts)
            s["in_flight"] = self._in_flight
            self._flight(0)
            s["in_flight_seconds"] = round(self._in_flight_seconds, 3)
            span = (self._last_page - self._first_page) if self._first_page else 0.0
            s["data_seconds"] = round(span, 4)
            s["pages_per_s"] = round(s["data_pages"] / span, 2) if span > 0 else 0.0
            s["rows_per_s"] = round(s["rows_served"] / span, 1) if span > 0 else 0.0
        return s

    def log(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return list(self._log)

    def queries(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self._queries)
