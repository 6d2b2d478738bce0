"""Replication strategies: which pages to read for a table, and what to checkpoint after each.

A strategy reads through a :class:`Reader` (the paged stream: fetch a page sequence, the state,
checkpoints, table versions) and yields pages whose ``checkpoint`` and ``activate_version`` the
stream applies once the page's records are written (engine/stream.py). Nothing here touches the
state while a page's rows are still unwritten, so a run killed at any point resumes without
re-reading the table and without losing rows.

- :class:`CursorStrategy`: an inclusive ``ge`` read from the bookmark; rows a previous read
  already emitted at the bookmark value are dropped by key and version (:class:`Boundary`); a
  big first load is read as concurrent time windows.
- :class:`FullTableStrategy`: every row each run, as a table version closed by
  ``ACTIVATE_VERSION`` (targets drop rows that vanished); resumes from the in-flight next link.
- :class:`DeltaStrategy`: change tracking — an initial read that ends with a delta link, then
  the changes since it, with tombstones as records carrying the key and ``_sdc_deleted_at``; an
  expired token is re-baselined with a full read as a new table version.

Keys are tuples of columns (composite keys: F&O's ``(dataAreaId, CustomerAccount)``); a one-column
key is stored in the state as the plain value, as before. What is particular to one product —
the query syntax of its windows and extremes, how its tombstones look, which error means an
expired delta token — is injected (:class:`CursorQueries`, :class:`DeltaDialect`).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from tap_dynamics.engine.prefetch import prefetch_pages
from tap_dynamics.errors import DataverseError

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterator, Sequence

    from tap_dynamics.engine.pages import Page, PageSource
    from tap_dynamics.engine.prefetch import PageBudget

DELETED_AT = "_sdc_deleted_at"
DELETED_AT_SCHEMA = {"type": ["string", "null"], "format": "date-time"}

# State key holding {key: version} of the rows emitted at or after the bookmark. The next run's
# inclusive `ge` filter returns them again; they are dropped unless their version (etag) changed.
# Capped: beyond it, boundary rows are re-emitted (duplicates, never losses).
BOUNDARY_KEY = "boundary_etags"
MAX_BOUNDARY_KEYS = 1000
# Resumable paging: the link of the next page to read, the delta link, the table version.
NEXT_LINK_KEY = "next_link"
DELTA_LINK_KEY = "delta_link"
VERSION_KEY = "table_version"
PHASE_KEY = "phase"
WINDOWS_KEY = "windows"
# Delta phases. The re-baseline is persisted before its first request, so that a run killed at
# any point resumes it as the same table version (ACTIVATE_VERSION at the end), not as a plain
# first load that would leave rows deleted meanwhile in the warehouse.
INITIAL = "initial"
DELTA = "delta"
REBASELINE = "rebaseline"

RowKey = t.Callable[[dict[str, t.Any]], t.Any]


def row_key(columns: Sequence[str]) -> RowKey:
    """A row's key as stored in the state: the value for one column, a JSON list for several."""
    if len(columns) == 1:
        (column,) = columns
        return lambda row: row.get(column)
    names = tuple(columns)
    return lambda row: json.dumps([row.get(name) for name in names], default=str, separators=(",", ":"))


def odata_etag(row: dict[str, t.Any]) -> t.Any:
    """A row's version as OData v4 services report it."""
    return row.get("@odata.etag")


def utc_now_iso() -> str:
    """Now, as an ISO-8601 UTC timestamp (when a change was read)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def odata_datetime(value: dt.datetime) -> str:
    """An unquoted OData DateTimeOffset literal in UTC, floored to the second (inclusive-safe)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reader(t.Protocol):
    """What a strategy needs from its stream (engine/stream.py's ``PagedStream`` provides it)."""

    name: str
    deletes_emitted: int

    @property
    def client(self) -> PageSource:
        """The transport pages are read through."""
        ...

    @property
    def logger(self) -> logging.Logger:
        """The stream's logger."""
        ...

    @property
    def read_state(self) -> dict[str, t.Any]:
        """The stream's state for this read."""
        ...

    @property
    def page_budget(self) -> PageBudget:
        """The run's page budget."""
        ...

    def fetch(
        self,
        url: str,
        prefer: str | None,
        *,
        required: tuple[str, ...] = (),
        cursor: tuple[str, type] | None = None,
    ) -> Iterator[Page]:
        """One page sequence, prefetched."""
        ...

    def set_bookmark_cap(self, cap: str | None) -> None:
        """The latest value the bookmark may take while this read runs (None: no limit)."""
        ...

    def checkpoint(self, **values: t.Any) -> None:
        """Set state keys and write a STATE now (between pages)."""
        ...

    def set_version(self, version: int | None) -> None:
        """The table version the next RECORDs carry."""
        ...

    def activate_version(self, version: int) -> None:
        """Write ACTIVATE_VERSION now."""
        ...

    def set_windowed(self, windowed: bool) -> None:
        """Several sequences of the stream interleave (the sort check is off meanwhile)."""
        ...

    def note(self, text: str) -> None:
        """A remark for the run summary."""
        ...

    def count_pages(self, pages: int) -> None:
        """Pages read (run summary)."""
        ...


class Boundary:
    """The bookmark of a sorted cursor read, and the rows emitted at or after it, as {key: version}.

    The bookmark is the latest cursor value read, but never later than ``cap`` (the run's start
    minus a commit margin, see :class:`CursorStrategy`), so the next read starts at most at the
    cap and re-reads the margin, where late commits may still appear. ``accept`` says whether a
    row must be emitted: a row a previous read already emitted in the same version (etag) is not.
    The versions kept are those of every row at or after the bookmark, emitted now or before,
    which is what the next read needs to do the same, so they go into the state. Rows whose
    cursor is null are emitted and move nothing.
    """

    def __init__(self, value: t.Any, etags: t.Any, cap: str | None = None) -> None:
        self.seen: dict[t.Any, t.Any] = dict(etags) if value is not None and isinstance(etags, dict) else {}
        self.value = value
        self.etags: dict[t.Any, t.Any] = dict(self.seen)
        self.cap = cap

    def accept(self, value: t.Any, key: t.Any, etag: t.Any) -> bool:
        """Record ``key`` as read at ``value``; False if it was already emitted unchanged."""
        if value is not None:
            cap = self.cap
            floor = value if cap is None or value <= cap else cap
            if floor != self.value:  # rows come in cursor order: every kept version is older
                self.value = floor
                self.etags = {}
            if len(self.etags) < MAX_BOUNDARY_KEYS:
                self.etags[key] = etag
        return etag is None or self.seen.get(key) != etag

    def rows(self, records: t.Iterable[dict[str, t.Any]], cursor: str, key: RowKey,
             version: RowKey = odata_etag) -> list[dict[str, t.Any]]:
        """The rows of ``records`` to emit."""
        return [row for row in records if self.accept(row.get(cursor), key(row), version(row))]


# -- cursor ---------------------------------------------------------------------------------------
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
        prefer, required, cursor_type = self.prefer, self.required, self.cursor_type

        def source(window: dict[str, t.Any]) -> Callable[[], Iterator[Page]]:
            url = self.queries.window_url(window)
            return lambda: reader.client.iter_pages(
                url, prefer=prefer, table=reader.name, required=required, cursor=cursor_type
            )

        sources = [source(w) for w in pending]
        for index, page in prefetch_pages(sources, reader.page_budget, name=reader.name):
            tracker = trackers[index]
            rows = tracker.rows(page.records, cursor, self.key, self.version)
            reader.count_pages(1)
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


# -- full table -------------------------------------------------------------------------------------
class FullTableStrategy:
    """One full pass as a table version; resumes from the in-flight next link."""

    def __init__(self, reader: Reader, *, prefer: str, required: tuple[str, ...]) -> None:
        self.reader = reader
        self.prefer = prefer
        self.required = required

    def pages(self, first_url: str) -> Iterator[Page]:
        """The table's pages; the last one activates the version."""
        reader = self.reader
        state = reader.read_state
        next_link = state.get(NEXT_LINK_KEY)
        version = state.get(VERSION_KEY)
        if not (next_link and version):
            next_link, version = None, int(time.time() * 1000)
            if state.get("last_version") is None:
                # First ever sync: activate the version at once so the target creates the table.
                reader.activate_version(version)
        reader.set_version(version)
        reader.checkpoint(**{VERSION_KEY: version, NEXT_LINK_KEY: next_link})
        for page in reader.fetch(next_link or first_url, self.prefer, required=self.required):
            if page.next_link:
                yield replace(page, checkpoint={NEXT_LINK_KEY: page.next_link})
            else:
                # The whole table has been emitted as `version`: targets may now drop older rows.
                done = {VERSION_KEY: None, NEXT_LINK_KEY: None, "last_version": version}
                yield replace(page, checkpoint=done, activate_version=version)
            del page


# -- change tracking ----------------------------------------------------------------------------------
class DeltaDialect(t.Protocol):
    """How one product reports deletions and an expired delta token."""

    def tombstones(self, rows: Sequence[dict[str, t.Any]], read_at: str) -> tuple[Sequence[dict[str, t.Any]], int]:
        """``rows`` with each tombstone replaced by a deletion record (key + ``_sdc_deleted_at``),
        and how many there were; ``rows`` itself when the page has none."""
        ...

    def expired(self, exc: DataverseError) -> bool:
        """Whether ``exc`` says the delta token has expired (a full re-read is needed)."""
        ...


class DeltaStrategy:
    """Change tracking: the initial read, or the changes since the stored delta link."""

    def __init__(
        self,
        reader: Reader,
        dialect: DeltaDialect,
        *,
        initial_url: Callable[[], str],
        prefer_initial: str,
        prefer_delta: str,
        required: tuple[str, ...],
    ) -> None:
        self.reader = reader
        self.dialect = dialect
        self.initial_url = initial_url
        self.prefer_initial = prefer_initial
        self.prefer_delta = prefer_delta
        self.required = required

    def pages(self) -> Iterator[Page]:
        """The pages to read now: resume, initial read, changes, or a re-baseline."""
        reader = self.reader
        state = reader.read_state
        next_link = state.get(NEXT_LINK_KEY)
        delta_link = state.get(DELTA_LINK_KEY)
        phase = state.get(PHASE_KEY)
        if phase == REBASELINE:  # a killed re-baseline, before or after its first page
            reader.note("re-baseline resumed")
            yield from self.track(next_link or self.initial_url(), REBASELINE)
            return
        if next_link and phase == INITIAL:  # resume paging where a killed run stopped
            yield from self.track(next_link, INITIAL)
            return
        url = next_link or delta_link
        if not url:
            yield from self.track(self.initial_url(), INITIAL)
            return
        try:
            yield from self.track(url, DELTA)
        except DataverseError as exc:
            if not self.dialect.expired(exc):
                raise
            reader.logger.warning(
                "Table %s: the change-tracking token has expired (%s); re-baselining with a full "
                "read. Targets that honour ACTIVATE_VERSION will drop rows deleted meanwhile.",
                reader.name,
                exc,
            )
            reader.note("re-baselined: change-tracking token expired")
            # One STATE for the whole switch: no point at which a kill forgets the re-baseline.
            version = int(time.time() * 1000)
            reader.checkpoint(**{DELTA_LINK_KEY: None, NEXT_LINK_KEY: None, PHASE_KEY: REBASELINE, VERSION_KEY: version})
            yield from self.track(self.initial_url(), REBASELINE)

    def track(self, url: str, phase: str) -> Iterator[Page]:
        """Follow one tracked sequence of pages to its delta link."""
        reader = self.reader
        state = reader.read_state
        full_pass = phase in (INITIAL, REBASELINE)
        version = state.get(VERSION_KEY) if phase == REBASELINE else None
        if phase == REBASELINE and version is None:
            version = int(time.time() * 1000)
        reader.set_version(version)
        reader.checkpoint(**{PHASE_KEY: phase, VERSION_KEY: version})
        prefer = self.prefer_initial if full_pass else self.prefer_delta
        for page in reader.fetch(url, prefer, required=self.required):
            rows, deletes = self.dialect.tombstones(page.records, utc_now_iso())
            reader.deletes_emitted += deletes
            if page.next_link:
                yield replace(page, records=rows, checkpoint={NEXT_LINK_KEY: page.next_link}, deletes=deletes)
            else:
                if not page.delta_link:
                    msg = f"table {reader.name}: the last change-tracking page has no @odata.deltaLink"
                    raise DataverseError(msg, table=reader.name)
                done = {NEXT_LINK_KEY: None, DELTA_LINK_KEY: page.delta_link, PHASE_KEY: None, VERSION_KEY: None}
                yield replace(page, records=rows, checkpoint=done, activate_version=version, deletes=deletes)
            del page, rows
        reader.set_version(None)


__all__ = [
    "BOUNDARY_KEY",
    "DELTA",
    "INITIAL",
    "REBASELINE",
    "DELETED_AT",
    "DELETED_AT_SCHEMA",
    "DELTA_LINK_KEY",
    "MAX_BOUNDARY_KEYS",
    "NEXT_LINK_KEY",
    "PHASE_KEY",
    "VERSION_KEY",
    "WINDOWS_KEY",
    "Boundary",
    "CursorQueries",
    "CursorStrategy",
    "DeltaDialect",
    "DeltaStrategy",
    "FullTableStrategy",
    "Reader",
    "odata_datetime",
    "row_key",
    "utc_now_iso",
]
