"""The OData v2 endpoint's tables: EDMX ``$metadata`` → tables, columns and the row conversion.

Why a conversion at all: a warehouse table loaded from a CRM 2013 server and later from the same
organization upgraded to 9.x must have the same columns. So the v2 shapes become the Web API's:

- SchemaName casing (``AccountId``, ``Address1_City``) → the logical name, which in CRM is
  always the SchemaName in lower case (``accountid``, ``address1_city``); entity types the same
  (``Account`` → ``account``), read from the ``<Name>Set`` entity sets;
- ``EntityReference {Id, LogicalName, Name}`` → ``_<lookup>_value`` (the Id), and with
  ``annotations`` its ``__lookuplogicalname`` (LogicalName) and ``__formatted`` (Name) columns;
- ``OptionSetValue {Value}`` → the integer; ``Money {Value}`` (a string) → a lossless number;
- ``Edm.DateTime`` ``/Date(ms)/`` → ISO-8601 UTC; ``Edm.Int64`` and ``Edm.Decimal`` (strings in
  v2 JSON) → integers and lossless numbers.

What v2 does not have is absent rather than guessed: multi-select choices, file and image
columns (all 9.x), date-only behaviour (dates arrive as date-times at midnight UTC), choice
labels, change tracking (no delta links in v2: tables use ``modifiedon`` or a full read).
"""

from __future__ import annotations

import decimal
import logging
import typing as t
import xml.etree.ElementTree as ET  # bodies declaring a DTD or entities are refused (parse_edmx)
from dataclasses import dataclass

import msgspec

from tap_dynamics.dataverse.metadata import INT32, INT64, EntityInfo
from tap_dynamics.engine.formats import v2_datetime
from tap_dynamics.errors import ServiceError

LOGGER = logging.getLogger("tap-dynamics.discovery")

EDM = "{http://schemas.microsoft.com/ado/2008/09/edm}"
EDM_NAMESPACES = (EDM, "{http://schemas.microsoft.com/ado/2007/05/edm}", "{http://schemas.microsoft.com/ado/2006/04/edm}")

Convert = t.Callable[[t.Any], t.Any]


def _decimal(value: t.Any) -> t.Any:
    """Edm.Decimal (a string in v2 JSON) or a JSON number → an exact number.

    On the record path a non-integer JSON number arrives as its exact text (``msgspec.Raw``, see
    ``engine/pages.py``), which is written back verbatim: it stays as it is.
    """
    if value is None or isinstance(value, msgspec.Raw):
        return value
    return decimal.Decimal(str(value))


def _int(value: t.Any) -> int | None:
    """Edm.Int64 (a string in v2 JSON) or a JSON number → int."""
    return None if value is None else int(value)


def _member(name: str, then: Convert | None = None) -> Convert:
    def get(value: t.Any) -> t.Any:
        inner = value.get(name) if isinstance(value, dict) else None
        return inner if then is None or inner is None else then(inner)

    return get


# Edm primitive type -> (JSON Schema, conversion of the served value)
PRIMITIVES: dict[str, tuple[dict[str, t.Any], Convert | None]] = {
    "Edm.Guid": ({"type": "string", "format": "uuid"}, None),
    "Edm.String": ({"type": "string"}, None),
    "Edm.Boolean": ({"type": "boolean"}, None),
    "Edm.Byte": ({"type": "integer", **INT32}, None),
    "Edm.Int16": ({"type": "integer", **INT32}, None),
    "Edm.Int32": ({"type": "integer", **INT32}, None),
    "Edm.Int64": ({"type": "integer", **INT64}, _int),
    "Edm.Decimal": ({"type": "number"}, _decimal),
    "Edm.Double": ({"type": "number"}, _decimal),
    "Edm.Single": ({"type": "number"}, _decimal),
    "Edm.DateTime": ({"type": "string", "format": "date-time"}, v2_datetime),
    "Edm.DateTimeOffset": ({"type": "string", "format": "date-time"}, v2_datetime),
}


@dataclass(frozen=True)
class V2Column:
    """One output column: its name (the Web API's), the v2 property it comes from, its schema,
    and how the served value becomes the column's value."""

    name: str
    source: str  # the SchemaName-cased property ($select, $filter, $orderby)
    schema: dict[str, t.Any]
    convert: Convert | None = None
    annotation: bool = False  # an extra column of a lookup (only with `annotations`)


@dataclass(frozen=True)
class V2Table:
    """A table of the v2 endpoint: the entity (as discovery knows tables) and its columns."""

    entity: EntityInfo
    columns: tuple[V2Column, ...]

    @property
    def by_name(self) -> dict[str, V2Column]:
        return {c.name: c for c in self.columns}

    def schema(self, annotations: bool) -> dict[str, t.Any]:
        """The stream's JSON Schema: every column nullable but the key."""
        properties: dict[str, t.Any] = {}
        for column in self.columns:
            if column.annotation and not annotations:
                continue
            nullable = column.name != self.entity.primary_id
            schema = column.schema
            properties[column.name] = {**schema, "type": [schema["type"], "null"]} if nullable else schema
        return {"type": "object", "properties": properties}

    def conversion(self, annotations: bool) -> t.Callable[[dict[str, t.Any]], dict[str, t.Any]]:
        """One served row → the flat row (only the properties the row carries: ``$select``)."""
        plan = [(c.source, c.name, c.convert) for c in self.columns if annotations or not c.annotation]

        def convert(row: dict[str, t.Any]) -> dict[str, t.Any]:
            out: dict[str, t.Any] = {}
            for source, name, fn in plan:
                if source in row:
                    value = row[source]
                    out[name] = value if fn is None else fn(value)
            return out

        return convert


def _columns(properties: list[tuple[str, str]], namespace: str, table: str) -> list[V2Column]:
    columns: list[V2Column] = []
    skipped: list[str] = []
    for name, edm in properties:
        logical = name.lower()
        if edm in PRIMITIVES:
            schema, convert = PRIMITIVES[edm]
            columns.append(V2Column(logical, name, schema, convert))
        elif edm == f"{namespace}.EntityReference":
            value = f"_{logical}_value"
            columns += [
                V2Column(value, name, {"type": "string", "format": "uuid"}, _member("Id")),
                V2Column(f"{value}__formatted", name, {"type": "string"}, _member("Name"), annotation=True),
                V2Column(f"{value}__lookuplogicalname", name, {"type": "string"}, _member("LogicalName"), annotation=True),
            ]
        elif edm == f"{namespace}.OptionSetValue":
            columns.append(V2Column(logical, name, {"type": "integer", **INT32}, _member("Value", int)))
        elif edm == f"{namespace}.Money":
            columns.append(V2Column(logical, name, {"type": "number"}, _member("Value", _decimal)))
        else:  # BooleanManagedProperty (not data, as on the Web API), binary columns
            skipped.append(name)
    if skipped:
        LOGGER.debug("Table %s: not extracted from the OData v2 endpoint: %s", table, ", ".join(skipped))
    return sorted(columns, key=lambda c: c.name)


def parse_edmx(body: bytes) -> list[V2Table]:
    """Tables of a v2 ``$metadata`` document: entity sets, their keys, properties and types."""
    head = body[:4096].upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        msg = "the OData v2 endpoint's $metadata declares a DTD or entities; refusing to read it"
        raise ServiceError(msg)
    try:
        root = ET.fromstring(body)  # no DTD or entities: checked above
    except ET.ParseError as exc:
        msg = f"the OData v2 endpoint's $metadata is not XML ({exc}) — is url the organization's URL?"
        raise ServiceError(msg) from None
    types: dict[str, tuple[str, str | None, list[tuple[str, str]]]] = {}
    sets: list[tuple[str, str]] = []
    for ns in EDM_NAMESPACES:
        for schema in root.iter(f"{ns}Schema"):
            namespace = schema.get("Namespace", "")
            for entity_type in schema.iter(f"{ns}EntityType"):
                key = entity_type.find(f"{ns}Key/{ns}PropertyRef")
                props = [(p.get("Name", ""), p.get("Type", "")) for p in entity_type.findall(f"{ns}Property")]
                types[f"{namespace}.{entity_type.get('Name')}"] = (
                    namespace, None if key is None else key.get("Name"), props
                )
            for entity_set in schema.iter(f"{ns}EntitySet"):
                sets.append((entity_set.get("Name", ""), entity_set.get("EntityType", "")))
    tables = []
    for set_name, type_name in sets:
        found = types.get(type_name)
        if found is None or not found[1]:
            continue
        namespace, key_name, props = found
        logical = type_name.rpartition(".")[2].lower()
        columns = _columns(props, namespace, logical)
        entity = EntityInfo(logical_name=logical, entity_set=set_name, primary_id=str(key_name).lower())
        tables.append(V2Table(entity, tuple(columns)))
    if not tables and not sets:
        msg = "the OData v2 endpoint's $metadata lists no entity sets — is url the organization's URL?"
        raise ServiceError(msg)
    return sorted(tables, key=lambda table: table.entity.logical_name)


__all__ = ["PRIMITIVES", "V2Column", "V2Table", "parse_edmx"]
