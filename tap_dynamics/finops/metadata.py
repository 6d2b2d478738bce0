"""F&O discovery: the CSDL ``$metadata`` read incrementally, entity sets as streams.

``$metadata`` of a real environment is tens of MB (thousands of entities). It is parsed with
``iterparse`` and every element is dropped as soon as it has been read: what stays is one small
record per entity type (name, key, properties as tuples) and the enum types' members, never the
document's tree. JSON Schemas are built only for the entity sets a run selects.

Types (reference §2): ``Edm.String`` → string (``maxLength``), ``Edm.Int32``/``Int64``/``Int16``/
``Byte`` → integer, ``Edm.Decimal``/``Edm.Double`` → number (decimals arrive exact), ``Edm.Boolean``,
``Edm.Guid`` → uuid, ``Edm.DateTimeOffset`` → date-time, ``Edm.Date`` → date, enum types → string
with the member names as ``enum``; binary and navigation properties are left out.
"""

from __future__ import annotations

import fnmatch
import io
import typing as t
import xml.etree.ElementTree as ET  # bodies declaring a DTD or entities are refused (parse_metadata)
from dataclasses import dataclass

from tap_dynamics.errors import ConfigError, ConnectionProblem

COMPANY_COLUMN = "dataAreaId"
# Properties F&O stamps on change, in the order they are preferred as the default cursor.
CURSOR_NAMES = ("ModifiedDateTime", "ModifiedDateTime1")

_SIMPLE: dict[str, dict[str, t.Any]] = {
    "Edm.Int16": {"type": "integer"},
    "Edm.Int32": {"type": "integer"},
    "Edm.Int64": {"type": "integer"},
    "Edm.Byte": {"type": "integer"},
    "Edm.Decimal": {"type": "number"},
    "Edm.Double": {"type": "number"},
    "Edm.Single": {"type": "number"},
    "Edm.Boolean": {"type": "boolean"},
    "Edm.Guid": {"type": "string", "format": "uuid"},
    "Edm.DateTimeOffset": {"type": "string", "format": "date-time"},
    "Edm.Date": {"type": "string", "format": "date"},
    "Edm.TimeOfDay": {"type": "string", "format": "time"},
}
_LEFT_OUT = ("Edm.Binary", "Edm.Stream", "Edm.Geography", "Edm.Geometry")


@dataclass(frozen=True)
class Property:
    name: str
    type: str  # Edm.* or the qualified enum type
    nullable: bool
    max_length: int | None


@dataclass(frozen=True)
class EntityInfo:
    """One entity set: its public collection name, entity type, key (CSDL order) and properties."""

    entity_set: str
    type_name: str
    keys: tuple[str, ...]
    properties: tuple[Property, ...]

    @property
    def company_specific(self) -> bool:
        """Has ``dataAreaId``: read per company (shared entities have none)."""
        return any(p.name == COMPANY_COLUMN for p in self.properties)

    @property
    def default_cursor(self) -> str | None:
        """``ModifiedDateTime`` (or ``ModifiedDateTime1``) when it is a DateTimeOffset."""
        types = {p.name: p.type for p in self.properties}
        return next((n for n in CURSOR_NAMES if types.get(n) == "Edm.DateTimeOffset"), None)


@dataclass(frozen=True)
class Metadata:
    entities: dict[str, EntityInfo]  # by entity set
    enums: dict[str, tuple[tuple[str, int], ...]]  # qualified enum type -> (member, value)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_metadata(document: bytes) -> Metadata:
    """The entity sets and enum types of a CSDL document, parsed incrementally.

    A document that declares a DTD or entities is refused before parsing: CSDL has none, and
    entity expansion is how an XML body makes a parser blow up (the OData v2 EDMX reader refuses
    them too).
    """
    head = document[:4096].upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        msg = "the environment's $metadata declares a DTD or entities; refusing to read it"
        raise ConnectionProblem(msg)
    enums: dict[str, tuple[tuple[str, int], ...]] = {}
    types: dict[str, tuple[tuple[str, ...], tuple[Property, ...]]] = {}
    sets: dict[str, str] = {}
    namespace = ""
    members: list[tuple[str, int]] = []
    keys: list[str] = []
    props: list[Property] = []
    try:
        for event, elem in ET.iterparse(io.BytesIO(document), events=("start", "end")):
            tag = _local(elem.tag)
            if event == "start":
                if tag == "Schema":
                    namespace = elem.get("Namespace", "")
                elif tag in ("EntityType", "EnumType"):
                    members, keys, props = [], [], []
                continue
            if tag == "Member":
                members.append((elem.get("Name", ""), int(elem.get("Value", len(members)))))
            elif tag == "PropertyRef":
                keys.append(elem.get("Name", ""))
            elif tag == "Property":
                length = elem.get("MaxLength")
                props.append(Property(
                    elem.get("Name", ""), elem.get("Type", "Edm.String"), elem.get("Nullable", "true") != "false",
                    int(length) if length and length.isdigit() else None,
                ))
            elif tag == "EnumType":
                enums[f"{namespace}.{elem.get('Name')}"] = tuple(members)
            elif tag == "EntityType":
                types[f"{namespace}.{elem.get('Name')}"] = (tuple(keys), tuple(props))
            elif tag == "EntitySet":
                sets[elem.get("Name", "")] = elem.get("EntityType", "")
            elem.clear()  # the document's tree is never kept
    except ET.ParseError as exc:
        msg = f"the environment's $metadata is not valid XML ({exc}) — is url a Finance & Operations environment?"
        raise ConnectionProblem(msg) from None
    entities = {}
    for name, type_name in sets.items():
        found = types.get(type_name)
        if found is not None:
            entities[name] = EntityInfo(name, type_name, found[0], found[1])
    return Metadata(entities, enums)


def select_names(names: t.Iterable[str], include: tuple[str, ...] | None, exclude: tuple[str, ...]) -> list[str]:
    """Entity set names matched by ``entities`` (globs; case-insensitive), minus
    ``exclude_entities``, sorted; a plain name the environment lacks is a config error."""
    by_lower = {name.lower(): name for name in names}
    for pattern in include or ():
        if not any(c in pattern for c in "*?[") and pattern not in by_lower:
            msg = (
                f"setting 'entities' names {pattern!r}, which is no entity set of this environment — "
                "use the public collection name, e.g. CustomersV3 (the service document /data lists them)"
            )
            raise ConfigError(msg)
    return [
        name
        for lowered, name in sorted(by_lower.items())
        if (include is None or any(fnmatch.fnmatchcase(lowered, p) for p in include))
        and not any(fnmatch.fnmatchcase(lowered, p) for p in exclude)
    ]


def select_entities(
    entities: t.Iterable[EntityInfo], include: tuple[str, ...] | None, exclude: tuple[str, ...]
) -> list[EntityInfo]:
    """The entity sets :func:`select_names` picks."""
    by_name = {e.entity_set: e for e in entities}
    return [by_name[name] for name in select_names(by_name, include, exclude)]


def schema_of(entity: EntityInfo, enums: t.Mapping[str, tuple[tuple[str, int], ...]]) -> dict[str, t.Any]:
    """The JSON Schema of an entity set's rows (key columns not null)."""
    properties: dict[str, t.Any] = {}
    for prop in entity.properties:
        kind = prop.type
        if kind in _LEFT_OUT or kind.startswith("Collection("):
            continue
        nullable = prop.nullable and prop.name not in entity.keys
        if kind in enums:
            names: list[t.Any] = [m for m, _v in enums[kind]]
            column: dict[str, t.Any] = {"type": ["string", "null"] if nullable else "string",
                                        "enum": [*names, None] if nullable else names}
        elif kind == "Edm.String" or kind not in _SIMPLE:
            column = {"type": "string"}
            if prop.max_length and kind == "Edm.String":
                column["maxLength"] = prop.max_length
        else:
            column = dict(_SIMPLE[kind])
        if "enum" not in column and nullable:
            column["type"] = [column["type"], "null"]
        properties[prop.name] = column
    return {"type": "object", "properties": properties}


__all__ = [
    "COMPANY_COLUMN", "EntityInfo", "Metadata", "Property", "parse_metadata", "schema_of", "select_entities",
    "select_names",
]
