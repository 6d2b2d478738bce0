"""Dataverse discovery: which streams a run has, from the org's metadata or the input catalog.

The Tap delegates ``discover_streams`` here: one :class:`EntityStream` per table (from the input
catalog when given — the per-table column calls are then skipped and the catalog's schemas
trusted — else from ``EntityDefinitions``/``Attributes``, cached on disk when configured), then
the metadata streams.
"""

from __future__ import annotations

import logging
import typing as t

from tap_dynamics.dataverse.metadata import (
    DiscoveredTable,
    discover_tables,
    list_entities,
    select_entities,
)
from tap_dynamics.dataverse.metadata_cache import MetadataCache, entities_fingerprint
from tap_dynamics.dataverse.metadata_streams import METADATA_STREAM_NAMES, METADATA_STREAMS
from tap_dynamics.dataverse.streams import EntityStream, choose_method
from tap_dynamics.errors import ServiceError

if t.TYPE_CHECKING:
    from singer_sdk import Stream

    from tap_dynamics.config import Settings
    from tap_dynamics.dataverse.client import DataverseClient
    from tap_dynamics.engine.run import RunContext

LOGGER = logging.getLogger("tap-dynamics")

_T = t.TypeVar("_T")


def metadata_guard(function: t.Callable[..., _T], *args: t.Any, **kwargs: t.Any) -> _T:
    """Run a discovery step; metadata of an unexpected shape becomes one clear error, not a crash."""
    try:
        return function(*args, **kwargs)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        msg = (
            f"the org's table metadata (EntityDefinitions/Attributes) has an unexpected shape "
            f"({type(exc).__name__}: {str(exc)[:200]}) — is url a Dataverse org behind no "
            "rewriting proxy? If so, please report this"
        )
        raise ServiceError(msg) from None


def discover_streams(
    tap: t.Any,
    settings: Settings,
    client: DataverseClient,
    run: RunContext,
    input_catalog: t.Any,
) -> list[Stream]:
    """One stream per table: from the input catalog when given, else from the org's metadata."""
    entities = metadata_guard(list_entities, client)
    if input_catalog is not None:
        by_name = {e.logical_name: e for e in entities}
        tables: list[DiscoveredTable] = []
        for entry in input_catalog.streams:
            if entry.tap_stream_id in METADATA_STREAM_NAMES:
                continue
            entity = by_name.get(entry.tap_stream_id)
            if entity is None:
                LOGGER.warning("Catalog stream %s is not a table of this org; skipping it", entry.tap_stream_id)
                continue
            tables.append(DiscoveredTable(entity, entry.schema.to_dict()))
    else:
        chosen = select_entities(entities, settings.entities, settings.exclude_entities)
        cache = None
        if settings.metadata_cache_path:
            cache = MetadataCache(
                settings.metadata_cache_path,
                settings.api_base,
                settings.metadata_cache_ttl,
                entities_fingerprint(entities),
            )
        tables = metadata_guard(
            discover_tables,
            client,
            chosen,
            annotations=settings.annotations,
            cache=cache,
            # A table whose metadata could not be read is a failed table of the run (exit 3, or
            # 4 when the service kept failing), not a silent gap in a run that exits 0.
            on_skip=lambda table, error: run.fail_table(table, error, "metadata could not be read: "),
        )
    streams: list[Stream] = [
        EntityStream(
            tap,
            client=client,
            run=run,
            entity=table.entity,
            schema=table.schema,
            method=choose_method(table.entity, table.schema, settings.replication_for(table.entity.logical_name)),
        )
        for table in tables
    ]
    known = [table.entity for table in tables]
    streams += [cls(tap, client=client, run=run, tables=lambda: known) for cls in METADATA_STREAMS]
    return streams


__all__ = ["discover_streams", "metadata_guard"]
