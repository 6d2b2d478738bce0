"""What the engine passes from the wire to stdout: pages of rows, and the adaptive page size.

This module imports nothing from the rest of the engine: the transport (``http``), the page
formats, the prefetch and the record path all speak in :class:`Page`, so it sits at the bottom
of the import graph. :class:`PageSource` is the protocol those layers are typed against instead
of the transport class itself (no import back from ``prefetch``/``fastpath`` into ``http``).
"""

from __future__ import annotations

import decimal
import re
import threading
import typing as t
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from tap_dynamics.engine import override

if t.TYPE_CHECKING:
    from collections.abc import Iterator

# Decimal-preserving JSON decoder: Money/Decimal columns must survive bit-for-bit (0.1 stays 0.1).
JSON_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)
# The record path's decoder: a non-integer number stays its exact JSON text (a ``msgspec.Raw``),
# which the encoder writes back verbatim. As exact as a Decimal, but no Decimal is built on decode
# nor formatted on encode: on a 34-column ``account`` row with six such columns, decoding and
# encoding cost 4.0 µs instead of 5.3 (see the README's profile of the record path).
NUMBER_TEXT_DECODER = msgspec.json.Decoder(float_hook=msgspec.Raw)

RowCheck = t.Callable[[list[t.Any]], None]


class Rows(Sequence):
    """A page's rows: raw JSON until first used, then decoded once, in the thread that uses them.

    Why: pages wait in the prefetch buffer (prefetch.py) for their turn to be written. A
    5,000-row ``account`` page is 5.7 MB of JSON but 13 MB of decoded dicts, so buffered pages
    are kept raw and only the page being written is decoded: the same CPU (decoding row by row
    costs no more than the whole body at once), half the memory. The row checks run when the
    rows are decoded and raise the same errors they raised on arrival; a format whose rows need
    converting (OData v2's dates and complex values) converts them in place in that check.
    """

    __slots__ = ("__weakref__", "_check", "_decoder", "_raw", "_rows")

    def __init__(self, raw: list[msgspec.Raw], check: RowCheck | None) -> None:
        self._raw: list[msgspec.Raw] | None = raw
        self._rows: list[dict[str, t.Any]] | None = None
        self._check: RowCheck | None = check
        self._decoder = JSON_DECODER

    def keep_number_text(self) -> None:
        """Decode non-integer numbers as their exact JSON text (``msgspec.Raw``), not Decimals.

        For the record path, which only re-encodes them (see :data:`NUMBER_TEXT_DECODER`);
        rows already decoded stay as they are.
        """
        self._decoder = NUMBER_TEXT_DECODER

    def decoded(self) -> list[dict[str, t.Any]]:
        """The rows as dicts (decoded and checked on the first call)."""
        rows = self._rows
        if rows is None:
            decode = self._decoder.decode
            decoded = [decode(raw) for raw in self._raw or ()]
            if self._check is not None:
                self._check(decoded)
            self._rows = rows = decoded
            self._raw = self._check = None
        return rows

    @override
    def __len__(self) -> int:
        return len(self._rows) if self._rows is not None else len(self._raw or ())

    @override
    def __getitem__(self, index: t.Any) -> t.Any:
        return self.decoded()[index]

    @override
    def __iter__(self) -> Iterator[dict[str, t.Any]]:
        return iter(self.decoded())

    @override
    def __repr__(self) -> str:
        state = "decoded" if self._rows is not None else "raw"
        return f"<Rows: {len(self)} rows, {state}>"


@dataclass
class Page:
    """One page of a collection: its rows and the links that say what comes next."""

    records: Sequence[dict[str, t.Any]]  # a list, or raw rows decoded on first use (Rows)
    next_link: str | None
    delta_link: str | None
    request_id: str | None
    # Set by the replication strategy, applied once the page's records are written
    # (see PagedStream.before_page_state):
    checkpoint: dict[str, t.Any] | None = None  # state keys to set (None values are removed)
    activate_version: int | None = None  # ACTIVATE_VERSION to emit after the page
    deletes: int = 0  # how many of the records are deletion markers (change tracking)


_MAXPAGESIZE_RE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)")


def requested_page_size(prefer: str | None) -> int | None:
    """The ``odata.maxpagesize`` a ``Prefer`` header asks for, if any."""
    match = _MAXPAGESIZE_RE.search(prefer or "")
    return int(match.group(1)) if match else None


class PageSizer:
    """The adaptive ``odata.maxpagesize`` of one stream.

    Why: a page of wide rows can take longer than the request timeout or exceed the response
    size limit; the same query with fewer rows per page works. Halve on such a failure, and
    double back (up to what was asked) after :attr:`GROW_AFTER` good pages in a row, so that
    one slow page does not slow the whole table down for good. Only the ``Prefer`` header
    changes: nextLinks are still followed verbatim (the server's paging cookie holds the
    position, not the page size).
    """

    MIN_SIZE = 10
    GROW_AFTER = 10

    def __init__(self, requested: int) -> None:
        self.requested = requested
        self.size = requested
        self._good = 0
        self._lock = threading.Lock()

    def can_shrink(self) -> bool:
        """Whether a smaller page can still be asked for."""
        return self.size > self.MIN_SIZE

    def shrink(self) -> bool:
        """Halve the page size; False when it cannot get any smaller."""
        with self._lock:
            self._good = 0
            if self.size <= self.MIN_SIZE:
                return False
            self.size = max(self.MIN_SIZE, self.size // 2)
            return True

    def success(self) -> None:
        """One good page: after enough of them, grow back towards the requested size."""
        with self._lock:
            if self.size >= self.requested:
                return
            self._good += 1
            if self._good >= self.GROW_AFTER:
                self._good = 0
                self.size = min(self.requested, self.size * 2)

    def prefer(self, prefer: str) -> str:
        """``prefer`` with its maxpagesize replaced by the current size."""
        return _MAXPAGESIZE_RE.sub(f"odata.maxpagesize={self.size}", prefer)


def where(table: str | None) -> str:
    """The ``table x: `` prefix of a message about one table (empty for run-wide requests)."""
    return f"table {table}: " if table else ""


class PageSource(t.Protocol):
    """What reads page sequences: the transport, as prefetch and the strategies see it."""

    def iter_pages(
        self,
        url: str,
        *,
        prefer: str | None = None,
        table: str | None = None,
        required: tuple[str, ...] = (),
        cursor: tuple[str, type] | None = None,
        page_format: t.Any = None,
    ) -> Iterator[Page]:
        """Follow a collection's next links from ``url`` to its end, one page at a time
        (``page_format``: the table's own, else the service's)."""
        ...


__all__ = ["JSON_DECODER", "NUMBER_TEXT_DECODER", "Page", "PageSizer", "PageSource", "RowCheck", "Rows", "requested_page_size", "where"]
