"""Dynamics 365 Finance & Operations (the ``/data`` OData service) as a :class:`System`.

``FinOpsClient``, ``$metadata`` discovery (one stream per entity set, then ``enum_labels`` and
``entity_definitions``), a companies-and-entities check. No progress totals: F&O has no cheap
snapshot count (``/$count`` scans the table).
"""

from __future__ import annotations

from tap_dynamics.finops.check import connection_check
from tap_dynamics.finops.client import FinOpsClient
from tap_dynamics.finops.discovery import discover_streams
from tap_dynamics.systems import System

SYSTEM = System(
    title="Finance & Operations",
    client=FinOpsClient,
    discover_streams=discover_streams,
    connection_check=connection_check,
)
