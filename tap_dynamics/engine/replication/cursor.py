"""The cursor strategy: an ordered read from the bookmark, or concurrent windows on a first load."""

from __future__ import annotations

import copy
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from tap_dynamics.engine.replication.base import (
    BOUNDARY_KEY,
    WINDOWS_KEY,
    Boundary,
    fetch_sequences,
    odata_datetime,
    odata_etag,
    row_key,
)

if t.TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Iterator, Sequence

    from tap_dynamics.engine.pages import Page
    from tap_dynamics.engine.replication.base import Reader, RowKey

class CursorQueries(t.Protocol):
    """The product's side of a cursor read: URLs and the few cheap questions windows need."""

    def read_url(self) -> str:
        """The ordered read from the bookmark (inclusive, with any lookback)."""
        ...

    def window_url(self, window: dict[str, t.Any]) -> str:
        """The ordered read of one time window (from its bookmark, or its low end)."""
        ...

    def extreme(self, direction: str, start: dt.datetime | None) -> dt.datetime | None:
        """The smallest (``asc``) or largest (``desc``) cursor value from ``start`` on."""
        ...

    def total_rows(self) -> int | None:
        """The table's row count (a cheap estimate), or None when the service will not say."""
        ...


class CursorStrategy:
    """A date-time cursor: windows on a big first load, else one ordered read from the bookmark.

    ``bookmark_cap(start)`` is the latest value the bookmark may take in a read that starts from
    ``start`` (the server's time minus a commit margin, never below ``start``; None: no limit):
    a row stamped before the newest visible one can become visible later (a long transaction),
    so the next read re-reads the margin, and the boundary drops what it already emitted.
    """

    def __init__(
        self,
        reader: Reader,
        queries: CursorQueries,
        *,
        cursor: str,
        key: Sequence[str],
        prefer: str,
        required: tuple[str, ...],
        page_size: int,
        first_load_windows: int,
        lookback: bool,
        start: dt.datetime | None,
        bookmark_cap: Callable[[t.Any], str | None] = lambda _start: None,
        version: RowKey = odata_etag,
    ) -> None:
        self.reader = reader
        self.queries = queries
        self.cursor = cursor
        self.key = row_key(key)
        self.prefer = prefer
        self.required = required
        self.page_size = page_size
        self.first_load_windows = first_load_windows
        self.lookback = lookback
        self.start = start
        self.bookmark_cap = bookmark_cap
        self.version = version
        self.cursor_type: tuple[str, type] = (cursor, str)

    def pages(self) -> Iterator[Page]:
        """The table's pages, each checkpointing what the next run needs."""
        state = self.reader.read_state
        windows = state.get(WINDOWS_KEY)
        if windows is None and state.get("replication_key_value") is None:
            windows = self.plan_windows()
        if windows:
            self.reader.set_windowed(True)
            try:
                yield from self.window_pages(windows)
            finally:
                self.reader.set_windowed(False)
            return
        start = state.get("replication_key_value")
        seen = (start, state.get(BOUNDARY_KEY))  # before the lookback forgets the bookmark
        url = self.queries.read_url()
        if self.lookback:
            # Rows from the lookback window come before the old bookmark; let the bookmark
            # restart from them (a kill mid-window resumes earlier: duplicates, not losses).
            self.reader.checkpoint(replication_key_value=None)
            start = None
        cap = self.bookmark_cap(start)
        self.reader.set_bookmark_cap(cap)
        boundary = Boundary(*seen, cap)
        for page in self.reader.fetch(url, self.prefer, required=self.required, cursor=self.cursor_type):
            rows = boundary.rows(page.records, self.cursor, self.key, self.version)
            yield replace(page, records=rows, checkpoint={BOUNDARY_KEY: dict(boundary.etags)})
            del page, rows

    # -- first loads in concurrent time windows -------------------------------------------------
    def plan_windows(self) -> list[dict[str, t.Any]] | None:
        """Split a big first load into time windows of the cursor, or None for a small table.

        The table's size comes from the product's cheap count, the range from the smallest and
        largest cursor values. The last window is open-ended, so rows changed during the load
        move into it and are still read.
        """
        count = self.first_load_windows
        if count < 2:
            return None
        total = self.queries.total_rows()
        if total is None or total <= 2 * self.page_size:
            return None
        start = self.start
        # Both ends at once: on a slow service each is a full round trip before any row is read.
        with ThreadPoolExecutor(2, thread_name_prefix=f"{self.reader.name}-range") as pool:
            ends = pool.map(lambda direction: self.queries.extreme(direction, start), ("asc", "desc"))
            low, high = list(ends)
        if low is None or high is None or high <= low:
            return None
        count = min(count, -(-total // self.page_size))
        step = (high - low) / count
        bounds = [odata_datetime(low + step * i) for i in range(count)]
        if len(set(bounds)) < len(bounds):
            return None  # the range is too narrow to split by whole seconds
        windows: list[dict[str, t.Any]] = [
            {"lo": bounds[i], "hi": bounds[i + 1] if i + 1 < count else None, "bookmark": None,
             "boundary": {}, "done": False}
            for i in range(count)
        ]
        if start is None:
            windows[0]["lo"] = None  # the first window also takes rows whose cursor is null
        self.reader.logger.info("First load of %s: reading %d time windows concurrently", self.reader.name, count)
        self.reader.checkpoint(**{WINDOWS_KEY: copy.deepcopy(windows)})
        return windows

    def window_pages(self, windows: list[dict[str, t.Any]]) -> Iterator[Page]:
        """Read the windows concurrently; each page checkpoints a snapshot of every window."""
        reader, cursor = self.reader, self.cursor
        pending = [w for w in windows if not w.get("done")]
        # A window's bookmark stays within the window (a resumed window never re-reads the one
        # before it), and within the cap unless the whole window is later.
        cap = self.bookmark_cap(None)
        reader.set_bookmark_cap(cap)
        trackers = [
            Boundary(w.get("bookmark"), w.get("boundary"), None if cap is None else max(cap, w.get("lo") or cap))
            for w in pending
        ]
        urls = [self.queries.window_url(w) for w in pending]
        for index, page in fetch_sequences(reader, urls, self.prefer, required=self.required, cursor=self.cursor_type):
            tracker = trackers[index]
            rows = tracker.rows(page.records, cursor, self.key, self.version)
            window = pending[index]
            if tracker.value is not None:
                window["bookmark"], window["boundary"] = tracker.value, dict(tracker.etags)
            window["done"] = page.next_link is None
            yield replace(page, records=rows, checkpoint={WINDOWS_KEY: copy.deepcopy(windows)})
            del page, rows
        # Every window is complete: one bookmark again, at the newest row read or the cap, with
        # the versions of every row at or after it (each window kept those after its own bookmark).
        values = [w["bookmark"] for w in windows if w.get("bookmark") is not None]
        last = max(values) if values else None
        if last is not None and cap is not None:
            last = min(last, cap)
        etags: dict[str, t.Any] = {}
        for window in windows:
            if last is not None and window.get("bookmark") is not None and window["bookmark"] >= last:
                etags.update(window.get("boundary") or {})
        reader.checkpoint(
            **{WINDOWS_KEY: None, "replication_key": cursor, "replication_key_value": last, BOUNDARY_KEY: etags}
        )
