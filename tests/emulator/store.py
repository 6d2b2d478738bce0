"""In-memory row store: generated data, the emulator clock, versions, change log, sorted
indexes and row serialisation.

Why this shape:
* Each row is kept as its pre-serialised Web API JSON (``blob``) plus the few fields needed
  for the hot paths (pk, versionnumber, createdon, modifiedon, primary name). A full read
  with all columns therefore costs one ``b",".join`` per page, and 1M rows stay around 1 KB
  each. Other shapes (``$select`` subsets, annotations) are derived by decoding the blob and
  are cached per shape.
* ``versionnumber`` is one counter for the whole org (like SQL ``rowversion``); every insert,
  update and delete takes a new one. Append-only logs of (version, pk) give change tracking
  without scanning the table.
* Sorted indexes per (table, order) are built lazily and dropped on mutation; paging bisects
  into them with the key carried in the paging cookie, so every page is O(page) not O(table).
"""

from __future__ import annotations

import bisect
import dataclasses
import gc
import datetime as dt
import random
import re
import threading
from decimal import Decimal
from typing import Any

import orjson

from . import tables as T
from .odata import ODataError, row_datetime

LIGHT = ("createdon", "modifiedon", "versionnumber")


def compact_dumps(obj: Any) -> bytes:
    """``orjson.dumps`` copied into an exact-size object: orjson's result keeps its ~8 KB
    growth buffer, which would cost 8x the memory for stored row blobs."""
    return bytes(memoryview(orjson.dumps(obj)))


def kind_of(attr: T.Attr) -> str:
    """Comparison kind used by filters and order keys."""
    at = attr.atype
    if at in ("String", "Memo", "EntityName") or attr.type_name == "MultiSelectPicklistType":
        return "string"
    if at in ("Uniqueidentifier", "Lookup", "Customer", "Owner") or attr.type_name == "FileType":
        return "guid"
    if at == "DateTime":
        return "date" if attr.behavior == "DateOnly" else "datetime"
    if at == "Boolean":
        return "bool"
    if at in ("Integer", "BigInt", "Double", "Decimal", "Money", "Picklist", "State", "Status"):
        return "number"
    return "string"


class Rec:
    __slots__ = ("blob", "createdon", "modifiedon", "name", "pk", "version")

    def __init__(self, pk, version, createdon, modifiedon, name, blob):
        self.pk, self.version, self.createdon = pk, version, createdon
        self.modifiedon, self.name, self.blob = modifiedon, name, blob

    def light(self, pkprop: str) -> dict:
        return {pkprop: self.pk, "createdon": self.createdon, "modifiedon": self.modifiedon,
                "versionnumber": self.version}


class _Desc:
    """Order-key component that sorts in reverse."""

    __slots__ = ("v",)

    def __init__(self, v):
        self.v = v

    def __lt__(self, o):
        return o.v < self.v

    def __gt__(self, o):
        return o.v > self.v

    def __eq__(self, o):
        return self.v == o.v

    def __le__(self, o):
        return o.v <= self.v

    def __ge__(self, o):
        return o.v >= self.v


def _fmt_exact(attr: T.Attr, v: Any) -> orjson.Fragment | None:
    if v is None:
        return None
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    places = 4 if attr.atype == "Money" else int(attr.extra.get("Precision", 2))
    return orjson.Fragment(f"{d:.{places}f}".encode())


class TableStore:
    def __init__(self, tdef: T.TableDef, org: Store):
        self.t = tdef
        self.org = org
        self.rows: dict[str, Rec] = {}
        self.vlog: list[tuple[int, str]] = []  # (version, pk) of every insert/update
        self.dlog: list[tuple[int, str]] = []  # (version, pk) of every delete
        self.indexes: dict[tuple, tuple[list, list[str]]] = {}
        self.ser_cache: dict[tuple, dict[str, tuple[int, bytes]]] = {}
        self.lock = threading.RLock()
        self.exact = [a for a in tdef.props if a.atype in ("Money", "Decimal")]
        self.exact_re = (re.compile(
            rb'"(' + b"|".join(re.escape(a.prop.encode()) for a in self.exact) + rb')":(-?[0-9.]+)')
            if self.exact else None)
        self.keys = ["@odata.etag", *tdef.served_props]
        # per-column serialisation plan: (prop, attr, annotation mode, option labels)
        self.plan = []
        for a in tdef.props:
            labels = {o.value: o.en for o in a.optionset.options} if a.optionset else {}
            if a.atype in ("Lookup", "Customer", "Owner"):
                mode = 1
            elif a.optionset is not None and a.type_name != "MultiSelectPicklistType":
                mode = 3 if a.atype == "Boolean" else 2
            elif a.atype in ("Money", "DateTime") or a.type_name == "MultiSelectPicklistType":
                mode = 4
            else:
                mode = 0
            self.plan.append((a.prop, a, mode, labels))
        self.plan_default = [x for x in self.plan if x[1].served]

    # ---------------------------------------------------------- serialisation
    def _blob(self, values: dict[str, Any], version: int) -> bytes:
        d = {"@odata.etag": f'W/"{version}"'}
        for p in self.t.served_props:
            v = values.get(p)
            a = self.t.by_prop[p]
            if a.atype in ("Money", "Decimal"):
                v = _fmt_exact(a, v)
            d[p] = v
        return compact_dumps(d)

    def load_bulk(self, cols: dict[str, list], n: int) -> None:
        t = self.t
        conv = {}
        for a in self.exact:
            places = 4 if a.atype == "Money" else int(a.extra.get("Precision", 2))
            F = orjson.Fragment
            conv[a.prop] = [None if v is None else F(f"{v:.{places}f}".encode()) for v in cols[a.prop]]
        etags = [f'W/"{v}"' for v in cols["versionnumber"]]
        columns = [conv.get(p) or cols.get(p) or [None] * n for p in t.served_props]
        keys = self.keys
        dumps = compact_dumps
        pks, vers = cols[t.pk], cols["versionnumber"]
        cre, mod, names = cols["createdon"], cols["modifiedon"], cols[t.primary_name]
        rows = self.rows
        for i, vals in enumerate(zip(etags, *columns)):
            pk = pks[i]
            rows[pk] = Rec(pk, vers[i], cre[i], mod[i], names[i], dumps(dict(zip(keys, vals))))
        self.vlog.extend(sorted(zip(vers, pks)))

    def decode(self, rec: Rec, exact: bool = True) -> dict:
        """Row dict as served; Money/Decimal as ``Decimal`` when ``exact``."""
        d = orjson.loads(rec.blob)
        if exact and self.exact_re is not None:
            for k, v in self.exact_re.findall(rec.blob):
                d[k.decode()] = Decimal(v.decode())
        return d

    def serialize(self, rec: Rec, shape: tuple) -> bytes:
        """``shape`` = (frozenset of props or None for default, formatted, lookupname, navprop)."""
        props, fmt, lln, nav = shape
        if props is None and not (fmt or lln or nav):
            return rec.blob
        cache = self.ser_cache.get(shape)
        if cache is not None:
            hit = cache.get(rec.pk)
            if hit is not None and hit[0] == rec.version:
                return hit[1]
        d = self.decode(rec)
        out: dict[str, Any] = {"@odata.etag": d["@odata.etag"]}
        annotate = fmt or lln or nav
        FV = "@OData.Community.Display.V1.FormattedValue"
        for p, a, mode, labels in (self.plan_default if props is None else self.plan):
            if props is not None and p not in props:
                continue
            v = d.get(p)
            if v is not None and annotate and mode:
                if mode == 1:
                    self._annotate(out, a, v, fmt, lln, nav)
                elif fmt:
                    if mode == 2:
                        f = labels.get(v)
                    elif mode == 3:
                        f = labels.get(1 if v else 0)
                    else:
                        f = format_value(a, v)
                    if f is not None:
                        out[p + FV] = f
            out[p] = _fmt_exact(a, v) if a.atype in ("Money", "Decimal") else v
        blob = compact_dumps(out)
        if cache is None:
            if len(self.ser_cache) >= 2:
                self.ser_cache.pop(next(iter(self.ser_cache)))
            cache = self.ser_cache.setdefault(shape, {})
        cache[rec.pk] = (rec.version, blob)
        return blob

    def _annotate(self, out: dict, a: T.Attr, v: Any, fmt: bool, lln: bool, nav: bool) -> None:
        p = a.prop
        if a.atype in ("Lookup", "Customer", "Owner"):
            target, name = self.org.resolve_lookup(a, v)
            if fmt and name is not None:
                out[f"{p}@OData.Community.Display.V1.FormattedValue"] = name
            if nav:
                navp = a.logical if len(a.targets) == 1 or a.atype == "Owner" else f"{a.logical}_{target}"
                out[f"{p}@Microsoft.Dynamics.CRM.associatednavigationproperty"] = navp
            if lln:
                out[f"{p}@Microsoft.Dynamics.CRM.lookuplogicalname"] = target
            return
        if not fmt:
            return
        f = format_value(a, v)
        if f is not None:
            out[f"{p}@OData.Community.Display.V1.FormattedValue"] = f

    # ---------------------------------------------------------- indexes / queries
    def order_key_fn(self, order: list[tuple[T.Attr, bool]]):
        pkp = self.t.pk
        light = all(a.prop in LIGHT or a.prop == pkp for a, _ in order)
        getters = []
        for a, desc in order:
            k = kind_of(a)
            p = a.prop
            if k == "string":
                def g(d, p=p):
                    v = d.get(p)
                    return (0,) if v is None else (1, v.casefold())
            elif k == "guid":
                def g(d, p=p):
                    v = d.get(p)
                    return (0,) if v is None else (1, v.lower())
            else:
                def g(d, p=p):
                    v = d.get(p)
                    return (0,) if v is None else (1, v)
            getters.append(((lambda d, g=g: _Desc(g(d))) if desc else g))

        def key(rec: Rec) -> tuple:
            d = rec.light(pkp) if light else orjson.loads(rec.blob)
            return (*[g(d) for g in getters], rec.pk)

        return key, getters

    def index(self, order: list[tuple[T.Attr, bool]]) -> tuple[list, list[str]]:
        ik = tuple((a.prop, desc) for a, desc in order)
        with self.lock:
            idx = self.indexes.get(ik)
            if idx is None:
                key, _ = self.order_key_fn(order)
                pairs = sorted(((key(r), r.pk) for r in self.rows.values()), key=lambda x: x[0])
                idx = ([k for k, _ in pairs], [pk for _, pk in pairs])
                self.indexes[ik] = idx
            return idx

    def cookie_key(self, order: list[tuple[T.Attr, bool]], values: list[str | None], pk: str) -> tuple:
        """Rebuild an index key from the string values carried in a paging cookie."""
        _, getters = self.order_key_fn(order)
        d = {}
        for (a, _desc), raw in zip(order, values):
            k = kind_of(a)
            if raw is None:
                d[a.prop] = None
            elif k in ("string", "guid", "datetime", "date"):
                d[a.prop] = raw
            else:
                try:
                    d[a.prop] = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise ODataError(400, "0x80040203", "The paging cookie in $skiptoken is malformed.") from None
        return (*[g(d) for g in getters], pk)

    def scan(self, order, predicate, needs_full: bool, after: tuple | None, limit: int):
        """Rows after ``after`` in ``order`` that satisfy ``predicate``: (recs, more)."""
        keys, pks = self.index(order)
        start = 0 if after is None else bisect.bisect_right(keys, after)
        out: list[Rec] = []
        rows = self.rows
        pkp = self.t.pk
        n = len(pks)
        i = start
        while i < n:
            rec = rows.get(pks[i])
            i += 1
            if rec is None:
                continue
            if predicate is not None:
                d = orjson.loads(rec.blob) if needs_full else rec.light(pkp)
                if not predicate(d):
                    continue
            if len(out) == limit:
                return out, True
            out.append(rec)
        return out, False

    def count(self, predicate, needs_full: bool) -> int:
        if predicate is None:
            return len(self.rows)
        pkp = self.t.pk
        return sum(1 for rec in list(self.rows.values())
                   if predicate(orjson.loads(rec.blob) if needs_full else rec.light(pkp)))

    def changes(self, since: int, upto: int) -> tuple[list[Rec], list[tuple[int, str]]]:
        """Upserts (by version) and deletes with ``since < version <= upto``."""
        i = bisect.bisect_right(self.vlog, (since, "\uffff"))
        ups = []
        for ver, pk in self.vlog[i:]:
            if ver > upto:
                break
            rec = self.rows.get(pk)
            if rec is not None and rec.version == ver:
                ups.append(rec)
        j = bisect.bisect_right(self.dlog, (since, "\uffff"))
        dels = [(v, pk) for v, pk in self.dlog[j:] if v <= upto]
        return ups, dels

    # ---------------------------------------------------------- mutations
    def _validate(self, values: dict) -> None:
        for k in values:
            if k not in self.t.by_prop:
                raise KeyError(f"Unknown column '{k}' for table '{self.t.logical}'.")

    def put(self, values: dict[str, Any], version: int) -> Rec:
        pk = values[self.t.pk]
        rec = Rec(pk, version, values.get("createdon"), values.get("modifiedon"),
                  values.get(self.t.primary_name), self._blob(values, version))
        with self.lock:
            self.rows[pk] = rec
            if self.vlog and self.vlog[-1][0] > version:
                bisect.insort(self.vlog, (version, pk))  # a late commit (Store.insert)
            else:
                self.vlog.append((version, pk))
            self.indexes.clear()
        return rec

    def remove(self, pk: str, version: int) -> None:
        with self.lock:
            if self.rows.pop(pk, None) is None:
                raise KeyError(pk)
            self.dlog.append((version, pk))
            self.indexes.clear()


class Store:
    """All tables of the emulated org plus the org-wide clock and version counter."""

    def __init__(self, rows: dict[str, int], seed: int = 42, org_tables: int = 0,
                 clones: dict[str, int] | None = None):
        self.tables = T.all_tables(org_tables)
        self.seed = seed
        self.lock = threading.RLock()
        self.version = 1_000_000
        self.t: dict[str, TableStore] = {name: TableStore(td, self) for name, td in self.tables.items()}
        unknown = set(rows) - set(self.tables)
        if unknown:
            raise ValueError(f"unknown tables {sorted(unknown)}; known: {sorted(self.tables)}")
        self.rngs = {name: random.Random(f"{seed}:{name}") for name in self.tables}
        ids = {name: T._guids(self.rngs[name], rows.get(name, 0)) for name in self.tables}
        last = T.BASE_EPOCH
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
            cols = T.generate(self.tables[name], n, rng, ids, ids[name])
            mod = T.modified_times(rng, n)
            ri = T.fast_randint(rng)
            cre = [m - ri(0, 30 * 86400) for m in mod]
            cols["modifiedon"] = [T.iso_ts(m) for m in mod]
            cols["createdon"] = [T.iso_ts(c) for c in cre]
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
        return T.iso_ts(int(self.clock))

    def table(self, name: str) -> TableStore:
        if name not in self.t:
            raise KeyError(f"unknown table '{name}'")
        return self.t[name]

    def resolve_lookup(self, a: T.Attr, v: str) -> tuple[str, str | None]:
        if "transactioncurrency" in a.targets:
            return "transactioncurrency", T.CURRENCY_NAME
        if "businessunit" in a.targets:
            return "businessunit", T.ORG_NAME
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
        values = dict(values or {})
        ts._validate(values)
        with self.lock:
            rng = self.rngs[table]
            ids = {n: list(s.rows.keys())[:1000] for n, s in self.t.items()}
            pk = values.get(ts.t.pk) or T._guids(rng, 1)[0]
            cols = T.generate(ts.t, 1, rng, ids, [pk])
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
        recs = sorted(list(ts.rows.values()), key=lambda r: r.pk)
        return [self.public_row(ts, r) for r in recs]


# ---------------------------------------------------------------- formatted values

def _fmt_dt(ts: float, date_only: bool = False) -> str:
    d = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    if date_only:
        return f"{d.month}/{d.day}/{d.year}"
    h = d.hour % 12 or 12
    return f"{d.month}/{d.day}/{d.year} {h}:{d.minute:02d} {'AM' if d.hour < 12 else 'PM'}"


def format_value(a: T.Attr, v: Any) -> str | None:
    """``OData.Community.Display.V1.FormattedValue`` for one value (user locale en-US, UTC)."""
    if v is None:
        return None
    if a.optionset is not None:
        if a.type_name == "MultiSelectPicklistType":
            return "; ".join(a.optionset.label_of(int(x)) or x for x in str(v).split(","))
        if a.atype == "Boolean":
            return a.optionset.label_of(1 if v else 0)
        return a.optionset.label_of(v)
    if a.atype == "Money":
        return f"${Decimal(str(v)):,.2f}"
    if a.atype == "DateTime":
        if a.behavior == "DateOnly":
            y, m, d = str(v).split("-")
            return f"{int(m)}/{int(d)}/{int(y)}"
        return _fmt_dt(row_datetime(v))
    return None
