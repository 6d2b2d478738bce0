"""The on-disk metadata cache every system's discovery can use, so scheduled runs do not rediscover.

Discovering a big environment is expensive (Dataverse: one metadata call per table; F&O: a
``$metadata`` document of tens of MB), and a scheduled run would pay it every time. With
``metadata_cache_path`` set, a system keeps one entry per table here and reuses it while it is
younger than ``metadata_cache_ttl`` seconds *and* the service's table list — fingerprinted by the
system from a cheap call every run makes anyway — is the one the entry was read under.

What an entry holds is the system's business (JSON-able; a system stores what it needs to rebuild
its tables, not final schemas, so a newer tap version rebuilds schemas from it). A corrupt or
foreign file is ignored and rewritten, never an error; writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

LOGGER = logging.getLogger("tap-dynamics.discovery")

CACHE_FORMAT = 1


def fingerprint(items: Iterable[object]) -> str:
    """A digest of ``items`` (their ``repr``, in the order given): changes when any of them does."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(repr(item).encode())
    return digest.hexdigest()


class MetadataCache:
    """Per-table metadata entries on disk, for one service (``scope``: its URL)."""

    def __init__(
        self,
        path: str,
        scope: str,
        ttl: int,
        fingerprint: str,
        *,
        object_hook: Callable[[dict[str, t.Any]], t.Any] | None = None,
    ) -> None:
        """``object_hook``: ``json.load``'s, for a system that shares repeated strings on load."""
        self.path, self.scope, self.ttl, self.fingerprint = path, scope, ttl, fingerprint
        self.tables: dict[str, dict[str, t.Any]] = {}
        self.hits = 0
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle, object_hook=object_hook)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            LOGGER.warning("Metadata cache %s is unreadable (%s); rediscovering", path, exc)
            return
        if (
            isinstance(data, dict)
            and data.get("format") == CACHE_FORMAT
            and data.get("org") == scope
            and data.get("fingerprint") == fingerprint
            and isinstance(data.get("tables"), dict)
        ):
            self.tables = data["tables"]
        elif data:
            LOGGER.info("Metadata cache %s is for another service or an older table list; rediscovering", path)

    def fresh(self, table: str) -> dict[str, t.Any] | None:
        """The table's entry while it is younger than the TTL, else None (the caller counts a
        hit with :meth:`hit` once it could use the entry)."""
        entry = self.tables.get(table)
        try:
            if isinstance(entry, dict) and time.time() - float(entry.get("at", 0)) <= self.ttl:
                return entry
        except (TypeError, ValueError):
            pass
        return None

    def hit(self) -> None:
        """Count one entry reused (the discovery log line says how many)."""
        self.hits += 1

    def store(self, table: str, entry: dict[str, t.Any]) -> None:
        """Keep ``entry`` (JSON-able) for ``table``, stamped now."""
        self.tables[table] = {**entry, "at": time.time()}

    def save(self, keep: Iterable[str]) -> None:
        """Write atomically (temp file + rename), keeping only ``keep`` tables."""
        wanted = set(keep)
        data = {
            "format": CACHE_FORMAT,
            "org": self.scope,  # the key of the files Dataverse discovery wrote before F&O shared them
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


__all__ = ["CACHE_FORMAT", "MetadataCache", "fingerprint"]
