"""The record path: from a decoded page to RECORD lines on stdout, a page at a time.

Why not the SDK's per-record loop: profiled on a 34-column table (cProfile, 200k rows), more than
half of the tap's CPU went to ``conform_record_data_types`` (which, for rows decoded from JSON,
changes nothing but unknown keys and non-boolean values in boolean columns),
``pop_deselected_record_properties`` (``$select`` already did it), one ``RecordMessage`` object,
one ``utc_now()`` and one ``stdout.flush()`` per record. Here the schema work is hoisted out of
the loop (which keys are allowed, which columns are exclusively boolean), each row is encoded once
by msgspec (non-integer numbers arrive as their exact JSON text, ``msgspec.Raw``, and are written
back as they came: see ``pages.NUMBER_TEXT_DECODER``), a page's lines are
written with one ``write`` and one flush, and the STATE message follows each page.

What stays the same as the SDK path (tests compare both on the same data): the stream's
``post_process`` runs on every row (boundary dedupe, multi-select splitting), the record and its
key order, ``version``, SCHEMA before records, bookmarks advanced only over emitted rows with the
SDK's sort check, STATE after the records it covers, the record counter and final state. Anything
the fast path does not model — stream maps or flattening, a dry-run record limit, partitions,
child streams — makes the stream use the SDK path unchanged (see :func:`fast_path_enabled`).
``TAP_DYNAMICS_FAST_PATH=0`` forces the SDK path (an escape hatch, and how the tests compare).
"""

from __future__ import annotations

import datetime
import decimal
import os
import sys
import typing as t

import msgspec
from singer_sdk.contrib.msgspec import enc_hook
from singer_sdk.exceptions import InvalidStreamSortException
from singer_sdk.mapper import SameRecordTransform

from tap_dynamics.engine import sdk_compat
from tap_dynamics.engine.run import OUTPUT_LOCK

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from singer_sdk import Stream
    from singer_sdk.helpers.types import Context

    from tap_dynamics.engine.pages import Page


class PageHooks(t.Protocol):
    """What the fast path calls on a paged stream besides the SDK's ``Stream`` API.

    A protocol, so that this module needs no import of the stream base (engine/stream.py), which
    imports this module: the stream is a ``Stream`` with these methods too.
    """

    def get_pages(self, context: Context | None) -> Iterator[Page]:
        """The stream's pages, in order."""
        ...

    def post_process(self, row: dict[str, t.Any], context: Context | None = None) -> dict[str, t.Any] | None:
        """The stream's per-row transformation (None drops the row); non-integer numbers in the
        row are ``msgspec.Raw`` (their JSON text) on this path."""
        ...

    def before_page_state(self, page: Page) -> None:
        """Apply a written page's checkpoint (before its STATE message)."""
        ...

    def page_done(self, page: Page, rows: int) -> None:
        """A page's ``rows`` records are written (progress counters)."""
        ...


_ENCODER = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number")
# Values a boolean column keeps as they are, as the SDK's conform step does: booleans, and
# non-integer numbers (the SDK passes floats and Decimals through; here they are msgspec.Raw).
_AS_SERVED = frozenset({bool, msgspec.Raw, decimal.Decimal, float})


def fast_path_enabled(stream: Stream, context: Context | None) -> bool:
    """True when the page-at-a-time path produces exactly what the SDK path would."""
    if os.environ.get("TAP_DYNAMICS_FAST_PATH", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    config = stream.config
    maps = stream.stream_maps
    return bool(
        stream.selected
        and context is None
        and not stream.partitions
        and not stream.child_streams
        and stream.ABORT_AT_RECORD_COUNT is None
        and not config.get("stream_maps")
        and not config.get("flattening_enabled")
        and len(maps) == 1
        and type(maps[0]) is SameRecordTransform
        and not getattr(maps[0], "flattening_enabled", False)
        and maps[0].stream_alias == stream.name
    )


class RecordPlan:
    """Per-stream schema facts, computed once instead of per record."""

    def __init__(self, stream: Stream) -> None:
        properties: dict[str, t.Any] = stream.schema.get("properties", {})
        mask = stream.mask
        # Keys a record may keep: in the schema and selected (the SDK drops the rest).
        self.allowed = frozenset(n for n in properties if mask.get(("properties", n), True))
        self.unknown_ok = bool(stream.schema.get("additionalProperties"))
        # Columns whose values the SDK coerces with ``value != 0`` (exclusively boolean types).
        self.booleans = tuple(n for n, s in properties.items() if sdk_compat.is_exclusive_boolean_type(s))
        self.prefix = b'{"type":"RECORD","stream":' + _ENCODER.encode(stream.name) + b',"record":'
        # The bookmark's column (INCREMENTAL reads only), and whether the SDK checks its order.
        self.rk = stream.replication_key if stream.replication_method == "INCREMENTAL" else None
        self.check_sorted = bool(self.rk and stream.check_sorted)

    def suffix(self, version: int | None, extracted: datetime.datetime) -> bytes:
        """The part of a RECORD line after the record, shared by a whole page."""
        tail = b""
        if version is not None:
            tail += b',"version":' + _ENCODER.encode(version)
        return tail + b',"time_extracted":' + _ENCODER.encode(extracted) + b"}\n"


def sync_records_fast(stream: Stream, context: Context | None) -> t.Generator[dict, t.Any, t.Any]:
    """The body of ``_sync_records`` for streams that read pages (see the module docstring)."""
    hooks = t.cast("PageHooks", stream)
    plan = RecordPlan(stream)
    record_counter = stream.get_record_counter()
    timer = stream.get_sync_timer()
    warned: set[str] = set()
    with record_counter, timer:
        record_counter.with_context({})
        timer.with_context({})
        with OUTPUT_LOCK:  # it writes into the tap state, which another stream's STATE serialises
            state_partition_context = sdk_compat.state_partition_context(stream, None)
            sdk_compat.write_starting_replication_value(stream, None)
        previous = None  # last replication key value emitted, for the sort check
        for page in hooks.get_pages(None):
            # Re-read per page: a stream may interleave sequences (time windows of a first load)
            # and say so mid-stream.
            check_sorted = plan.check_sorted and stream.is_sorted
            # The whole page is processed under the lock: the work is CPU-bound (one GIL), so
            # nothing is lost, and only one page's encoded lines exist at a time.
            with OUTPUT_LOCK:
                written, previous = _emit_page(
                    stream, hooks, page, plan, state_partition_context, check_sorted, warned, previous
                )
            if written:
                record_counter.increment(written)
            hooks.page_done(page, written)
            del page  # not kept while the next page is awaited (memory: see prefetch.py)
        with OUTPUT_LOCK:
            state = stream.get_context_state(None)
            sdk_compat.finalize_state(stream, state)
    with OUTPUT_LOCK:
        sdk_compat.finalize_state(stream, stream.stream_state)
        sdk_compat.write_state_message(stream)
    return
    yield  # a generator, like the SDK's _sync_records


def _emit_page(
    stream: Stream,
    hooks: PageHooks,
    page: Page,
    plan: RecordPlan,
    state_partition_context: t.Any,
    check_sorted: bool,
    warned: set[str],
    previous: t.Any,
) -> tuple[int, t.Any]:
    """Write one page's RECORD lines and the STATE after them; (records written, last key value)."""
    # Locals for the loop below: it runs once per record.
    post_process, allowed, booleans, prefix, rk = hooks.post_process, plan.allowed, plan.booleans, plan.prefix, plan.rk
    extracted = datetime.datetime.now(datetime.timezone.utc)
    suffix = plan.suffix(sdk_compat.stream_version(stream), extracted)
    # The page's lines are encoded straight into one buffer (msgspec appends in place): no
    # intermediate bytes object per row, one write per page.
    buffer = bytearray()
    encode_into = _ENCODER.encode_into
    written = 0
    last = None
    for raw in page.records:
        row = post_process(raw, None)
        if row is None:
            continue
        if not allowed.issuperset(row):
            row = _drop_unknown(stream, row, allowed, plan.unknown_ok, warned)
        for name in booleans:
            value = row.get(name)
            if value is not None and value.__class__ not in _AS_SERVED:
                row[name] = value != 0
        if rk is not None:
            value = row.get(rk)
            if value is not None:
                if check_sorted and previous is not None and value < previous:
                    msg = (
                        f"Unsorted data detected in stream. Latest value '{value}' is "
                        f"smaller than previous max '{previous}'."
                    )
                    raise InvalidStreamSortException(msg)
                previous = value
                last = row
        buffer += prefix
        encode_into(row, buffer, -1)
        buffer += suffix
        written += 1
    if written:
        out = sys.stdout.buffer
        out.write(buffer)
        out.flush()
        stream.state_manager.is_flushed = False
    if last is not None:
        sdk_compat.increment_stream_state(stream, last, state_partition_context)
    hooks.before_page_state(page)
    sdk_compat.write_state_message(stream)
    return written, previous


def _drop_unknown(
    stream: Stream,
    row: dict[str, t.Any],
    allowed: frozenset[str],
    unknown_ok: bool,
    warned: set[str],
) -> dict[str, t.Any]:
    """Keep the selected schema columns; warn once per stream about keys not in the catalog."""
    properties = stream.schema.get("properties", {})
    kept: dict[str, t.Any] = {}
    for key, value in row.items():
        if key in allowed or (unknown_ok and key not in properties):
            kept[key] = value
        elif key not in properties and key not in warned:
            warned.add(key)
            stream.logger.warning(
                "Properties %s were present in the '%s' stream but not found in catalog schema. Ignoring.",
                (key,),
                stream.name,
            )
    return kept
