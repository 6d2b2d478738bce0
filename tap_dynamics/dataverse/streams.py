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

The strategies themselves are the engine's (tap_dynamics/engine/replication.py); this module
gives them Dataverse's facts: the query syntax, ``RetrieveTotalRecordCount`` for the size of a
first load, ``$deletedEntity`` stubs and the ``0x80044352`` expired-token error. State is
checkpointed after every page, including the in-flight ``nextLink``, so a run killed at any point
resumes without re-reading the table and without losing rows.
"""

from __future__ import annotations

import datetime as dt
import typing as t
from itertools import repeat
from operator import contains

from tap_dynamics.dataverse.metadata import (
    ANNOTATIONS_PREFER,
    is_annotation_column,
    rename_annotations,
)
from tap_dynamics.dataverse.policy import EXPIRED_TOKEN_CODE
from tap_dynamics.engine import override
from tap_dynamics.engine.replication import (
    DELETED_AT,
    DELETED_AT_SCHEMA,
    CursorStrategy,
    DeltaStrategy,
    FullTableStrategy,
    margin_cap,
    odata_datetime,
    odata_etag,
)
from tap_dynamics.engine.stream import FULL_TABLE, PagedStream
from tap_dynamics.errors import ConfigError, ServiceError

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from singer_sdk.helpers.types import Context

    from tap_dynamics.config import Settings
    from tap_dynamics.dataverse.client import DataverseClient
    from tap_dynamics.dataverse.metadata import EntityInfo
    from tap_dynamics.engine.pages import Page
    from tap_dynamics.engine.replication.cursor import CursorQueries
    from tap_dynamics.engine.run import RunContext

CHANGE_TRACKING = "change_tracking"
DEFAULT_CURSOR = "modifiedon"
VERSION_CURSOR = "versionnumber"
# Distinct multi-select texts whose split values a table remembers (EntityStream._choices).
MAX_CHOICE_LISTS = 4096

# How Dataverse says a change-tracking token has expired (the message and the HRESULT; the
# status has been seen as 400, but only these identify the error, so any status counts).
EXPIRED_TOKEN_MARKERS = ("Version stamp associated with the client has expired", EXPIRED_TOKEN_CODE)


def _types(schema: dict[str, t.Any]) -> list[str]:
    types = schema.get("type")
    return types if isinstance(types, list) else [t.cast("str", types)]


def _is_multi_select(schema: dict[str, t.Any]) -> bool:
    return "array" in _types(schema) and (schema.get("items") or {}).get("type") == "integer"


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


class DataverseStream(PagedStream):
    """Base of every Dataverse stream: the engine's paged stream, with the run's settings."""

    client: DataverseClient

    def __init__(
        self, tap: t.Any, *, client: DataverseClient, run: RunContext, name: str, schema: dict[str, t.Any]
    ) -> None:
        super().__init__(tap, client=client, run=run, name=name, schema=schema)

    @property
    def settings(self) -> Settings:
        """The run's validated settings."""
        return self.client.settings


class EntityStream(DataverseStream):
    """Rows of one Dataverse table."""

    log_based_method = CHANGE_TRACKING

    def __init__(
        self,
        tap: t.Any,
        *,
        client: DataverseClient,
        run: RunContext,
        entity: EntityInfo,
        schema: dict[str, t.Any],
        method: str | None = None,
    ) -> None:
        method = method or choose_method(entity, schema, None)
        if method == CHANGE_TRACKING and DELETED_AT not in schema.get("properties", {}):
            schema = {**schema, "properties": {**schema["properties"], DELETED_AT: DELETED_AT_SCHEMA}}
        super().__init__(tap, client=client, run=run, name=entity.logical_name, schema=schema)
        self.entity = entity
        self.primary_keys = (entity.primary_id,)
        self.set_method(method)
        properties = self.schema.get("properties", {})
        # A STATE message per page: a killed run loses at most one page of progress.
        self.STATE_MSG_FREQUENCY = client.settings.page_size
        self._multi_select = tuple(n for n, s in properties.items() if _is_multi_select(s))
        # Multi-select text -> its choice values, split once: a column holds few distinct
        # combinations, and splitting was two thirds of post_process (see _choices).
        self._choice_lists: dict[str, list[int]] = {}
        self._annotations = client.settings.annotations

    @override
    def method_setting(self) -> str | None:
        requested = self.settings.replication_for(self.entity.logical_name)
        return None if requested is None else choose_method(self.entity, self.schema, requested)

    # -- what to read ---------------------------------------------------------------------------
    @property
    @override
    def is_sorted(self) -> bool:
        """Cursor reads are ordered by the cursor, so the bookmark can advance mid-stream.

        Not while time windows of a first load are read concurrently: rows then interleave, and
        each window keeps its own bookmark in the state instead.
        """
        return not self.windowed and self.method not in (CHANGE_TRACKING, FULL_TABLE)

    @property
    def path(self) -> str:
        """The entity set this table is read from."""
        return self.entity.entity_set

    def required_columns(self) -> tuple[str, ...]:
        """Columns every row must carry (a row without them is a malformed response).

        Only the primary key: a cursor column may be null (such rows are emitted without
        moving the bookmark), see :meth:`cursor_column`.
        """
        return tuple(self.primary_keys or ())

    def cursor_column(self) -> tuple[str, type] | None:
        """The cursor column and the JSON type its values must have (checked on every row)."""
        method = self.method
        if method in (CHANGE_TRACKING, FULL_TABLE):
            return None
        return (method, int) if method == VERSION_CURSOR else (method, str)

    def bookmark_cap(self, start: t.Any) -> str | None:
        """The latest value a date-time bookmark may take in this read (None: no limit).

        Why: Dataverse stamps ``modifiedon`` (and ``createdon``) when a write starts, but the row
        becomes visible when its transaction commits; a synchronous plug-in may hold it for up
        to 2 minutes. A row stamped before the newest visible one can therefore appear after a
        read moved past it. The bookmark stays at least ``commit_margin_seconds`` behind the
        server's clock when the read starts, so the next run re-reads that margin; rows it
        already emitted unchanged are dropped by their etags (the strategy's boundary). Never
        below ``start``, the bookmark the read starts from: a bookmark does not move backwards.
        """
        return margin_cap(self.client.server_time(), self.settings.commit_margin_seconds, start)

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
        options = {"$select": self.select_list()}
        pk = self.source(self.entity.primary_id)
        method = self.method
        if method == CHANGE_TRACKING:
            return options  # tracking forbids $filter/$orderby/$top/$expand
        if method == FULL_TABLE:
            options["$orderby"] = f"{pk} asc"
            return options
        cursor = self.source(method)
        if method == VERSION_CURSOR:
            start = self.get_starting_replication_key_value(context)
            if start is not None:
                options["$filter"] = f"{cursor} gt {self.literal(int(start))}"
            options["$orderby"] = f"{cursor} asc"
            return options
        start_ts = self.get_starting_timestamp(context)
        if start_ts is not None:
            lookback = dt.timedelta(seconds=self.settings.lookback_seconds)
            options["$filter"] = f"{cursor} ge {self.literal(odata_datetime(start_ts - lookback))}"
        options["$orderby"] = f"{cursor} asc,{pk} asc"
        return options

    def _prefer(self, *, tracking: bool = False) -> str:
        prefer = f"odata.maxpagesize={self.settings.page_size}"
        if self.settings.annotations:
            prefer += f",{ANNOTATIONS_PREFER}"
        return f"odata.track-changes,{prefer}" if tracking else prefer

    # -- reading --------------------------------------------------------------------------------
    @override
    def get_pages(self, context: Context | None) -> Iterator[Page]:
        """The table's pages, by the engine's strategy for its method (the fast path writes them)."""
        self.load_state(context)
        method = self.method
        self.run.summary.stream(self.name).method = {
            CHANGE_TRACKING: "CHANGE_TRACKING", FULL_TABLE: "FULL_TABLE"
        }.get(method, f"INCREMENTAL({method})")
        required = self.required_columns()
        if method == CHANGE_TRACKING:
            yield from DeltaStrategy(
                self,
                DataverseDelta(self.entity.primary_id),
                initial_url=lambda: self.client.url(self.path, {"$select": self.select_list()}),
                prefer_initial=self._prefer(tracking=True),
                prefer_delta=self._prefer(),
                required=required,
            ).pages()
        elif method == FULL_TABLE:
            strategy = FullTableStrategy(self, prefer=self._prefer(), required=required)
            yield from strategy.pages(self.client.url(self.path, self.query_options(context)))
        elif method == VERSION_CURSOR:  # unique: `gt` the bookmark, no boundary rows to drop
            url = self.client.url(self.path, self.query_options(context))
            yield from self.fetch(url, self._prefer(), required=required, cursor=self.cursor_column())
        else:
            yield from CursorStrategy(
                self,
                self.cursor_queries(context),
                cursor=method,
                key=(self.entity.primary_id,),
                prefer=self._prefer(),
                required=required,
                page_size=self.rows_per_page,
                first_load_windows=self.first_load_windows,
                lookback=bool(self.settings.lookback_seconds),
                start=self.get_starting_timestamp(context),
                bookmark_cap=self.bookmark_cap,
                version=self.row_version,
            ).pages()

    # -- what another Dataverse endpoint (OData v2) changes --------------------------------------
    def cursor_queries(self, context: Context | None) -> CursorQueries:
        """The query syntax of cursor reads (and of the first-load windows)."""
        return DataverseCursorQueries(self, context)

    def source(self, column: str) -> str:
        """The served property of a column (the Web API serves columns by their logical names)."""
        return column

    def select_list(self) -> str:
        """``$select``: the selected columns, with the key and the cursor."""
        return ",".join(self.selected_columns())

    @staticmethod
    def literal(value: str | int) -> str:
        """A cursor value in a ``$filter``: OData v4 writes an ISO-8601 UTC date-time bare."""
        return str(value)

    @property
    def rows_per_page(self) -> int:
        """Rows per page the service sends (the first-load windows are planned in pages)."""
        return self.settings.page_size

    @property
    def first_load_windows(self) -> int:
        """How many time windows a big first load reads at once (``first_load_windows``)."""
        return self.settings.first_load_windows

    @staticmethod
    def row_version(row: dict[str, t.Any]) -> t.Any:
        """A row's version, which tells a changed boundary row from one already emitted."""
        return odata_etag(row)

    @override
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
                values = self._choice_lists.get(value)
                # A copy per row: the SDK's path may change a record's lists in place.
                row[name] = (values if values is not None else self._choices(name, value)).copy()
        return row

    def _choices(self, name: str, value: str) -> list[int]:
        """The choice values of a multi-select text ("1,2" -> [1, 2]), remembered for the next
        row (up to :data:`MAX_CHOICE_LISTS` distinct texts per table: memory stays flat)."""
        try:
            values = list(map(int, value.split(","))) if value else []
        except ValueError:
            msg = (
                f"table {self.name}: column {name} holds {value[:60]!r}, not comma-separated "
                "choice values (whole numbers); the response is malformed"
            )
            raise ServiceError(msg, table=self.name) from None
        if len(self._choice_lists) < MAX_CHOICE_LISTS:
            self._choice_lists[value] = values
        return values


class DataverseCursorQueries:
    """The Dataverse side of a cursor read: OData filters, ``$top=1`` extremes, record counts."""

    def __init__(self, stream: EntityStream, context: Context | None) -> None:
        self.stream = stream
        self.context = context

    def read_url(self) -> str:
        """The ordered read from the bookmark (see ``EntityStream.query_options``)."""
        stream = self.stream
        return stream.client.url(stream.path, stream.query_options(self.context))

    def total_rows(self) -> int | None:
        """The table's size from ``RetrieveTotalRecordCount`` (cheap, cached by Dataverse).

        The run's progress totals asked the same question for every first load before any table
        was read (one request for all of them): that answer is the table's size, not asked again.
        """
        stream = self.stream
        expected = stream.run.summary.stream(stream.name).expected
        if expected is not None:
            return expected
        url = stream.client.url(f"RetrieveTotalRecordCount(EntityNames=['{stream.entity.logical_name}'])")
        try:
            payload, _ = stream.client.get_json(url, table=stream.name)
        except ServiceError as exc:
            stream.logger.info("Table %s: no record count (%s); reading it in one sequence", stream.name, exc)
            return None
        values = (payload.get("EntityRecordCountCollection") or {}).get("Values") or []
        return int(values[0]) if values and isinstance(values[0], int) else None

    def extreme(self, direction: str, start: dt.datetime | None) -> dt.datetime | None:
        """The first cursor value in ``direction`` (one row, ``$top=1``)."""
        stream = self.stream
        column = stream.replication_key
        assert column is not None
        cursor = stream.source(column)
        options = {"$select": cursor, "$orderby": f"{cursor} {direction}", "$top": "1"}
        if start is not None:
            options["$filter"] = f"{cursor} ge {stream.literal(odata_datetime(start))}"
        elif direction == "asc":
            options["$filter"] = f"{cursor} ne null"
        url = stream.client.url(stream.path, options)  # read in the table's page format (v2: converted)
        rows = next(stream.client.iter_pages(url, table=stream.name, page_format=stream.page_format)).records
        value = rows[0].get(column) if rows and isinstance(rows[0], dict) else None
        if not isinstance(value, str):
            return None
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))

    def window_url(self, window: dict[str, t.Any]) -> str:
        """One window's ordered read: ``ge`` its bookmark (or low end), ``lt`` its high end."""
        stream = self.stream
        cursor, pk = stream.source(str(stream.replication_key)), stream.source(stream.entity.primary_id)
        where = window_filter(window, cursor, stream.literal)
        options = {"$select": stream.select_list(), "$orderby": f"{cursor} asc,{pk} asc"}
        if where:
            options["$filter"] = where
        return stream.client.url(stream.path, options)


def window_filter(window: dict[str, t.Any], cursor: str, literal: t.Callable[[str], str] = str) -> str:
    """A first-load window's ``$filter``: ``ge`` its bookmark (or low end), ``lt`` its high end;
    the first window also takes the rows whose cursor is null. ``literal`` writes a date-time."""
    low = window.get("bookmark") or window.get("lo")
    parts = []
    if low is not None:
        parts.append(f"{cursor} ge {literal(low)}")
    if window.get("hi") is not None:
        parts.append(f"{cursor} lt {literal(window['hi'])}")
    where = " and ".join(parts)
    if window.get("lo") is None and window.get("bookmark") is None:
        where = f"({cursor} eq null or {where})" if where else ""
    return where


class DataverseDelta:
    """Dataverse change tracking: ``$deletedEntity`` stubs, and the expired-token error."""

    def __init__(self, primary_id: str) -> None:
        self.primary_id = primary_id

    def tombstones(self, rows: Sequence[dict[str, t.Any]], read_at: str) -> tuple[Sequence[dict[str, t.Any]], int]:
        """Stubs become ``{<pk>: id, _sdc_deleted_at: read_at}``; full rows pass unchanged."""
        # Full rows carry no @odata.context; $deletedEntity stubs do (and come last).
        if not any(map(contains, rows, repeat("@odata.context"))):  # C-level: runs on every page
            return rows, 0
        out: list[dict[str, t.Any]] = []
        deletes = 0
        for row in rows:
            if not _is_deleted_entity(row):
                out.append(row)
            elif row.get("id") is not None:
                deletes += 1
                out.append({self.primary_id: row["id"], DELETED_AT: read_at})
        return out, deletes

    def expired(self, exc: ServiceError) -> bool:
        """``0x80044352`` ("Version stamp associated with the client has expired")."""
        return _is_expired_token(exc)


def _is_deleted_entity(row: dict[str, t.Any]) -> bool:
    context = row.get("@odata.context")
    return isinstance(context, str) and context.endswith("/$deletedEntity")


def _is_expired_token(exc: ServiceError) -> bool:
    """The change-tracking token expired: known by its code or message, whatever the status."""
    text = str(exc)
    return exc.code == EXPIRED_TOKEN_CODE or any(marker in text for marker in EXPIRED_TOKEN_MARKERS)
