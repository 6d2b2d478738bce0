"""Microsoft Graph (``edition`` Office365) as a :class:`~tap_dynamics.systems.System`."""

from __future__ import annotations

import typing as t

from tap_dynamics.graph.check import connection_check
from tap_dynamics.graph.client import GraphClient
from tap_dynamics.graph.discovery import discover_streams

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from singer_sdk import Stream

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.http import HttpTransport
    from tap_dynamics.engine.run import RunContext


class Graph:
    """Graph v1.0: ``GraphClient``, fixed streams with v1.0 schemas, the organization check."""

    title = "Microsoft Graph"

    def client(
        self,
        settings: Settings,
        tokens: t.Any,
        on_retry: Callable[[str | None, float], None] | None = None,
    ) -> HttpTransport:
        """A :class:`GraphClient` for the tenant's Graph."""
        return GraphClient(settings, tokens, on_retry=on_retry)

    def discover_streams(
        self,
        tap: t.Any,
        settings: Settings,
        client: HttpTransport,
        run: RunContext,
        input_catalog: t.Any,
    ) -> list[Stream]:
        """The chosen streams (see :mod:`.discovery`)."""
        return discover_streams(tap, settings, t.cast("GraphClient", client), run, input_catalog)

    def totals(self, client: HttpTransport, names: Iterable[str]) -> dict[str, int]:
        """Graph's counts need advanced queries on each collection: progress shows no totals."""
        return {}

    def connection_check(self, settings: Settings, tokens: t.Any | None) -> str:
        """See :mod:`.check`."""
        return connection_check(settings, tokens)


SYSTEM = Graph()
