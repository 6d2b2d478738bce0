"""Every place the tap reaches past the Singer SDK's public API, in one module.

Each item says why the public API does not suffice. When the SDK changes one of these, this is
the only module to adapt, and the test suite (which turns the SDK's DeprecationWarnings into
errors) says so. Nothing else in ``tap_dynamics`` touches a private SDK member or overrides a
method the SDK marks ``@final``; the import-graph test checks the first part.

Dropped since the engine split (the public API does it): overriding ``Stream.sync`` (``@final``)
to register required columns (the strategies pass them with each read) and to time metadata
streams (the run loop times every stream); reading ``Stream._tap_input_catalog`` (the public
``apply_catalog`` hook records the catalog).
"""

from __future__ import annotations

import typing as t

from singer_sdk import Stream, Tap

# Why: ``check`` and ``login`` read ``--config ENV`` (the TAP_DYNAMICS_* variables) outside the
# SDK's click command, and must read them exactly as the SDK does for a sync; the SDK's parser
# is not exported.
from singer_sdk.configuration._dict_config import parse_environment_config

# Why: the fast record path coerces exactly the columns the SDK's ``conform_record_data_types``
# coerces (exclusively boolean types); the SDK exposes that test only as this private helper.
from singer_sdk.helpers._typing import _is_exclusive_boolean_type as is_exclusive_boolean_type

# Why: ``--discover`` output and ``--catalog`` parsing must match the SDK byte for byte (saved
# catalogs compare equal across versions); these are the SDK's own codecs (simplejson with its
# options), not exported elsewhere.
from singer_sdk.helpers._util import dump_json, load_json

from tap_dynamics.engine import override

if t.TYPE_CHECKING:
    from types import FrameType

    from singer_sdk.helpers.types import Context
    from singer_sdk.singerlib import CatalogEntry

# -- stream state and messages ------------------------------------------------------------------
# Why: the fast record path (engine/fastpath.py) writes a page of RECORDs and then the page's STATE
# itself; it must keep the tap state exactly as the SDK's per-record loop does, and the SDK has no
# public API for "advance the bookmark over these emitted rows" or "write a STATE now".


def state_partition_context(stream: Stream, context: Context | None) -> Context | None:
    """The SDK's state partition of ``context`` (what ``_increment_stream_state`` expects)."""
    return stream._get_state_partition_context(context)


def write_starting_replication_value(stream: Stream, context: Context | None) -> None:
    """Record the bookmark the sync starts from (the SDK's first step of ``_sync_records``)."""
    stream._write_starting_replication_value(context)


def increment_stream_state(stream: Stream, latest_record: dict[str, t.Any], context: Context | None) -> None:
    """Advance the bookmark over an emitted row, with the SDK's sort check and signpost."""
    stream._increment_stream_state(latest_record, context=context)


def finalize_state(stream: Stream, state: dict[str, t.Any] | None) -> None:
    """Promote the progress markers to the bookmark (end of a stream's records)."""
    stream._finalize_state(state)


def write_state_message(stream: Stream) -> None:
    """Write the tap's STATE now (after a page's records): the SDK only does it per N records."""
    stream._write_state_message()


def write_activate_version_message(stream: Stream, version: int) -> None:
    """ACTIVATE_VERSION for a table version: the SDK writes it only at the start of a full-table
    sync, while a version here ends with its last page (and change tracking re-baselines)."""
    stream._write_activate_version_message(version)


def stream_version(stream: Stream) -> int | None:
    """The table version RECORD messages carry (the SDK reads it from this attribute)."""
    return stream._stream_version


def set_stream_version(stream: Stream, version: int | None) -> None:
    """Set the table version the next RECORDs carry (the SDK has no setter)."""
    stream._stream_version = version


def set_sorted_check(stream: Stream, is_sorted: bool) -> None:
    """Switch the state manager's sort check with ``Stream.is_sorted``: the SDK caches the flag
    when it creates the state manager, and first-load time windows interleave rows mid-stream."""
    stream.state_manager._is_sorted = is_sorted


def catalog_entry(stream: Stream) -> CatalogEntry:
    """The stream's catalog entry as the SDK builds it for ``--discover`` (no public builder)."""
    return stream._singer_catalog_entry


class CompatStream(Stream):
    """The stream-side overrides of private SDK methods.

    - ``_sync_records``: the page-at-a-time record path replaces the SDK's per-record loop when
      nothing needs the latter (see engine/fastpath.py); the SDK has no hook for a batch of
      already-conformed records.
    - ``_write_schema_message``: streams synced in parallel write under the run's output lock,
      and the SDK writes SCHEMA from inside the ``@final`` ``sync``.
    - ``_increment_stream_state``: the bookmark must not move past a commit margin (late
      commits) nor warn per row whose cursor is null; the SDK has no hook for the value it
      bookmarks (:meth:`bookmark_record`).
    """

    def fast_records(self, context: Context | None) -> t.Generator[dict, t.Any, t.Any] | None:
        """The fast path's generator for ``context``, or None to use the SDK's loop."""
        return None

    def output_lock(self) -> t.ContextManager[t.Any]:
        """The lock every message of the run is written under."""
        raise NotImplementedError

    def bookmark_record(self, latest_record: dict[str, t.Any]) -> dict[str, t.Any] | None:
        """The record the bookmark advances over (None: it stays), for an emitted row."""
        return latest_record

    @override
    def _increment_stream_state(self, latest_record: dict[str, t.Any], *, context: Context | None = None) -> None:
        record = self.bookmark_record(latest_record)
        if record is not None:
            super()._increment_stream_state(record, context=context)

    @override
    def _sync_records(
        self,
        context: Context | None = None,
        *,
        write_messages: bool = True,
    ) -> t.Generator[dict, t.Any, t.Any]:
        fast = self.fast_records(context) if write_messages else None
        if fast is not None:
            return fast
        return super()._sync_records(context, write_messages=write_messages)

    @override
    def _write_schema_message(self) -> None:
        with self.output_lock():
            super()._write_schema_message()


class CompatTap(Tap):
    """The tap-side overrides of ``@final`` and private SDK methods.

    - ``sync_all`` (``@final``): tables are synced in parallel, a failing table is skipped and
      reported instead of ending the run, and a run summary is printed; the SDK's loop is serial
      and stops at the first error. The tap implements :meth:`sync_selected`.
    - ``run_connection_test`` (``@final``): ``--test`` runs the tap's own check (token, who am I,
      organisation) before the SDK's one-record sync. The tap implements :meth:`connection_test`.
    - ``_validate_config``: the SDK logs a JSON-schema violation and exits 1 (the code for a
      crash); the tap runs its own check (:meth:`check_config`) and reports a problem as its
      one-line configuration error (exit 2). No public hook.
    - ``_handle_termination`` (the SDK's SIGINT/SIGTERM handler): the SDK writes its own copy of
      the state and exits 0, so a scheduler that stopped a run sees a success, and the state line
      can land inside a line a worker thread is writing. The tap implements :meth:`terminate`.
      No public hook.
    """

    def sync_selected(self) -> None:
        """Sync every selected stream (the tap's run loop)."""
        raise NotImplementedError

    def connection_test(self) -> None:
        """Check the connection before the SDK's ``--test`` sync; raise a one-line error."""

    @override  # type: ignore[misc]  # @final in the SDK: see the class docstring
    def sync_all(self) -> None:
        self.sync_selected()

    @override  # type: ignore[misc]  # @final in the SDK: see the class docstring
    def run_connection_test(self) -> bool:
        self.connection_test()
        return super().run_connection_test()

    def terminate(self, signum: int) -> None:
        """SIGINT/SIGTERM during a command. Default: the SDK's handler."""
        super()._handle_termination(signum, None)

    @override
    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        self.terminate(signum)

    def check_config(self) -> None:
        """Check ``self.config`` and raise on a problem. Default: the SDK's JSON-schema check."""
        super()._validate_config(raise_errors=True)

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        try:
            self.check_config()
        except Exception as exc:
            if raise_errors:
                raise
            return [str(exc)]
        return []

    def prepare_sync(self) -> None:
        """The SDK's first steps of ``sync_all``: clear old progress markers, force full table
        where a child stream needs it, write the incoming state (private SDK methods, kept as
        the SDK runs them)."""
        self._reset_state_progress_markers()
        self._set_compatible_replication_methods()
        if self.state:
            self._state_writer.write_state(self.state)

    @classmethod
    def invoke_plugin(cls, *, about: bool, about_format: str | None) -> None:
        """``--about`` handling of ``PluginBase.invoke``, skipping ``Tap.invoke`` (which reads the
        whole ``--catalog`` into one dict: see tap_dynamics/catalog.py)."""
        super(Tap, cls).invoke(about=about, about_format=about_format)


__all__ = [
    "CompatStream",
    "CompatTap",
    "catalog_entry",
    "dump_json",
    "finalize_state",
    "increment_stream_state",
    "is_exclusive_boolean_type",
    "load_json",
    "parse_environment_config",
    "set_sorted_check",
    "set_stream_version",
    "state_partition_context",
    "stream_version",
    "write_activate_version_message",
    "write_starting_replication_value",
    "write_state_message",
]
