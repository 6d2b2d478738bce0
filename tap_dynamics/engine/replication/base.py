"""What every replication strategy shares: state keys, row keys, the reader protocol, the boundary."""

from __future__ import annotations

import datetime as dt
import json
import typing as t

from tap_dynamics.engine.prefetch import prefetch_pages

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


def margin_cap(server_time: dt.datetime, margin_seconds: int, start: t.Any) -> str | None:
    """The latest a date-time bookmark may take: the server's time minus a commit margin (rows
    stamped when a write starts become visible when it commits), never below ``start``, the
    bookmark a read starts from. None when the margin is 0 (no limit)."""
    if not margin_seconds:
        return None
    cap = odata_datetime(server_time - dt.timedelta(seconds=margin_seconds))
    return start if isinstance(start, str) and start > cap else cap


class Reader(t.Protocol):
    """What a strategy needs from its stream (engine/stream.py's ``PagedStream`` provides it)."""

    name: str
    deletes_emitted: int
    page_format: t.Any  # the table's own page format, or None for the service's

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

    def page_arrived(self, page: Page) -> None:
        """A page was read: count it (run summary) and ready its rows for the record path.

        Called before anything reads the page's rows (they are decoded on first use).
        """
        ...


def fetch_sequences(
    reader: Reader,
    urls: Sequence[str],
    prefer: str | None,
    *,
    required: tuple[str, ...] = (),
    cursor: tuple[str, type] | None = None,
) -> Iterator[tuple[int, Page]]:
    """Several page sequences of one stream at once, each from its url, under the run's page
    budget: ``(index of the url, page)`` as pages arrive, in the stream's page format, each page
    counted (:meth:`Reader.page_arrived`) before anything reads its rows."""

    def source(url: str) -> Callable[[], Iterator[Page]]:
        return lambda: reader.client.iter_pages(
            url, prefer=prefer, table=reader.name, required=required, cursor=cursor, page_format=reader.page_format
        )

    for index, page in prefetch_pages([source(url) for url in urls], reader.page_budget, name=reader.name):
        reader.page_arrived(page)
        yield index, page
        # Every generator between the wire and stdout drops its page once it is written: a page
        # kept while the next one is awaited would double the pages alive per table.
        del page


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
