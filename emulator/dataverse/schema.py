"""The shape of Dataverse metadata: tables (``TableDef``), columns (``Attr``), choices
(``OptionSetDef``) and the builders the table definitions are written with.

Why: the tap discovers its schema from ``EntityDefinitions``/``Attributes`` exactly like it
would against a real org, so these definitions are the single source of truth for
``$metadata``, the metadata API, ``$select`` validation, filters and row serialisation.
Traps from the protocol reference are reproduced on purpose: lookups are ``_x_value``
properties, multi-select choices are ``Virtual`` attributes, companions (``…name``,
``owneridtype``) carry ``AttributeOf`` and are not OData properties, Image/File attributes
are ``Virtual`` too and are only returned when explicitly selected.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

NS = "Microsoft.Dynamics.CRM"
LANGS = (1033, 1031)

BASE_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: first generated modifiedon
CURRENCY_ID = "c1d2e3f4-0000-4000-8000-00000000c0de"
CURRENCY_NAME = "US Dollar"
BUSINESS_UNIT_ID = "b0b0b0b0-1111-4111-8111-000000000b0b"
ORGANIZATION_ID = "0a0a0a0a-2222-4222-8222-00000000a0a0"
ORG_NAME = "Contoso Emulated"


def stable_guid(*parts: Any) -> str:
    """Deterministic GUID for metadata ids (same across runs and seeds)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "dynamics-emulator/" + "/".join(map(str, parts))))


def label(en: str, de: str | None = None, key: str = "") -> dict:
    """A Dataverse ``Label`` complex value with 1033 (and 1031 when given) labels."""
    locs = [
        {"Label": en, "LanguageCode": 1033, "IsManaged": True,
         "MetadataId": stable_guid("label", key, en, 1033), "HasChanged": None}
    ]
    if de is not None:
        locs.append({"Label": de, "LanguageCode": 1031, "IsManaged": True,
                     "MetadataId": stable_guid("label", key, de, 1031), "HasChanged": None})
    return {"LocalizedLabels": locs, "UserLocalizedLabel": locs[0]}


EMPTY_LABEL = {"LocalizedLabels": [], "UserLocalizedLabel": None}


@dataclass
class Option:
    value: int
    en: str
    de: str
    state: int | None = None  # for status options: the owning state
    default_status: int | None = None  # for state options
    invariant: str | None = None  # for state options


@dataclass
class OptionSetDef:
    name: str
    kind: str  # Picklist, Boolean, State, Status, MultiSelectPicklist (OptionSetType)
    options: list[Option]
    is_global: bool = False

    def label_of(self, value: Any) -> str | None:
        for o in self.options:
            if o.value == value:
                return o.en
        return None


@dataclass
class Attr:
    """One attribute (column). ``prop`` is the Web API property name or None."""

    logical: str
    atype: str  # AttributeType (AttributeTypeCode)
    type_name: str  # AttributeTypeName.Value
    md_type: str  # derived metadata type, e.g. StringAttributeMetadata
    edm: str | None  # Edm type of the property in $metadata
    display: tuple[str, str] = ("", "")
    prop: str | None = None
    readable: bool = True
    odata: bool = True
    attribute_of: str | None = None
    primary_id: bool = False
    primary_name: bool = False
    custom: bool = False
    logical_attr: bool = False
    extra: dict = field(default_factory=dict)  # type-specific metadata properties
    optionset: OptionSetDef | None = None
    targets: list[str] = field(default_factory=list)
    behavior: str | None = None  # DateTimeBehavior
    served: bool = True  # returned without $select (Image/File are not)


@dataclass
class TableDef:
    logical: str
    schema: str
    entity_set: str
    collection: str
    pk: str
    primary_name: str
    otc: int
    change_tracking: bool
    ownership: str
    display: tuple[str, str]
    collection_display: tuple[str, str]
    description: str
    attrs: list[Attr]
    base_type: str = "crmbaseentity"
    is_custom: bool = False
    table_type: str = "Standard"  # Standard, Activity, Virtual, Elastic
    is_private: bool = False
    is_intersect: bool = False
    data_provider: str | None = None  # DataProviderId of a virtual table
    # (status, code, message) every data read answers with (a failing virtual-table provider)
    read_error: tuple[int, str, str] | None = None
    # (status, code, message) the Attributes metadata read answers with (a missing privilege)
    metadata_error: tuple[int, str, str] | None = None
    # many-to-many: (schema name, entity1, entity1 attribute, entity2, entity2 attribute)
    intersect_of: tuple[str, str, str, str, str] | None = None

    def __post_init__(self) -> None:
        self.metadata_id = stable_guid("entity", self.logical)
        self.by_logical = {a.logical: a for a in self.attrs}
        self.props = [a for a in self.attrs if a.prop and a.odata and a.readable]
        self.by_prop = {a.prop: a for a in self.props}
        self.served_props = [a.prop for a in self.props if a.served]

    @property
    def type_name(self) -> str:
        return f"{NS}.{self.logical}"


# ---------------------------------------------------------------- attribute builders

def _a(logical, atype, type_name, md_type, edm, en, de, **kw) -> Attr:
    if "prop" not in kw:
        kw["prop"] = logical
    return Attr(logical, atype, type_name, md_type, edm, (en, de), **kw)


def s(logical, en, de, max_length=100, fmt="Text", **kw):
    return _a(logical, "String", "StringType", "StringAttributeMetadata", "Edm.String", en, de,
              extra={"MaxLength": max_length, "Format": fmt,
                     "FormatName": {"Value": fmt}, "DatabaseLength": max_length * 2}, **kw)


def memo(logical, en, de, max_length=2000, **kw):
    return _a(logical, "Memo", "MemoType", "MemoAttributeMetadata", "Edm.String", en, de,
              extra={"MaxLength": max_length, "Format": "TextArea"}, **kw)


def guid(logical, en, de, **kw):
    return _a(logical, "Uniqueidentifier", "UniqueidentifierType",
              "UniqueIdentifierAttributeMetadata", "Edm.Guid", en, de, **kw)


def integer(logical, en, de, lo=0, hi=1000000000, **kw):
    return _a(logical, "Integer", "IntegerType", "IntegerAttributeMetadata", "Edm.Int32", en, de,
              extra={"MinValue": lo, "MaxValue": hi, "Format": "None"}, **kw)


def bigint(logical, en, de, **kw):
    return _a(logical, "BigInt", "BigIntType", "BigIntAttributeMetadata", "Edm.Int64", en, de,
              extra={"MinValue": -9223372036854775808, "MaxValue": 9223372036854775807}, **kw)


def double(logical, en, de, precision=5, lo=-90.0, hi=90.0, **kw):
    return _a(logical, "Double", "DoubleType", "DoubleAttributeMetadata", "Edm.Double", en, de,
              extra={"Precision": precision, "MinValue": lo, "MaxValue": hi,
                     "ImeMode": "Disabled"}, **kw)


def money(logical, en, de, **kw):
    return _a(logical, "Money", "MoneyType", "MoneyAttributeMetadata", "Edm.Decimal", en, de,
              extra={"Precision": 4, "PrecisionSource": 2, "MinValue": -922337203685477.0,
                     "MaxValue": 922337203685477.0, "IsBaseCurrency": logical.endswith("_base"),
                     "CalculationOf": None, "ImeMode": "Auto"}, **kw)


def decimal(logical, en, de, precision=10, **kw):
    return _a(logical, "Decimal", "DecimalType", "DecimalAttributeMetadata", "Edm.Decimal", en, de,
              extra={"Precision": precision, "MinValue": 0.0, "MaxValue": 100000000000.0,
                     "ImeMode": "Disabled"}, **kw)


def dtime(logical, en, de, behavior="UserLocal", **kw):
    fmt = "DateOnly" if behavior == "DateOnly" else "DateAndTime"
    edm = "Edm.Date" if behavior == "DateOnly" else "Edm.DateTimeOffset"
    return _a(logical, "DateTime", "DateTimeType", "DateTimeAttributeMetadata", edm, en, de,
              behavior=behavior,
              extra={"Format": fmt, "DateTimeBehavior": {"Value": behavior},
                     "CanChangeDateTimeBehavior": {"Value": False, "CanBeChanged": False,
                                                   "ManagedPropertyLogicalName":
                                                       "canchangedatetimebehavior"},
                     "ImeMode": "Inactive", "MinSupportedValue": "1753-01-01T00:00:00Z",
                     "MaxSupportedValue": "9999-12-30T23:59:59Z"}, **kw)


def boolean(logical, en, de, false_label, true_label, **kw):
    os_ = OptionSetDef(f"{kw.pop('entity', 'x')}_{logical}", "Boolean",
                       [Option(0, *false_label), Option(1, *true_label)])
    return _a(logical, "Boolean", "BooleanType", "BooleanAttributeMetadata", "Edm.Boolean", en, de,
              optionset=os_, extra={"DefaultValue": False}, **kw)


def picklist(logical, en, de, optionset: OptionSetDef, **kw):
    return _a(logical, "Picklist", "PicklistType", "PicklistAttributeMetadata", "Edm.Int32", en, de,
              optionset=optionset, extra={"DefaultFormValue": -1}, **kw)


def multiselect(logical, en, de, optionset: OptionSetDef, **kw):
    return _a(logical, "Virtual", "MultiSelectPicklistType", "MultiSelectPicklistAttributeMetadata",
              "Edm.String", en, de, optionset=optionset, extra={"DefaultFormValue": -1}, **kw)


def state(en, de, optionset: OptionSetDef, **kw):
    return _a("statecode", "State", "StateType", "StateAttributeMetadata", "Edm.Int32", en, de,
              optionset=optionset, **kw)


def status(en, de, optionset: OptionSetDef, **kw):
    return _a("statuscode", "Status", "StatusType", "StatusAttributeMetadata", "Edm.Int32", en, de,
              optionset=optionset, **kw)


def lookup(logical, en, de, targets, atype="Lookup", **kw):
    return _a(logical, atype, f"{atype}Type", "LookupAttributeMetadata", "Edm.Guid", en, de,
              prop=f"_{logical}_value", targets=list(targets),
              extra={"Format": "None"}, **kw)


def entityname(logical, en, de, **kw):
    """A standalone EntityName column (a table's logical name stored as data)."""
    return _a(logical, "EntityName", "EntityNameType", "EntityNameAttributeMetadata", "Edm.String",
              en, de, **kw)


def companion(logical, of, atype="String", en="", **kw):
    md = {"String": "StringAttributeMetadata", "EntityName": "EntityNameAttributeMetadata",
          "Virtual": "AttributeMetadata"}[atype]
    tn = {"String": "StringType", "EntityName": "EntityNameType", "Virtual": "VirtualType"}[atype]
    extra = {"MaxLength": 100, "Format": "Text", "FormatName": {"Value": "Text"},
             "DatabaseLength": 200} if atype == "String" else {}
    return Attr(logical, atype, tn, md, None, (en or logical, en or logical), prop=None,
                odata=False, attribute_of=of, extra=extra, readable=True)


def image(logical, en, de, **kw):
    return _a(logical, "Virtual", "ImageType", "ImageAttributeMetadata", "Edm.Binary", en, de,
              served=False, extra={"IsPrimaryImage": True, "MaxHeight": 144, "MaxWidth": 144,
                                   "MaxSizeInKB": 10240, "CanStoreFullImage": True}, **kw)


def file(logical, en, de, **kw):
    return _a(logical, "Virtual", "FileType", "FileAttributeMetadata", "Edm.Guid", en, de,
              served=False, extra={"MaxSizeInKB": 32768}, **kw)


def opts(name, kind, pairs, is_global=False) -> OptionSetDef:
    return OptionSetDef(name, kind, [Option(v, en, de) for v, en, de in pairs], is_global)


def state_opts(entity) -> OptionSetDef:
    return OptionSetDef(f"{entity}_statecode", "State", [
        Option(0, "Active", "Aktiv", default_status=1, invariant="Active"),
        Option(1, "Inactive", "Inaktiv", default_status=2, invariant="Inactive"),
    ])


def status_opts(entity) -> OptionSetDef:
    return OptionSetDef(f"{entity}_statuscode", "Status", [
        Option(1, "Active", "Aktiv", state=0), Option(2, "Inactive", "Inaktiv", state=1)])
