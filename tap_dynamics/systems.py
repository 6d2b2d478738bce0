"""The registry of systems: ``Settings.system`` → the package that reads it.

The Tap and the commands know a system only through :class:`System`: a record of the system's
functions, not a class per system, since what differs between systems is only which functions
those are. Each system's package defines its ``SYSTEM`` in its ``system.py``, registered below by
the name that :mod:`tap_dynamics.config.system` derives from ``edition``/``url``.

Each system's package is imported only when a run reads it, so a Dataverse run pays nothing for
the others' modules.
"""

from __future__ import annotations

import importlib
import typing as t
from dataclasses import dataclass

from tap_dynamics.config.system import DATAVERSE, FINOPS, GRAPH

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from singer_sdk import Stream

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.http import HttpTransport
    from tap_dynamics.engine.run import RunContext


class ClientFactory(t.Protocol):
    """Builds the run's one HTTP client for a system (the engine's transport with its policy)."""

    def __call__(
        self, settings: Settings, tokens: t.Any, on_retry: Callable[[str | None, float], None] | None = None
    ) -> HttpTransport:
        """The client for ``settings``, signing in with ``tokens``."""
        ...


def no_totals(client: HttpTransport, names: Iterable[str]) -> dict[str, int]:
    """For a system without a cheap snapshot count: progress lines show no totals."""
    return {}


@dataclass(frozen=True)
class System:
    """One Microsoft system: its client, its discovery, its progress totals and its check."""

    #: A human name for log lines ("Dataverse", "Finance & Operations", …).
    title: str
    #: The run's one HTTP client for this system (transport with the system's policy).
    client: ClientFactory
    #: ``(tap, settings, client, run, input_catalog)`` → the streams of a run: from the input
    #: catalog when given, else from the service's metadata. ``client`` is the one ``client`` built.
    discover_streams: Callable[[t.Any, Settings, t.Any, RunContext, t.Any], list[Stream]]
    #: ``check``/``--test``: ``(settings, tokens or None)`` → the success line, or raise a one-line
    #: TapDynamicsError.
    connection_check: Callable[[Settings, t.Any], str]
    #: Expected row counts per stream for progress reports; {} when the service won't say.
    totals: Callable[[t.Any, Iterable[str]], dict[str, int]] = no_totals


# system name -> module whose ``SYSTEM`` is its System
_MODULES: dict[str, str] = {
    DATAVERSE: "tap_dynamics.dataverse.system",
    FINOPS: "tap_dynamics.finops.system",
    GRAPH: "tap_dynamics.graph.system",
}


def system_for(settings: Settings) -> System:
    """The system a run's settings select (``load_settings`` has refused any other)."""
    module = importlib.import_module(_MODULES[settings.system])
    return t.cast("System", module.SYSTEM)
