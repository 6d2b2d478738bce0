"""Partitioned reads: one table read as several independent page chains, concurrently.

Why: a chain of offset-based next links is strictly serial, so a table split by a column the
service filters cheaply (F&O's company, ``dataAreaId``) reads as fast as its slowest part
rather than as the sum of its parts. Each partition keeps its own resumable state under
``chains`` in the stream's state — its in-flight next link (full table) or its bookmark and
boundary versions (cursor) — so a killed run resumes every partition where it stopped.

- :class:`PartitionedFullTable`: every partition read in full as one table version; the page
  that completes the last partition carries ``ACTIVATE_VERSION``.
- :class:`PartitionedCursor`: an inclusive ``ge`` read per partition from its own bookmark, with
  the boundary handling of :class:`~tap_dynamics.engine.replication.base.Boundary`.
"""

from __future__ import annotations

import copy
import time
import typing as t
from dataclasses import replace

from tap_dynamics.engine.replication.base import (
    NEXT_LINK_KEY,
    VERSION_KEY,
    Boundary,
    fetch_sequences,
    odata_etag,
    row_key,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from tap_dynamics.engine.pages import Page
    from tap_dynamics.engine.replication.base import Reader, RowKey

# Not "partitions": the Singer SDK keeps its own partition states under that key.
PARTITIONS_KEY = "chains"


class PartitionedFullTable:
    """Every partition in full, as one table version closed by ``ACTIVATE_VERSION``."""

    def __init__(self, reader: Reader, *, prefer: str, required: tuple[str, ...]) -> None:
        self.reader = reader
        self.prefer = prefer
        self.required = required

    def pages(self, first_urls: Mapping[str, str]) -> Iterator[Page]:
        """The pages of every partition (``first_urls``: partition name -> its first page)."""
        reader = self.reader
        state = reader.read_state
        parts = state.get(PARTITIONS_KEY)
        version = state.get(VERSION_KEY)
        if not (version and isinstance(parts, dict) and set(parts) == set(first_urls)):
            version = int(time.time() * 1000)
            parts = {name: {NEXT_LINK_KEY: None, "done": False} for name in first_urls}
            if state.get("last_version") is None:
                reader.activate_version(version)  # first ever sync: the target creates the table
        reader.set_version(version)
        reader.checkpoint(**{VERSION_KEY: version, PARTITIONS_KEY: copy.deepcopy(parts), NEXT_LINK_KEY: None})
        pending = [name for name in first_urls if not parts[name]["done"]]
        done = {VERSION_KEY: None, PARTITIONS_KEY: None, "last_version": version}
        if not pending:  # killed after the last page, before its checkpoint: only the closing is left
            reader.checkpoint(**done)
            reader.activate_version(version)
            return
        urls = [parts[name][NEXT_LINK_KEY] or first_urls[name] for name in pending]
        for index, page in fetch_sequences(reader, urls, self.prefer, required=self.required):
            parts[pending[index]] = {NEXT_LINK_KEY: page.next_link, "done": page.next_link is None}
            if all(p["done"] for p in parts.values()):
                yield replace(page, checkpoint=done, activate_version=version)
            else:
                yield replace(page, checkpoint={PARTITIONS_KEY: copy.deepcopy(parts)})
            del page


class PartitionedCursor:
    """A date-time cursor per partition: each reads ``ge`` its own bookmark, concurrently.

    ``url(partition, bookmark)`` is the partition's ordered read from ``bookmark`` (None: from
    the start date); ``bookmark_cap(start)`` the latest a bookmark may take (see
    :class:`~tap_dynamics.engine.replication.cursor.CursorStrategy`).
    """

    def __init__(
        self,
        reader: Reader,
        url: Callable[[str, t.Any], str],
        *,
        cursor: str,
        key: Sequence[str],
        prefer: str,
        required: tuple[str, ...],
        bookmark_cap: Callable[[t.Any], str | None] = lambda _start: None,
        version: RowKey = odata_etag,
    ) -> None:
        self.reader = reader
        self.url = url
        self.cursor = cursor
        self.key = row_key(key)
        self.prefer = prefer
        self.required = required
        self.bookmark_cap = bookmark_cap
        self.version = version

    def pages(self, partitions: Sequence[str]) -> Iterator[Page]:
        """The partitions' pages; each checkpoints every partition's bookmark and boundary."""
        reader, cursor = self.reader, self.cursor
        saved = reader.read_state.get(PARTITIONS_KEY)
        saved = saved if isinstance(saved, dict) else {}
        parts = {name: dict(saved.get(name) or {"bookmark": None, "boundary": {}}) for name in partitions}
        cap = self.bookmark_cap(None)
        trackers = [
            Boundary(parts[name].get("bookmark"), parts[name].get("boundary"),
                     None if cap is None else max(cap, parts[name].get("bookmark") or cap))
            for name in partitions
        ]
        reader.set_bookmark_cap(cap)
        reader.set_windowed(True)  # rows of the partitions interleave: no stream-wide sort order
        try:
            urls = [self.url(name, parts[name].get("bookmark")) for name in partitions]
            for index, page in fetch_sequences(reader, urls, self.prefer, required=self.required, cursor=(cursor, str)):
                tracker = trackers[index]
                rows = tracker.rows(page.records, cursor, self.key, self.version)
                if tracker.value is not None:
                    parts[partitions[index]] = {"bookmark": tracker.value, "boundary": dict(tracker.etags)}
                yield replace(page, records=rows, checkpoint={PARTITIONS_KEY: copy.deepcopy(parts)})
                del page, rows
        finally:
            reader.set_windowed(False)
