"""Dataverse / Dynamics 365 CE (online and on-premises Web API) as a :class:`System`."""

from __future__ import annotations

import typing as t

from tap_dynamics.config.dataverse import WEB_API
from tap_dynamics.dataverse.check import connection_check
from tap_dynamics.dataverse.client import DataverseClient, fetch_totals
from tap_dynamics.dataverse.discovery import discover_streams
from tap_dynamics.onprem.odata2 import is_odata2, open_client
from tap_dynamics.onprem.v2check import onprem_check
from tap_dynamics.onprem.v2streams import discover_v2_streams

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from singer_sdk import Stream

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.http import HttpTransport
    from tap_dynamics.engine.run import RunContext


class Dataverse:
    """Dataverse: ``DataverseClient``, EntityDefinitions (or OData v2 EDMX) discovery, WhoAmI check."""

    title = "Dataverse"

    def client(
        self,
        settings: Settings,
        tokens: t.Any,
        on_retry: Callable[[str | None, float], None] | None = None,
    ) -> HttpTransport:
        """A :class:`DataverseClient` for the endpoint the server has (on-premises: the Web API, or
        CRM 2011-2015's OData v2 endpoint; the client's ``settings`` say which)."""
        _settings, client = open_client(settings, tokens, on_retry)
        return client

    def discover_streams(
        self,
        tap: t.Any,
        settings: Settings,
        client: HttpTransport,
        run: RunContext,
        input_catalog: t.Any,
    ) -> list[Stream]:
        """One stream per table, then the metadata streams (see :mod:`.discovery`), or the OData v2
        endpoint's tables (:mod:`tap_dynamics.onprem.v2streams`)."""
        dataverse = t.cast("DataverseClient", client)
        if is_odata2(dataverse):
            return discover_v2_streams(tap, dataverse.settings, dataverse, run, input_catalog)
        return discover_streams(tap, dataverse.settings, dataverse, run, input_catalog)

    def totals(self, client: HttpTransport, names: Iterable[str]) -> dict[str, int]:
        """``RetrieveTotalRecordCount``; the OData v2 endpoint cannot count rows: no totals."""
        if is_odata2(t.cast("DataverseClient", client)):
            return {}
        return fetch_totals(client, names)

    def connection_check(self, settings: Settings, tokens: t.Any | None) -> str:
        """See :mod:`.check`; on-premises without a Web API version set (the endpoint yet to be
        decided, or the OData v2 one), :mod:`tap_dynamics.onprem.v2check`."""
        if settings.dataverse.on_premises and settings.dataverse.endpoint != WEB_API:
            return onprem_check(settings, tokens)
        return connection_check(settings, tokens)


SYSTEM = Dataverse()
