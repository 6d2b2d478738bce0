"""The Dataverse client: the engine's transport with the Dataverse policy, built from settings.

Discovery, the metadata streams and every table stream of a run share one client (token cache,
connection pools, the in-flight cap, the run-wide throttling pause).
"""

from __future__ import annotations

import logging
import typing as t

from tap_dynamics.dataverse.policy import DataversePolicy
from tap_dynamics.transport import SettingsTransport

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.config import Settings
    from tap_dynamics.engine.http import HttpTransport
    from tap_dynamics.engine.policy import ServicePolicy

LOGGER = logging.getLogger("tap-dynamics.progress")


class DataverseClient(SettingsTransport):
    """Authenticated, retrying, origin-locked JSON client for one Dynamics org."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenProvider,
        on_retry: Callable[[str | None, float], None] | None = None,
        *,
        policy: ServicePolicy | None = None,
    ) -> None:
        """``policy``: another endpoint of the same org (the OData v2 one), else the Web API's."""
        super().__init__(policy or DataversePolicy(settings.api_base), settings, tokens, on_retry)


def fetch_totals(client: HttpTransport, tables: Iterable[str]) -> dict[str, int]:
    """Row counts per table from ``RetrieveTotalRecordCount``; {} if the org will not say.

    A snapshot at most a day old, cheap to ask for: the progress reporter's expected totals and
    the first-load window planning's table size.
    """
    names = sorted(set(tables))
    if not names:
        return {}
    quoted = ",".join("'" + name.replace("'", "''") + "'" for name in names)
    try:
        payload, _response = client.get_json(client.url(f"RetrieveTotalRecordCount(EntityNames=[{quoted}])"))
        collection = payload.get("EntityRecordCountCollection") or {}
        keys, values = collection.get("Keys") or [], collection.get("Values") or []
        return {str(k): int(v) for k, v in zip(keys, values, strict=False) if isinstance(v, int) and v >= 0}
    except Exception as exc:  # progress is a nicety; never fail a sync over it
        LOGGER.debug("No total row counts (RetrieveTotalRecordCount failed: %s)", exc)
        return {}


__all__ = ["DataverseClient", "fetch_totals"]
