"""F&O's metadata through the on-disk cache: the next run reads no ``$metadata``.

``$metadata`` is tens of MB on a real environment and every run (discovery, and a sync with its
catalog) needs the selected entities' keys and properties. With ``metadata_cache_path`` set, each
selected entity set is kept in the engine's :class:`~tap_dynamics.engine.metadata_cache.MetadataCache`
(its entity type, key, properties and the enum types they use). A run first reads the service
document (``/data``: the entity set names, a small JSON list) and fingerprints it; when every entity
set it needs has an entry younger than ``metadata_cache_ttl`` under that fingerprint, ``$metadata`` is
not read at all. An entity set added or removed changes the fingerprint (everything is read again);
a property added to an existing entity is picked up when its entry expires.
"""

from __future__ import annotations

import logging
import typing as t

from tap_dynamics.engine.metadata_cache import MetadataCache, fingerprint
from tap_dynamics.finops.metadata import EntityInfo, Metadata, Property

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_dynamics.config import Settings

LOGGER = logging.getLogger("tap-dynamics.discovery")


def entity_entry(entity: EntityInfo, enums: t.Mapping[str, tuple[tuple[str, int], ...]]) -> dict[str, t.Any]:
    """What the cache keeps of an entity set: enough to rebuild its :class:`EntityInfo` and schema."""
    return {
        "type": entity.type_name,
        "keys": list(entity.keys),
        "properties": [[p.name, p.type, p.nullable, p.max_length] for p in entity.properties],
        "enums": {p.type: [list(m) for m in enums[p.type]] for p in entity.properties if p.type in enums},
    }


def entity_from_entry(
    name: str, entry: t.Mapping[str, t.Any]
) -> tuple[EntityInfo, dict[str, tuple[tuple[str, int], ...]]]:
    """The entity set and the enum types it uses, from its entry (KeyError/TypeError/ValueError
    when the entry is not one this version wrote)."""
    properties = tuple(Property(str(p[0]), str(p[1]), bool(p[2]), None if p[3] is None else int(p[3]))
                       for p in entry["properties"])
    enums = {str(k): tuple((str(m[0]), int(m[1])) for m in v) for k, v in entry["enums"].items()}
    return EntityInfo(name, str(entry["type"]), tuple(str(k) for k in entry["keys"]), properties), enums


def cached_metadata(
    settings: Settings,
    names: list[str],
    needed: list[str],
    read: Callable[[], Metadata],
) -> Metadata:
    """The metadata of the ``needed`` entity sets: from the cache when every one of them is fresh
    there (``names``: the service document's entity sets, fingerprinted), else from ``read()``
    (``$metadata``), which then refreshes the cache. Without ``metadata_cache_path``: ``read()``."""
    path = settings.metadata_cache_path
    if not path:
        return read()
    cache = MetadataCache(path, settings.api_base, settings.metadata_cache_ttl, fingerprint(sorted(names)))
    entities: dict[str, EntityInfo] = {}
    enums: dict[str, tuple[tuple[str, int], ...]] = {}
    for name in needed:
        entry = cache.fresh(name)
        if entry is None:
            break
        try:
            entity, used = entity_from_entry(name, entry)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            break
        entities[name] = entity
        enums.update(used)
        cache.hit()
    else:
        LOGGER.info("Metadata cache: all %d entity sets reused from %s ($metadata not read)", len(needed), path)
        return Metadata(entities, enums)
    metadata = read()
    for name in needed:
        found = metadata.entities.get(name)
        if found is not None:
            cache.store(name, entity_entry(found, metadata.enums))
    cache.save(needed)
    return metadata


__all__ = ["cached_metadata", "entity_entry", "entity_from_entry"]
