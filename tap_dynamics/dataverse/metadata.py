"""Dataverse metadata: which tables exist, which columns the Web API returns, and their JSON types.

Discovery reads ``EntityDefinitions`` once (one unpaged call with a narrow ``$select``) and then,
per selected table, its ``Attributes`` in one call — never one giant ``$expand=Attributes`` that
runs big orgs out of memory. The per-table call has no ``$select`` on purpose: the untyped
``Attributes`` collection only accepts base properties in ``$select``, and DateOnly behaviour lives
on the derived ``DateTimeAttributeMetadata``; without ``$select`` each attribute comes in its derived
type, so one round trip per table is enough (the DateTime cast is only read when a server leaves
``DateTimeBehavior`` out). Per-table calls run in parallel within ``max_concurrency``, and results
are cached on disk (``metadata_cache.MetadataCache``) so scheduled syncs do not rediscover.

:data:`TYPE_MAP` is the one place where Dataverse types become JSON Schema.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tap_dynamics.dataverse.onprem import metadata_select
from tap_dynamics.engine.collector import few_collections
from tap_dynamics.errors import ConfigError, ServiceError

if t.TYPE_CHECKING:
    from tap_dynamics.dataverse.client import DataverseClient

LOGGER = logging.getLogger("tap-dynamics.discovery")

ENTITY_SELECT = (
    "LogicalName",
    "EntitySetName",
    "PrimaryIdAttribute",
    "PrimaryNameAttribute",
    "IsIntersect",
    "IsPrivate",
    "IsLogicalEntity",
    "TableType",
    "ChangeTrackingEnabled",
)
ATTRIBUTE_SELECT = (
    "LogicalName",
    "AttributeType",
    "AttributeTypeName",
    "IsValidForRead",
    "IsValidODataAttribute",
    "AttributeOf",
    "IsPrimaryId",
    "Description",
)
DISCOVERY_CONCURRENCY = 4  # floor; the bound is the `max_concurrency` setting

# Attribute types that are not columns of the entity set (reached through navigation, or not data).
SKIPPED_TYPES = frozenset({"PartyList", "CalendarRules", "ManagedProperty"})
LOOKUP_TYPES = frozenset({"Lookup", "Customer", "Owner"})


INT32 = {"minimum": -(2**31), "maximum": 2**31 - 1}
INT64 = {"minimum": -(2**63), "maximum": 2**63 - 1}


def _nullable(schema: dict[str, t.Any]) -> dict[str, t.Any]:
    return {**schema, "type": [schema["type"], "null"]}


# AttributeType (or AttributeTypeName for Virtual) -> JSON Schema. DateTime is resolved by
# behaviour in `column_schema`; lookups are renamed to `_<name>_value` there.
TYPE_MAP: dict[str, dict[str, t.Any]] = {
    "String": {"type": "string"},
    "Memo": {"type": "string"},
    "EntityName": {"type": "string"},
    "Uniqueidentifier": {"type": "string", "format": "uuid"},
    "Lookup": {"type": "string", "format": "uuid"},
    "Customer": {"type": "string", "format": "uuid"},
    "Owner": {"type": "string", "format": "uuid"},
    # Edm.Int32 / Edm.Int64 bounds: they are the real ranges, and let targets pick INTEGER/BIGINT.
    "Integer": {"type": "integer", **INT32},
    "BigInt": {"type": "integer", **INT64},
    "Picklist": {"type": "integer", **INT32},
    "State": {"type": "integer", **INT32},
    "Status": {"type": "integer", **INT32},
    # Edm.Decimal: parsed as decimal.Decimal (engine.pages.JSON_DECODER) and written by msgspec as the exact
    # digits the server sent, so 0.1 stays 0.1 and 922337203685477.5807 keeps every digit.
    "Decimal": {"type": "number"},
    "Money": {"type": "number"},
    "Double": {"type": "number"},
    "Boolean": {"type": "boolean"},
    # UserLocal (a UTC instant) and TimeZoneIndependent (a wall-clock value with a Z suffix).
    "DateTime": {"type": "string", "format": "date-time"},
    # Edm.Date "YYYY-MM-DD": kept as the string the server sent, never shifted by a time zone.
    "DateOnly": {"type": "string", "format": "date"},
    "MultiSelectPicklistType": {"type": "array", "items": {"type": "integer", **INT32}},
}

# Types whose values Dataverse also returns as an OData.Community.Display.V1.FormattedValue
# annotation (labels, lookup display names, money/date/number text in the user's locale).
FORMATTED_TYPES = frozenset({
    "Picklist", "State", "Status", "Boolean", "MultiSelectPicklistType", "Lookup", "Customer",
    "Owner", "Money", "DateTime", "DateOnly", "Integer", "BigInt", "Decimal", "Double",
})
FORMATTED_VALUE = "OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
ANNOTATIONS_PREFER = f'odata.include-annotations="{FORMATTED_VALUE},{LOOKUP_LOGICAL_NAME}"'
# annotation term -> column-name suffix (see README "Labels and lookup tables" for the why)
ANNOTATION_SUFFIXES = {FORMATTED_VALUE: "__formatted", LOOKUP_LOGICAL_NAME: "__lookuplogicalname"}


@dataclass(frozen=True)
class EntityInfo:
    """What discovery needs to know about one table."""

    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str | None = None
    table_type: str = "Standard"
    is_private: bool = False
    is_intersect: bool = False
    is_logical: bool = False
    change_tracking: bool = False

    @classmethod
    def from_json(cls, row: dict[str, t.Any]) -> EntityInfo | None:
        """Build from an ``EntityDefinitions`` row; None when the table has no entity set."""
        if not row.get("LogicalName") or not row.get("EntitySetName") or not row.get("PrimaryIdAttribute"):
            return None
        return cls(
            logical_name=str(row["LogicalName"]),
            entity_set=str(row["EntitySetName"]),
            primary_id=str(row["PrimaryIdAttribute"]),
            primary_name=row.get("PrimaryNameAttribute"),
            # On-premises has no TableType; a data provider there means a virtual table.
            table_type=str(row.get("TableType") or ("Virtual" if row.get("DataProviderId") else "Standard")),
            is_private=bool(row.get("IsPrivate")),
            is_intersect=bool(row.get("IsIntersect")),
            is_logical=bool(row.get("IsLogicalEntity")),
            change_tracking=bool(row.get("ChangeTrackingEnabled")),
        )

    @property
    def special_kind(self) -> str | None:
        """Why this table is skipped unless named exactly (None for ordinary tables)."""
        if self.is_private:
            return "private"
        if self.table_type == "Virtual":
            return "virtual"
        if self.table_type == "Elastic":
            return "elastic"
        if self.is_intersect:
            return "intersect"
        return None


@dataclass
class ColumnInfo:
    """One Web API column of a table."""

    name: str  # property name in the JSON (``_x_value`` for lookups)
    logical_name: str
    attribute_type: str
    type_key: str  # key into TYPE_MAP
    description: str | None = None
    schema: dict[str, t.Any] = field(default_factory=dict)


def list_entities(client: DataverseClient) -> list[EntityInfo]:
    """All tables of the org (one unpaged call)."""
    url = client.url("EntityDefinitions", {"$select": metadata_select(client.settings, ENTITY_SELECT)})
    payload, _ = client.get_json(url)
    rows = payload.get("value")
    if not isinstance(rows, list):
        msg = "EntityDefinitions returned no 'value' list; is url a Dataverse org?"
        raise ServiceError(msg)
    entities = [e for e in (EntityInfo.from_json(r) for r in rows if isinstance(r, dict)) if e]
    return sorted(entities, key=lambda e: e.logical_name)


def select_entities(
    entities: list[EntityInfo],
    patterns: t.Sequence[str] | None,
    exclude: t.Sequence[str] = (),
) -> list[EntityInfo]:
    """Apply the ``entities`` include globs, then the ``exclude_entities`` globs.

    Special tables (private, virtual, elastic, intersect) are only taken when named exactly, since
    they are rarely wanted and often fail to read. A name that matches nothing is an error: a typo
    must not silently produce an empty catalog. Exclusions win over inclusions (an exact exclude
    name that the org does not have is only a warning: excluding nothing loses no data).
    """
    by_name = {e.logical_name: e for e in entities}
    if not patterns:
        chosen = {e.logical_name: e for e in entities if e.special_kind is None}
    else:
        chosen = {}
        for pattern in patterns:
            if not any(ch in pattern for ch in "*?["):
                if pattern not in by_name:
                    close = difflib.get_close_matches(pattern, list(by_name), n=5, cutoff=0.7)
                    hint = f" (similar: {', '.join(close)})" if close else ""
                    msg = f"setting 'entities' names table {pattern!r}, which the org does not have{hint}"
                    raise ConfigError(msg)
                chosen[pattern] = by_name[pattern]
                continue
            for entity in entities:
                if entity.special_kind is None and fnmatch.fnmatchcase(entity.logical_name, pattern):
                    chosen[entity.logical_name] = entity
    for pattern in exclude:
        if not any(ch in pattern for ch in "*?[") and pattern not in by_name:
            LOGGER.warning("Setting 'exclude_entities' names table %r, which the org does not have", pattern)
        for name in [n for n in chosen if fnmatch.fnmatchcase(n, pattern)]:
            del chosen[name]
    return sorted(chosen.values(), key=lambda e: e.logical_name)


def _label(value: t.Any) -> str | None:
    """The user-localized text of a Label complex value."""
    if not isinstance(value, dict):
        return None
    user = value.get("UserLocalizedLabel")
    if isinstance(user, dict) and user.get("Label"):
        return str(user["Label"])
    for label in value.get("LocalizedLabels") or []:
        if isinstance(label, dict) and label.get("Label"):
            return str(label["Label"])
    return None


def column_from_attribute(attr: dict[str, t.Any], date_behaviours: dict[str, str]) -> ColumnInfo | None:
    """Map one attribute's metadata to a column, or None when the Web API does not return it."""
    logical = attr.get("LogicalName")
    attribute_type = attr.get("AttributeType")
    if not isinstance(logical, str) or not isinstance(attribute_type, str):
        return None
    if attr.get("AttributeOf") or attr.get("IsValidForRead") is False:
        return None
    if attr.get("IsValidODataAttribute") is False or attribute_type in SKIPPED_TYPES:
        return None
    type_key = attribute_type
    if attribute_type == "Virtual":
        type_name = (attr.get("AttributeTypeName") or {}).get("Value")
        if type_name != "MultiSelectPicklistType":
            return None  # ImageType/FileType and other virtual columns: reported by the caller
        type_key = type_name
    elif attribute_type == "DateTime" and date_behaviours.get(logical) == "DateOnly":
        type_key = "DateOnly"
    if type_key not in TYPE_MAP:
        LOGGER.warning("Column %s has unknown type %s; typing it as string", logical, attribute_type)
        type_key = "String"
    name = f"_{logical}_value" if attribute_type in LOOKUP_TYPES else logical
    schema = dict(TYPE_MAP[type_key])
    description = _label(attr.get("Description"))
    if description:
        schema["description"] = description
    return ColumnInfo(name, logical, attribute_type, type_key, description, schema)


def attributes_url(client: DataverseClient, entity: str) -> str:
    """All attributes of one table, each in its derived type (no ``$select``: see module doc)."""
    return client.url(f"EntityDefinitions(LogicalName='{entity}')/Attributes")


def fetch_attributes(client: DataverseClient, entity: str) -> list[dict[str, t.Any]]:
    """The raw attribute metadata of one table (one call, unpaged)."""
    payload, _ = client.get_json(attributes_url(client, entity), table=entity)
    rows = payload.get("value")
    if not isinstance(rows, list):
        msg = f"table {entity}: the Attributes response has no 'value' list"
        raise ServiceError(msg, table=entity)
    return [row for row in rows if isinstance(row, dict)]


def _behaviour(attr: dict[str, t.Any]) -> str | None:
    value = attr.get("DateTimeBehavior")
    if isinstance(value, dict):
        value = value.get("Value")
    return str(value) if value else None


def fetch_columns(client: DataverseClient, entity: EntityInfo) -> list[ColumnInfo]:
    """Columns of one table from its attribute metadata (one call; two if behaviours are missing)."""
    attrs = fetch_attributes(client, entity.logical_name)
    behaviours = {str(a.get("LogicalName")): b for a in attrs if (b := _behaviour(a))}
    missing = [a for a in attrs if a.get("AttributeType") == "DateTime" and str(a.get("LogicalName")) not in behaviours]
    if missing:
        dates_url = client.url(
            f"EntityDefinitions(LogicalName='{entity.logical_name}')/Attributes/"
            "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata",
            {"$select": "LogicalName,DateTimeBehavior"},
        )
        dates, _ = client.get_json(dates_url, table=entity.logical_name)
        for row in dates.get("value") or []:
            if isinstance(row, dict) and (b := _behaviour(row)):
                behaviours[str(row.get("LogicalName"))] = b
    return columns_from_attributes(entity.logical_name, attrs, behaviours)


def columns_from_attributes(
    table: str, attrs: list[dict[str, t.Any]], behaviours: dict[str, str]
) -> list[ColumnInfo]:
    """Map a table's attributes to columns; file/image columns are listed once in the log."""
    columns: list[ColumnInfo] = []
    unsupported: list[str] = []
    for attr in attrs:
        column = column_from_attribute(attr, behaviours)
        if column is not None:
            columns.append(column)
        elif (attr.get("AttributeTypeName") or {}).get("Value") in {"ImageType", "FileType"} and not attr.get("AttributeOf"):
            unsupported.append(str(attr.get("LogicalName")))
    if unsupported:
        LOGGER.info("Table %s: file/image columns are not extracted: %s", table, ", ".join(sorted(unsupported)))
    return sorted(columns, key=lambda c: c.name)


def annotation_columns(column: ColumnInfo) -> dict[str, dict[str, t.Any]]:
    """The extra columns ``annotations`` adds for one column, with their schemas."""
    extra: dict[str, dict[str, t.Any]] = {}
    if column.type_key in FORMATTED_TYPES:
        extra[column.name + ANNOTATION_SUFFIXES[FORMATTED_VALUE]] = {
            "type": ["string", "null"],
            "description": f"Display text of {column.name} (OData FormattedValue annotation)",
        }
    if column.attribute_type in LOOKUP_TYPES:
        extra[column.name + ANNOTATION_SUFFIXES[LOOKUP_LOGICAL_NAME]] = {
            "type": ["string", "null"],
            "description": f"Logical name of the table {column.name} points to (lookuplogicalname annotation)",
        }
    return extra


def build_schema(entity: EntityInfo, columns: list[ColumnInfo], annotations: bool = False) -> dict[str, t.Any]:
    """JSON Schema of a table's records. The primary key is the only non-nullable column.

    With ``annotations``, each column that Dataverse annotates gets its extra columns right after
    it; a generated name that clashes with a real column is left out (the real column wins).
    """
    properties: dict[str, t.Any] = {}
    real = {c.name for c in columns}
    for column in columns:
        schema = column.schema if column.name == entity.primary_id else _nullable(column.schema)
        properties[column.name] = schema
        if annotations and column.name != entity.primary_id:
            for name, extra in annotation_columns(column).items():
                if name in real:
                    LOGGER.warning("Table %s: annotation column %s clashes with a real column; leaving it out", entity.logical_name, name)
                    continue
                properties[name] = extra
    if entity.primary_id not in properties:
        properties[entity.primary_id] = {"type": "string", "format": "uuid"}
    return {"type": "object", "properties": properties}


def is_annotation_column(name: str, properties: t.Mapping[str, t.Any]) -> bool:
    """True for a column ``annotations`` added (never sent in ``$select``)."""
    for suffix in ANNOTATION_SUFFIXES.values():
        if name.endswith(suffix) and name[: -len(suffix)] in properties:
            return True
    return False


def rename_annotations(row: dict[str, t.Any]) -> dict[str, t.Any]:
    """Turn ``<prop>@<term>`` annotation keys into the warehouse-safe columns, in place.

    Known terms become ``<prop>__formatted`` / ``<prop>__lookuplogicalname``; any other
    instance annotation (e.g. ``associatednavigationproperty``) is dropped, as it is not data.
    """
    for key in [k for k in row if "@" in k]:
        value = row.pop(key)
        prop, _, term = key.partition("@")
        suffix = ANNOTATION_SUFFIXES.get(term)
        if suffix and prop:
            row[prop + suffix] = value
    return row


class ColumnCache(t.Protocol):
    """Where discovery keeps columns between runs (``metadata_cache.MetadataCache``)."""

    path: str
    hits: int

    def get(self, table: str) -> list[ColumnInfo] | None:
        """The table's cached columns, or None when absent or stale."""
        ...

    def put(self, table: str, columns: list[ColumnInfo]) -> None:
        """Remember the table's columns."""
        ...

    def save(self, keep: t.Iterable[str]) -> None:
        """Write the cache, keeping only ``keep`` tables."""
        ...


@dataclass
class DiscoveredTable:
    """A table with its columns, ready to become a stream."""

    entity: EntityInfo
    schema: dict[str, t.Any]


def discover_tables(
    client: DataverseClient,
    entities: list[EntityInfo],
    *,
    annotations: bool = False,
    cache: ColumnCache | None = None,
    on_skip: t.Callable[[str, ServiceError], None] | None = None,
) -> list[DiscoveredTable]:
    """Read column metadata for ``entities`` in parallel; a table that fails is skipped with a warning.

    ``on_skip`` hears of each skipped table: a sync reports it as a failed table (exit 3), so a
    table the user named never vanishes from a run that exits 0. Parallelism is bounded by the ``max_concurrency`` setting (the client also enforces it
    globally); only one table's attribute payload per worker is alive at a time.
    """

    def one(entity: EntityInfo) -> DiscoveredTable | None:
        columns = cache.get(entity.logical_name) if cache is not None else None
        if columns is None:
            try:
                columns = fetch_columns(client, entity)
            except ServiceError as exc:
                LOGGER.warning("Skipping table %s: its metadata could not be read (%s)", entity.logical_name, exc)
                if on_skip is not None:
                    on_skip(entity.logical_name, exc)
                return None
            if cache is not None:
                cache.put(entity.logical_name, columns)
        return DiscoveredTable(entity, build_schema(entity, columns, annotations))

    if not entities:
        return []
    workers = max(DISCOVERY_CONCURRENCY, client.settings.max_concurrency)
    with few_collections(), ThreadPoolExecutor(max_workers=min(workers, len(entities))) as pool:
        results = list(pool.map(one, entities))
    if cache is not None:
        if cache.hits:
            LOGGER.info("Metadata cache: %d of %d tables reused from %s", cache.hits, len(entities), cache.path)
        cache.save(e.logical_name for e in entities)
    return [r for r in results if r is not None]
