"""F&O entity streams on the engine's strategies: per-company page chains, enums, empty dates.

One :class:`EntityStream` per entity set. Rows are read with ``$select`` of the selected
columns, ``Prefer: odata.maxpagesize`` (up to 10,000) and a stable ``$orderby`` on the key: F&O's
next links are offsets (``$skip``), so without a fixed order rows could be skipped or repeated
between pages. Next links are followed verbatim.

A company-specific entity (one with ``dataAreaId``) is read as one page chain per company
(``$filter=dataAreaId eq '…'&cross-company=true``), concurrently within ``max_concurrency``, each
with its own resumable state (the engine's partitioned strategies); shared entities are one
chain. Per entity the method is a ``ModifiedDateTime``-like cursor (inclusive ``ge`` plus the
boundary versions) when the entity has one, else full table closed by ``ACTIVATE_VERSION``
(F&O OData has no change tracking: deletes are only seen by full-table reads).
"""

from __future__ import annotations

import datetime as dt
import typing as t

from tap_dynamics.engine import override
from tap_dynamics.engine.replication import (
    CursorStrategy,
    FullTableStrategy,
    margin_cap,
    odata_datetime,
)
from tap_dynamics.engine.replication.partitions import PartitionedCursor, PartitionedFullTable
from tap_dynamics.engine.stream import FULL_TABLE, PagedStream
from tap_dynamics.errors import ConfigError
from tap_dynamics.finops.metadata import COMPANY_COLUMN

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from singer_sdk.helpers.types import Context

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.pages import Page
    from tap_dynamics.engine.run import RunContext
    from tap_dynamics.finops.client import FinOpsClient
    from tap_dynamics.finops.metadata import EntityInfo

# How F&O stores an empty date or date-time (dates are serialised at 12:00 UTC).
SENTINELS = frozenset({"1900-01-01T00:00:00Z", "1900-01-01T12:00:00Z", "1900-01-01"})
DEFAULT_COMPANY = "default"  # the partition name of a read without cross-company


def choose_method(entity: EntityInfo, schema: dict[str, t.Any], requested: str | None) -> str:
    """A ``ModifiedDateTime`` cursor where the entity has one, else full table; ``replication``
    overrides it (the column name in any case), checked against the entity's properties."""
    if requested is None:
        return entity.default_cursor or FULL_TABLE
    if requested == FULL_TABLE:
        return FULL_TABLE
    properties = schema.get("properties", {})
    column = next((name for name in properties if name.lower() == requested.lower()), None)
    if column is None or properties[column].get("format") != "date-time":
        msg = (
            f"setting 'replication' names {requested!r} as the cursor of entity {entity.entity_set}, which "
            "has no such DateTimeOffset property — use full_table or a property such as ModifiedDateTime"
        )
        raise ConfigError(msg)
    return column


class EntityStream(PagedStream):
    """Rows of one F&O entity set."""

    client: FinOpsClient

    def __init__(
        self,
        tap: t.Any,
        *,
        client: FinOpsClient,
        run: RunContext,
        entity: EntityInfo,
        schema: dict[str, t.Any],
        method: str,
    ) -> None:
        super().__init__(tap, client=client, run=run, name=entity.entity_set, schema=schema)
        self.entity = entity
        self.primary_keys = list(entity.keys)
        self.set_method(method)
        self.STATE_MSG_FREQUENCY = client.settings.page_size
        properties = self.schema.get("properties", {})
        self._dates = tuple(
            name for name, s in properties.items() if s.get("format") in ("date-time", "date")
        ) if client.finops.null_sentinel_dates else ()

    @property
    def settings(self) -> Settings:
        """The run's validated settings."""
        return self.client.settings

    @override
    def method_setting(self) -> str | None:
        requested = self.settings.replication_for(self.entity.entity_set.lower())
        return None if requested is None else choose_method(self.entity, self.schema, requested)

    # -- queries ------------------------------------------------------------------------------
    def selected_columns(self) -> list[str]:
        """``$select``: the selected properties, plus the key and the cursor."""
        required = {*self.entity.keys, self.replication_key}
        return [n for n in self.schema.get("properties", {}) if n in required or self.mask.get(("properties", n), True)]

    def options(self, company: str | None, where: list[str], order: list[str]) -> dict[str, str]:
        """Query options: ``$select``, the company filter and ``cross-company``, a stable order."""
        clauses = list(where)
        if company is not None and company != DEFAULT_COMPANY:
            clauses.insert(0, f"{COMPANY_COLUMN} eq '{company}'")
        options = {"$select": ",".join(self.selected_columns())}
        if clauses:
            options["$filter"] = " and ".join(clauses)
        options["$orderby"] = ",".join(f"{c} asc" for c in order)
        if self.client.finops.cross_company:
            options["cross-company"] = "true"
        return options

    def company_chains(self) -> list[str] | None:
        """One chain per company for a company-specific entity; None: a single chain."""
        if not self.entity.company_specific:
            return None
        companies = self.client.companies()
        return list(companies) if companies is not None else None

    def cursor_url(self, company: str | None, bookmark: t.Any) -> str:
        """One chain's ordered cursor read from ``bookmark`` (else from ``start_date``)."""
        cursor = self.method
        start = bookmark or (odata_datetime(self.settings.start_date) if self.settings.start_date else None)
        where = []
        if start is not None:
            lookback = self.settings.lookback_seconds
            if lookback:
                parsed = dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
                start = odata_datetime(parsed - dt.timedelta(seconds=lookback))
            where.append(f"{cursor} ge {start}")
        return self.client.url(self.entity.entity_set, self.options(company, where, [cursor, *self.entity.keys]))

    def bookmark_cap(self, start: t.Any) -> str | None:
        """The latest a bookmark may take: the server's time minus ``commit_margin_seconds``."""
        return margin_cap(self.client.server_time(), self.settings.commit_margin_seconds, start)

    # -- reading --------------------------------------------------------------------------------
    @override
    def get_pages(self, context: Context | None) -> Iterator[Page]:
        """The entity's pages by the engine's strategy, one chain per company when it has them."""
        self.load_state(context)
        method = self.method
        prefer = f"odata.maxpagesize={self.settings.page_size}"
        required = tuple(self.entity.keys)
        companies = self.company_chains()
        summary = self.run.summary.stream(self.name)
        summary.method = "FULL_TABLE" if method == FULL_TABLE else f"INCREMENTAL({method})"
        if method == FULL_TABLE:
            order = list(self.entity.keys)
            if companies is None:
                url = self.client.url(self.entity.entity_set, self.options(None, [], order))
                yield from FullTableStrategy(self, prefer=prefer, required=required).pages(url)
                return
            urls = {c: self.client.url(self.entity.entity_set, self.options(c, [], order)) for c in companies}
            yield from PartitionedFullTable(self, prefer=prefer, required=required).pages(urls)
            return
        if companies is None:
            yield from CursorStrategy(
                self, _SingleChain(self), cursor=method, key=self.entity.keys, prefer=prefer, required=required,
                page_size=self.settings.page_size, first_load_windows=1, lookback=bool(self.settings.lookback_seconds),
                start=self.settings.start_date, bookmark_cap=self.bookmark_cap,
            ).pages()
            return
        yield from PartitionedCursor(
            self, self.cursor_url, cursor=method, key=self.entity.keys, prefer=prefer, required=required,
            bookmark_cap=self.bookmark_cap,
        ).pages(companies)

    @override
    def post_process(self, row: dict[str, t.Any], context: Context | None = None) -> dict[str, t.Any] | None:
        """Drop the etag; empty dates (``1900-01-01…``) become null unless configured otherwise."""
        row.pop("@odata.etag", None)
        for name in self._dates:
            if row.get(name) in SENTINELS:
                row[name] = None
        return row


class _SingleChain:
    """A shared entity's cursor read (one chain; F&O has no cheap count, so no time windows)."""

    def __init__(self, stream: EntityStream) -> None:
        self.stream = stream

    def read_url(self) -> str:
        stream = self.stream
        return stream.cursor_url(None, stream.read_state.get("replication_key_value"))

    def window_url(self, window: dict[str, t.Any]) -> str:  # pragma: no cover - windows are never planned
        raise NotImplementedError

    def extreme(self, direction: str, start: dt.datetime | None) -> dt.datetime | None:  # pragma: no cover
        return None

    def total_rows(self) -> int | None:
        return None
