"""The on-disk cache of Dataverse column metadata, so scheduled syncs do not rediscover.

The engine's :class:`~tap_dynamics.engine.metadata_cache.MetadataCache` with Dataverse's entries
(columns). Discovery (metadata.py) reads it through the ``ColumnCache`` protocol; the tap builds
it when ``metadata_cache_path`` is set.
"""

from __future__ import annotations

import sys
import typing as t

from tap_dynamics.dataverse.metadata import TYPE_MAP, ColumnInfo
from tap_dynamics.engine.metadata_cache import CACHE_FORMAT, fingerprint
from tap_dynamics.engine.metadata_cache import MetadataCache as EngineMetadataCache

if t.TYPE_CHECKING:
    from tap_dynamics.dataverse.metadata import EntityInfo


def entities_fingerprint(entities: list[EntityInfo]) -> str:
    """Changes when a table is added, removed or changes kind, set name, key or tracking."""
    ordered: list[EntityInfo] = sorted(entities, key=lambda e: e.logical_name)
    return fingerprint(ordered)


class MetadataCache(EngineMetadataCache):
    """Per-table Dataverse columns on disk, for one org (the engine's cache, in columns).

    Why: a 1,000-table org costs ~1,000 metadata calls to discover; scheduled syncs should not pay
    that every run. The org's table list is fingerprinted from the ``EntityDefinitions`` call every
    run makes anyway. Columns (not final schemas) are stored, so a newer tap version or the
    ``annotations`` setting rebuild schemas from them.
    """

    def __init__(self, path: str, org: str, ttl: int, fingerprint: str) -> None:
        super().__init__(path, org, ttl, fingerprint, object_hook=_share_cache_strings)

    def get(self, table: str) -> list[ColumnInfo] | None:
        entry = self.fresh(table)
        if entry is None:
            return None
        try:
            columns = [
                ColumnInfo(c[0], c[1], c[2], c[3], c[4], schema=_column_schema(c[3], c[4]))
                for c in entry["columns"]
            ]
        except (KeyError, TypeError, ValueError):
            return None
        self.hit()
        return columns

    def put(self, table: str, columns: list[ColumnInfo]) -> None:
        rows = [
            [c.name, c.name if c.logical_name == c.name else c.logical_name, sys.intern(c.attribute_type),
             c.type_key, c.description]
            for c in columns
        ]
        self.store(table, {"columns": rows})


def _share_cache_strings(obj: dict[str, t.Any]) -> dict[str, t.Any]:
    """``json.load`` hook: a table entry's column rows share their repeated strings.

    The cache holds every table's rows for the whole run (``save`` writes them back), and a
    parsed row would otherwise own five strings, three of them repeats (type names, and the
    logical name, equal to the column name for all but lookups): ~20 MB on 140,000 columns.
    Done per table while parsing, so the unshared copies never exist all at once.
    """
    columns = obj.get("columns")
    if isinstance(columns, list):
        for row in columns:
            if isinstance(row, list) and len(row) >= 4 and all(isinstance(v, str) for v in row[:4]):
                row[2], row[3] = sys.intern(row[2]), sys.intern(row[3])
                if row[1] == row[0]:
                    row[1] = row[0]
    return obj


def _column_schema(type_key: str, description: str | None) -> dict[str, t.Any]:
    schema = dict(TYPE_MAP.get(type_key, TYPE_MAP["String"]))
    if description:
        schema["description"] = description
    return schema


__all__ = ["CACHE_FORMAT", "MetadataCache", "entities_fingerprint"]
