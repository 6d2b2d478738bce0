"""Table streams for the Dataverse Web API, with every replication method Dataverse supports.

One :class:`EntityStream` per table. Rows are read with ``$select`` of the selected columns and
``Prefer: odata.maxpagesize``, following ``@odata.nextLink`` verbatim. Per table the method is:

* **change tracking** (Singer ``LOG_BASED``; default where the table has ``ChangeTrackingEnabled``):
  the first run reads everything with ``Prefer: odata.track-changes`` and keeps the
  ``@odata.deltaLink``; later runs follow it and get new/changed rows plus ``$deletedEntity``
  stubs, emitted as records carrying the key and ``_sdc_deleted_at``. An expired token is
  re-baselined with a full read (as a new table version, with ``ACTIVATE_VERSION``).
* **a cursor column** (Singer ``INCREMENTAL``): ``modifiedon`` by default (or any date-time column,
  e.g. ``createdon`` for append-only tables, or ``versionnumber``):
  ``$filter=<col> ge <bookmark>`` — inclusive, because many rows share a second — ordered by
  ``<col>, <pk>``; rows the previous run already emitted at the bookmark second are dropped by
  key and version. ``versionnumber`` is unique, so it uses ``gt``.
* **full table** (``FULL_TABLE``): every row each run, as a new table version closed by an
  ``ACTIVATE_VERSION`` message so targets can drop rows that vanished.

State is checkpointed after every page (the generator only runs again once the SDK has written
the previous page's records), including the in-flight ``nextLink``, so a run killed at any point
resumes without re-reading the table and without losing rows.
"""

from __future__ import annotations

import copy
import datetime as dt
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
import typing as t

from tap_dynamics.client import DynamicsStream
from tap_dynamics.fastpath import OUTPUT_LOCK
from tap_dynamics.prefetch import prefetch, prefetch_pages
from tap_dynamics.dataverse.metadata import ANNOTATIONS_PREFER, is_annotation_column, rename_annotations
from tap_dynamics.errors import ConfigError, DataverseError

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_dynamics.client import DataverseClient, Page
    from tap_dynamics.dataverse.metadata import EntityInfo

CHANGE_TRACKING = "change_tracking"
FULL_TABLE = "full_table"
DEFAULT_CURSOR = "modifiedon"
VERSION_CURSOR = "versionnumber"
DELETED_AT = "_sdc_deleted_at"
DELETED_AT_SCHEMA = {"type": ["string", "null"], "format": "date-time"}

# State key holding {primary key: etag} of the rows emitted at the bookmark's exact second. The
# next run's inclusive `ge` filter returns them again; they are dropped unless their version
# (etag) changed. Capped: beyond it, boundary rows are re-emitted (duplicates, never losses).
BOUNDARY_KEY = "boundary_etags"
MAX_BOUNDARY_KEYS = 1000
# Resumable paging: the link of the next page to read, the delta link, the table version.
NEXT_LINK_KEY = "next_link"
DELTA_LINK_KEY = "delta_link"
VERSION_KEY = "table_version"
PHASE_KEY = "phase"

WINDOWS_KEY = "windows"

# How Dataverse says a change-tracking token has expired (the message and the HRESULT; the
# status has been seen as 400, but only these identify the error, so any status counts).
EXPIRED_TOKEN_CODE = "0x80044352"
EXPIRED_TOKEN_MARKERS = ("Version stamp associated with the client has expired", EXPIRED_TOKEN_CODE)
# Change tracking's re-baseline phase: persisted before its first request, so that a run killed
# at any point resumes it as the same table version (ACTIVATE_VERSION at the end), not as a
# plain first load that would leave rows deleted meanwhile in the warehouse.
REBASELINE = "rebaseline"


def odata_datetime(value: dt.datetime) -> str:
    """An unquoted OData DateTimeOffset literal in UTC, floored to the second (inclusive-safe)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now_iso() -> str:
    """Now, as an ISO-8601 UTC timestamp (when a change was read)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _types(schema: dict[str, t.Any]) -> list[str]:
    types = schema.get("type")
    return types if isinstance(types, list) else [types]


def _is_multi_select(schema: dict[str, t.Any]) -> bool:
    return "array" in _types(schema) and (schema.get("items") or {}).get("type") == "integer"


class Boundary:
    """The bookmark of a sorted cursor read, and the rows emitted at or after it, as {key: etag}.

    The bookmark is the latest cursor value read, but never later than ``cap`` (the run's start
    minus ``commit_margin_seconds``: see :meth:`EntityStream.bookmark_cap`), so the next read
    starts at most at the cap and re-reads the margin, where late commits may still appear.
    ``accept`` says whether a row must be emitted: a row a previous read already emitted in the
    same version (same etag) is not. The etags kept are those of every row at or after the
    bookmark, emitted now or before, which is what the next read needs to do the same, so they
    go into the state. Rows whose cursor is null are emitted and move nothing.
    """

    def __init__(self, value: t.Any, etags: t.Any, cap: str | None = None) -> None:
        self.seen: dict[str, t.Any] = dict(etags) if value is not None and isinstance(etags, dict) else {}
        self.value = value
        self.etags: dict[str, t.Any] = dict(self.seen)
        self.cap = cap

    def accept(self, value: t.Any, key: t.Any, etag: t.Any) -> bool:
        """Record ``key`` as read at ``value``; False if it was already emitted unchanged."""
        if value is not None:
            cap = self.cap
            floor = value if cap is None or value <= cap else cap
            if floor != self.value:  # rows come in cursor order: every kept etag is older
                self.value = floor
                self.etags = {}
            if len(self.etags) < MAX_BOUNDARY_KEYS:
                self.etags[key] = etag
        return etag is None or self.seen.get(key) != etag


def choose_method(entity: EntityInfo, schema: dict[str, t.Any], requested: str | None) -> str:
    """The replication method (or cursor column) for a table.

    Default: change tracking where the table has it, else ``modifiedon``, else full table. A
    ``replication`` setting entry overrides it, and is checked against the table's metadata so a
    typo fails at discovery with one line rather than silently syncing in full.
    """
    properties = schema.get("properties", {})
    if requested is None:
        if entity.change_tracking:
            return CHANGE_TRACKING
        return DEFAULT_CURSOR if DEFAULT_CURSOR in properties else FULL_TABLE
    if requested in (CHANGE_TRACKING, FULL_TABLE):
        if requested == CHANGE_TRACKING and not entity.change_tracking:
            msg = (
                f"setting 'replication' asks for change tracking on table {entity.logical_name}, "
                "which does not have it enabled — enable 'Track changes' on the table in Power Apps "
                "(Table properties > Advanced options) or use modifiedon"
            )
            raise ConfigError(msg)
        return requested
    column = properties.get(requested)
    if column is None:
        msg = (
            f"setting 'replication' names column {requested!r} as the cursor of table "
            f"{entity.logical_name}, which has no such column — use change_tracking, full_table, "
            "modifiedon, versionnumber or a date-time column"
        )
        raise ConfigError(msg)
    if requested != VERSION_CURSOR and column.get("format") != "date-time":
        msg = (
            f"setting 'replication': column {requested!r} of table {entity.logical_name} is not a "
            "date-time column; cursors must be date-times (e.g. createdon) or versionnumber"
        )
        raise ConfigError(msg)
    return requested


class EntityStream(DynamicsStream):
    """Rows of one Dataverse table."""

    def __init__(
        self,
        tap: t.Any,
        *,
        client: DataverseClient,
        entity: EntityInfo,
        schema: dict[str, t.Any],
        method: str | None = None,
    ) -> None:
        method = method or choose_method(entity, schema, None)
        if method == CHANGE_TRACKING and DELETED_AT not in schema.get("properties", {}):
            schema = {**schema, "properties": {**schema["properties"], DELETED_AT: DELETED_AT_SCHEMA}}
        super().__init__(tap, client=client, name=entity.logical_name, schema=schema)
        self.entity = entity
        self.primary_keys = (entity.primary_id,)
        self._set_method(method)
        properties = self.schema.get("properties", {})
        # A STATE message per page: a killed run loses at most one page of progress.
        self.STATE_MSG_FREQUENCY = client.settings.page_size
        self._multi_select = tuple(n for n, s in properties.items() if _is_multi_select(s))
        self._annotations = client.settings.annotations
        self._state: dict[str, t.Any] = {}
        self._windowed = False
        self._cap: str | None = None  # the latest a date-time bookmark may be (bookmark_cap)
        self.rows_emitted = 0
        self.deletes_emitted = 0

    def apply_catalog(self, catalog: t.Any) -> None:
        """Apply the catalog, then the ``replication`` setting, which wins for the tables it names.

        A saved catalog carries the method discovery chose then (``forced-replication-method``);
        a table named in the setting must follow the setting, as the user asked.
        """
        super().apply_catalog(catalog)
        requested = self.settings.replication_for(self.entity.logical_name)
        if requested is not None:
            self._set_method(choose_method(self.entity, self.schema, requested))

    def _set_method(self, method: str) -> None:
        if method == CHANGE_TRACKING:
            self.replication_key = None
            self.forced_replication_method = "LOG_BASED"
        elif method == FULL_TABLE:
            self.replication_key = None
            self.forced_replication_method = "FULL_TABLE"
        else:
            self.replication_key = method
            self.forced_replication_method = "INCREMENTAL"

    # -- what to read ---------------------------------------------------------------------------
    @property
    def method(self) -> str:
        """The effective method, after any catalog override (the catalog may change it)."""
        if self.replication_method == "LOG_BASED":
            return CHANGE_TRACKING
        if self.replication_method == "INCREMENTAL" and self.replication_key:
            return self.replication_key
        return FULL_TABLE

    @property
    def is_sorted(self) -> bool:
        """Cursor reads are ordered by the cursor, so the bookmark can advance mid-stream.

        Not while time windows of a first load are read concurrently: rows then interleave, and
        each window keeps its own bookmark in the state instead.
        """
        return not self._windowed and self.method not in (CHANGE_TRACKING, FULL_TABLE)

    @property
    def path(self) -> str:
        """The entity set this table is read from."""
        return self.entity.entity_set

    def selected_columns(self) -> list[str]:
        """Columns for ``$select``: the selected properties, plus the key and the cursor."""
        required = {self.entity.primary_id, self.replication_key}
        properties = self.schema.get("properties", {})
        return [
            name
            for name in properties
            if name != DELETED_AT
            and (name in required or self.mask.get(("properties", name), True))
            and not is_annotation_column(name, properties)
        ]

    def query_options(self, context: Context | None) -> dict[str, str]:
        """``$select``; for cursor reads the inclusive ``$filter`` and a stable ``$orderby``."""
        options = {"$select": ",".join(self.selected_columns())}
        pk = self.entity.primary_id
        method = self.method
        if method == CHANGE_TRACKING:
            return options  # tracking forbids $filter/$orderby/$top/$expand
        if method == FULL_TABLE:
            options["$orderby"] = f"{pk} asc"
            return options
        if method == VERSION_CURSOR:
            start = self.get_starting_replication_key_value(context)
            if start is not None:
                options["$filter"] = f"{method} gt {int(start)}"
            options["$orderby"] = f"{method} asc"
            return options
        start_ts = self.get_starting_timestamp(context)
        if start_ts is not None:
            lookback = dt.timedelta(seconds=self.settings.lookback_seconds)
            options["$filter"] = f"{method} ge {odata_datetime(start_ts - lookback)}"
        options["$orderby"] = f"{method} asc,{pk} asc"
        return options

    def _prefer(self, *, tracking: bool = False) -> str:
        prefer = f"odata.maxpagesize={self.settings.page_size}"
        if self.settings.annotations:
            prefer += f",{ANNOTATIONS_PREFER}"
        return f"odata.track-changes,{prefer}" if tracking else prefer

    # -- reading --------------------------------------------------------------------------------
    # Every method yields pages. A page may carry a `checkpoint` (state keys to set once its rows
    # are written) and an `activate_version`. They are applied by `before_page_state`, which runs
    # after the page's records are out and before its STATE message — in the fast path under the
    # output lock, since the tap state is shared by streams synced in parallel. Nothing here
    # touches the state while a page's rows are still unwritten.

    def get_pages(self, context: Context | None) -> Iterator[Page]:
        """The table's pages, according to its method (the fast path writes them)."""
        with OUTPUT_LOCK:  # may create this stream's bookmark: see TapDynamics.sync_all
            self._state = self.get_context_state(context)
        summary = self.client.summary.stream(self.name)
        method = self.method
        summary.method = {CHANGE_TRACKING: "CHANGE_TRACKING", FULL_TABLE: "FULL_TABLE"}.get(
            method, f"INCREMENTAL({method})"
        )
        if method == CHANGE_TRACKING:
            yield from self._change_pages()
        elif method == FULL_TABLE:
            yield from self._full_pages(self.client.url(self.path, self.query_options(context)))
        elif method == VERSION_CURSOR:
            yield from self._fetch(self.client.url(self.path, self.query_options(context)), self._prefer())
        else:
            yield from self._cursor_pages(context)

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """The SDK's per-record path (stream maps, flattening…): the same pages, row by row.

        The generator only resumes after the SDK has written the previous row, so once a page's
        rows are yielded they are out, and the page's checkpoint and STATE can follow.
        """
        for page in self.get_pages(context):
            yield from page.records
            with OUTPUT_LOCK:
                self.before_page_state(page)
                self.state_manager.is_flushed = False
                self._write_state_message()
            self.page_done(page, len(page.records))  # progress lines, as on the fast path
            del page

    def before_page_state(self, page: Page) -> None:
        """Apply a written page's checkpoint and ACTIVATE_VERSION (before its STATE message)."""
        self.rows_emitted += len(page.records) - page.deletes
        if page.checkpoint:
            self._set_state(page.checkpoint)
        if page.activate_version is not None:
            self._write_activate_version_message(page.activate_version)

    def _fetch(self, url: str, prefer: str) -> Iterator[Page]:
        """One page sequence, the next page fetched while this one is written."""
        summary = self.client.summary.stream(self.name)

        def source() -> Iterator[Page]:
            return self.client.iter_pages(url, prefer=prefer, table=self.name)

        for page in prefetch(source, self.client.page_budget, name=self.name):
            summary.pages += 1
            yield page
            # Every generator between the wire and stdout drops its page once it is written:
            # a page kept while the next one is awaited would double the pages alive per table.
            del page

    def _checkpoint(self, **values: t.Any) -> None:
        """Set state keys and write a STATE at once: for phase changes, between pages."""
        with OUTPUT_LOCK:
            self._set_state(values)
            self._write_state_message()

    def _set_state(self, values: t.Mapping[str, t.Any]) -> None:
        """Set (or, for None, remove) keys of this stream's state; the caller holds the lock."""
        for key, value in values.items():
            if value is None:
                self._state.pop(key, None)
            else:
                self._state[key] = value
        self.state_manager.is_flushed = False

    @override
    def cursor_column(self) -> tuple[str, type] | None:
        """The cursor column and the JSON type its values must have (checked on every row)."""
        method = self.method
        if method in (CHANGE_TRACKING, FULL_TABLE):
            return None
        return (method, int) if method == VERSION_CURSOR else (method, str)

    @override
    def _increment_stream_state(self, latest_record: dict[str, t.Any], *, context: Context | None = None) -> None:
        """Advance the bookmark to the row's cursor value, but not past :meth:`bookmark_cap`.

        A row whose cursor is null is emitted (the first-load windows read them on purpose) and
        leaves the bookmark where it is; the SDK would warn once per such row.
        """
        key = self.replication_key
        value = latest_record.get(key) if key else None
        if key is None or value is None:
            return
        cap = self._cap
        if cap is not None and value.__class__ is str and value > cap:
            latest_record = {key: cap}
        super()._increment_stream_state(latest_record, context=context)

    # -- date-time cursors ------------------------------------------------------------------------
    def bookmark_cap(self, start: t.Any) -> str | None:
        """The latest value a date-time bookmark may take in this read (None: no limit).

        Why: Dataverse stamps ``modifiedon`` (and ``createdon``) when a write starts, but the row
        becomes visible when its transaction commits; a synchronous plug-in may hold it for up
        to 2 minutes. A row stamped before the newest visible one can therefore appear after a
        read moved past it. The bookmark stays at least ``commit_margin_seconds`` behind the
        server's clock when the read starts, so the next run re-reads that margin; rows it
        already emitted unchanged are dropped by their etags (:class:`Boundary`). Never below
        ``start``, the bookmark the read starts from: a bookmark does not move backwards.
        """
        margin = self.settings.commit_margin_seconds
        if not margin:
            return None
        cap = odata_datetime(self.client.server_time() - dt.timedelta(seconds=margin))
        if isinstance(start, str) and start > cap:
            return start
        return cap

    def _set_windowed(self, windowed: bool) -> None:
        """Switch the SDK's sort check off while windows interleave (its state manager caches it)."""
        self._windowed = windowed
        self.state_manager._is_sorted = self.is_sorted  # noqa: SLF001 - cached at creation by the SDK

    def _cursor_pages(self, context: Context | None) -> Iterator[Page]:
        """A date-time cursor: windows on a big first load, else one ordered read from the bookmark."""
        windows = self._state.get(WINDOWS_KEY)
        if windows is None and self._state.get("replication_key_value") is None:
            windows = self._plan_windows(context)
        if windows:
            self._set_windowed(True)
            try:
                yield from self._window_pages(windows)
            finally:
                self._set_windowed(False)
            return
        start = self._state.get("replication_key_value")
        seen = (start, self._state.get(BOUNDARY_KEY))  # before the lookback forgets the bookmark
        url = self.client.url(self.path, self.query_options(context))
        if self.settings.lookback_seconds:
            # Rows from the lookback window come before the old bookmark; let the bookmark
            # restart from them (a kill mid-window resumes earlier: duplicates, not losses).
            self._checkpoint(replication_key_value=None)
            start = None
        self._cap = self.bookmark_cap(start)
        boundary = Boundary(*seen, self._cap)
        for page in self._fetch(url, self._prefer()):
            yield self._accepted(page, boundary)
            del page

    def _accepted(self, page: Page, boundary: Boundary) -> Page:
        """``page`` without the rows already emitted, carrying the boundary to checkpoint."""
        cursor, pk = self.replication_key, self.entity.primary_id
        rows = [
            row
            for row in page.records
            if boundary.accept(row.get(cursor), row.get(pk), row.get("@odata.etag"))
        ]
        return replace(page, records=rows, checkpoint={BOUNDARY_KEY: dict(boundary.etags)})

    # -- first loads in concurrent time windows -------------------------------------------------
    def _plan_windows(self, context: Context | None) -> list[dict[str, t.Any]] | None:
        """Split a big first load into time windows of the cursor, or None for a small table.

        The table's size comes from RetrieveTotalRecordCount (a cheap, cached count), the range
        from the smallest and largest cursor values. The last window is open-ended, so rows
        changed during the load move into it and are still read.
        """
        count = self.settings.first_load_windows
        if count < 2:
            return None
        total = self._total_rows()
        if total is None or total <= 2 * self.settings.page_size:
            return None
        start = self.get_starting_timestamp(context)
        # Both ends at once: on a slow org each is a full round trip before any row is read.
        with ThreadPoolExecutor(2, thread_name_prefix=f"{self.name}-range") as pool:
            ends = pool.map(lambda direction: self._cursor_extreme(direction, start), ("asc", "desc"))
            low, high = list(ends)
        if low is None or high is None or high <= low:
            return None
        count = min(count, -(-total // self.settings.page_size))
        step = (high - low) / count
        bounds = [odata_datetime(low + step * i) for i in range(count)]
        if len(set(bounds)) < len(bounds):
            return None  # the range is too narrow to split by whole seconds
        windows = [
            {"lo": bounds[i], "hi": bounds[i + 1] if i + 1 < count else None, "bookmark": None,
             "boundary": {}, "done": False}
            for i in range(count)
        ]
        if start is None:
            windows[0]["lo"] = None  # the first window also takes rows whose cursor is null
        self.logger.info("First load of %s: reading %d time windows concurrently", self.name, count)
        self._checkpoint(**{WINDOWS_KEY: copy.deepcopy(windows)})
        return windows

    def _total_rows(self) -> int | None:
        url = self.client.url(f"RetrieveTotalRecordCount(EntityNames=['{self.entity.logical_name}'])")
        try:
            payload, _ = self.client.get_json(url, table=self.name)
        except DataverseError as exc:
            self.logger.info("Table %s: no record count (%s); reading it in one sequence", self.name, exc)
            return None
        values = (payload.get("EntityRecordCountCollection") or {}).get("Values") or []
        return int(values[0]) if values and isinstance(values[0], int) else None

    def _cursor_extreme(self, direction: str, start: dt.datetime | None) -> dt.datetime | None:
        cursor = self.replication_key
        options = {"$select": cursor, "$orderby": f"{cursor} {direction}", "$top": "1"}
        if start is not None:
            options["$filter"] = f"{cursor} ge {odata_datetime(start)}"
        elif direction == "asc":
            options["$filter"] = f"{cursor} ne null"
        payload, _ = self.client.get_json(self.client.url(self.path, options), table=self.name)
        rows = payload.get("value") or []
        value = rows[0].get(cursor) if rows and isinstance(rows[0], dict) else None
        if not isinstance(value, str):
            return None
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))

    def _window_url(self, window: dict[str, t.Any]) -> str:
        cursor, pk = self.replication_key, self.entity.primary_id
        low = window.get("bookmark") or window.get("lo")
        parts = []
        if low is not None:
            parts.append(f"{cursor} ge {low}")
        if window.get("hi") is not None:
            parts.append(f"{cursor} lt {window['hi']}")
        where = " and ".join(parts)
        if window.get("lo") is None and window.get("bookmark") is None:
            where = f"({cursor} eq null or {where})" if where else ""
        options = {"$select": ",".join(self.selected_columns()), "$orderby": f"{cursor} asc,{pk} asc"}
        if where:
            options["$filter"] = where
        return self.client.url(self.path, options)

    def _window_pages(self, windows: list[dict[str, t.Any]]) -> Iterator[Page]:
        """Read the windows concurrently; each page checkpoints a snapshot of every window."""
        cursor, pk = self.replication_key, self.entity.primary_id
        pending = [w for w in windows if not w.get("done")]
        # A window's bookmark stays within the window (a resumed window never re-reads the one
        # before it), and within the cap (bookmark_cap) unless the whole window is later.
        cap = self._cap = self.bookmark_cap(None)
        trackers = [
            Boundary(w.get("bookmark"), w.get("boundary"), None if cap is None else max(cap, w.get("lo") or cap))
            for w in pending
        ]
        prefer = self._prefer()
        summary = self.client.summary.stream(self.name)

        def source(window: dict[str, t.Any]) -> t.Callable[[], Iterator[Page]]:
            url = self._window_url(window)
            return lambda: self.client.iter_pages(url, prefer=prefer, table=self.name)

        sources = [source(w) for w in pending]
        for index, page in prefetch_pages(sources, self.client.page_budget, name=self.name):
            tracker = trackers[index]
            rows = [
                row
                for row in page.records
                if tracker.accept(row.get(cursor), row.get(pk), row.get("@odata.etag"))
            ]
            summary.pages += 1
            window = pending[index]
            if tracker.value is not None:
                window["bookmark"], window["boundary"] = tracker.value, dict(tracker.etags)
            window["done"] = page.next_link is None
            yield replace(page, records=rows, checkpoint={WINDOWS_KEY: copy.deepcopy(windows)})
            del page, rows
        # Every window is complete: one bookmark again, at the newest row read or the cap, with
        # the etags of every row at or after it (each window kept those after its own bookmark).
        values = [w["bookmark"] for w in windows if w.get("bookmark") is not None]
        last = max(values) if values else None
        if last is not None and cap is not None:
            last = min(last, cap)
        etags: dict[str, t.Any] = {}
        for window in windows:
            if last is not None and window.get("bookmark") is not None and window["bookmark"] >= last:
                etags.update(window.get("boundary") or {})
        self._checkpoint(
            **{WINDOWS_KEY: None, "replication_key": cursor, "replication_key_value": last, BOUNDARY_KEY: etags}
        )

    # -- full table ---------------------------------------------------------------------------------
    def _full_pages(self, first_url: str) -> Iterator[Page]:
        """One full pass as a table version; resumes from the in-flight nextLink."""
        next_link = self._state.get(NEXT_LINK_KEY)
        version = self._state.get(VERSION_KEY)
        if not (next_link and version):
            next_link, version = None, int(time.time() * 1000)
            if self._state.get("last_version") is None:
                # First ever sync: activate the version at once so the target creates the table.
                with OUTPUT_LOCK:
                    self._write_activate_version_message(version)
        self._stream_version = version
        self._checkpoint(**{VERSION_KEY: version, NEXT_LINK_KEY: next_link})
        for page in self._fetch(next_link or first_url, self._prefer()):
            if page.next_link:
                yield replace(page, checkpoint={NEXT_LINK_KEY: page.next_link})
            else:
                # The whole table has been emitted as `version`: targets may now drop older rows.
                done = {VERSION_KEY: None, NEXT_LINK_KEY: None, "last_version": version}
                yield replace(page, checkpoint=done, activate_version=version)
            del page

    # -- change tracking ----------------------------------------------------------------------------
    def _change_pages(self) -> Iterator[Page]:
        """Change tracking: the initial read, or the changes since the stored delta link."""
        next_link = self._state.get(NEXT_LINK_KEY)
        delta_link = self._state.get(DELTA_LINK_KEY)
        phase = self._state.get(PHASE_KEY)
        if phase == REBASELINE:  # a killed re-baseline, before or after its first page
            self.client.summary.stream(self.name).note = "re-baseline resumed"
            yield from self._track(next_link or self._initial_url(), REBASELINE)
            return
        if next_link and phase == "initial":  # resume paging where a killed run stopped
            yield from self._track(next_link, "initial")
            return
        url = next_link or delta_link
        if not url:
            yield from self._track(self._initial_url(), "initial")
            return
        try:
            yield from self._track(url, "delta")
        except DataverseError as exc:
            if not _is_expired_token(exc):
                raise
            self.logger.warning(
                "Table %s: the change-tracking token has expired (%s); re-baselining with a full "
                "read. Targets that honour ACTIVATE_VERSION will drop rows deleted meanwhile.",
                self.name,
                exc,
            )
            self.client.summary.stream(self.name).note = "re-baselined: change-tracking token expired"
            # One STATE for the whole switch: no point at which a kill forgets the re-baseline.
            version = int(time.time() * 1000)
            self._checkpoint(**{DELTA_LINK_KEY: None, NEXT_LINK_KEY: None, PHASE_KEY: REBASELINE, VERSION_KEY: version})
            yield from self._track(self._initial_url(), REBASELINE)

    def _initial_url(self) -> str:
        return self.client.url(self.path, {"$select": ",".join(self.selected_columns())})

    def _track(self, url: str, phase: str) -> Iterator[Page]:
        """Follow one tracked sequence of pages to its delta link."""
        pk = self.entity.primary_id
        full_pass = phase in ("initial", REBASELINE)
        version = self._state.get(VERSION_KEY) if phase == REBASELINE else None
        if phase == REBASELINE and version is None:
            version = int(time.time() * 1000)
        self._stream_version = version
        self._checkpoint(**{PHASE_KEY: phase, VERSION_KEY: version})
        for page in self._fetch(url, self._prefer(tracking=full_pass)):
            rows = page.records
            deletes = 0
            # Full rows carry no @odata.context; $deletedEntity stubs do (and come last).
            if any("@odata.context" in row for row in rows):
                read_at = utc_now_iso()
                rows = []
                for row in page.records:
                    if not _is_deleted_entity(row):
                        rows.append(row)
                    elif row.get("id") is not None:
                        deletes += 1
                        rows.append({pk: row["id"], DELETED_AT: read_at})
                self.deletes_emitted += deletes
            if page.next_link:
                yield replace(page, records=rows, checkpoint={NEXT_LINK_KEY: page.next_link}, deletes=deletes)
            else:
                if not page.delta_link:
                    msg = f"table {self.name}: the last change-tracking page has no @odata.deltaLink"
                    raise DataverseError(msg, table=self.name)
                done = {NEXT_LINK_KEY: None, DELTA_LINK_KEY: page.delta_link, PHASE_KEY: None, VERSION_KEY: None}
                yield replace(page, records=rows, checkpoint=done, activate_version=version, deletes=deletes)
            del page, rows
        self._stream_version = None

    def post_process(self, row: dict[str, t.Any], context: Context | None = None) -> dict[str, t.Any] | None:
        """Drop the etag, name annotation columns, split multi-select choices ("1,2" -> [1, 2]).

        Runs for every row, so it does no lookups it can do once: the flags are set in __init__.
        Dataverse joins choice values with bare commas; ``int`` also tolerates spaces.
        """
        if DELETED_AT in row:
            return row
        row.pop("@odata.etag", None)
        if self._annotations:
            rename_annotations(row)
        for name in self._multi_select:
            value = row.get(name)
            if value.__class__ is str:
                try:
                    row[name] = list(map(int, value.split(","))) if value else []
                except ValueError:
                    msg = (
                        f"table {self.name}: column {name} holds {value[:60]!r}, not comma-separated "
                        "choice values (whole numbers); the response is malformed"
                    )
                    raise DataverseError(msg, table=self.name) from None
        return row


def _is_deleted_entity(row: dict[str, t.Any]) -> bool:
    context = row.get("@odata.context")
    return isinstance(context, str) and context.endswith("/$deletedEntity")


def _is_expired_token(exc: DataverseError) -> bool:
    """The change-tracking token expired: known by its code or message, whatever the status."""
    text = str(exc)
    return exc.code == EXPIRED_TOKEN_CODE or any(marker in text for marker in EXPIRED_TOKEN_MARKERS)
