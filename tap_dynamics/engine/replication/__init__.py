"""Replication strategies (one module each; this package re-exports them): which pages to read for a table, and what to checkpoint after each.

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

from tap_dynamics.engine.replication.base import (
    BOUNDARY_KEY,
    DELETED_AT,
    DELETED_AT_SCHEMA,
    DELTA,
    DELTA_LINK_KEY,
    INITIAL,
    MAX_BOUNDARY_KEYS,
    NEXT_LINK_KEY,
    PHASE_KEY,
    REBASELINE,
    VERSION_KEY,
    WINDOWS_KEY,
    Boundary,
    Reader,
    RowKey,
    margin_cap,
    odata_datetime,
    odata_etag,
    row_key,
    utc_now_iso,
)
from tap_dynamics.engine.replication.cursor import CursorQueries, CursorStrategy
from tap_dynamics.engine.replication.delta import DeltaDialect, DeltaStrategy
from tap_dynamics.engine.replication.full_table import FullTableStrategy

__all__ = [
    "BOUNDARY_KEY",
    "DELETED_AT",
    "DELETED_AT_SCHEMA",
    "DELTA",
    "DELTA_LINK_KEY",
    "INITIAL",
    "MAX_BOUNDARY_KEYS",
    "NEXT_LINK_KEY",
    "PHASE_KEY",
    "REBASELINE",
    "VERSION_KEY",
    "WINDOWS_KEY",
    "Boundary",
    "CursorQueries",
    "CursorStrategy",
    "DeltaDialect",
    "DeltaStrategy",
    "FullTableStrategy",
    "Reader",
    "RowKey",
    "margin_cap",
    "odata_datetime",
    "odata_etag",
    "row_key",
    "utc_now_iso",
]
