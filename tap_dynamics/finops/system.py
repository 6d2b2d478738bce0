"""Dynamics 365 Finance & Operations (the ``/data`` OData service) as a :class:`System`."""

from __future__ import annotations

import typing as t

from tap_dynamics.finops.check import connection_check
from tap_dynamics.finops.client import FinOpsClient
from tap_dynamics.finops.discovery import discover_streams

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from singer_sdk import Stream

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.http import HttpTransport
    from tap_dynamics.engine.run import RunContext


class FinanceAndOperations:
    """F&O: ``FinOpsClient``, ``$metadata`` discovery, a companies-and-entities check."""

    title = "Finance & Operations"

    def client(
        self,
        settings: Settings,
        tokens: t.Any,
        on_retry: Callable[[str | None, float], None] | None = None,
    ) -> HttpTransport:
        """A :class:`FinOpsClient` for the environment."""
        return FinOpsClient(settings, tokens, on_retry=on_retry)

    def discover_streams(
        self, tap: t.Any, settings: Settings, client: HttpTransport, run: RunContext, input_catalog: t.Any
    ) -> list[Stream]:
        """One stream per entity set, then ``enum_labels`` and ``entity_definitions``."""
        return discover_streams(tap, settings, t.cast("FinOpsClient", client), run, input_catalog)

    def totals(self, client: HttpTransport, names: Iterable[str]) -> dict[str, int]:
        """No cheap snapshot count in F&O (``/$count`` scans the table): no totals."""
        return {}

    def connection_check(self, settings: Settings, tokens: t.Any | None) -> str:
        """See :mod:`.check`."""
        return connection_check(settings, tokens)


SYSTEM = FinanceAndOperations()
