"""The catalog, written (``--discover``) and read (``--catalog``) one stream at a time.

Why: the SDK prints the catalog by building it whole three times over — a ``Catalog`` of
``Schema`` and ``Metadata`` objects, then its dict, then one JSON string — before the first
byte is written. On a 1,000-table org (~140,000 columns, a 55 MB catalog) that is ~270 MB on top
of the discovered streams, and it set the peak memory of discovery (392 MB). Here each stream's
entry is built, encoded and written, then dropped, so the peak is the streams themselves.

The bytes are the SDK's exactly (``dump_json(catalog_dict, indent=2)`` and a newline), so
catalogs saved before and after this change compare equal; ``tests/test_catalog_output.py``
checks it against the SDK's own path.

Reading has the mirror problem: the SDK parses the whole ``--catalog`` file into one dict (~190 MB
for that org: every ``"string"``, ``"null"``, ``"available"`` and breadcrumb ``"properties"`` is
its own string object) and only then builds the ``Catalog``. :func:`read_catalog` decodes one
stream entry at a time, builds its ``CatalogEntry`` and drops the dict, and lets equal short
strings share one object (the breadcrumb name is the schema's property key, and so on).
"""

from __future__ import annotations

import decimal
import re
import typing as t

import simplejson
from singer_sdk.singerlib import Catalog, CatalogEntry

from tap_dynamics.engine.sdk_compat import catalog_entry, dump_json, load_json

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
        yield catalog_entry(stream).to_dict()


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


# ------------------------------------------------------------------------------- reading

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# Strings up to this length are shared between entries (names, types, formats, "available");
# longer ones (descriptions) are nearly always unique, so looking them up would only cost time.
_SHARED_MAX_LEN = 128


class _NotStreamableError(Exception):
    """The text is not ``{..., "streams": [ {...}, ... ], ...}``: parse it the SDK's way."""


def read_catalog(text: str) -> Catalog:
    """The ``Catalog`` the SDK builds from ``text`` (``Catalog.from_dict(load_json(text))``).

    Entries are decoded and converted one at a time, so the whole catalog never exists as a dict.
    Anything unusual (not an object, ``streams`` not a list of objects, bad JSON, an entry the SDK
    rejects) is handed to the SDK's own parse, so errors are exactly the SDK's.
    """
    try:
        return _read_entries(text)
    except (_NotStreamableError, ValueError, KeyError, TypeError, AttributeError):
        return Catalog.from_dict(load_json(text))


def _read_entries(text: str) -> Catalog:
    decode = simplejson.JSONDecoder(parse_float=decimal.Decimal).raw_decode  # as load_json
    shared: dict[str, str] = {}
    catalogs = [Catalog()]  # a repeated "streams" key: the last one wins, as with json.loads

    def skip(index: int) -> int:
        return _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]

    def expect(index: int, char: str) -> int:
        if text[index : index + 1] != char:
            raise _NotStreamableError
        return skip(index + 1)

    def items(index: int, close: str, item: t.Callable[[int], int]) -> int:
        """``item ("," item)* close`` or just ``close``, from just after the opening bracket."""
        if text[index : index + 1] != close:
            while True:
                index = skip(item(index))
                if text[index : index + 1] != ",":
                    break
                index = skip(index + 1)
        return expect(index, close)

    def entry(index: int) -> int:
        value, index = decode(text, index)
        if not isinstance(value, dict):
            raise _NotStreamableError
        parsed = CatalogEntry.from_dict(_share(value, shared))
        catalogs[-1][parsed.tap_stream_id] = parsed
        return index

    def member(index: int) -> int:
        if text[index : index + 1] != '"':
            raise _NotStreamableError
        key, index = decode(text, index)
        index = expect(skip(index), ":")
        if key != "streams":
            return decode(text, index)[1]  # Catalog.from_dict reads nothing else
        catalogs.append(Catalog())
        return items(expect(index, "["), "]", entry)

    end = items(expect(skip(0), "{"), "}", member)
    if end != len(text):
        raise _NotStreamableError
    return catalogs[-1]


def _share(value: t.Any, shared: dict[str, str]) -> t.Any:
    """``value`` with equal short strings (keys and values) replaced by one shared object."""
    if isinstance(value, str):
        return shared.setdefault(value, value) if len(value) <= _SHARED_MAX_LEN else value
    if isinstance(value, dict):
        return {shared.setdefault(k, k): _share(v, shared) for k, v in value.items()}
    if isinstance(value, list):
        return [_share(v, shared) for v in value]
    return value
