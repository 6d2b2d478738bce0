"""tap-dynamics: the Tap class (settings, discovery, the sync loop) and the command line.

Discovery and the check are the system's (tap_dynamics/systems.py picks it from the settings); the sync loop is the engine's
run context (tap_dynamics/engine/run.py). A table that fails during a sync is skipped with a warning and listed at the end, and the
run exits with :data:`~tap_dynamics.errors.EXIT_STREAMS_FAILED`; problems a person must fix
(config, credentials) stop the run at once with one line and :data:`~tap_dynamics.errors.EXIT_CONFIG`.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import typing as t
from functools import cached_property

import click
import simplejson
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import ConfigValidationError

from tap_dynamics.auth import build_token_provider
from tap_dynamics.catalog import catalog_entries, read_catalog, write_catalog
from tap_dynamics.config import CONFIG_SCHEMA, Settings, load_settings, validate_config
from tap_dynamics.engine import override
from tap_dynamics.engine.run import OUTPUT_LOCK, RunContext
from tap_dynamics.engine.sdk_compat import CompatTap, load_json
from tap_dynamics.errors import (
    EXIT_CONFIG,
    EXIT_CRASH,
    ConfigError,
    TapDynamicsError,
)
from tap_dynamics.memory import limit_malloc_arenas
from tap_dynamics.systems import system_for

if t.TYPE_CHECKING:
    from singer_sdk.streams import Stream

    from tap_dynamics.engine.http import HttpTransport
    from tap_dynamics.systems import System

LOGGER = logging.getLogger("tap-dynamics")


class TapDynamics(CompatTap):
    """Singer tap for Microsoft Dynamics: the system's streams on the shared engine."""

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
    def system(self) -> System:
        """The Microsoft system the settings select (``edition``, or inferred from ``url``)."""
        return system_for(self.settings)

    @cached_property
    def run_context(self) -> RunContext:
        """What every stream of the run shares: output lock, page budget, summary, progress."""
        settings = self.settings
        return RunContext(
            max_concurrency=settings.max_concurrency,
            progress_interval=settings.progress_interval,
            strict=settings.strict,
            totals=lambda names: self.system.totals(self.client, names),
        )

    @cached_property
    def client(self) -> HttpTransport:
        """The run's one HTTP client (token cache, connection pools, counters)."""
        return self.system.client(
            self.settings, build_token_provider(self.settings), on_retry=self.run_context.on_retry
        )

    @property
    @override
    def catalog_dict(self) -> dict:
        """The catalog, built once: the SDK builds it for the stream-map setup and again for
        ``--discover``; on a 1,000-table org each build costs seconds and a few hundred MB."""
        if self.input_catalog is None:
            return t.cast("dict", self.catalog.to_dict())
        return super().catalog_dict

    @classmethod
    @override
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
        cls.invoke_plugin(about=about, about_format=about_format)  # --about: print and exit
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
    @override
    def cb_discover(cls, ctx: click.Context, param: click.Option, value: bool) -> None:
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

    @override
    def check_config(self) -> None:
        """The config checked against the tap's schema, as one line naming the setting (exit 2).

        The tap's check rather than the SDK's: half the values may sit in connection_string,
        and the SDK's messages ("… is not valid under any of the given schemas") do not say what
        to fix. Without this, the SDK also logs the problem and exits 1 — the code of a crash.
        """
        # The SDK's own settings (stream_maps, flattening_*, batch_config) join the schema here,
        # as the SDK's check would add them, so that they are judged too.
        self.append_builtin_config(self.config_jsonschema)
        validate_config(self.config)

    @override
    def discover_streams(self) -> list[Stream]:
        """The system's streams (Dataverse's: tap_dynamics/dataverse/discovery.py)."""
        return self.system.discover_streams(self, self.settings, self.client, self.run_context, self.input_catalog)

    @override
    def connection_test(self) -> None:
        """``--test``: the same check as ``tap-dynamics check`` (token, WhoAmI, org name, which
        tables are readable), then the SDK's one-record-per-stream sync with the run's own
        retry budget. A failure raises the one-line error."""
        self.logger.info("%s", self.system.connection_check(self.settings, self.client.tokens))

    @override
    def terminate(self, signum: int) -> None:
        """SIGINT/SIGTERM (Ctrl-C, a scheduler stopping the task): stop at once, not as a success.

        Exit 128 + the signal's number (130, 143), so Airflow or Meltano sees a run that did not
        finish. The output lock is taken first, so no line is cut in half, and stdout is flushed:
        every STATE line written covers only rows written before it, so the next run resumes from
        the last one and reads the rows after it again (at least once, never lost). Worker threads
        are not waited for — a request in flight may take minutes — hence ``os._exit``.
        """
        name = signal.Signals(signum).name
        OUTPUT_LOCK.acquire(timeout=10)  # a worker mid-line finishes it; never wait forever
        try:
            sys.stdout.flush()
        except (OSError, ValueError):  # the reader is gone: nothing more to deliver
            pass
        print(
            f"tap-dynamics: interrupted ({name}) — run it again to resume from the last STATE message",
            file=sys.stderr,
            flush=True,
        )
        os._exit(128 + signum)

    @override
    def sync_selected(self) -> None:
        """Sync every selected stream; a failing table is skipped and reported, not fatal."""
        self.prepare_sync()
        selected = []
        for stream in self.streams.values():
            if not stream.selected and not stream.has_selected_descendents:
                self.logger.info("Skipping deselected stream '%s'.", stream.name)
                continue
            if stream.parent_stream_type:  # synced by its parent, as in the SDK's loop
                continue
            selected.append(stream)
        self.run_context.sync_streams(selected, self.state, self.client.stats)


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
    code = _guarded(_dispatch)
    # The process ends here. The interpreter's last collections would walk every object still
    # alive (the SDK, the streams, their schemas) only to free memory the exit returns anyway:
    # 80-190 ms after a 200k-row sync, 15-30 ms with everything moved out of their reach first.
    # Nothing is skipped: stdout is flushed and atexit handlers run as before.
    gc.freeze()
    sys.exit(code)


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
        print("tap-dynamics: aborted", file=sys.stderr)
        return 130
    except ConfigValidationError as exc:
        print(f"tap-dynamics: error: {_one_line(exc)}", file=sys.stderr)
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
        print(f"tap-dynamics: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tap-dynamics: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        LOGGER.debug("Unexpected error", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"tap-dynamics: internal error ({type(exc).__name__}: {first[:300]}) — please report "
            "it; rerun with TAP_DYNAMICS_LOGLEVEL=DEBUG for details",
            file=sys.stderr,
        )
        return EXIT_CRASH
