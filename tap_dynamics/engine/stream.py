"""The paged stream base: a Singer stream that reads pages through the run's transport.

A system's table stream (Dataverse's ``EntityStream``, later F&O's and Graph's) implements
:meth:`PagedStream.get_pages` — typically by running a replication strategy
(engine/replication.py) — and gets from here:

- the fast record path (engine/fastpath.py) whenever nothing needs the SDK's per-record one, and
  the SDK's path, with the same pages and the same checkpoints, when something does;
- ``parallel_safe``: whether the run may sync it on a worker thread beside other tables (every
  message it writes goes out under the output lock, page by page);
- the page checkpoint protocol: a page's ``checkpoint`` and ``activate_version`` are applied
  after its records are written and before its STATE message (:meth:`before_page_state`);
- progress counters per written page;
- the replication method: ``FULL_TABLE``, a cursor column (INCREMENTAL) or the system's
  log-based read (:attr:`PagedStream.log_based_method`), as discovery chose it, as a catalog
  overrides it, and as the ``replication`` setting overrides both (:meth:`PagedStream.method_setting`).
"""

from __future__ import annotations

import typing as t

from tap_dynamics.engine import override, sdk_compat
from tap_dynamics.engine.fastpath import fast_path_enabled, sync_records_fast
from tap_dynamics.engine.pages import Rows
from tap_dynamics.engine.replication.base import fetch_sequences

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from singer_sdk.helpers.types import Context

    from tap_dynamics.engine.formats import PageFormat
    from tap_dynamics.engine.http import HttpTransport
    from tap_dynamics.engine.pages import Page
    from tap_dynamics.engine.prefetch import PageBudget
    from tap_dynamics.engine.run import RunContext

# The method name of a full-table read, in every system (a cursor read is named by its column).
FULL_TABLE = "full_table"


class PagedStream(sdk_compat.CompatStream):
    """Base stream: reads through the run's shared transport, writes under the run's lock."""

    def __init__(
        self,
        tap: t.Any,
        *,
        client: HttpTransport,
        run: RunContext,
        name: str,
        schema: dict[str, t.Any],
    ) -> None:
        self.client = client
        self.run = run
        self.rows_emitted = 0
        # Whether fetched rows keep non-integer numbers as their JSON text (the fast path only
        # re-encodes them; the SDK's path gets Decimals, see pages.Rows.keep_number_text).
        self.number_text = False
        self.deletes_emitted = 0
        self.catalog_given: t.Any = None  # the input catalog, once applied (see apply_catalog)
        self._read_state: dict[str, t.Any] = {}
        self.windowed = False  # several sequences interleave (see set_windowed)
        self.cap_in_force: str | None = None  # the latest a date-time bookmark may be (this read)
        # The table's page format when it has one of its own (rows converted per table), else
        # None: the service's (the transport's policy).
        self.page_format: PageFormat | None = None
        super().__init__(tap, schema=schema, name=name)

    @override
    def apply_catalog(self, catalog: t.Any) -> None:
        """Apply the catalog, remembering it (subclasses ask whether it names this stream), then
        the ``replication`` setting, which wins for the streams it names.

        A saved catalog carries the method discovery chose then (``forced-replication-method``);
        a stream named in the setting must follow the setting, as the user asked.
        """
        self.catalog_given = catalog
        super().apply_catalog(catalog)
        method = self.method_setting()
        if method is not None:
            self.set_method(method)

    # -- the replication method -----------------------------------------------------------------------
    #: This system's name for a LOG_BASED read of the stream (change tracking, a delta query);
    #: None when it has none.
    log_based_method: str | None = None
    #: Whether a cursor (INCREMENTAL on a replication key) is a method of this stream.
    cursor_reads = True

    def method_setting(self) -> str | None:
        """The method the ``replication`` setting asks for this stream, checked against what the
        stream can do (a one-line ConfigError if it cannot); None when the setting names it not."""
        return None

    def set_method(self, method: str) -> None:
        """Read with ``method``: :data:`FULL_TABLE`, :attr:`log_based_method`, or a cursor column."""
        if method == FULL_TABLE:
            self.replication_key = None
            self.forced_replication_method = "FULL_TABLE"
        elif method == self.log_based_method:
            self.replication_key = None
            self.forced_replication_method = "LOG_BASED"
        else:
            self.replication_key = method
            self.forced_replication_method = "INCREMENTAL"

    @property
    def method(self) -> str:
        """The effective method, after any catalog override (the catalog may change it)."""
        replication_method = self.replication_method
        if replication_method == "LOG_BASED" and self.log_based_method is not None:
            return self.log_based_method
        if replication_method == "INCREMENTAL" and self.replication_key and self.cursor_reads:
            return self.replication_key
        return FULL_TABLE

    # -- what subclasses implement ------------------------------------------------------------------
    def get_pages(self, context: Context | None) -> Iterator[Page]:
        """The stream's pages, in order. Streams that read pages implement it (fast path)."""
        raise NotImplementedError

    @property
    def reads_pages(self) -> bool:
        """Whether this stream implements :meth:`get_pages` (else it yields records itself)."""
        return type(self).get_pages is not PagedStream.get_pages

    @property
    def parallel_safe(self) -> bool:
        """Whether the run may sync this stream beside others (every message under the lock)."""
        return self.reads_pages and fast_path_enabled(self, None)

    # -- the record path ------------------------------------------------------------------------------
    @override
    def fast_records(self, context: Context | None) -> t.Generator[dict, t.Any, t.Any] | None:
        if self.reads_pages and fast_path_enabled(self, context):
            self.number_text = True
            return sync_records_fast(self, context)
        self.number_text = False
        return None

    @override
    def output_lock(self) -> t.ContextManager[t.Any]:
        return self.run.output_lock

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """The SDK's per-record path (stream maps, flattening…): the same pages, row by row.

        The generator only resumes after the SDK has written the previous row, so once a page's
        rows are yielded they are out, and the page's checkpoint and STATE can follow.
        """
        for page in self.get_pages(context):
            yield from page.records
            with self.run.output_lock:
                self.before_page_state(page)
                self.state_manager.is_flushed = False
                sdk_compat.write_state_message(self)
            self.page_done(page, len(page.records))  # progress lines, as on the fast path
            del page

    def before_page_state(self, page: Page) -> None:
        """Apply a written page's checkpoint and ACTIVATE_VERSION (before its STATE message)."""
        self.rows_emitted += len(page.records) - page.deletes
        if page.checkpoint:
            self.set_state(page.checkpoint)
        if page.activate_version is not None:
            sdk_compat.write_activate_version_message(self, page.activate_version)

    def page_done(self, page: Page, rows: int) -> None:
        """Called after a page's ``rows`` records were written (progress counters)."""
        self.run.summary.stream(self.name).live_rows += rows

    # -- reading and state, for the replication strategies ----------------------------------------
    @property
    def read_state(self) -> dict[str, t.Any]:
        """This stream's state, as loaded when its read began (see :meth:`load_state`)."""
        return self._read_state

    def load_state(self, context: Context | None) -> dict[str, t.Any]:
        """Load the stream's state for a read (under the lock: it may create the bookmark)."""
        with self.run.output_lock:
            self._read_state = self.get_context_state(context)
        return self._read_state

    @property
    def page_budget(self) -> PageBudget:
        """The run's page budget (pages alive at once, all streams together)."""
        return self.run.page_budget

    def page_arrived(self, page: Page) -> None:
        """A page was read: count it for the run summary, and on the fast path have its rows
        keep non-integer numbers as their JSON text (before a strategy decodes them)."""
        self.run.summary.stream(self.name).pages += 1
        if self.number_text and isinstance(page.records, Rows):
            page.records.keep_number_text()

    def fetch(
        self,
        url: str,
        prefer: str | None,
        *,
        required: tuple[str, ...] = (),
        cursor: tuple[str, type] | None = None,
    ) -> Iterator[Page]:
        """One page sequence, the next page fetched while this one is written."""
        for _index, page in fetch_sequences(self, [url], prefer, required=required, cursor=cursor):
            yield page
            del page  # not kept while the next page is awaited (see fetch_sequences)

    def checkpoint(self, **values: t.Any) -> None:
        """Set state keys and write a STATE at once: for phase changes, between pages."""
        with self.run.output_lock:
            self.set_state(values)
            sdk_compat.write_state_message(self)

    def set_state(self, values: Mapping[str, t.Any]) -> None:
        """Set (or, for None, remove) keys of this stream's state; the caller holds the lock."""
        state = self._read_state
        for key, value in values.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        self.state_manager.is_flushed = False

    def set_version(self, version: int | None) -> None:
        """The table version the next RECORD messages carry (None: no version)."""
        sdk_compat.set_stream_version(self, version)

    def activate_version(self, version: int) -> None:
        """Write ACTIVATE_VERSION now (under the lock)."""
        with self.run.output_lock:
            sdk_compat.write_activate_version_message(self, version)

    @property
    @override
    def is_sorted(self) -> bool:
        """Rows come ordered by the replication key, except while sequences interleave."""
        return bool(self.replication_key) and not self.windowed

    def set_windowed(self, windowed: bool) -> None:
        """Say whether several sequences of this stream interleave (first-load time windows):
        the SDK's sort check is off meanwhile (its state manager caches ``is_sorted``)."""
        self.windowed = windowed
        sdk_compat.set_sorted_check(self, self.is_sorted)

    def set_bookmark_cap(self, cap: str | None) -> None:
        """The latest value the bookmark may take while this read runs (None: no limit)."""
        self.cap_in_force = cap

    @override
    def bookmark_record(self, latest_record: dict[str, t.Any]) -> dict[str, t.Any] | None:
        """Advance the bookmark to the row's cursor value, but not past :attr:`cap_in_force`.

        A row whose cursor is null is emitted (first-load windows read them on purpose) and
        leaves the bookmark where it is; the SDK would warn once per such row.
        """
        key = self.replication_key
        value = latest_record.get(key) if key else None
        if key is None or value is None:
            return None
        cap = self.cap_in_force
        if cap is not None and value.__class__ is str and value > cap:
            return {key: cap}
        return latest_record

    def note(self, text: str) -> None:
        """A remark for the run summary's line of this stream."""
        self.run.summary.stream(self.name).note = text


class OptInStream(PagedStream):
    """A stream a plain run leaves out (select it by name), with every column once it is selected.

    A system's metadata streams (labels, definitions) are opt-in: a run without a catalog reads
    tables only. Selecting such a stream by name gets all of its columns, not just its key. Rows
    are counted in :meth:`post_process` (these streams take the SDK's per-record path) for the
    run summary.
    """

    selected_by_default = False

    @property
    @override
    def metadata(self) -> t.Any:
        """Standard metadata, with every column selected by default unless the catalog says."""
        mapping = super().metadata
        if not self.catalog_given or not self.catalog_given.get_stream(self.tap_stream_id):
            for breadcrumb, entry in mapping.items():
                if breadcrumb:
                    entry.selected_by_default = True
        return mapping

    @override
    def post_process(self, row: dict[str, t.Any], context: Context | None = None) -> dict[str, t.Any] | None:
        """Count emitted rows (the summary reports them); the row is emitted as read."""
        self.rows_emitted += 1
        return row


__all__ = ["FULL_TABLE", "OptInStream", "PagedStream"]
