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
import typing as t
from functools import cached_property

import click
from singer_sdk import Tap
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import ConfigValidationError

from tap_dynamics.auth import build_token_provider
from tap_dynamics.client import DataverseClient
from tap_dynamics.dataverse.metadata import (
    DiscoveredTable,
    discover_tables,
    list_entities,
    select_entities,
)
from tap_dynamics.dataverse.streams import EntityStream
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
from tap_dynamics.settings import CONFIG_SCHEMA, Settings, load_settings
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

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's JSON-schema check, reported as our one-line ConfigError (exit 2).

        Without this, the SDK logs the problem and exits 1 — the code that means "crash".
        """
        try:
            return super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            raise ConfigError(_one_line(exc)) from None

    def discover_streams(self) -> list[Stream]:
        """One stream per table: from the input catalog when given, else from the org's metadata."""
        settings = self.settings
        entities = _metadata_guard(list_entities, self.client)
        if self.input_catalog is not None:
            by_name = {e.logical_name: e for e in entities}
            tables: list[DiscoveredTable] = []
            for entry in self.input_catalog.streams:
                entity = by_name.get(entry.tap_stream_id)
                if entity is None:
                    self.logger.warning(
                        "Catalog stream %s is not a table of this org; skipping it", entry.tap_stream_id
                    )
                    continue
                tables.append(DiscoveredTable(entity, entry.schema.to_dict()))
        else:
            tables = _metadata_guard(discover_tables, self.client, select_entities(entities, settings.entities))
        return [
            EntityStream(self, client=self.client, entity=table.entity, schema=table.schema)
            for table in tables
        ]

    def sync_all(self) -> None:
        """Sync every selected stream; a failing table is skipped and reported, not fatal."""
        self._reset_state_progress_markers()
        self._set_compatible_replication_methods()
        if self.state:
            self._state_writer.write_state(self.state)
        summary = self.client.summary
        gave_up: list[str] = []  # tables the service failed (retry budget spent): exit 4
        for stream in self.streams.values():
            if not stream.selected and not stream.has_selected_descendents:
                self.logger.info("Skipping deselected stream '%s'.", stream.name)
                continue
            try:
                stream.sync()
            except DataverseError as exc:
                if isinstance(exc, ServiceUnavailable):
                    gave_up.append(stream.name)
                entry = summary.stream(stream.name)
                entry.status = FAILED
                entry.note = str(exc)[:200]
                if self.settings.strict:
                    raise StreamsFailed(
                        f"table {stream.name} failed and strict is on: {exc}",
                        exit_code=EXIT_SERVICE if gave_up else EXIT_STREAMS_FAILED,
                    ) from None
                self.logger.warning("Table %s failed and was skipped: %s", stream.name, exc)
                continue
            stream.finalize_state_progress_markers()
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


_T = t.TypeVar("_T")


def _metadata_guard(function: t.Callable[..., _T], *args: t.Any) -> _T:
    """Run a discovery step; metadata of an unexpected shape becomes one clear error, not a crash."""
    try:
        return function(*args)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        msg = (
            f"the org's table metadata (EntityDefinitions/Attributes) has an unexpected shape "
            f"({type(exc).__name__}: {str(exc)[:200]}) — is url a Dataverse org behind no "
            "rewriting proxy? If so, please report this"
        )
        raise DataverseError(msg) from None


def _one_line(exc: ConfigValidationError) -> str:
    details = "; ".join(" ".join(str(e).split()) for e in exc.errors) or str(exc)
    return f"invalid configuration: {details}"


def cli() -> None:
    """Console entry point: the SDK's CLI, with one-line errors and meaningful exit codes."""
    command = TapDynamics.cli
    try:
        result = command.main(prog_name="tap-dynamics", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        print("tap-dynamics: aborted", file=sys.stderr)  # noqa: T201
        sys.exit(130)
    except TapDynamicsError as exc:
        print(f"tap-dynamics: error: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(exc.exit_code)
    except ConfigValidationError as exc:
        print(f"tap-dynamics: error: {_one_line(exc)}", file=sys.stderr)  # noqa: T201
        sys.exit(EXIT_CONFIG)
    except KeyboardInterrupt:
        print("tap-dynamics: interrupted", file=sys.stderr)  # noqa: T201
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last resort: say it is a bug, keep it short
        LOGGER.debug("Unexpected error", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"tap-dynamics: internal error ({type(exc).__name__}: {first[:300]}) — please report "
            "it; rerun with TAP_DYNAMICS_LOGLEVEL=DEBUG for details",
            file=sys.stderr,
        )  # noqa: T201
        sys.exit(EXIT_CRASH)
    if isinstance(result, int) and result:
        sys.exit(result if result != 1 else EXIT_CONFIG)  # the SDK exits 1 on invalid config
