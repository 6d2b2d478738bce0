"""Microsoft Graph (``edition`` Office365) as a :class:`~tap_dynamics.systems.System`.

``GraphClient``, fixed streams with v1.0 schemas (:mod:`.discovery`), the organization check
(:mod:`.check`). No progress totals: Graph's counts need advanced queries on each collection.
"""

from __future__ import annotations

from tap_dynamics.graph.check import connection_check
from tap_dynamics.graph.client import GraphClient
from tap_dynamics.graph.discovery import discover_streams
from tap_dynamics.systems import System

SYSTEM = System(
    title="Microsoft Graph",
    client=GraphClient,
    discover_streams=discover_streams,
    connection_check=connection_check,
)
