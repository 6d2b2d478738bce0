"""F&O metadata: the ``/data/$metadata`` CSDL document and the JSON metadata service's bodies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import quoteattr

from .model import ENUMS, NS, Entity

_JSON_TYPES = {"Edm.String": "String", "Edm.Decimal": "Real", "Edm.Int32": "Int32", "Edm.Int64": "Int64",
               "Edm.Double": "Real", "Edm.Boolean": "Boolean", "Edm.DateTimeOffset": "UtcDateTime",
               "Edm.Date": "Date", "Edm.Guid": "Guid"}


def csdl(entities: Iterable[Entity]) -> bytes:
    """The CSDL document: enum types, then entity types with keys, then the container."""
    entities = list(entities)
    parts = ['<?xml version="1.0" encoding="utf-8"?>',
             '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices>',
             f'<Schema Namespace="{NS}" xmlns="http://docs.oasis-open.org/odata/ns/edm">']
    for name, members in ENUMS.items():
        parts.append(f'<EnumType Name="{name}">')
        parts += [f'<Member Name="{m}" Value="{v}" />' for m, v in members]
        parts.append("</EnumType>")
    for e in entities:
        parts.append(f'<EntityType Name="{e.name}"><Key>')
        parts += [f'<PropertyRef Name="{k}" />' for k in e.keys]
        parts.append("</Key>")
        for p in e.props:
            kind = f"{NS}.{p.type}" if p.enum else p.type
            attrs = ' Nullable="false"' if not p.nullable else ""
            if p.max_length:
                attrs += f' MaxLength="{p.max_length}"'
            if p.type == "Edm.Decimal":
                attrs += ' Precision="32" Scale="6"'
            parts.append(f"<Property Name={quoteattr(p.name)} Type=\"{kind}\"{attrs}>"
                         f'<Annotation Term="Microsoft.Dynamics.OData.Core.V1.AX.Label" String="{p.name}" />'
                         "</Property>")
        parts.append(e.extra_xml)
        parts.append("</EntityType>")
    parts.append('<EntityContainer Name="Resources">')
    parts += [f'<EntitySet Name="{e.entity_set}" EntityType="{NS}.{e.name}" />' for e in entities]
    parts.append("</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>")
    return "".join(parts).encode()


def public_entities(entities: Iterable[Entity]) -> list[dict[str, Any]]:
    """``/Metadata/PublicEntities``: each entity with its properties (keys flagged)."""
    return [{
        "Name": e.name, "EntitySetName": e.entity_set, "LabelId": f"@FinOps:{e.name}", "IsReadOnly": False,
        "ConfigurationEnabled": True,
        "Properties": [{"Name": p.name, "TypeName": p.enum or p.type, "DataType": "Enum" if p.enum else
                        _JSON_TYPES.get(p.type, "String"), "LabelId": f"@FinOps:{p.name}",
                        "IsKey": p.name in e.keys, "IsMandatory": not p.nullable, "ConfigurationEnabled": True,
                        "AllowEdit": True, "AllowEditOnCreate": True, "IsDimension": False,
                        "DimensionRelation": "", "IsDynamicDimension": False, "DimensionLegalEntityProperty": "",
                        "DimensionTypeProperty": ""} for p in e.props],
        "NavigationProperties": [], "PropertyGroups": [], "Actions": [],
    } for e in entities]


def public_enumerations() -> list[dict[str, Any]]:
    """``/Metadata/PublicEnumerations``: members with values and label ids."""
    return [{"Name": name, "LabelId": f"@FinOps:{name}",
             "Members": [{"Name": m, "Value": v, "LabelId": f"@FinOps:{m}", "ConfigurationEnabled": True}
                         for m, v in members]}
            for name, members in ENUMS.items()]
