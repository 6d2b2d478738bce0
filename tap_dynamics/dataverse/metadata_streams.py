"""Metadata streams: what the org's tables, columns, choices and relationships *mean*.

Analysts need labels next to codes and joins between tables; peers give neither (see
``peers.md`` §3). These streams are selectable like any table:

- ``option_set_labels``: one row per (table, column, value, language) for every choice column —
  local and global option sets, state/status, two-option booleans and multi-select choices — in
  every language the org has (``label_languages`` limits it). Join ``account.industrycode`` to
  ``option_set_labels`` on (entity, attribute, value).
- ``entity_definitions`` and ``attribute_definitions``: the org's tables and columns, including the
  column name the tap extracts each attribute as (``_x_value`` for lookups) and its JSON type.
- ``relationships``: one-to-many and many-to-many relationships, so warehouse joins can be generated.

They read the metadata API with the same client (retries, throttling, origin lock) as the tables.
Per-table reads run in parallel within ``max_concurrency``; a table whose metadata cannot be read
is reported (warning, run summary, exit code) after the other tables' rows were emitted.
"""

from __future__ import annotations

import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

from singer_sdk import typing as th

from tap_dynamics.dataverse.metadata import (
    LOOKUP_TYPES,
    _behaviour,
    _label,
    column_from_attribute,
    fetch_attributes,
)
from tap_dynamics.dataverse.onprem import metadata_select
from tap_dynamics.dataverse.streams import DataverseStream
from tap_dynamics.engine import override
from tap_dynamics.engine.stream import OptInStream
from tap_dynamics.errors import ServiceError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_dynamics.dataverse.client import DataverseClient
    from tap_dynamics.dataverse.metadata import EntityInfo
    from tap_dynamics.engine.run import RunContext

NS = "Microsoft.Dynamics.CRM"
# (metadata cast, $expand) per kind of choice column; Boolean option sets have True/FalseOption.
OPTION_SET_CASTS = (
    ("PicklistAttributeMetadata", "OptionSet($select=Name,IsGlobal,Options),GlobalOptionSet($select=Name)"),
    ("MultiSelectPicklistAttributeMetadata", "OptionSet($select=Name,IsGlobal,Options),GlobalOptionSet($select=Name)"),
    ("StateAttributeMetadata", "OptionSet($select=Name,IsGlobal,Options)"),
    ("StatusAttributeMetadata", "OptionSet($select=Name,IsGlobal,Options)"),
    ("BooleanAttributeMetadata", "OptionSet($select=Name,IsGlobal,TrueOption,FalseOption)"),
)
ATTRIBUTE_KIND = {
    "PicklistAttributeMetadata": "Picklist",
    "MultiSelectPicklistAttributeMetadata": "MultiSelectPicklist",
    "StateAttributeMetadata": "State",
    "StatusAttributeMetadata": "Status",
    "BooleanAttributeMetadata": "Boolean",
}


def localized_labels(label: t.Any, languages: tuple[int, ...] | None) -> list[tuple[int, str]]:
    """(language code, text) of every localized label, optionally only the wanted languages."""
    if not isinstance(label, dict):
        return []
    out = []
    for item in label.get("LocalizedLabels") or []:
        if not isinstance(item, dict) or item.get("Label") is None or item.get("LanguageCode") is None:
            continue
        code = int(item["LanguageCode"])
        if languages is None or code in languages:
            out.append((code, str(item["Label"])))
    return out


class MetadataStream(OptInStream, DataverseStream):
    """Base: a fixed-schema stream over the metadata API, counted in the run summary.

    The run loop times every stream and adds its ``rows_emitted`` to the summary; rows are
    counted in :meth:`post_process` (these streams take the SDK's per-record path).
    """

    stream_name: str = ""
    key: tuple[str, ...] = ()
    properties: th.PropertiesList

    def __init__(
        self, tap: t.Any, *, client: DataverseClient, run: RunContext, tables: Callable[[], list[EntityInfo]]
    ) -> None:
        super().__init__(tap, client=client, run=run, name=self.stream_name, schema=self.properties.to_dict())
        self.primary_keys = self.key
        self._tables = tables
        self._failed: list[str] = []

    def per_table(self, fetch: Callable[[EntityInfo], list[dict[str, t.Any]]]) -> Iterator[dict[str, t.Any]]:
        """Run ``fetch`` for every table in parallel (bounded), yield rows in table order, then
        fail the stream if some tables could not be read (their names are in the error)."""
        tables = self._tables()
        self._failed = []

        def guarded(entity: EntityInfo) -> list[dict[str, t.Any]]:
            try:
                return fetch(entity)
            except ServiceError as exc:
                self.logger.warning("%s: metadata of table %s could not be read (%s)", self.name, entity.logical_name, exc)
                self._failed.append(entity.logical_name)
                return []

        if tables:
            workers = min(self.settings.max_concurrency, len(tables))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for rows in pool.map(guarded, tables):
                    yield from rows
        if self._failed:
            msg = f"{self.name}: the metadata of {len(self._failed)} table(s) could not be read: {', '.join(sorted(self._failed))}"
            raise ServiceError(msg)


class OptionSetLabelsStream(MetadataStream):
    """Labels of every choice value, per table, column and language."""

    stream_name = "option_set_labels"
    key = ("entity", "attribute", "value", "language_code")
    properties = th.PropertiesList(
        th.Property("entity", th.StringType, required=True, description="Table logical name"),
        th.Property("attribute", th.StringType, required=True, description="Column logical name"),
        th.Property("attribute_type", th.StringType, description="Picklist, MultiSelectPicklist, State, Status or Boolean"),
        th.Property("option_set", th.StringType, description="Option set name"),
        th.Property("is_global", th.BooleanType, description="True for a global (shared) option set"),
        th.Property("value", th.IntegerType, required=True, description="Stored value (Boolean: 0 = false, 1 = true)"),
        th.Property("label", th.StringType, description="Label text in this language"),
        th.Property("language_code", th.IntegerType, required=True, description="LCID, e.g. 1033 = English (US)"),
        th.Property("state", th.IntegerType, description="Status values: the statecode they belong to"),
    )

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._global_lock = threading.Lock()
        self._globals: dict[str, dict[str, t.Any]] | None = None

    def global_option_sets(self) -> dict[str, dict[str, t.Any]]:
        """All global option sets by name (one call, read only when a column needs it)."""
        with self._global_lock:
            if self._globals is None:
                payload, _ = self.client.get_json(self.client.url("GlobalOptionSetDefinitions"))
                self._globals = {
                    str(o.get("Name")): o for o in payload.get("value") or [] if isinstance(o, dict)
                }
            return self._globals

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """One row per label of every choice column of every discovered table."""
        return self.per_table(self.table_labels)

    def table_labels(self, entity: EntityInfo) -> list[dict[str, t.Any]]:
        languages = self.settings.label_languages
        rows: list[dict[str, t.Any]] = []
        base = f"EntityDefinitions(LogicalName='{entity.logical_name}')/Attributes"
        for cast, expand in OPTION_SET_CASTS:
            url = self.client.url(f"{base}/{NS}.{cast}", {"$select": "LogicalName", "$expand": expand})
            payload, _ = self.client.get_json(url, table=entity.logical_name)
            for attr in payload.get("value") or []:
                if not isinstance(attr, dict):
                    continue
                option_set = attr.get("OptionSet")
                global_ref = attr.get("GlobalOptionSet")
                if not isinstance(option_set, dict) and isinstance(global_ref, dict) and global_ref.get("Name"):
                    option_set = self.global_option_sets().get(str(global_ref["Name"]))
                if not isinstance(option_set, dict):
                    continue
                if cast == "BooleanAttributeMetadata":
                    options = [o for o in (option_set.get("FalseOption"), option_set.get("TrueOption")) if isinstance(o, dict)]
                else:
                    options = [o for o in option_set.get("Options") or [] if isinstance(o, dict)]
                for option in options:
                    if option.get("Value") is None:
                        continue
                    for code, text in localized_labels(option.get("Label"), languages):
                        rows.append({
                            "entity": entity.logical_name,
                            "attribute": attr.get("LogicalName"),
                            "attribute_type": ATTRIBUTE_KIND[cast],
                            "option_set": option_set.get("Name"),
                            "is_global": bool(option_set.get("IsGlobal")),
                            "value": int(option["Value"]),
                            "label": text,
                            "language_code": code,
                            "state": option.get("State"),
                        })
        return rows


ENTITY_FIELDS = {
    "logical_name": "LogicalName",
    "schema_name": "SchemaName",
    "entity_set_name": "EntitySetName",
    "logical_collection_name": "LogicalCollectionName",
    "primary_id_attribute": "PrimaryIdAttribute",
    "primary_name_attribute": "PrimaryNameAttribute",
    "object_type_code": "ObjectTypeCode",
    "table_type": "TableType",
    "ownership_type": "OwnershipType",
    "is_custom_entity": "IsCustomEntity",
    "is_activity": "IsActivity",
    "is_intersect": "IsIntersect",
    "is_private": "IsPrivate",
    "change_tracking_enabled": "ChangeTrackingEnabled",
    "metadata_id": "MetadataId",
}


class EntityDefinitionsStream(MetadataStream):
    """Every table of the org (one unpaged call)."""

    stream_name = "entity_definitions"
    key = ("logical_name",)
    properties = th.PropertiesList(
        th.Property("logical_name", th.StringType, required=True),
        th.Property("schema_name", th.StringType),
        th.Property("entity_set_name", th.StringType, description="Web API entity set (URL segment)"),
        th.Property("logical_collection_name", th.StringType),
        th.Property("primary_id_attribute", th.StringType),
        th.Property("primary_name_attribute", th.StringType),
        th.Property("object_type_code", th.IntegerType),
        th.Property("table_type", th.StringType, description="Standard, Activity, Virtual or Elastic"),
        th.Property("ownership_type", th.StringType),
        th.Property("is_custom_entity", th.BooleanType),
        th.Property("is_activity", th.BooleanType),
        th.Property("is_intersect", th.BooleanType),
        th.Property("is_private", th.BooleanType),
        th.Property("change_tracking_enabled", th.BooleanType),
        th.Property("display_name", th.StringType, description="Display name in the user's language"),
        th.Property("display_collection_name", th.StringType),
        th.Property("description", th.StringType),
        th.Property("metadata_id", th.UUIDType),
    )

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """All tables, with their user-language display names."""
        select = [*ENTITY_FIELDS.values(), "DisplayName", "DisplayCollectionName", "Description"]
        payload, _ = self.client.get_json(self.client.url("EntityDefinitions", {"$select": metadata_select(self.settings, select)}))
        for row in payload.get("value") or []:
            if not isinstance(row, dict) or not row.get("LogicalName"):
                continue
            out = {name: row.get(source) for name, source in ENTITY_FIELDS.items()}
            out["display_name"] = _label(row.get("DisplayName"))
            out["display_collection_name"] = _label(row.get("DisplayCollectionName"))
            out["description"] = _label(row.get("Description"))
            yield out


class AttributeDefinitionsStream(MetadataStream):
    """Every column of every discovered table, and how the tap extracts it."""

    stream_name = "attribute_definitions"
    key = ("entity", "logical_name")
    properties = th.PropertiesList(
        th.Property("entity", th.StringType, required=True),
        th.Property("logical_name", th.StringType, required=True),
        th.Property("schema_name", th.StringType),
        th.Property("column_name", th.StringType, description="Column name in the extracted table (null: not extracted)"),
        th.Property("json_type", th.StringType, description="JSON Schema type/format the tap declares for it"),
        th.Property("attribute_type", th.StringType),
        th.Property("attribute_type_name", th.StringType),
        th.Property("date_time_behavior", th.StringType, description="UserLocal, DateOnly or TimeZoneIndependent"),
        th.Property("targets", th.ArrayType(th.StringType), description="Lookup target tables"),
        th.Property("attribute_of", th.StringType),
        th.Property("is_primary_id", th.BooleanType),
        th.Property("is_primary_name", th.BooleanType),
        th.Property("is_custom_attribute", th.BooleanType),
        th.Property("is_valid_for_read", th.BooleanType),
        th.Property("max_length", th.IntegerType),
        th.Property("precision", th.IntegerType),
        th.Property("display_name", th.StringType),
        th.Property("description", th.StringType),
        th.Property("metadata_id", th.UUIDType),
    )

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Attribute metadata of every discovered table (one call per table)."""
        return self.per_table(self.table_attributes)

    def table_attributes(self, entity: EntityInfo) -> list[dict[str, t.Any]]:
        attrs = fetch_attributes(self.client, entity.logical_name)
        behaviours = {str(a.get("LogicalName")): b for a in attrs if (b := _behaviour(a))}
        rows = []
        for attr in attrs:
            if not attr.get("LogicalName"):
                continue
            column = column_from_attribute(attr, behaviours)
            json_type = None
            if column is not None:
                json_type = str(column.schema.get("type"))
                if column.schema.get("format"):
                    json_type += f" ({column.schema['format']})"
            targets = attr.get("Targets")
            rows.append({
                "entity": entity.logical_name,
                "logical_name": attr.get("LogicalName"),
                "schema_name": attr.get("SchemaName"),
                "column_name": column.name if column else None,
                "json_type": json_type,
                "attribute_type": attr.get("AttributeType"),
                "attribute_type_name": (attr.get("AttributeTypeName") or {}).get("Value"),
                "date_time_behavior": _behaviour(attr),
                "targets": list(targets) if isinstance(targets, list) else None,
                "attribute_of": attr.get("AttributeOf"),
                "is_primary_id": attr.get("IsPrimaryId"),
                "is_primary_name": attr.get("IsPrimaryName"),
                "is_custom_attribute": attr.get("IsCustomAttribute"),
                "is_valid_for_read": attr.get("IsValidForRead"),
                "max_length": attr.get("MaxLength") if isinstance(attr.get("MaxLength"), int) else None,
                "precision": attr.get("Precision") if isinstance(attr.get("Precision"), int) else None,
                "display_name": _label(attr.get("DisplayName")),
                "description": _label(attr.get("Description")),
                "metadata_id": attr.get("MetadataId"),
            })
        return rows


ONE_TO_MANY_SELECT = (
    "SchemaName,ReferencedEntity,ReferencedAttribute,ReferencingEntity,ReferencingAttribute,"
    "ReferencingEntityNavigationPropertyName,IsCustomRelationship"
)
MANY_TO_MANY_SELECT = (
    "SchemaName,Entity1LogicalName,Entity2LogicalName,IntersectEntityName,"
    "Entity1IntersectAttribute,Entity2IntersectAttribute,IsCustomRelationship"
)


class RelationshipsStream(MetadataStream):
    """One-to-many and many-to-many relationships (two unpaged calls)."""

    stream_name = "relationships"
    key = ("schema_name",)
    properties = th.PropertiesList(
        th.Property("schema_name", th.StringType, required=True),
        th.Property("relationship_type", th.StringType, description="OneToMany or ManyToMany"),
        th.Property("referenced_entity", th.StringType, description="OneToMany: the 'one' table"),
        th.Property("referenced_attribute", th.StringType, description="OneToMany: its key column"),
        th.Property("referencing_entity", th.StringType, description="OneToMany: the 'many' table"),
        th.Property("referencing_attribute", th.StringType, description="OneToMany: the lookup attribute"),
        th.Property("referencing_column", th.StringType, description="OneToMany: the lookup's extracted column (_x_value)"),
        th.Property("navigation_property", th.StringType),
        th.Property("intersect_entity", th.StringType, description="ManyToMany: the intersect table"),
        th.Property("entity1", th.StringType),
        th.Property("entity1_intersect_attribute", th.StringType),
        th.Property("entity2", th.StringType),
        th.Property("entity2_intersect_attribute", th.StringType),
        th.Property("is_custom", th.BooleanType),
        th.Property("metadata_id", th.UUIDType),
    )

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Both relationship kinds, through their derived-type casts."""
        url = self.client.url(f"RelationshipDefinitions/{NS}.OneToManyRelationshipMetadata", {"$select": ONE_TO_MANY_SELECT})
        payload, _ = self.client.get_json(url)
        for row in payload.get("value") or []:
            if isinstance(row, dict) and row.get("SchemaName"):
                attribute = row.get("ReferencingAttribute")
                yield {
                    "schema_name": row["SchemaName"],
                    "relationship_type": "OneToMany",
                    "referenced_entity": row.get("ReferencedEntity"),
                    "referenced_attribute": row.get("ReferencedAttribute"),
                    "referencing_entity": row.get("ReferencingEntity"),
                    "referencing_attribute": attribute,
                    "referencing_column": f"_{attribute}_value" if attribute else None,
                    "navigation_property": row.get("ReferencingEntityNavigationPropertyName"),
                    "is_custom": row.get("IsCustomRelationship"),
                    "metadata_id": row.get("MetadataId"),
                }
        url = self.client.url(f"RelationshipDefinitions/{NS}.ManyToManyRelationshipMetadata", {"$select": MANY_TO_MANY_SELECT})
        payload, _ = self.client.get_json(url)
        for row in payload.get("value") or []:
            if isinstance(row, dict) and row.get("SchemaName"):
                yield {
                    "schema_name": row["SchemaName"],
                    "relationship_type": "ManyToMany",
                    "intersect_entity": row.get("IntersectEntityName"),
                    "entity1": row.get("Entity1LogicalName"),
                    "entity1_intersect_attribute": row.get("Entity1IntersectAttribute"),
                    "entity2": row.get("Entity2LogicalName"),
                    "entity2_intersect_attribute": row.get("Entity2IntersectAttribute"),
                    "is_custom": row.get("IsCustomRelationship"),
                    "metadata_id": row.get("MetadataId"),
                }


METADATA_STREAMS = (OptionSetLabelsStream, EntityDefinitionsStream, AttributeDefinitionsStream, RelationshipsStream)
METADATA_STREAM_NAMES = frozenset(cls.stream_name for cls in METADATA_STREAMS)

__all__ = ["LOOKUP_TYPES", "METADATA_STREAMS", "METADATA_STREAM_NAMES", "localized_labels"]
