"""tap-dynamics: the Tap class (settings, discovery, the sync loop) and the command line.

Discovery asks the org which tables exist (``EntityDefinitions``) and reads each selected table's
columns; with ``--catalog`` the per-table column calls are skipped and the catalog's schemas are
trusted. A table that fails during a sync is skipped with a warning and listed at the end, and the
run exits with :data:`~tap_dynamics.errors.EXIT_STREAMS_FAILED`; problems a person must fix
(config, credentials) stop the run at once with one line and :data:`~tap_dynamics.errors.EXIT_CONFIG`.
"""

from __future__ import annotations

import logging
import sys
import time
import typing as t
from functools import cached_property

import click
import simplejson
from singer_sdk import Tap
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import ConfigValidationError, InvalidStreamSortException
from singer_sdk.helpers._util import load_json

from tap_dynamics.auth import build_token_provider
from tap_dynamics.catalog import catalog_entries, read_catalog, write_catalog
from tap_dynamics.client import DataverseClient
from tap_dynamics.config import CONFIG_SCHEMA, Settings, load_settings, validate_config
from tap_dynamics.dataverse.metadata import (
    DiscoveredTable,
    MetadataCache,
    discover_tables,
    entities_fingerprint,
    list_entities,
    select_entities,
)
from tap_dynamics.dataverse.metadata_streams import METADATA_STREAM_NAMES, METADATA_STREAMS
from tap_dynamics.dataverse.streams import EntityStream, choose_method
from tap_dynamics.errors import (
    EXIT_CONFIG,
    EXIT_CRASH,
    EXIT_SERVICE,
    EXIT_STREAMS_FAILED,
    ConfigError,
    DataverseError,
    ServiceUnavailable,
    StreamsFailed,
    TapDynamicsError,
)
from tap_dynamics.fastpath import OUTPUT_LOCK, fast_path_enabled
from tap_dynamics.memory import limit_malloc_arenas
from tap_dynamics.progress import ProgressReporter, fetch_totals, sync_streams
from tap_dynamics.summary import FAILED

if t.TYPE_CHECKING:
    from singer_sdk.streams import Stream

LOGGER = logging.getLogger("tap-dynamics")


class TapDynamics(Tap):
    """Singer tap for Microsoft Dynamics 365 / Dataverse."""

    name = "tap-dynamics"
    package_name = "tap-dynamics"
    dynamic_catalog = True
    config_jsonschema = CONFIG_SCHEMA
    # msgspec writes Decimals as JSON numbers without float rounding, and is fast.
    message_writer_class = MsgSpecWriter

    @cached_property
    def settings(self) -> Settings:
        """Validated settings (raises ConfigError with one line before any network call)."""
        return load_settings(self.config)

    @cached_property
    def client(self) -> DataverseClient:
        """The run's one HTTP client (token cache, connection pools, counters)."""
        return DataverseClient(self.settings, build_token_provider(self.settings))

    @property
    def catalog_dict(self) -> dict:
        """The catalog, built once: the SDK builds it for the stream-map setup and again for
        ``--discover``; on a 1,000-table org each build costs seconds and a few hundred MB."""
        if self.input_catalog is None:
            return t.cast("dict", self.catalog.to_dict())
        return super().catalog_dict

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: t.Any = None,
        state: t.IO[str] | None = None,
        catalog: t.IO[str] | None = None,
    ) -> None:
        """A sync: the SDK's ``invoke``, but ``--catalog`` is read one stream entry at a time.

        The SDK parses the whole file into a dict before building its ``Catalog``; on a
        1,000-table catalog that dict alone is ~190 MB (see :mod:`tap_dynamics.catalog`).
        """
        super(Tap, cls).invoke(about=about, about_format=about_format)  # --about: print and exit
        cls.print_version(print_fn=cls.logger.info)
        text = None if catalog is None else catalog.read()
        parsed = None if text is None else _read_catalog_file(text)
        del text
        tap = cls(
            config=config.config if config is not None else {},
            state=None if state is None else load_json(state.read()),
            catalog=parsed,
            parse_env_config=config.parse_env if config is not None else False,
            validate_config=True,
        )
        del parsed
        tap.sync_all()

    @classmethod
    def cb_discover(cls, ctx: click.Context, param: click.Option, value: bool) -> None:  # noqa: FBT001
        """``--discover``: the SDK's callback, but the catalog is written one stream at a time.

        The SDK materialises the whole catalog (objects, dict, one JSON string) before printing
        it, which set discovery's peak memory on big orgs (see :mod:`tap_dynamics.catalog`). The
        bytes written are the same. ``run_discovery()`` (the Python API) is left as the SDK's.
        """
        if not value:
            return
        config = ctx.params.get("config")
        tap = cls(
            config=config.config if config is not None else {},
            parse_env_config=config.parse_env if config is not None else False,
            validate_config=cls.dynamic_catalog,
            setup_mapper=False,
        )
        streams = tap.streams.values()  # every metadata call happens before the first byte
        write_catalog(catalog_entries(streams), sys.stdout)
        ctx.exit()

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The config checked against the tap's schema, as one line naming the setting (exit 2).

        The tap's check rather than the SDK's: half the values may sit in connection_string,
        and the SDK's messages ("… is not valid under any of the given schemas") do not say what
        to fix. Without this, the SDK also logs the problem and exits 1 — the code of a crash.
        """
        # The SDK's own settings (stream_maps, flattening_*, batch_config) join the schema here,
        # as the SDK's check would add them, so that they are judged too.
        self.append_builtin_config(self.config_jsonschema)
        try:
            validate_config(self.config)
        except ConfigError as exc:
            if raise_errors:
                raise
            return [str(exc)]
        return []

    def discover_streams(self) -> list[Stream]:
        """One stream per table: from the input catalog when given, else from the org's metadata."""
        settings = self.settings
        entities = _metadata_guard(list_entities, self.client)
        if self.input_catalog is not None:
            by_name = {e.logical_name: e for e in entities}
            tables: list[DiscoveredTable] = []
            for entry in self.input_catalog.streams:
                if entry.tap_stream_id in METADATA_STREAM_NAMES:
                    continue
                entity = by_name.get(entry.tap_stream_id)
                if entity is None:
                    self.logger.warning(
                        "Catalog stream %s is not a table of this org; skipping it", entry.tap_stream_id
                    )
                    continue
                tables.append(DiscoveredTable(entity, entry.schema.to_dict()))
        else:
            chosen = select_entities(entities, settings.entities, settings.exclude_entities)
            cache = None
            if settings.metadata_cache_path:
                cache = MetadataCache(
                    settings.metadata_cache_path,
                    settings.api_base,
                    settings.metadata_cache_ttl,
                    entities_fingerprint(entities),
                )
            tables = _metadata_guard(
                discover_tables,
                self.client,
                chosen,
                annotations=settings.annotations,
                cache=cache,
                on_skip=self._metadata_failed,
            )
        streams: list[Stream] = [
            EntityStream(
                self,
                client=self.client,
                entity=table.entity,
                schema=table.schema,
                method=choose_method(
                    table.entity, table.schema, settings.replication_for(table.entity.logical_name)
                ),
            )
            for table in tables
        ]
        known = [table.entity for table in tables]
        streams += [cls(self, client=self.client, tables=lambda: known) for cls in METADATA_STREAMS]
        return streams

    def _metadata_failed(self, table: str, error: DataverseError) -> None:
        """A table whose metadata could not be read: a failed table of the run, not a silent gap."""
        entry = self.client.summary.stream(table)
        entry.status = FAILED
        entry.note = f"metadata could not be read: {error}"[:200]
        if isinstance(error, ServiceUnavailable):
            self._metadata_gave_up.append(table)

    @cached_property
    def _metadata_gave_up(self) -> list[str]:
        """Tables whose metadata the service kept failing (they make the run exit 4, not 3)."""
        return []

    def run_connection_test(self) -> bool:
        """``--test``: the same check as ``tap-dynamics check`` (token, WhoAmI, org name, which
        tables are readable), then the SDK's one-record-per-stream sync with the run's own
        retry budget. A failure raises the one-line error."""
        from tap_dynamics.commands import connection_check

        self.logger.info("%s", connection_check(self.settings, self.client.tokens))
        return super().run_connection_test()

    def sync_all(self) -> None:
        """Sync every selected stream; a failing table is skipped and reported, not fatal."""
        self._reset_state_progress_markers()
        self._set_compatible_replication_methods()
        if self.state:
            self._state_writer.write_state(self.state)
        summary = self.client.summary
        selected = []
        # tables the service failed (retry budget spent): exit 4
        gave_up: list[str] = list(self._metadata_gave_up)
        for stream in self.streams.values():
            if not stream.selected and not stream.has_selected_descendents:
                self.logger.info("Skipping deselected stream '%s'.", stream.name)
                continue
            selected.append(stream)

        def sync_one(stream: Stream) -> None:
            entry = summary.stream(stream.name)
            entry.started = time.monotonic()
            try:
                try:
                    stream.sync()
                except _ROW_SHAPE_ERRORS as exc:
                    raise _table_error(stream.name, exc) from None
            except DataverseError as exc:
                if isinstance(exc, ServiceUnavailable):
                    gave_up.append(stream.name)
                entry.status = FAILED
                entry.note = str(exc)[:200]
                if self.settings.strict:
                    raise StreamsFailed(
                        f"table {stream.name} failed and strict is on: {exc}",
                        exit_code=EXIT_SERVICE if gave_up else EXIT_STREAMS_FAILED,
                    ) from None
                self.logger.warning("Table %s failed and was skipped: %s", stream.name, exc)
                return
            finally:
                entry.finished = time.monotonic()
                entry.rows += getattr(stream, "rows_emitted", 0)
                entry.deletes += getattr(stream, "deletes_emitted", 0)
            with OUTPUT_LOCK:
                stream.finalize_state_progress_markers()

        # Every selected stream's bookmark exists before tables run in parallel: a STATE message
        # serialises the whole tap state, so no thread may add to it outside the output lock
        # ("dictionary changed size during iteration" otherwise, seen on a 1,000-table sync).
        with OUTPUT_LOCK:
            for stream in selected:
                stream.get_context_state(None)
        reporter = self._start_progress(selected)
        try:
            sync_streams(selected, sync_one, self._parallel_streams(selected))
        finally:
            if reporter is not None:
                reporter.stop()
        stats = self.client.stats
        self.logger.info(
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
            raise StreamsFailed(msg, exit_code=EXIT_SERVICE if gave_up else EXIT_STREAMS_FAILED)


    def _parallel_streams(self, streams: list[Stream]) -> int:
        """How many tables to read at once: several only when every one takes the page path.

        Streams on the SDK's per-record path write messages outside the output lock, so they
        are synced one after the other, as before.
        """
        if self.settings.max_concurrency <= 1 or not all(
            isinstance(s, EntityStream) and fast_path_enabled(s, None) for s in streams
        ):
            return 1
        return self.settings.max_concurrency + 2

    def _start_progress(self, streams: list[Stream]) -> ProgressReporter | None:
        """Expected row counts (first loads only) and the periodic progress lines."""
        interval = self.settings.progress_interval
        if not interval or not streams:
            return None
        summary = self.client.summary
        bookmarks = (self.state or {}).get("bookmarks", {})
        first_loads = [s.name for s in streams if not (bookmarks.get(s.name) or {}).get("replication_key_value")]
        for name, total in fetch_totals(self.client, first_loads).items():
            summary.stream(name).expected = total
        reporter = ProgressReporter(summary, interval)
        reporter.start()
        return reporter


_T = t.TypeVar("_T")

# Errors a table's rows can cause outside the checks that name them (a value of an unexpected
# type reaching a comparison or a conversion, rows out of cursor order): they fail that table,
# not the run.
_ROW_SHAPE_ERRORS = (InvalidStreamSortException, TypeError, ValueError, KeyError, AttributeError)


def _table_error(table: str, exc: BaseException) -> DataverseError:
    """One line for a row-shape error of ``table``; the traceback goes to the debug log."""
    LOGGER.debug("Table %s failed", table, exc_info=exc)
    if isinstance(exc, InvalidStreamSortException):
        msg = f"table {table}: the server returned rows out of cursor order ({_first_line(exc)})"
    else:
        msg = (
            f"table {table}: a row had an unexpected shape ({type(exc).__name__}: {_first_line(exc)}); "
            "if the org's data looks right, please report it (TAP_DYNAMICS_LOGLEVEL=DEBUG shows where)"
        )
    return DataverseError(msg, table=table)


def _metadata_guard(function: t.Callable[..., _T], *args: t.Any, **kwargs: t.Any) -> _T:
    """Run a discovery step; metadata of an unexpected shape becomes one clear error, not a crash."""
    try:
        return function(*args, **kwargs)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        msg = (
            f"the org's table metadata (EntityDefinitions/Attributes) has an unexpected shape "
            f"({type(exc).__name__}: {str(exc)[:200]}) — is url a Dataverse org behind no "
            "rewriting proxy? If so, please report this"
        )
        raise DataverseError(msg) from None


def _read_catalog_file(text: str) -> t.Any:
    """The ``--catalog`` file as a ``Catalog``; a broken file is a one-line config error (exit 2)."""
    try:
        return read_catalog(text)
    except simplejson.JSONDecodeError as exc:
        msg = f"the --catalog file is not valid JSON ({_first_line(exc)}); pass the file --discover wrote"
        raise ConfigError(msg) from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        msg = (
            f"the --catalog file is not a Singer catalog ({type(exc).__name__}: {_first_line(exc)}); "
            'it must be {"streams": [{"tap_stream_id": ..., "schema": ..., "metadata": [...]}, ...]}'
            " as --discover writes it"
        )
        raise ConfigError(msg) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


def _one_line(exc: ConfigValidationError) -> str:
    details = "; ".join(" ".join(str(e).split()) for e in exc.errors) or str(exc)
    return f"invalid configuration: {details}"


def cli() -> None:
    """Console entry point: the SDK's CLI and the subcommands, with one-line errors and exit codes."""
    limit_malloc_arenas()  # before any thread starts: see memory.py
    sys.exit(_guarded(_dispatch))


def _dispatch() -> int:
    """``check``/``login`` or the SDK's click command; return the exit code."""
    from tap_dynamics.commands import SUBCOMMANDS, main

    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        return main(sys.argv[1:])
    try:
        result = TapDynamics.cli.main(prog_name="tap-dynamics", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        print("tap-dynamics: aborted", file=sys.stderr)  # noqa: T201
        return 130
    except ConfigValidationError as exc:
        print(f"tap-dynamics: error: {_one_line(exc)}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    if isinstance(result, int) and result:
        return result if result != 1 else EXIT_CONFIG  # the SDK exits 1 on invalid config
    return 0


def _guarded(run: t.Callable[[], int]) -> int:
    """The top-level handler of every command (sync, discovery, ``check``, ``login``).

    A :class:`TapDynamicsError` is its one line and exit code; Ctrl-C is one line and 130;
    anything else is a bug: one line with exit 1 (the traceback only at DEBUG).
    """
    try:
        return run()
    except TapDynamicsError as exc:
        print(f"tap-dynamics: error: {exc}", file=sys.stderr)  # noqa: T201
        return exc.exit_code
    except KeyboardInterrupt:
        print("tap-dynamics: interrupted", file=sys.stderr)  # noqa: T201
        return 130
    except Exception as exc:  # noqa: BLE001 - the last resort: say it is a bug, keep it short
        LOGGER.debug("Unexpected error", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"tap-dynamics: internal error ({type(exc).__name__}: {first[:300]}) — please report "
            "it; rerun with TAP_DYNAMICS_LOGLEVEL=DEBUG for details",
            file=sys.stderr,
        )  # noqa: T201
        return EXIT_CRASH
