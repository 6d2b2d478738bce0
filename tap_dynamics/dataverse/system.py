"""Dataverse / Dynamics 365 CE (online and on-premises Web API) as a :class:`System`."""

from __future__ import annotations

import typing as t

from tap_dynamics.dataverse.check import connection_check
from tap_dynamics.dataverse.client import DataverseClient, fetch_totals
from tap_dynamics.dataverse.discovery import discover_streams

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from singer_sdk import Stream

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.http import HttpTransport
    from tap_dynamics.engine.run import RunContext


class Dataverse:
    """The Web API system: ``DataverseClient``, EntityDefinitions discovery, WhoAmI check."""

    title = "Dataverse"

    def client(
        self,
        settings: Settings,
        tokens: t.Any,
        on_retry: Callable[[str | None, float], None] | None = None,
    ) -> HttpTransport:
        """A :class:`DataverseClient` for the org."""
        return DataverseClient(settings, tokens, on_retry=on_retry)

    def discover_streams(
        self,
        tap: t.Any,
        settings: Settings,
        client: HttpTransport,
        run: RunContext,
        input_catalog: t.Any,
    ) -> list[Stream]:
        """One stream per table, then the metadata streams (see :mod:`.discovery`)."""
        return discover_streams(tap, settings, t.cast("DataverseClient", client), run, input_catalog)

    def totals(self, client: HttpTransport, names: Iterable[str]) -> dict[str, int]:
        """``RetrieveTotalRecordCount``."""
        return fetch_totals(client, names)

    def connection_check(self, settings: Settings, tokens: t.Any | None) -> str:
        """See :mod:`.check`."""
        return connection_check(settings, tokens)


SYSTEM = Dataverse()
