"""Dataverse metadata: which tables exist, which columns the Web API returns, and their JSON types.

Discovery reads ``EntityDefinitions`` once (one unpaged call with a narrow ``$select``) and then,
per selected table, its ``Attributes`` plus the DateTime cast (for DateOnly behaviour) — never one
giant ``$expand=Attributes`` that runs big orgs out of memory. Per-table calls run in parallel
within a small bound. :data:`TYPE_MAP` is the one place where Dataverse types become JSON Schema.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tap_dynamics.errors import ConfigError, DataverseError

if t.TYPE_CHECKING:
    from tap_dynamics.client import DataverseClient

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
DISCOVERY_CONCURRENCY = 4

# Attribute types that are not columns of the entity set (reached through navigation, or not data).
SKIPPED_TYPES = frozenset({"PartyList", "CalendarRules", "ManagedProperty"})
LOOKUP_TYPES = frozenset({"Lookup", "Customer", "Owner"})


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
    "Integer": {"type": "integer"},
    "BigInt": {"type": "integer"},
    "Picklist": {"type": "integer"},
    "State": {"type": "integer"},
    "Status": {"type": "integer"},
    "Decimal": {"type": "number"},
    "Money": {"type": "number"},
    "Double": {"type": "number"},
    "Boolean": {"type": "boolean"},
    "DateTime": {"type": "string", "format": "date-time"},
    "DateOnly": {"type": "string", "format": "date"},
    "MultiSelectPicklistType": {"type": "array", "items": {"type": "integer"}},
}


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
            table_type=str(row.get("TableType") or "Standard"),
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
    url = client.url("EntityDefinitions", {"$select": ",".join(ENTITY_SELECT)})
    payload, _ = client.get_json(url)
    rows = payload.get("value")
    if not isinstance(rows, list):
        msg = "EntityDefinitions returned no 'value' list; is url a Dataverse org?"
        raise DataverseError(msg)
    entities = [e for e in (EntityInfo.from_json(r) for r in rows if isinstance(r, dict)) if e]
    return sorted(entities, key=lambda e: e.logical_name)


def select_entities(entities: list[EntityInfo], patterns: t.Sequence[str] | None) -> list[EntityInfo]:
    """Apply the ``entities`` include globs.

    Special tables (private, virtual, elastic, intersect) are only taken when named exactly, since
    they are rarely wanted and often fail to read. A name that matches nothing is an error: a typo
    must not silently produce an empty catalog.
    """
    if not patterns:
        return [e for e in entities if e.special_kind is None]
    chosen: dict[str, EntityInfo] = {}
    by_name = {e.logical_name: e for e in entities}
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


def fetch_columns(client: DataverseClient, entity: EntityInfo) -> list[ColumnInfo]:
    """Columns of one table: base attribute metadata plus DateTime behaviours (two calls)."""
    base = f"EntityDefinitions(LogicalName='{entity.logical_name}')/Attributes"
    attrs_url = client.url(base, {"$select": ",".join(ATTRIBUTE_SELECT)})
    dates_url = client.url(
        f"{base}/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata",
        {"$select": "LogicalName,DateTimeBehavior"},
    )
    attrs, _ = client.get_json(attrs_url, table=entity.logical_name)
    dates, _ = client.get_json(dates_url, table=entity.logical_name)
    behaviours = {
        str(row.get("LogicalName")): str((row.get("DateTimeBehavior") or {}).get("Value"))
        for row in dates.get("value") or []
        if isinstance(row, dict)
    }
    columns: list[ColumnInfo] = []
    unsupported: list[str] = []
    for attr in attrs.get("value") or []:
        if not isinstance(attr, dict):
            continue
        column = column_from_attribute(attr, behaviours)
        if column is not None:
            columns.append(column)
        elif (attr.get("AttributeTypeName") or {}).get("Value") in {"ImageType", "FileType"} and not attr.get("AttributeOf"):
            unsupported.append(str(attr.get("LogicalName")))
    if unsupported:
        LOGGER.info(
            "Table %s: file/image columns are not extracted: %s",
            entity.logical_name,
            ", ".join(sorted(unsupported)),
        )
    return sorted(columns, key=lambda c: c.name)


def build_schema(entity: EntityInfo, columns: list[ColumnInfo]) -> dict[str, t.Any]:
    """JSON Schema of a table's records. The primary key is the only non-nullable column."""
    properties: dict[str, t.Any] = {}
    for column in columns:
        schema = column.schema if column.name == entity.primary_id else _nullable(column.schema)
        properties[column.name] = schema
    if entity.primary_id not in properties:
        properties[entity.primary_id] = {"type": "string", "format": "uuid"}
    return {"type": "object", "properties": properties}


@dataclass
class DiscoveredTable:
    """A table with its columns, ready to become a stream."""

    entity: EntityInfo
    schema: dict[str, t.Any]


def discover_tables(client: DataverseClient, entities: list[EntityInfo]) -> list[DiscoveredTable]:
    """Read column metadata for ``entities`` in parallel; a table that fails is skipped with a warning."""

    def one(entity: EntityInfo) -> DiscoveredTable | None:
        try:
            columns = fetch_columns(client, entity)
        except DataverseError as exc:
            LOGGER.warning("Skipping table %s: its metadata could not be read (%s)", entity.logical_name, exc)
            return None
        return DiscoveredTable(entity, build_schema(entity, columns))

    if not entities:
        return []
    with ThreadPoolExecutor(max_workers=min(DISCOVERY_CONCURRENCY, len(entities))) as pool:
        results = list(pool.map(one, entities))
    return [r for r in results if r is not None]
