"""``--discover`` output written one stream at a time.

Why: the SDK prints the catalog by building it whole three times over — a ``Catalog`` of
``Schema`` and ``Metadata`` objects, then its dict, then one JSON string — before the first
byte is written. On a 1,000-table org (~140,000 columns, a 55 MB catalog) that is ~270 MB on top
of the discovered streams, and it set the peak memory of discovery (392 MB). Here each stream's
entry is built, encoded and written, then dropped, so the peak is the streams themselves.

The bytes are the SDK's exactly (``dump_json(catalog_dict, indent=2)`` and a newline), so
catalogs saved before and after this change compare equal; ``tests/test_catalog_output.py``
checks it against the SDK's own path.
"""

from __future__ import annotations

import typing as t

from singer_sdk.helpers._util import dump_json

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from singer_sdk.streams import Stream

# `dump_json(..., indent=2)` puts each item of the top-level "streams" list at depth 2 (4 spaces).
_ENTRY_INDENT = "\n    "


def catalog_entries(streams: Iterable[Stream]) -> t.Iterator[dict[str, t.Any]]:
    """Each stream's catalog entry as a dict, built only when asked for (in stream order).

    The same entry the SDK's ``Tap._singer_catalog`` builds for the stream.
    """
    for stream in streams:
        yield stream._singer_catalog_entry.to_dict()  # noqa: SLF001 - the SDK's own entry builder


def write_catalog(entries: Iterable[dict[str, t.Any]], out: t.TextIO) -> None:
    """Write ``{"streams": [...]}`` as the SDK's ``--discover`` does, one entry at a time.

    Equivalent to ``out.write(dump_json({"streams": list(entries)}, indent=2) + "\\n")``. Each entry
    is encoded on its own and indented one level deeper; JSON strings never hold a raw newline
    (they are escaped), so re-indenting by replacing newlines is exact.
    """
    first = True
    for entry in entries:
        text = dump_json(entry, indent=2).replace("\n", _ENTRY_INDENT)
        out.write(('{\n  "streams":[\n    ' if first else ",\n    ") + text)
        first = False
    out.write('{\n  "streams":[]\n}\n' if first else "\n  ]\n}\n")
    out.flush()
