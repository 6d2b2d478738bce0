"""Table streams for the Dataverse Web API.

One :class:`EntityStream` per table. Rows are read with ``$select`` of the selected columns and
``Prefer: odata.maxpagesize``, following ``@odata.nextLink`` verbatim. Tables with ``modifiedon``
are incremental: ``$filter=modifiedon ge <bookmark>`` (inclusive, because many rows share a second)
and ``$orderby=modifiedon asc,<pk> asc`` so the bookmark only moves forward and an interrupted run
resumes from its last STATE without losing a row.
"""

from __future__ import annotations

import datetime as dt
import time
import typing as t

from tap_dynamics.client import DynamicsStream
from tap_dynamics.fastpath import records_of
from tap_dynamics.prefetch import prefetch

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_dynamics.client import DataverseClient, Page
    from tap_dynamics.dataverse.metadata import EntityInfo

INCREMENTAL_KEY = "modifiedon"
# State key holding {primary key: etag} of the rows emitted at the bookmark's exact second. The
# next run's inclusive `ge` filter returns them again; they are dropped unless their version
# (etag) changed. Capped: beyond it, boundary rows are re-emitted (duplicates, never losses).
BOUNDARY_KEY = "boundary_etags"
MAX_BOUNDARY_KEYS = 1000


def odata_datetime(value: dt.datetime) -> str:
    """An unquoted OData DateTimeOffset literal in UTC, floored to the second (inclusive-safe)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_multi_select(schema: dict[str, t.Any]) -> bool:
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    return "array" in types and (schema.get("items") or {}).get("type") == "integer"


class EntityStream(DynamicsStream):
    """Rows of one Dataverse table."""

    def __init__(
        self,
        tap: t.Any,
        *,
        client: DataverseClient,
        entity: EntityInfo,
        schema: dict[str, t.Any],
    ) -> None:
        super().__init__(tap, client=client, name=entity.logical_name, schema=schema)
        self.entity = entity
        self.primary_keys = (entity.primary_id,)
        properties = self.schema.get("properties", {})
        self.replication_key = INCREMENTAL_KEY if INCREMENTAL_KEY in properties else None
        # A STATE message per page: a killed run loses at most one page of progress.
        self.STATE_MSG_FREQUENCY = client.settings.page_size
        self._multi_select = tuple(n for n, s in properties.items() if _is_multi_select(s))
        self._seen_value: t.Any = None
        self._seen_boundary: dict[str, t.Any] = {}
        self._boundary_value: t.Any = None
        self._boundary: dict[str, t.Any] = {}
        self._state: dict[str, t.Any] = {}
        self._emitted = 0

    def sync(self, context: Context | None = None) -> None:
        """Sync the table, recording rows and timing in the run summary."""
        summary = self.client.summary.stream(self.name)
        summary.started = time.monotonic()
        self._emitted = 0
        try:
            super().sync(context)
        finally:
            summary.rows += self._emitted
            summary.finished = time.monotonic()

    @property
    def is_sorted(self) -> bool:
        """Incremental reads are ordered by the bookmark, so state can advance mid-stream."""
        return self.replication_key is not None

    @property
    def path(self) -> str:
        """The entity set this table is read from."""
        return self.entity.entity_set

    def selected_columns(self) -> list[str]:
        """Columns for ``$select``: the selected properties, plus the key and bookmark."""
        required = {self.entity.primary_id, self.replication_key}
        return [
            name
            for name in self.schema.get("properties", {})
            if name in required or self.mask.get(("properties", name), True)
        ]

    def query_options(self, context: Context | None) -> dict[str, str]:
        """``$select``, and for incremental tables the inclusive ``$filter`` and stable ``$orderby``."""
        options = {"$select": ",".join(self.selected_columns())}
        pk = self.entity.primary_id
        if self.replication_key:
            start = self.get_starting_timestamp(context)
            if start is not None:
                options["$filter"] = f"{self.replication_key} ge {odata_datetime(start)}"
            options["$orderby"] = f"{self.replication_key} asc,{pk} asc"
        else:
            options["$orderby"] = f"{pk} asc"
        return options

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Read every page of the table (or of its changes since the bookmark)."""
        return records_of(self.get_pages(context))

    def get_pages(self, context: Context | None) -> Iterator[Page]:
        """Every page of the table, the next one fetched while this one is written (prefetch)."""
        summary = self.client.summary.stream(self.name)
        summary.method = "INCREMENTAL" if self.replication_key else "FULL_TABLE"
        if self.replication_key:
            self._start_boundary(context)
        url = self.client.url(self.path, self.query_options(context))
        prefer = f"odata.maxpagesize={self.settings.page_size}"

        def pages() -> Iterator[Page]:
            return self.client.iter_pages(url, prefer=prefer, table=self.name)

        for page in prefetch(pages, self.client.page_budget, name=self.name):
            summary.pages += 1
            yield page

    def _start_boundary(self, context: Context | None) -> None:
        """Load the previous run's boundary rows, and keep them in the new state until superseded."""
        self._state = self.get_context_state(context)
        bookmark = self._state.get("replication_key_value")
        previous = self._state.get(BOUNDARY_KEY) if bookmark is not None else None
        self._seen_value = bookmark
        self._seen_boundary = dict(previous) if isinstance(previous, dict) else {}
        self._boundary_value = bookmark
        self._boundary = dict(self._seen_boundary)
        self._state[BOUNDARY_KEY] = self._boundary

    def _already_emitted(self, row: dict[str, t.Any], etag: t.Any) -> bool:
        """True for a row the previous run emitted at its bookmark second, in this same version."""
        assert self.replication_key is not None
        value = row.get(self.replication_key)
        key = row.get(self.entity.primary_id)
        if etag is not None and value == self._seen_value and self._seen_boundary.get(key) == etag:
            return True
        if value != self._boundary_value:
            self._boundary_value = value
            self._boundary = {}
            self._state[BOUNDARY_KEY] = self._boundary
        if len(self._boundary) < MAX_BOUNDARY_KEYS:
            self._boundary[key] = etag
        return False

    def post_process(self, row: dict[str, t.Any], context: Context | None = None) -> dict[str, t.Any] | None:
        """Drop rows the last run already emitted, OData annotations, and split multi-selects."""
        etag = row.pop("@odata.etag", None)
        if self.replication_key and self._already_emitted(row, etag):
            return None
        self._emitted += 1
        for name in self._multi_select:
            value = row.get(name)
            if isinstance(value, str):
                row[name] = [int(part) for part in value.split(",") if part.strip()]
        return row
