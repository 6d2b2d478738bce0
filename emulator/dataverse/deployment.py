"""What every Dataverse deployment (online, on-premises) adds to the host: the org's data
(generated at ``start()``) and the API tests use to read and change it."""

from __future__ import annotations

from typing import Any

import orjson

from ..core.host import Host
from ..core.service import Response
from .store import Store

DEFAULT_ROWS = {"account": 200, "contact": 100, "systemuser": 10}
JSON = [("Content-Type", "application/json")]


class DataverseHost(Host):
    """A host whose main service is a Dataverse environment (``self.dataverse``)."""

    def __init__(self, rows: dict[str, int] | None = None, seed: int = 42, org_tables: int = 0,
                 clones: dict[str, int] | None = None, **kw: Any):
        super().__init__(**kw)
        self._rows_cfg = dict(DEFAULT_ROWS if rows is None else rows)
        self.org_tables = org_tables  # extra synthetic ~150-column tables (discovery benchmark)
        # table -> N: also serve <table>_1..<table>_N with the same rows (benchmarks)
        self._clones = dict(clones or {})
        self.seed = seed
        self.store: Store | None = None

    def make_store(self) -> Store:
        self.store = Store(self._rows_cfg, self.seed, self.org_tables, self._clones)
        return self.store

    # ------------------------------------------------------------ data API
    def insert(self, table: str, values: dict | None = None, *, commit_after: float = 0) -> dict:
        """Insert a row; ``commit_after`` > 0: a late commit (see :meth:`Store.insert`)."""
        return self.store.insert(table, values, commit_after=commit_after)

    def update(self, table: str, row_id: str, values: dict, *, commit_after: float = 0) -> dict:
        """Update a row; ``commit_after`` > 0: a late commit (see :meth:`Store.insert`)."""
        return self.store.update(table, row_id, values, commit_after=commit_after)

    def delete(self, table: str, row_id: str) -> None:
        self.store.delete(table, row_id)

    def advance_clock(self, seconds: float) -> None:
        self.store.advance_clock(seconds)

    def rows(self, table: str) -> list[dict]:
        return self.store.rows(table)


def data_control(host: DataverseHost, method: str, parts: list[str], data: Any) -> Response | None:
    """The org's part of the control API: rows of a table (read, insert, update, delete) and
    the clock."""
    if parts == ["clock", "advance"] and method == "POST":
        host.advance_clock(float(data.get("seconds", 0)))
        return 200, JSON, orjson.dumps({"clock": host.store.now_iso()})
    if len(parts) >= 3 and parts[0] == "tables" and parts[2] == "rows":
        table = parts[1]
        if len(parts) == 3 and method == "GET":
            ts = host.store.table(table)
            blobs = [r.blob for r in sorted(ts.rows.values(), key=lambda r: r.pk)]
            return 200, JSON, b'{"value":[' + b",".join(blobs) + b"]}"
        if len(parts) == 3 and method == "POST":
            return 201, JSON, orjson.dumps(host.insert(table, data or None), default=_frag)
        if len(parts) == 4 and method == "PATCH":
            return 200, JSON, orjson.dumps(host.update(table, parts[3], data), default=_frag)
        if len(parts) == 4 and method == "DELETE":
            host.delete(table, parts[3])
            return 204, [], b""
    return None


def _frag(o: Any) -> Any:
    """Decimals as exact JSON numbers in control-API answers."""
    return orjson.Fragment(str(o))
