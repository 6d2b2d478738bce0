"""F&O discovery: entity sets from ``$metadata`` (parsed incrementally) or the input catalog."""

from __future__ import annotations

import logging
import typing as t

from tap_dynamics.errors import ConnectionProblem, ServiceError
from tap_dynamics.finops.metadata import (
    Metadata,
    parse_metadata,
    schema_of,
    select_entities,
    select_names,
)
from tap_dynamics.finops.metadata_cache import cached_metadata
from tap_dynamics.finops.metadata_streams import METADATA_STREAM_NAMES, METADATA_STREAMS
from tap_dynamics.finops.streams import EntityStream, choose_method

if t.TYPE_CHECKING:
    from singer_sdk import Stream

    from tap_dynamics.config import Settings
    from tap_dynamics.engine.run import RunContext
    from tap_dynamics.finops.client import FinOpsClient

LOGGER = logging.getLogger("tap-dynamics")


def _no_service(client: FinOpsClient, exc: ServiceError) -> Exception:
    """A 404 under ``/data``: the URL is no F&O environment (one line); anything else as it is."""
    if exc.status != 404:
        return exc
    msg = (
        f"{client.settings.url} has no Finance & Operations OData service at /data (HTTP 404) — set url "
        "to the environment's address as the browser shows it, e.g. https://contoso.operations.dynamics.com"
    )
    return ConnectionProblem(msg)


def read_metadata(client: FinOpsClient) -> Metadata:
    """The environment's ``$metadata``; one line when the URL is not an F&O environment."""
    try:
        document = client.get_xml(client.url("$metadata"))
    except ServiceError as exc:
        raise _no_service(client, exc) from None
    metadata = parse_metadata(document)
    del document
    if not metadata.entities:
        msg = (
            f"{client.settings.url}/data/$metadata lists no entity sets — is url a Finance & Operations "
            "environment (and edition FinOpsOnline/FinOpsOnPremise right)?"
        )
        raise ConnectionProblem(msg)
    return metadata


def service_entity_sets(client: FinOpsClient) -> list[str]:
    """The entity set names of the service document (``/data``): a small JSON list, read every
    run that uses the metadata cache (its fingerprint)."""
    try:
        payload, _ = client.get_json(client.url(""))
    except ServiceError as exc:
        raise _no_service(client, exc) from None
    value = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(value, list):
        msg = f"{client.settings.url}/data answered without a service document — is url a Finance & Operations environment?"
        raise ConnectionProblem(msg)
    return [str(item["name"]) for item in value
            if isinstance(item, dict) and item.get("name") and item.get("kind", "EntitySet") == "EntitySet"]


def load_metadata(client: FinOpsClient, settings: Settings, input_catalog: t.Any) -> Metadata:
    """The metadata a run needs: ``$metadata``, or with ``metadata_cache_path`` the cached
    entity sets of this run (the catalog's, else those ``entities``/``exclude_entities`` pick)."""
    if not settings.metadata_cache_path:
        return read_metadata(client)
    names = service_entity_sets(client)
    if input_catalog is not None:
        known = set(names)
        needed = [e.tap_stream_id for e in input_catalog.streams if e.tap_stream_id in known]
    else:
        needed = select_names(names, settings.entities, settings.exclude_entities)
    return cached_metadata(settings, names, needed, lambda: read_metadata(client))


def discover_streams(
    tap: t.Any, settings: Settings, client: FinOpsClient, run: RunContext, input_catalog: t.Any
) -> list[Stream]:
    """One stream per entity set (selected by ``entities``/``exclude_entities``), then the
    metadata streams."""
    metadata = load_metadata(client, settings, input_catalog)
    if input_catalog is not None:
        tables = []
        for entry in input_catalog.streams:
            if entry.tap_stream_id in METADATA_STREAM_NAMES:
                continue
            entity = metadata.entities.get(entry.tap_stream_id)
            if entity is None:
                LOGGER.warning("Catalog stream %s is not an entity set of this environment; skipping it",
                               entry.tap_stream_id)
                continue
            tables.append((entity, entry.schema.to_dict()))
    else:
        chosen = select_entities(metadata.entities.values(), settings.entities, settings.exclude_entities)
        tables = [(entity, schema_of(entity, metadata.enums)) for entity in chosen]
    streams: list[Stream] = [
        EntityStream(
            tap, client=client, run=run, entity=entity, schema=schema,
            method=choose_method(entity, schema, settings.replication_for(entity.entity_set.lower())),
        )
        for entity, schema in tables
    ]
    known = [entity for entity, _schema in tables]
    streams += [cls(tap, client=client, run=run, entities=known, metadata=metadata) for cls in METADATA_STREAMS]
    return streams


__all__ = ["discover_streams", "load_metadata", "read_metadata"]
