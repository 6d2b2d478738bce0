"""JSON (``EntityDefinitions``/``Attributes``/option sets) and CSDL (``$metadata``) renderings
of the table definitions in :mod:`tables`.

Why separate: the metadata API is the tap's discovery surface and has its own rules
(base-property-only ``$select`` on untyped ``Attributes``, cast segments for type-specific
properties, option sets only via ``$expand``); keeping it apart from the data path keeps the
hot path in :mod:`dataverse` small.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from . import schema as S  # noqa: N812 - S.NS, S.label: the schema module
from .tables import account_def

BASE_ATTR_PROPS = [
    "MetadataId", "HasChanged", "AttributeOf", "AttributeType", "AttributeTypeName",
    "ColumnNumber", "DeprecatedVersion", "IntroducedVersion", "EntityLogicalName",
    "IsCustomAttribute", "IsPrimaryId", "IsValidODataAttribute", "IsPrimaryName",
    "IsValidForCreate", "IsValidForRead", "IsValidForUpdate", "IsValidForAdvancedFind",
    "IsLogical", "IsManaged", "IsSecured", "IsFilterable", "IsSearchable", "IsRetrievable",
    "IsRequiredForForm", "IsSortableEnabled", "LogicalName", "SchemaName", "ExternalName",
    "SourceType", "AutoNumberFormat", "Description", "DisplayName", "RequiredLevel",
    "IsAuditEnabled", "IsCustomizable", "IsRenameable", "CanBeSecuredForRead",
    "CanBeSecuredForCreate", "CanBeSecuredForUpdate", "IsDataSourceSecret", "Settings",
]

TYPE_PROPS: dict[str, list[str]] = {
    "StringAttributeMetadata": ["MaxLength", "Format", "FormatName", "DatabaseLength", "ImeMode",
                                "IsLocalizable", "YomiOf"],
    "MemoAttributeMetadata": ["MaxLength", "Format", "ImeMode", "IsLocalizable"],
    "IntegerAttributeMetadata": ["MinValue", "MaxValue", "Format"],
    "BigIntAttributeMetadata": ["MinValue", "MaxValue"],
    "DoubleAttributeMetadata": ["Precision", "MinValue", "MaxValue", "ImeMode"],
    "DecimalAttributeMetadata": ["Precision", "MinValue", "MaxValue", "ImeMode"],
    "MoneyAttributeMetadata": ["Precision", "PrecisionSource", "MinValue", "MaxValue",
                               "IsBaseCurrency", "CalculationOf", "ImeMode"],
    "DateTimeAttributeMetadata": ["Format", "DateTimeBehavior", "CanChangeDateTimeBehavior",
                                  "ImeMode", "MinSupportedValue", "MaxSupportedValue"],
    "BooleanAttributeMetadata": ["DefaultValue"],
    "PicklistAttributeMetadata": ["DefaultFormValue"],
    "MultiSelectPicklistAttributeMetadata": ["DefaultFormValue"],
    "StateAttributeMetadata": ["DefaultFormValue"],
    "StatusAttributeMetadata": ["DefaultFormValue"],
    "LookupAttributeMetadata": ["Targets", "Format"],
    "UniqueIdentifierAttributeMetadata": [],
    "EntityNameAttributeMetadata": [],
    "ImageAttributeMetadata": ["IsPrimaryImage", "MaxHeight", "MaxWidth", "MaxSizeInKB",
                               "CanStoreFullImage"],
    "FileAttributeMetadata": ["MaxSizeInKB"],
    "ManagedPropertyAttributeMetadata": [],
}
OPTIONSET_NAV = {"BooleanAttributeMetadata": ["OptionSet"],
                 "PicklistAttributeMetadata": ["OptionSet", "GlobalOptionSet"],
                 "MultiSelectPicklistAttributeMetadata": ["OptionSet", "GlobalOptionSet"],
                 "StateAttributeMetadata": ["OptionSet"],
                 "StatusAttributeMetadata": ["OptionSet"]}


def _managed(value: bool, name: str, can_change: bool = True) -> dict:
    return {"Value": value, "CanBeChanged": can_change, "ManagedPropertyLogicalName": name}


def schema_name(logical: str) -> str:
    if logical.startswith("new_"):
        return "new_" + logical[4:].capitalize()
    return "".join(p[:1].upper() + p[1:] for p in logical.split("_")) if "_" in logical else \
        logical[:1].upper() + logical[1:]


def entity_json(td: S.TableDef) -> dict:
    return {
        "MetadataId": td.metadata_id, "HasChanged": None,
        "LogicalName": td.logical, "SchemaName": td.schema, "EntitySetName": td.entity_set,
        "LogicalCollectionName": td.collection, "CollectionSchemaName": td.schema + "s",
        "PrimaryIdAttribute": td.pk, "PrimaryNameAttribute": td.primary_name,
        "PrimaryImageAttribute": "entityimage" if "entityimage" in td.by_logical else None,
        "ObjectTypeCode": td.otc, "IsIntersect": td.is_intersect, "IsValidForAdvancedFind": True,
        "ChangeTrackingEnabled": td.change_tracking,
        "CanChangeTrackingBeEnabled": _managed(True, "canchangetrackingbeenabled"),
        "IsCustomEntity": td.is_custom, "IsActivity": False, "IsActivityParty": False,
        "IsPrivate": td.is_private, "IsLogicalEntity": False, "IsManaged": True,
        "IsAvailableOffline": True, "IsBusinessProcessEnabled": td.logical != "systemuser",
        "IsAuditEnabled": _managed(True, "canmodifyauditsettings"),
        "IsCustomizable": _managed(True, "iscustomizable"),
        "IsRenameable": _managed(True, "isrenameable"),
        "IsValidForQueue": _managed(False, "canmodifyqueuesettings"),
        "IsRetrieveAuditEnabled": False, "IsRetrieveMultipleAuditEnabled": False,
        "IsElasticTable": td.table_type == "Elastic", "IsSolutionAware": False,
        "IsVirtual": td.table_type == "Virtual",
        "OwnershipType": td.ownership, "TableType": td.table_type, "DataProviderId": td.data_provider,
        "DataSourceId": None, "ExternalName": None, "ExternalCollectionName": None,
        "EntityColor": "#0078D4", "IntroducedVersion": "5.0.0.0", "UsesBusinessDataLabelTable": False,
        "DisplayName": S.label(*td.display, key=td.logical),
        "DisplayCollectionName": S.label(*td.collection_display, key=td.logical + "s"),
        "Description": S.label(td.description, None, key=td.logical + "desc"),
    }


ENTITY_PROPS = list(entity_json(account_def()).keys())


_ATTR_JSON: dict[tuple[str, str, int], dict] = {}


def attr_json(td: S.TableDef, a: S.Attr, col: int) -> dict:
    """An attribute's metadata as served (memoised: metadata is static, and the org-size mode
    serves 150,000 attributes; callers get a shallow copy they may extend)."""
    key = (td.logical, a.logical, col)
    cached = _ATTR_JSON.get(key)
    if cached is None:
        cached = _ATTR_JSON[key] = _attr_json(td, a, col)
    return dict(cached)


def _attr_json(td: S.TableDef, a: S.Attr, col: int) -> dict:
    d = {
        "@odata.type": f"#{S.NS}.{a.md_type}",
        "MetadataId": S.stable_guid("attr", td.logical, a.logical), "HasChanged": None,
        "AttributeOf": a.attribute_of, "AttributeType": a.atype,
        "AttributeTypeName": {"Value": a.type_name}, "ColumnNumber": col,
        "DeprecatedVersion": None, "IntroducedVersion": "5.0.0.0",
        "EntityLogicalName": td.logical, "IsCustomAttribute": a.custom,
        "IsPrimaryId": a.primary_id, "IsValidODataAttribute": a.odata,
        "IsPrimaryName": a.primary_name, "IsValidForCreate": a.odata and a.logical not in (
            "createdon", "modifiedon", "versionnumber"),
        "IsValidForRead": a.readable, "IsValidForUpdate": a.odata and not a.primary_id and
        a.logical not in ("createdon", "modifiedon", "versionnumber"),
        "IsValidForAdvancedFind": _managed(a.odata, "canmodifysearchsettings"),
        "IsLogical": a.logical_attr, "IsManaged": True, "IsSecured": False,
        "IsFilterable": a.odata, "IsSearchable": a.odata, "IsRetrievable": True,
        "IsRequiredForForm": a.primary_name, "IsSortableEnabled": _managed(a.odata, "canmodifyissortablesettings"),
        "LogicalName": a.logical, "SchemaName": schema_name(a.logical), "ExternalName": None,
        "SourceType": 0, "AutoNumberFormat": "", "IsDataSourceSecret": False, "Settings": [],
        "Description": S.label(f"{a.display[0]} of the {td.logical}.", None,
                               key=f"{td.logical}.{a.logical}.d") if a.display[0] else S.EMPTY_LABEL,
        "DisplayName": S.label(*a.display, key=f"{td.logical}.{a.logical}")
        if a.display[0] and not a.attribute_of else S.EMPTY_LABEL,
        "RequiredLevel": _managed("ApplicationRequired" if a.primary_name else "None",
                                  "canmodifyrequirementlevelsettings"),
        "IsAuditEnabled": _managed(True, "canmodifyauditsettings"),
        "IsCustomizable": _managed(True, "iscustomizable"),
        "IsRenameable": _managed(True, "isrenameable"),
        "CanBeSecuredForRead": False, "CanBeSecuredForCreate": False,
        "CanBeSecuredForUpdate": False,
    }
    d.update(a.extra)
    if a.md_type == "LookupAttributeMetadata":
        d["Targets"] = list(a.targets)
    for k in TYPE_PROPS.get(a.md_type, []):
        d.setdefault(k, None)
    return d


def option_json(o: S.Option, kind: str, key: str) -> dict:
    d = {"Value": o.value, "Color": None, "IsManaged": True, "ExternalValue": "",
         "ParentValues": [], "Tag": None, "IsHidden": False, "MetadataId": None,
         "HasChanged": None, "Label": S.label(o.en, o.de, key=f"{key}.{o.value}"),
         "Description": S.EMPTY_LABEL}
    if kind == "State":
        d["@odata.type"] = f"#{S.NS}.StateOptionMetadata"
        d["DefaultStatus"] = o.default_status
        d["InvariantName"] = o.invariant
    elif kind == "Status":
        d["@odata.type"] = f"#{S.NS}.StatusOptionMetadata"
        d["State"] = o.state
        d["TransitionData"] = None
    return d


def optionset_json(os_: S.OptionSetDef) -> dict:
    base = {"MetadataId": S.stable_guid("optionset", os_.name), "HasChanged": None,
            "IsCustomOptionSet": os_.is_global, "IsGlobal": os_.is_global, "IsManaged": True,
            "Name": os_.name, "ExternalTypeName": None,
            "OptionSetType": "Picklist" if os_.kind == "MultiSelectPicklist" else os_.kind,
            "IntroducedVersion": "5.0.0.0", "ParentOptionSetName": None,
            "Description": S.EMPTY_LABEL,
            "DisplayName": S.label(os_.name, None, key="os." + os_.name),
            "IsCustomizable": _managed(True, "iscustomizable")}
    if os_.kind == "Boolean":
        f, t = os_.options
        base["TrueOption"] = option_json(t, "Boolean", os_.name)
        base["FalseOption"] = option_json(f, "Boolean", os_.name)
    else:
        base["Options"] = [option_json(o, os_.kind, os_.name) for o in os_.options]
    return base


# ---------------------------------------------------------------- option sets, relationships

RELATIONSHIP_BASE_PROPS = ["MetadataId", "HasChanged", "SchemaName", "RelationshipType",
                           "IsCustomRelationship", "IsManaged", "IsValidForAdvancedFind",
                           "SecurityTypes", "IntroducedVersion"]
RELATIONSHIP_TYPE_PROPS = {
    "OneToManyRelationshipMetadata": ["ReferencedEntity", "ReferencedAttribute",
                                      "ReferencingEntity", "ReferencingAttribute",
                                      "ReferencedEntityNavigationPropertyName",
                                      "ReferencingEntityNavigationPropertyName", "IsHierarchical"],
    "ManyToManyRelationshipMetadata": ["Entity1LogicalName", "Entity2LogicalName",
                                       "IntersectEntityName", "Entity1IntersectAttribute",
                                       "Entity2IntersectAttribute",
                                       "Entity1NavigationPropertyName",
                                       "Entity2NavigationPropertyName"],
}
OPTIONSET_PROPS = ["MetadataId", "HasChanged", "IsCustomOptionSet", "IsGlobal", "IsManaged",
                   "Name", "ExternalTypeName", "OptionSetType", "IntroducedVersion",
                   "ParentOptionSetName", "Description", "DisplayName", "IsCustomizable",
                   "Options", "TrueOption", "FalseOption"]


def relationship_json(rel: dict, cast: str | None) -> dict:
    """A relationship as served: untyped listings carry the derived ``@odata.type``."""
    return dict(rel)


def select_props(d: dict, select: list[str] | None, allowed: list[str], type_name: str) -> dict:
    """``$select`` for metadata entities: unknown (or not-on-this-type) properties are a 400."""
    if select is None:
        return d
    bad = [x for x in select if x not in allowed]
    if bad:
        raise ValueError(f"Could not find a property named '{bad[0]}' on type '{S.NS}.{type_name}'.")
    out = {k: d[k] for k in ("@odata.type",) if k in d}
    out.update({x: d.get(x) for x in select})
    out["MetadataId"] = d["MetadataId"]
    return out


# ---------------------------------------------------------------- CSDL

_EDM_EXTRA = {"Edm.Decimal": ' Scale="Variable"', "Edm.String": ' Unicode="false"'}


def csdl(tables: dict[str, S.TableDef], annotations: bool) -> bytes:
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
           '<edmx:Reference Uri="http://vocabularies.odata.org/OData.Community.Keys.V1.xml">'
           '<edmx:Include Namespace="OData.Community.Keys.V1" Alias="Keys"/>'
           '<edmx:IncludeAnnotations TermNamespace="OData.Community.Keys.V1"/></edmx:Reference>',
           '<edmx:Reference Uri="http://vocabularies.odata.org/OData.Community.Display.V1.xml">'
           '<edmx:Include Namespace="OData.Community.Display.V1" Alias="Display"/>'
           '<edmx:IncludeAnnotations TermNamespace="OData.Community.Display.V1"/></edmx:Reference>',
           '<edmx:DataServices>',
           f'<Schema Namespace="{S.NS}" Alias="mscrm" xmlns="http://docs.oasis-open.org/odata/ns/edm">',
           '<EntityType Name="crmbaseentity" Abstract="true"/>',
           '<EntityType Name="principal" BaseType="mscrm.crmbaseentity" Abstract="true">'
           '<Key><PropertyRef Name="ownerid"/></Key><Property Name="ownerid" Type="Edm.Guid"/>'
           '</EntityType>',
           '<EntityType Name="transactioncurrency" BaseType="mscrm.crmbaseentity"><Key>'
           '<PropertyRef Name="transactioncurrencyid"/></Key>'
           '<Property Name="transactioncurrencyid" Type="Edm.Guid"/>'
           '<Property Name="currencyname" Type="Edm.String" Unicode="false"/></EntityType>',
           '<EntityType Name="businessunit" BaseType="mscrm.crmbaseentity"><Key>'
           '<PropertyRef Name="businessunitid"/></Key><Property Name="businessunitid" Type="Edm.Guid"/>'
           '<Property Name="name" Type="Edm.String" Unicode="false"/></EntityType>',
           '<EntityType Name="team" BaseType="mscrm.principal">'
           '<Property Name="teamid" Type="Edm.Guid"/>'
           '<Property Name="name" Type="Edm.String" Unicode="false"/></EntityType>',
           '<EntityType Name="organization" BaseType="mscrm.crmbaseentity"><Key>'
           '<PropertyRef Name="organizationid"/></Key><Property Name="organizationid" Type="Edm.Guid"/>'
           '<Property Name="name" Type="Edm.String" Unicode="false"/></EntityType>']
    for td in tables.values():
        out.append(f'<EntityType Name="{td.logical}" BaseType="mscrm.{td.base_type}">')
        if td.base_type != "principal":
            out.append(f'<Key><PropertyRef Name="{td.pk}"/></Key>')
        navs = []
        for a in td.props:
            extra = _EDM_EXTRA.get(a.edm, "")
            out.append(f'<Property Name="{a.prop}" Type="{a.edm}"{extra}>'
                       + (f'<Annotation Term="Org.OData.Core.V1.Description" '
                          f'String={quoteattr(a.display[0])}/>' if annotations else "")
                       + "</Property>")
            if a.atype in ("Lookup", "Customer", "Owner"):
                for tgt in a.targets:
                    name = a.logical if (len(a.targets) == 1 or a.atype == "Owner") else f"{a.logical}_{tgt}"
                    if a.atype == "Owner" and tgt != a.targets[0]:
                        continue
                    tpk = "ownerid" if a.atype == "Owner" else f"{tgt}id"
                    ttype = "principal" if a.atype == "Owner" else tgt
                    navs.append(
                        f'<NavigationProperty Name="{name}" Type="mscrm.{ttype}" Nullable="false" '
                        f'Partner="{td.logical}_{name}"><ReferentialConstraint Property="{a.prop}" '
                        f'ReferencedProperty="{tpk}"/></NavigationProperty>')
        out.extend(navs)
        out.append("</EntityType>")
    out.append('<EntityContainer Name="System">')
    for td in tables.values():
        body = ""
        if annotations and td.change_tracking:
            body = ('<Annotation Term="Org.OData.Capabilities.V1.ChangeTracking"><Record>'
                    '<PropertyValue Property="Supported" Bool="true"/></Record></Annotation>')
        out.append(f'<EntitySet Name="{td.entity_set}" EntityType="{S.NS}.{td.logical}">{body}</EntitySet>')
    out.append(f'<EntitySet Name="organizations" EntityType="{S.NS}.organization"/>')
    out.append(f'<FunctionImport Name="WhoAmI" Function="{S.NS}.WhoAmI"/>')
    out.append("</EntityContainer>")
    out.append(f'<Function Name="WhoAmI"><ReturnType Type="{S.NS}.WhoAmIResponse" Nullable="false"/></Function>')
    out.append('<ComplexType Name="WhoAmIResponse"><Property Name="BusinessUnitId" Type="Edm.Guid" '
               'Nullable="false"/><Property Name="UserId" Type="Edm.Guid" Nullable="false"/>'
               '<Property Name="OrganizationId" Type="Edm.Guid" Nullable="false"/></ComplexType>')
    out.append("</Schema></edmx:DataServices></edmx:Edmx>")
    return "\n".join(out).encode()


__all__ = ["BASE_ATTR_PROPS", "ENTITY_PROPS", "OPTIONSET_NAV", "TYPE_PROPS", "attr_json", "csdl",
           "entity_json", "escape", "optionset_json"]
