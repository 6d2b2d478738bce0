"""F&O's ``check``: the environment, the identity, its companies and the entities it can read.

``connection available: <environment> as <app>; companies: usmf, usrt, …; can read 12 of 14 tables``
"""

from __future__ import annotations

import typing as t

from tap_dynamics.auth import build_token_provider
from tap_dynamics.checks import TableAccess, probe_tables, service_answers, shown_names, verdict
from tap_dynamics.engine.retry import CHECK_ATTEMPTS
from tap_dynamics.finops.client import FinOpsClient
from tap_dynamics.finops.discovery import load_metadata
from tap_dynamics.finops.metadata import EntityInfo, select_entities

if t.TYPE_CHECKING:
    from tap_dynamics.auth import TokenProvider
    from tap_dynamics.config import Settings


def probe_entities(client: FinOpsClient, settings: Settings, entities: list[EntityInfo]) -> TableAccess:
    """One key of one row of every entity a sync would read (``$top=1``), a few at a time."""

    def probe(entity: EntityInfo) -> None:
        options = {"$select": entity.keys[0] if entity.keys else entity.properties[0].name, "$top": "1"}
        if client.finops.cross_company:
            options["cross-company"] = "true"
        client.get_json(client.url(entity.entity_set, options), table=entity.entity_set)

    return probe_tables(entities, probe, lambda entity: entity.entity_set, settings.max_concurrency)


def connection_check(settings: Settings, tokens: TokenProvider | None = None) -> str:
    """The whole check: the success line, or a one-line error (exit 2, or 4 when the service kept failing)."""
    client = FinOpsClient(settings, tokens or build_token_provider(settings))
    client.MAX_ATTEMPTS = CHECK_ATTEMPTS
    with service_answers():
        # Through metadata_cache_path like discovery: $metadata is tens of MB on a real environment.
        metadata = load_metadata(client, settings, None)
        companies = client.visible_companies() if client.finops.cross_company else ()
        chosen = select_entities(metadata.entities.values(), settings.entities, settings.exclude_entities)
        access = probe_entities(client, settings, chosen)
    company_part = f"companies: {shown_names(companies)}" if companies else "default company only (cross_company false)"
    return verdict(f"{settings.url} as {client.tokens.identity()}; {company_part}; {access.describe()}", access)
