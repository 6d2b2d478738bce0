"""The emulated org's data: every table's rows, the org-wide clock and version counter, and
the mutation API tests use (insert, update, delete, advance the clock).

``versionnumber`` is one counter for the whole org (like SQL ``rowversion``); every insert,
update and delete takes a new one.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import random
import threading

from ..odata.filter import row_datetime
from . import generate as G  # noqa: N812 - the module's functions read as G.generate
from .rows import Rec, TableStore
from .schema import BASE_EPOCH, CURRENCY_NAME, ORG_NAME, Attr
from .tables import all_tables


class Store:
    """All tables of the emulated org plus the org-wide clock and version counter."""

    def __init__(self, rows: dict[str, int], seed: int = 42, org_tables: int = 0,
                 clones: dict[str, int] | None = None):
        self.tables = all_tables(org_tables)
        self.seed = seed
        self.lock = threading.RLock()
        self.version = 1_000_000
        self.t: dict[str, TableStore] = {name: TableStore(td, self) for name, td in self.tables.items()}
        unknown = set(rows) - set(self.tables)
        if unknown:
            raise ValueError(f"unknown tables {sorted(unknown)}; known: {sorted(self.tables)}")
        self.rngs = {name: random.Random(f"{seed}:{name}") for name in self.tables}
        ids = {name: G._guids(self.rngs[name], rows.get(name, 0)) for name in self.tables}
        last = BASE_EPOCH
        gc_was = gc.isenabled()
        gc.disable()  # millions of long-lived objects: avoid repeated full collections
        try:
            last = self._generate(rows, ids, last)
        finally:
            if gc_was:
                gc.enable()
            gc.freeze()  # keep the store out of future collections
        # "Now" is an hour after the last generated write: a quiet org, whose rows are all
        # outside a tap's commit margin (commit_margin_seconds) until a test writes new ones.
        self.clock = float(last + 3600)
        # Late commits: (clock when visible, table, row values, version), see insert().
        self.pending: list[tuple[float, str, dict, int]] = []
        for source, copies in (clones or {}).items():
            self._clone(source, copies)

    def _clone(self, source: str, copies: int) -> None:
        """Serve ``copies`` more tables ``<source>_1..N`` with the source's rows (benchmarks of
        many tables): row objects are shared, so a copy costs a dict, not the data again."""
        if source not in self.t:
            raise ValueError(f"unknown table to clone '{source}'; known: {sorted(self.t)}")
        src = self.tables[source]
        for i in range(1, copies + 1):
            td = dataclasses.replace(
                src, logical=f"{source}_{i}", schema=f"{src.schema}_{i}",
                entity_set=f"{src.entity_set}_{i}", collection=f"{src.collection}_{i}",
                otc=10_000 + 100 * src.otc + i, is_custom=True)
            ts = TableStore(td, self)
            ts.rows = dict(self.t[source].rows)
            ts.vlog = list(self.t[source].vlog)
            self.tables[td.logical] = td
            self.t[td.logical] = ts

    def _generate(self, rows, ids, last):
        for name in ("systemuser", "contact", "account"):
            n = rows.get(name, 0)
            rng = self.rngs[name]
            cols = G.generate(self.tables[name], n, rng, ids, ids[name])
            mod = G.modified_times(rng, n)
            ri = G.fast_randint(rng)
            cre = [m - ri(0, 30 * 86400) for m in mod]
            cols["modifiedon"] = [G.iso_ts(m) for m in mod]
            cols["createdon"] = [G.iso_ts(c) for c in cre]
            cols["versionnumber"] = list(range(self.version + 1, self.version + 1 + n))
            self.version += n
            self.t[name].load_bulk(cols, n)
            if mod:
                last = max(last, mod[-1])
        return last

    # ---------------------------------------------------------- helpers
    def next_version(self) -> int:
        with self.lock:
            self.version += 1
            return self.version

    def now_iso(self) -> str:
        return G.iso_ts(int(self.clock))

    def table(self, name: str) -> TableStore:
        if name not in self.t:
            raise KeyError(f"unknown table '{name}'")
        return self.t[name]

    def resolve_lookup(self, a: Attr, v: str) -> tuple[str, str | None]:
        if "transactioncurrency" in a.targets:
            return "transactioncurrency", CURRENCY_NAME
        if "businessunit" in a.targets:
            return "businessunit", ORG_NAME
        for target in a.targets:
            ts = self.t.get(target)
            if ts is not None:
                rec = ts.rows.get(v)
                if rec is not None:
                    return target, rec.name
        return a.targets[0], None

    # ---------------------------------------------------------- mutation API
    def insert(self, table: str, values: dict | None = None, *, commit_after: float = 0) -> dict:
        """Insert a row stamped with the clock (``createdon``, ``modifiedon``, ``versionnumber``).

        ``commit_after`` > 0 plays a late commit (a long transaction, a synchronous plug-in):
        the row keeps the stamps of the moment it was written but is visible to reads only once
        the clock has advanced that many seconds, so it appears after rows stamped later.
        For cursor replication; change tracking here versions a write when it is made, not when
        it commits as SQL Server's change tracking does, so a delta read meanwhile misses it.
        """
        ts = self.table(table)
        values = whole_seconds(ts, dict(values or {}))
        ts._validate(values)
        with self.lock:
            rng = self.rngs[table]
            ids = {n: list(s.rows.keys())[:1000] for n, s in self.t.items()}
            pk = values.get(ts.t.pk) or G._guids(rng, 1)[0]
            cols = G.generate(ts.t, 1, rng, ids, [pk])
            row = {k: v[0] for k, v in cols.items()}
            now = self.now_iso()
            row["createdon"] = now
            row.update(values)
            row["modifiedon"] = now
            ver = self.next_version()
            row["versionnumber"] = ver
            return self._write(ts, row, ver, commit_after)

    def _write(self, ts: TableStore, row: dict, version: int, commit_after: float) -> dict:
        """Store a written row now, or once ``commit_after`` seconds of the clock have passed."""
        if commit_after > 0:
            self.pending.append((self.clock + commit_after, ts.t.logical, row, version))
            public = dict(row)
            public.pop("@odata.etag", None)
            return public
        return self.public_row(ts, ts.put(row, version))

    def update(self, table: str, row_id: str, values: dict, *, commit_after: float = 0) -> dict:
        ts = self.table(table)
        values = whole_seconds(ts, dict(values))
        ts._validate(values)
        with self.lock:
            rec = ts.rows.get(row_id.lower())
            if rec is None:
                raise KeyError(f"{table} With Id = {row_id} Does Not Exist")
            row = ts.decode(rec)
            row.pop("@odata.etag", None)
            row.update(values)
            row[ts.t.pk] = rec.pk
            row["modifiedon"] = self.now_iso()
            ver = self.next_version()
            row["versionnumber"] = ver
            return self._write(ts, row, ver, commit_after)

    def delete(self, table: str, row_id: str) -> None:
        ts = self.table(table)
        with self.lock:
            if row_id.lower() not in ts.rows:
                raise KeyError(f"{table} With Id = {row_id} Does Not Exist")
            ts.remove(row_id.lower(), self.next_version())

    def advance_clock(self, seconds: float) -> None:
        with self.lock:
            self.clock += seconds
            due = [p for p in self.pending if p[0] <= self.clock]
            self.pending = [p for p in self.pending if p[0] > self.clock]
            for _at, table, row, version in due:  # the late commits become visible
                self.t[table].put(row, version)

    @staticmethod
    def public_row(ts: TableStore, rec: Rec) -> dict:
        d = ts.decode(rec)
        d.pop("@odata.etag", None)
        return d

    def rows(self, table: str) -> list[dict]:
        ts = self.table(table)
        recs = sorted(ts.rows.values(), key=lambda r: r.pk)
        return [self.public_row(ts, r) for r in recs]


def whole_seconds(ts: TableStore, values: dict) -> dict:
    """Date-times as the platform stores them: to the whole second, the fraction dropped (the
    Web API never serves one; ``2024-01-01T00:00:00.5Z`` is kept as ``…00Z``) [unverified]."""
    for name, value in values.items():
        attr = ts.t.by_prop.get(name)
        if (attr is not None and attr.atype == "DateTime" and attr.behavior != "DateOnly"
                and isinstance(value, str) and "." in value):
            values[name] = G.iso_ts(math.floor(row_datetime(value)))
    return values
