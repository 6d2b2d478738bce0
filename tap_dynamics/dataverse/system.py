"""Dataverse / Dynamics 365 CE (online and on-premises Web API) as a :class:`System`.

``DataverseClient``, EntityDefinitions (or OData v2 EDMX) discovery, the WhoAmI check. An
on-premises server has two endpoints (the Web API, or CRM 2011-2015's OData v2 one): the client
is opened on the one the server has, and its ``settings`` say which; discovery, totals and the
check follow it.
"""

from __future__ import annotations

import typing as t

from tap_dynamics.config.dataverse import WEB_API
from tap_dynamics.dataverse.check import connection_check
from tap_dynamics.dataverse.client import DataverseClient, fetch_totals
from tap_dynamics.dataverse.discovery import discover_streams
from tap_dynamics.onprem.odata2 import is_odata2, open_client
from tap_dynamics.onprem.v2check import onprem_check
from tap_dynamics.onprem.v2streams import discover_v2_streams
from tap_dynamics.systems import System

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from singer_sdk import Stream

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.run import RunContext


def _client(
    settings: Settings, tokens: t.Any, on_retry: Callable[[str | None, float], None] | None = None
) -> DataverseClient:
    """A client for the endpoint the server has (on-premises: probed, see ``open_client``)."""
    _settings, client = open_client(settings, tokens, on_retry)
    return client


def _discover_streams(
    tap: t.Any, settings: Settings, client: DataverseClient, run: RunContext, input_catalog: t.Any
) -> list[Stream]:
    """One stream per table, then the metadata streams (see :mod:`.discovery`), or the OData v2
    endpoint's tables (:mod:`tap_dynamics.onprem.v2streams`)."""
    discover = discover_v2_streams if is_odata2(client) else discover_streams
    return discover(tap, client.settings, client, run, input_catalog)


def _totals(client: DataverseClient, names: Iterable[str]) -> dict[str, int]:
    """``RetrieveTotalRecordCount``; the OData v2 endpoint cannot count rows: no totals."""
    return {} if is_odata2(client) else fetch_totals(client, names)


def _connection_check(settings: Settings, tokens: t.Any | None) -> str:
    """See :mod:`.check`; on-premises without a Web API version set (the endpoint yet to be
    decided, or the OData v2 one), :mod:`tap_dynamics.onprem.v2check`."""
    if settings.dataverse.on_premises and settings.dataverse.endpoint != WEB_API:
        return onprem_check(settings, tokens)
    return connection_check(settings, tokens)


SYSTEM = System(
    title="Dataverse",
    client=_client,
    discover_streams=_discover_streams,
    connection_check=_connection_check,
    totals=_totals,
)
