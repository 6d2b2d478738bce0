"""The registry of systems: ``Settings.system`` → the package that reads it.

The Tap and the commands know a system only through :class:`System`; each system's package
implements it in its ``system.py`` as ``SYSTEM``, registered below by the name that
:mod:`tap_dynamics.config.system` derives from ``edition``/``url``.

Each system's package is imported only when a run reads it, so a Dataverse run pays nothing for
the others' modules.
"""

from __future__ import annotations

import importlib
import typing as t

from tap_dynamics.config.system import DATAVERSE, FINOPS, GRAPH

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from singer_sdk import Stream

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.http import HttpTransport
    from tap_dynamics.engine.run import RunContext


class System(t.Protocol):
    """One Microsoft system: its client, its discovery, its progress totals and its check."""

    #: A human name for log lines ("Dataverse", "Finance & Operations", …).
    title: str

    def client(
        self,
        settings: Settings,
        tokens: t.Any,
        on_retry: Callable[[str | None, float], None] | None = None,
    ) -> HttpTransport:
        """The run's one HTTP client for this system (transport with the system's policy)."""
        ...

    def discover_streams(
        self,
        tap: t.Any,
        settings: Settings,
        client: HttpTransport,
        run: RunContext,
        input_catalog: t.Any,
    ) -> list[Stream]:
        """The streams of a run: from the input catalog when given, else from the metadata."""
        ...

    def totals(self, client: HttpTransport, names: Iterable[str]) -> dict[str, int]:
        """Expected row counts per stream for progress reports; {} when the service won't say."""
        ...

    def connection_check(self, settings: Settings, tokens: t.Any | None) -> str:
        """``check``/``--test``: the success line, or raise a one-line TapDynamicsError."""
        ...


# system name -> module whose ``SYSTEM`` implements System
_MODULES: dict[str, str] = {
    DATAVERSE: "tap_dynamics.dataverse.system",
    FINOPS: "tap_dynamics.finops.system",
    GRAPH: "tap_dynamics.graph.system",
}


def system_for(settings: Settings) -> System:
    """The system a run's settings select (``load_settings`` has refused any other)."""
    module = importlib.import_module(_MODULES[settings.system])
    return t.cast("System", module.SYSTEM)
