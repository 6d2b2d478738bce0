"""Table streams of the OData v2 endpoint, and its discovery.

A :class:`V2EntityStream` is a Dataverse table stream (method choice, catalog, state, the
engine's cursor and full-table strategies) that speaks the v2 query syntax: ``$select`` and
``$orderby`` by SchemaName, ``$filter=ModifiedOn ge datetime'2012-01-01T00:00:00'``, pages of a
fixed 50 rows (no ``Prefer``), and its own page format (the table's row conversion,
:mod:`tap_dynamics.onprem.v2tables`). The boundary of a cursor read tells changed rows by
``versionnumber`` (v2 has no etags), which is therefore always read.

First loads are latency-bound (50 rows a round trip), so big ones are read in concurrent time
windows as on the Web API; without ``RetrieveTotalRecordCount`` the size question is answered
by one ``$skip`` probe: is there a row past the windows' worth of pages?
"""

from __future__ import annotations

import logging
import typing as t

from tap_dynamics.dataverse.metadata import select_entities
from tap_dynamics.dataverse.metadata_streams import METADATA_STREAM_NAMES
from tap_dynamics.dataverse.streams import (
    VERSION_CURSOR,
    DataverseCursorQueries,
    EntityStream,
    choose_method,
)
from tap_dynamics.engine import override
from tap_dynamics.engine.formats import ODataV2Verbose
from tap_dynamics.engine.wire import RawBody
from tap_dynamics.onprem.v2tables import V2Table, parse_edmx

if t.TYPE_CHECKING:
    from singer_sdk import Stream
    from singer_sdk.helpers.types import Context

    from tap_dynamics.config import Settings
    from tap_dynamics.dataverse.client import DataverseClient
    from tap_dynamics.engine.run import RunContext

LOGGER = logging.getLogger("tap-dynamics")
PAGE_SIZE = 50  # the endpoint's fixed page size


def v2_literal(value: str) -> str:
    """An ISO-8601 UTC value as a v2 ``datetime'…'`` literal (CRM reads it as UTC)."""
    return f"datetime'{value.removesuffix('Z')}'"


class V2EntityStream(EntityStream):
    """Rows of one table of the OData v2 endpoint."""

    def __init__(self, tap: t.Any, *, client: DataverseClient, run: RunContext, table: V2Table, method: str | None) -> None:
        annotations = client.settings.annotations
        super().__init__(tap, client=client, run=run, entity=table.entity, schema=table.schema(annotations), method=method)
        self.table = table
        self.sources = {c.name: c.source for c in table.columns}
        self.page_format = ODataV2Verbose(table.conversion(annotations))
        self.STATE_MSG_FREQUENCY = PAGE_SIZE

    @property
    @override
    def rows_per_page(self) -> int:
        return PAGE_SIZE

    @property
    @override
    def first_load_windows(self) -> int:
        """At least ``max_concurrency`` windows when windows are on: a 50-row page is 1/100th of a
        Web API page for the same round trip, so each chain is bound by latency, not by the tap;
        ``first_load_windows: 1`` still turns them off."""
        windows = self.settings.first_load_windows
        return windows if windows <= 1 else max(windows, self.settings.max_concurrency)

    @staticmethod
    @override
    def row_version(row: dict[str, t.Any]) -> t.Any:
        return row.get(VERSION_CURSOR)

    @override
    def _prefer(self, *, tracking: bool = False) -> str:
        return ""  # v2 knows no Prefer header: 50 rows a page, whatever page_size says

    @override
    def source(self, column: str) -> str:
        """The v2 property a column comes from (SchemaName casing)."""
        return self.sources[column]

    @override
    def select_list(self) -> str:
        """``$select`` by SchemaName: the selected columns, the key, the cursor and the version."""
        names = [*self.selected_columns(), VERSION_CURSOR]
        sources = dict.fromkeys(self.sources[n] for n in names if n in self.sources)
        return ",".join(sources)

    @staticmethod
    @override
    def literal(value: str | int) -> str:
        """``datetime'…'`` for a date-time, an ``L``-suffixed Edm.Int64 for a version."""
        return f"{value}L" if isinstance(value, int) else v2_literal(value)

    @override
    def cursor_queries(self, context: Context | None) -> V2CursorQueries:
        return V2CursorQueries(self, context)


class V2CursorQueries(DataverseCursorQueries):
    """The v2 side of a cursor read: the size of a first load from a ``$skip`` probe (the
    queries themselves are the Dataverse ones, in the stream's v2 syntax)."""

    stream: V2EntityStream

    @override
    def total_rows(self) -> int | None:
        """At least how many rows (v2 cannot count them): windows pay off past a few pages each."""
        stream = self.stream
        enough = max(2, stream.first_load_windows) * PAGE_SIZE
        pk = stream.source(stream.entity.primary_id)
        options = {"$select": pk, "$orderby": f"{pk} asc", "$skip": str(enough), "$top": "1"}
        payload, _ = stream.client.get_json(stream.client.url(stream.path, options), table=stream.name)
        rows = ((payload.get("d") or {}) if isinstance(payload, dict) else {}).get("results") or []
        return enough + 1 if rows else None


def fetch_tables(client: DataverseClient) -> list[V2Table]:
    """The endpoint's tables, from its ``$metadata`` (EDMX)."""
    body, _ = client.get_json(client.url("$metadata"), decoder=RawBody("xml"))
    return parse_edmx(body)


def discover_v2_streams(
    tap: t.Any, settings: Settings, client: DataverseClient, run: RunContext, input_catalog: t.Any
) -> list[Stream]:
    """One stream per table of the v2 ``$metadata`` (the input catalog's, when given)."""
    tables = fetch_tables(client)
    if input_catalog is not None:
        by_name = {table.entity.logical_name: table for table in tables}
        chosen = []
        for entry in input_catalog.streams:
            if entry.tap_stream_id in METADATA_STREAM_NAMES:
                continue
            if entry.tap_stream_id not in by_name:
                LOGGER.warning("Catalog stream %s is not a table of this org; skipping it", entry.tap_stream_id)
                continue
            chosen.append(by_name[entry.tap_stream_id])
    else:
        wanted = {e.logical_name for e in select_entities([t.entity for t in tables], settings.entities, settings.exclude_entities)}
        chosen = [table for table in tables if table.entity.logical_name in wanted]
    streams: list[Stream] = []
    for table in chosen:
        schema = table.schema(settings.annotations)
        method = choose_method(table.entity, schema, settings.replication_for(table.entity.logical_name))
        streams.append(V2EntityStream(tap, client=client, run=run, table=table, method=method))
    return streams


__all__ = ["PAGE_SIZE", "V2CursorQueries", "V2EntityStream", "discover_v2_streams", "fetch_tables", "v2_literal"]
