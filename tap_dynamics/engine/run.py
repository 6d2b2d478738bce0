"""The run context: what every stream of one sync shares, and the loop that syncs them.

- the **output lock**: every line a stream writes to stdout goes through it, so that streams
  synced on several threads interleave whole messages, and a STATE never precedes the records it
  covers;
- the **page budget** (prefetch.py): pages alive at once, all streams together;
- the **run summary** and the **progress reporter** (expected totals come from a hook the system
  provides, e.g. Dataverse's ``RetrieveTotalRecordCount``; the engine knows no product API);
- the **parallel sync** of tables: one page sequence is serial, so with slow pages the only way
  to keep ``max_concurrency`` requests on the wire is to read several tables at once. Streams
  whose every message goes out under the output lock, page by page (``parallel_safe``, see
  engine/stream.py) run on worker threads; records of different tables interleave (valid Singer —
  each stream's SCHEMA comes before its records) and each STATE covers exactly what was written
  before it. Any other stream makes the run serial, as the SDK's loop is.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor, as_completed

from singer_sdk.exceptions import InvalidStreamSortException

from tap_dynamics.engine.collector import few_collections
from tap_dynamics.engine.prefetch import PageBudget
from tap_dynamics.engine.progress import ProgressReporter
from tap_dynamics.engine.summary import FAILED, RunSummary
from tap_dynamics.errors import (
    EXIT_CONFIG,
    EXIT_SERVICE,
    EXIT_STREAMS_FAILED,
    PermissionDenied,
    ServiceError,
    ServiceUnavailable,
    StreamsFailed,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from singer_sdk import Stream

    from tap_dynamics.engine.http import RequestStats

LOGGER = logging.getLogger("tap-dynamics")

# The run's output lock (re-entrant: a page's STATE is written while the page's lock is held).
# One per process, because stdout is one per process.
OUTPUT_LOCK = threading.RLock()

TotalsHook = t.Callable[[list[str]], dict[str, int]]


class RunContext:
    """Shared by every stream of one run: output lock, page budget, summary, progress, the loop."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        progress_interval: float = 0,
        strict: bool = False,
        totals: TotalsHook | None = None,
    ) -> None:
        self.output_lock = OUTPUT_LOCK
        self.max_concurrency = max_concurrency
        self.progress_interval = progress_interval
        self.strict = strict
        self.totals = totals
        self.summary = RunSummary()
        self.gave_up: list[str] = []  # tables the service failed (retry budget spent): exit 4
        self.denied: list[str] = []  # tables refused for a missing permission: exit 2
        # Pages alive at once (buffered, on the wire or being written), all streams together:
        # enough to keep every request slot busy plus one page being emitted; a fixed number,
        # so memory stays flat whatever the table sizes and the number of tables.
        self.page_budget = PageBudget(max_concurrency + 2)

    def fail_table(self, table: str, error: ServiceError, note: str = "") -> None:
        """Record ``table`` as failed — while it syncs, or before its stream exists (its metadata
        failed) — in the summary and in what decides the exit code (see :meth:`exit_code`)."""
        entry = self.summary.stream(table)
        entry.status = FAILED
        entry.note = f"{note}{error}"[:200]
        if isinstance(error, ServiceUnavailable):
            self.gave_up.append(table)
        if isinstance(error, PermissionDenied):
            self.denied.append(table)

    def exit_code(self) -> int:
        """The exit code of a run with failed tables: a missing permission needs a person (2),
        a service that kept failing needs time (4), anything else is 3."""
        if self.denied:
            return EXIT_CONFIG
        return EXIT_SERVICE if self.gave_up else EXIT_STREAMS_FAILED

    def on_retry(self, table: str | None, throttled_seconds: float) -> None:
        """The transport's retry callback: per-table retries and throttled seconds."""
        self.summary.add(table, retries=1, throttled_seconds=throttled_seconds)

    # -- the sync loop ------------------------------------------------------------------------------
    def sync_streams(self, streams: list[Stream], state: Mapping[str, t.Any], stats: RequestStats) -> None:
        """Sync ``streams`` (the selected ones); a failing table is skipped and reported.

        Raises :class:`StreamsFailed` at the end when some tables failed (exit 3, or 4 when the
        service kept failing), at once when ``strict`` is on.
        """
        summary = self.summary

        def sync_one(stream: Stream) -> None:
            entry = summary.stream(stream.name)
            entry.started = time.monotonic()
            try:
                try:
                    stream.sync()
                except ROW_SHAPE_ERRORS as exc:
                    raise table_error(stream.name, exc) from None
            except ServiceError as exc:
                self.fail_table(stream.name, exc)
                if self.strict:
                    raise StreamsFailed(
                        f"table {stream.name} failed and strict is on: {exc}", exit_code=self.exit_code()
                    ) from None
                LOGGER.warning("Table %s failed and was skipped: %s", stream.name, exc)
                return
            finally:
                entry.finished = time.monotonic()
                entry.rows += getattr(stream, "rows_emitted", 0)
                entry.deletes += getattr(stream, "deletes_emitted", 0)
            with self.output_lock:
                stream.finalize_state_progress_markers()

        # Every selected stream's bookmark exists before tables run in parallel: a STATE message
        # serialises the whole tap state, so no thread may add to it outside the output lock
        # ("dictionary changed size during iteration" otherwise, seen on a 1,000-table sync).
        with self.output_lock:
            for stream in streams:
                stream.get_context_state(None)
        reporter = self._start_progress(streams, state)
        try:
            with few_collections():  # decoded pages are thousands of acyclic objects: collector.py
                run_each(streams, sync_one, self.workers(streams))
        finally:
            if reporter is not None:
                reporter.stop()
        LOGGER.info(
            "Run summary (%d requests, %d retries, %.1f s throttled, %.1f s paced):\n%s",
            stats.requests,
            stats.retries,
            stats.throttled_seconds,
            stats.paced_seconds,
            summary.table(),
        )
        if summary.failed:
            names = ", ".join(s.name for s in summary.failed)
            msg = f"{len(summary.failed)} table(s) failed and were skipped: {names} (see the warnings above)"
            raise StreamsFailed(msg, exit_code=self.exit_code())

    def workers(self, streams: Iterable[Stream]) -> int:
        """How many tables to read at once: several only when every one is ``parallel_safe``."""
        if self.max_concurrency <= 1 or not all(getattr(s, "parallel_safe", False) for s in streams):
            return 1
        return self.max_concurrency + 2

    def _start_progress(self, streams: list[Stream], state: Mapping[str, t.Any]) -> ProgressReporter | None:
        """Expected row counts (first loads only) and the periodic progress lines."""
        if not self.progress_interval or not streams:
            return None
        bookmarks = (state or {}).get("bookmarks", {})
        first_loads = [s.name for s in streams if not (bookmarks.get(s.name) or {}).get("replication_key_value")]
        if self.totals is not None and first_loads:
            for name, total in self.totals(first_loads).items():
                self.summary.stream(name).expected = total
        reporter = ProgressReporter(self.summary, self.progress_interval)
        reporter.start()
        return reporter


# Errors a table's rows can cause outside the checks that name them (a value of an unexpected
# type reaching a comparison or a conversion, rows out of cursor order): they fail that table,
# not the run.
ROW_SHAPE_ERRORS = (InvalidStreamSortException, TypeError, ValueError, KeyError, AttributeError)


def table_error(table: str, exc: BaseException) -> ServiceError:
    """One line for a row-shape error of ``table``; the traceback goes to the debug log."""
    LOGGER.debug("Table %s failed", table, exc_info=exc)
    first = (str(exc).splitlines() or [""])[0][:200]
    if isinstance(exc, InvalidStreamSortException):
        msg = f"table {table}: the server returned rows out of cursor order ({first})"
    else:
        msg = (
            f"table {table}: a row had an unexpected shape ({type(exc).__name__}: {first}); "
            "if the org's data looks right, please report it (TAP_DYNAMICS_LOGLEVEL=DEBUG shows where)"
        )
    return ServiceError(msg, table=table)


def run_each(streams: list, sync_one: Callable[[t.Any], None], workers: int) -> None:
    """Run ``sync_one(stream)`` for every stream, ``workers`` at a time, in the given order.

    Exceptions raised by ``sync_one`` propagate (the first one, after the others finished);
    ``sync_one`` is expected to handle per-table failures itself.
    """
    if workers <= 1 or len(streams) <= 1:
        for stream in streams:
            sync_one(stream)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stream") as pool:
        futures = [pool.submit(sync_one, stream) for stream in streams]
        for future in as_completed(futures):
            error = future.exception()
            if error is not None:
                # A run-stopping error (credentials, security): start no further tables.
                for other in futures:
                    other.cancel()
                raise error


__all__ = ["OUTPUT_LOCK", "RunContext", "TotalsHook", "run_each"]
