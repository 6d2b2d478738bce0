"""The on-disk cache of Dataverse column metadata, so scheduled syncs do not rediscover.

Discovery (metadata.py) reads it through the ``ColumnCache`` protocol; the tap builds it when
``metadata_cache_path`` is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import typing as t

from tap_dynamics.dataverse.metadata import TYPE_MAP, ColumnInfo

if t.TYPE_CHECKING:
    from tap_dynamics.dataverse.metadata import EntityInfo

LOGGER = logging.getLogger("tap-dynamics.discovery")

CACHE_FORMAT = 1


def entities_fingerprint(entities: list[EntityInfo]) -> str:
    """Changes when a table is added, removed or changes kind, set name, key or tracking."""
    digest = hashlib.sha256()
    for entity in sorted(entities, key=lambda e: e.logical_name):
        digest.update(repr(entity).encode())
    return digest.hexdigest()


class MetadataCache:
    """Per-table column metadata on disk, for one org.

    Why: a 1,000-table org costs ~1,000 metadata calls to discover; scheduled syncs should not pay
    that every run. An entry is reused while it is younger than ``ttl`` seconds *and* the org's
    table list (fingerprinted from the ``EntityDefinitions`` call every run makes anyway) is the
    one the entry was read under. Columns (not final schemas) are stored, so a newer tap version
    or the ``annotations`` setting rebuild schemas from them. A corrupt or foreign file is ignored
    and rewritten, never an error.
    """

    def __init__(self, path: str, org: str, ttl: int, fingerprint: str) -> None:
        self.path, self.org, self.ttl, self.fingerprint = path, org, ttl, fingerprint
        self.tables: dict[str, dict[str, t.Any]] = {}
        self.hits = 0
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle, object_hook=_share_cache_strings)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            LOGGER.warning("Metadata cache %s is unreadable (%s); rediscovering", path, exc)
            return
        if (
            isinstance(data, dict)
            and data.get("format") == CACHE_FORMAT
            and data.get("org") == org
            and data.get("fingerprint") == fingerprint
            and isinstance(data.get("tables"), dict)
        ):
            self.tables = data["tables"]
        elif data:
            LOGGER.info("Metadata cache %s is for another org or an older table list; rediscovering", path)

    def get(self, table: str) -> list[ColumnInfo] | None:
        entry = self.tables.get(table)
        if not isinstance(entry, dict) or time.time() - float(entry.get("at", 0)) > self.ttl:
            return None
        try:
            columns = [
                ColumnInfo(c[0], c[1], c[2], c[3], c[4], schema=_column_schema(c[3], c[4]))
                for c in entry["columns"]
            ]
        except (KeyError, TypeError, ValueError):
            return None
        self.hits += 1
        return columns

    def put(self, table: str, columns: list[ColumnInfo]) -> None:
        rows = [
            [c.name, c.name if c.logical_name == c.name else c.logical_name, sys.intern(c.attribute_type), c.type_key, c.description]
            for c in columns
        ]
        self.tables[table] = {"at": time.time(), "columns": rows}

    def save(self, keep: t.Iterable[str]) -> None:
        """Write atomically (temp file + rename), keeping only ``keep`` tables."""
        wanted = set(keep)
        data = {
            "format": CACHE_FORMAT,
            "org": self.org,
            "fingerprint": self.fingerprint,
            "tables": {k: v for k, v in self.tables.items() if k in wanted},
        }
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tap-dynamics-metadata.", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError as exc:
            LOGGER.warning("Could not write the metadata cache %s (%s); next run rediscovers", self.path, exc)


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
