"""Table definitions (the metadata the emulator serves) and deterministic row generation.

Why: the tap discovers its schema from ``EntityDefinitions``/``Attributes`` exactly like it
would against a real org, so the metadata here is the single source of truth for
``$metadata``, the metadata API, ``$select`` validation, filters and row serialisation.
Traps from the protocol reference are reproduced on purpose: lookups are ``_x_value``
properties, multi-select choices are ``Virtual`` attributes, companions (``…name``,
``owneridtype``) carry ``AttributeOf`` and are not OData properties, Image/File attributes
are ``Virtual`` too and are only returned when explicitly selected.

Row generation is column-wise with one ``random.Random`` per table (seeded from the seed
and the table name), so the same seed always yields the same rows and 200k rows take a
couple of seconds.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
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


INDUSTRY = opts("account_industrycode", "Picklist", [
    (1, "Accounting", "Buchhaltung"), (2, "Agriculture and Non-petrol Natural Resource Extraction",
                                       "Landwirtschaft und Rohstoffgewinnung"),
    (3, "Broadcasting Printing and Publishing", "Rundfunk, Druck und Verlagswesen"),
    (4, "Brokers", "Makler"), (5, "Building Supply Retail", "Baustoffhandel"),
    (6, "Business Services", "Unternehmensdienstleistungen"), (7, "Consulting", "Beratung"),
    (8, "Consumer Services", "Verbraucherdienstleistungen"),
    (9, "Design, Direction and Creative Management", "Design und Kreativmanagement"),
    (10, "Distributors, Dispatchers and Processors", "Händler und Verarbeiter"),
    (11, "Doctor's Offices and Clinics", "Arztpraxen und Kliniken"),
    (12, "Durable Manufacturing", "Gebrauchsgüterherstellung"),
    (13, "Eating and Drinking Places", "Gastronomie"), (14, "Entertainment Retail", "Unterhaltung"),
])
CUSTOMER_TYPE = opts("account_customertypecode", "Picklist", [
    (1, "Competitor", "Mitbewerber"), (2, "Consultant", "Berater"), (3, "Customer", "Kunde"),
    (4, "Investor", "Investor"), (5, "Partner", "Partner"), (6, "Influencer", "Influencer"),
    (7, "Press", "Presse"), (8, "Prospect", "Interessent"), (9, "Reseller", "Wiederverkäufer"),
    (10, "Supplier", "Lieferant"), (11, "Vendor", "Verkäufer"), (12, "Other", "Sonstige"),
])
ACCOUNT_CATEGORY = opts("account_accountcategorycode", "Picklist", [
    (1, "Preferred Customer", "Bevorzugter Kunde"), (2, "Standard", "Standard")])
REGIONS = opts("new_region", "Picklist", [
    (100000000, "North America", "Nordamerika"), (100000001, "South America", "Südamerika"),
    (100000002, "Europe", "Europa"), (100000003, "Asia", "Asien"), (100000004, "Africa", "Afrika"),
    (100000005, "Oceania", "Ozeanien"), (100000006, "Middle East", "Naher Osten"),
], is_global=True)
GENDER = opts("contact_gendercode", "Picklist", [(1, "Male", "Männlich"), (2, "Female", "Weiblich")])
FAMILY = opts("contact_familystatuscode", "Picklist", [
    (1, "Single", "Ledig"), (2, "Married", "Verheiratet"), (3, "Divorced", "Geschieden"),
    (4, "Widowed", "Verwitwet")])
ACCESS_MODE = opts("systemuser_accessmode", "Picklist", [
    (0, "Read-Write", "Lesen/Schreiben"), (1, "Administrative", "Administrativ"),
    (2, "Read", "Lesen"), (3, "Support User", "Supportbenutzer"),
    (4, "Non-interactive", "Nicht interaktiv"), (5, "Delegated Admin", "Delegierter Admin")])


def _common_tail(entity: str) -> list[Attr]:
    return [
        dtime("createdon", "Created On", "Erstellt am"),
        dtime("modifiedon", "Modified On", "Geändert am"),
        bigint("versionnumber", "Version Number", "Versionsnummer"),
    ]


def account_def() -> TableDef:
    e = "account"
    attrs = [
        guid("accountid", "Account", "Firma", primary_id=True),
        s("name", "Account Name", "Firmenname", 160, primary_name=True),
        s("accountnumber", "Account Number", "Kontonummer", 20),
        s("telephone1", "Main Phone", "Haupttelefon", 50, fmt="Phone"),
        s("emailaddress1", "Email", "E-Mail", 100, fmt="Email"),
        s("websiteurl", "Website", "Website", 200, fmt="Url"),
        s("address1_city", "Address 1: City", "Adresse 1: Ort", 80),
        s("address1_postalcode", "Address 1: ZIP/Postal Code", "Adresse 1: Postleitzahl", 20),
        double("address1_latitude", "Address 1: Latitude", "Adresse 1: Breitengrad"),
        memo("description", "Description", "Beschreibung"),
        money("revenue", "Annual Revenue", "Jahresumsatz"),
        money("revenue_base", "Annual Revenue (Base)", "Jahresumsatz (Basis)"),
        money("creditlimit", "Credit Limit", "Kreditlimit"),
        decimal("exchangerate", "Exchange Rate", "Wechselkurs", 10),
        integer("numberofemployees", "Number of Employees", "Anzahl der Mitarbeiter"),
        boolean("donotemail", "Do not allow Emails", "E-Mails nicht zulassen",
                ("Allow", "Zulassen"), ("Do Not Allow", "Nicht zulassen"), entity=e),
        boolean("creditonhold", "Credit Hold", "Kreditstopp", ("No", "Nein"), ("Yes", "Ja"),
                entity=e),
        picklist("industrycode", "Industry", "Branche", INDUSTRY),
        picklist("customertypecode", "Relationship Type", "Beziehungstyp", CUSTOMER_TYPE),
        picklist("accountcategorycode", "Category", "Kategorie", ACCOUNT_CATEGORY),
        state("Status", "Status", state_opts(e)),
        status("Status Reason", "Statusgrund", status_opts(e)),
        multiselect("new_regions", "Regions", "Regionen", REGIONS, custom=True),
        dtime("new_foundedon", "Founded On", "Gegründet am", "DateOnly", custom=True),
        dtime("lastusedincampaign", "Last Date Included in Campaign",
              "Letztes Datum in Kampagne", "UserLocal"),
        dtime("new_localopening", "Local Opening Time", "Lokale Öffnungszeit",
              "TimeZoneIndependent", custom=True),
        lookup("primarycontactid", "Primary Contact", "Primärer Kontakt", ["contact"]),
        lookup("parentaccountid", "Parent Account", "Übergeordnete Firma", ["account"]),
        lookup("ownerid", "Owner", "Besitzer", ["systemuser", "team"], atype="Owner"),
        lookup("modifiedby", "Modified By", "Geändert von", ["systemuser"]),
        lookup("transactioncurrencyid", "Currency", "Währung", ["transactioncurrency"]),
        entityname("new_sourcetable", "Source Table", "Quelltabelle", custom=True),
        *_common_tail(e),
        # metadata-only companions and non-row attributes
        companion("primarycontactidname", "primarycontactid"),
        companion("parentaccountidname", "parentaccountid"),
        companion("owneridname", "ownerid"),
        companion("owneridtype", "ownerid", "EntityName"),
        companion("modifiedbyname", "modifiedby"),
        companion("transactioncurrencyidname", "transactioncurrencyid"),
        image("entityimage", "Default Image", "Standardbild"),
        file("new_contractfile", "Contract", "Vertrag", custom=True),
    ]
    return TableDef(e, "Account", "accounts", "accounts", "accountid", "name", 1, True,
                    "UserOwned", ("Account", "Firma"), ("Accounts", "Firmen"),
                    "Business that represents a customer or potential customer.", attrs)


def contact_def() -> TableDef:
    e = "contact"
    attrs = [
        guid("contactid", "Contact", "Kontakt", primary_id=True),
        s("fullname", "Full Name", "Vollständiger Name", 160, primary_name=True),
        s("firstname", "First Name", "Vorname", 50),
        s("lastname", "Last Name", "Nachname", 50),
        s("emailaddress1", "Email", "E-Mail", 100, fmt="Email"),
        s("telephone1", "Business Phone", "Telefon (geschäftlich)", 50, fmt="Phone"),
        s("mobilephone", "Mobile Phone", "Mobiltelefon", 50, fmt="Phone"),
        s("jobtitle", "Job Title", "Position", 100),
        s("address1_city", "Address 1: City", "Adresse 1: Ort", 80),
        s("address1_country", "Address 1: Country/Region", "Adresse 1: Land/Region", 80),
        memo("description", "Description", "Beschreibung"),
        dtime("birthdate", "Birthday", "Geburtstag", "DateOnly"),
        picklist("gendercode", "Gender", "Geschlecht", GENDER),
        picklist("familystatuscode", "Marital Status", "Familienstand", FAMILY),
        boolean("donotphone", "Do not allow Phone Calls", "Anrufe nicht zulassen",
                ("Allow", "Zulassen"), ("Do Not Allow", "Nicht zulassen"), entity=e),
        integer("numberofchildren", "No. of Children", "Anzahl Kinder", 0, 1000),
        money("annualincome", "Annual Income", "Jahreseinkommen"),
        lookup("parentcustomerid", "Company Name", "Firmenname", ["account", "contact"],
               atype="Customer"),
        lookup("ownerid", "Owner", "Besitzer", ["systemuser", "team"], atype="Owner"),
        lookup("transactioncurrencyid", "Currency", "Währung", ["transactioncurrency"]),
        state("Status", "Status", state_opts(e)),
        status("Status Reason", "Statusgrund", status_opts(e)),
        *_common_tail(e),
        companion("parentcustomeridname", "parentcustomerid"),
        companion("parentcustomeridtype", "parentcustomerid", "EntityName"),
        companion("owneridname", "ownerid"),
        companion("owneridtype", "ownerid", "EntityName"),
        companion("transactioncurrencyidname", "transactioncurrencyid"),
    ]
    return TableDef(e, "Contact", "contacts", "contacts", "contactid", "fullname", 2, True,
                    "UserOwned", ("Contact", "Kontakt"), ("Contacts", "Kontakte"),
                    "Person with whom a business unit has a relationship.", attrs)


def systemuser_def() -> TableDef:
    e = "systemuser"
    attrs = [
        guid("systemuserid", "User", "Benutzer", primary_id=True),
        s("fullname", "Full Name", "Vollständiger Name", 200, primary_name=True),
        s("firstname", "First Name", "Vorname", 64),
        s("lastname", "Last Name", "Nachname", 64),
        s("domainname", "User Name", "Benutzername", 1024),
        s("internalemailaddress", "Primary Email", "Primäre E-Mail", 100, fmt="Email"),
        boolean("isdisabled", "Status", "Status", ("Enabled", "Aktiviert"),
                ("Disabled", "Deaktiviert"), entity=e),
        picklist("accessmode", "Access Mode", "Zugriffsmodus", ACCESS_MODE),
        lookup("businessunitid", "Business Unit", "Unternehmenseinheit", ["businessunit"]),
        guid("azureactivedirectoryobjectid", "Azure AD Object ID", "Azure AD-Objekt-ID"),
        *_common_tail(e),
        companion("businessunitidname", "businessunitid"),
    ]
    return TableDef(e, "SystemUser", "systemusers", "systemusers", "systemuserid", "fullname", 8,
                    False, "BusinessOwned", ("User", "Benutzer"), ("Users", "Benutzer"),
                    "Person with access to the Microsoft CRM system.", attrs,
                    base_type="principal")


# ---------------------------------------------------------------- special table kinds

def _special_tail(e: str) -> list[Attr]:
    return [dtime("createdon", "Created On", "Erstellt am"),
            dtime("modifiedon", "Modified On", "Geändert am"),
            bigint("versionnumber", "Version Number", "Versionsnummer")]


def private_def() -> TableDef:
    """A private table (``IsPrivate``): internal plumbing, skipped unless named."""
    e = "new_internalqueueitem"
    attrs = [guid(f"{e}id", "Queue Item", "Warteschlangenelement", primary_id=True),
             s("new_name", "Name", "Name", 100, primary_name=True), *_special_tail(e)]
    td = TableDef(e, "new_InternalQueueItem", "new_internalqueueitems", "new_internalqueueitems",
                  f"{e}id", "new_name", 10010, False, "OrganizationOwned",
                  ("Internal Queue Item", "Internes Warteschlangenelement"),
                  ("Internal Queue Items", "Interne Warteschlangenelemente"),
                  "Private plumbing table.", attrs, is_custom=True)
    td.is_private = True
    return td


VIRTUAL_PROVIDER_ERROR = (400, "0x80040265",
                          "ISV code aborted the operation. The external data provider of virtual "
                          "table 'new_externalorder' returned: Unable to connect to the remote "
                          "server (ODataProvider).")


def virtual_def() -> TableDef:
    """A virtual table whose provider fails on every read (metadata reads work)."""
    e = "new_externalorder"
    attrs = [guid(f"{e}id", "External Order", "Externer Auftrag", primary_id=True),
             s("new_name", "Order Number", "Auftragsnummer", 100, primary_name=True),
             money("new_amount", "Amount", "Betrag"), *_special_tail(e)]
    return TableDef(e, "new_ExternalOrder", "new_externalorders", "new_externalorders", f"{e}id",
                    "new_name", 10011, False, "OrganizationOwned",
                    ("External Order", "Externer Auftrag"), ("External Orders", "Externe Aufträge"),
                    "Orders read live from the ERP through a virtual table provider.", attrs,
                    is_custom=True, table_type="Virtual",
                    data_provider="7015a531-cc0d-4537-b5f2-c882a1eb65ad",
                    read_error=VIRTUAL_PROVIDER_ERROR)


def elastic_def() -> TableDef:
    """An elastic (Cosmos DB-backed) table with ``partitionid`` and ``ttlinseconds``."""
    e = "new_sensorreading"
    attrs = [guid(f"{e}id", "Sensor Reading", "Sensormesswert", primary_id=True),
             s("new_name", "Name", "Name", 100, primary_name=True),
             s("partitionid", "Partition Id", "Partitions-ID", 100),
             integer("ttlinseconds", "Time to live (seconds)", "Gültigkeitsdauer (Sekunden)"),
             double("new_value", "Value", "Wert", 5, -1e9, 1e9), *_special_tail(e)]
    return TableDef(e, "new_SensorReading", "new_sensorreadings", "new_sensorreadings", f"{e}id",
                    "new_name", 10012, False, "UserOwned", ("Sensor Reading", "Sensormesswert"),
                    ("Sensor Readings", "Sensormesswerte"), "IoT readings (elastic table).", attrs,
                    is_custom=True, table_type="Elastic")


def intersect_def() -> TableDef:
    """The intersect table of the account <-> contact many-to-many relationship."""
    e = "new_account_contact"
    attrs = [guid(f"{e}id", "Account Contact", "Firma Kontakt", primary_id=True),
             guid("accountid", "Account", "Firma"), guid("contactid", "Contact", "Kontakt"),
             bigint("versionnumber", "Version Number", "Versionsnummer")]
    td = TableDef(e, "new_account_contact", "new_account_contactset", "new_account_contactset",
                  f"{e}id", f"{e}id", 10013, False, "None", ("Account Contact", "Firma Kontakt"),
                  ("Account Contacts", "Firma Kontakte"), "Intersect of account and contact.",
                  attrs, is_custom=True,
                  intersect_of=("new_account_contact", "account", "accountid", "contact",
                                "contactid"))
    td.is_intersect = True
    return td


def restricted_def() -> TableDef:
    """A standard table whose attribute metadata the app user may not read (403)."""
    e = "new_payrollentry"
    attrs = [guid(f"{e}id", "Payroll Entry", "Lohnbuchung", primary_id=True),
             s("new_name", "Name", "Name", 100, primary_name=True), *_special_tail(e)]
    return TableDef(e, "new_PayrollEntry", "new_payrollentries", "new_payrollentries", f"{e}id",
                    "new_name", 10014, False, "UserOwned", ("Payroll Entry", "Lohnbuchung"),
                    ("Payroll Entries", "Lohnbuchungen"), "Restricted HR table.", attrs,
                    is_custom=True,
                    metadata_error=(403, "0x80040220",
                                    "Principal user (Id=emulated, type=8) is missing "
                                    "prvReadnew_payrollentry privilege."))


# ---------------------------------------------------------------- org-size mode

ORG_COLUMNS = 150


def org_table_def(i: int, columns: int = ORG_COLUMNS) -> TableDef:
    """One synthetic custom table of a big org: ~``columns`` columns of every attribute type."""
    e = f"new_bulk{i:04d}"
    pk = f"{e}id"
    attrs: list[Attr] = [guid(pk, f"Bulk {i}", f"Masse {i}", primary_id=True),
                         s("new_name", "Name", "Name", 100, primary_name=True)]
    kinds = ("s", "memo", "int", "big", "dec", "money", "dbl", "bool", "pick", "date", "dateonly",
             "lookup", "multi")
    n = 0
    while len(attrs) < columns - 5:
        k = kinds[n % len(kinds)]
        name = f"new_c{n:03d}"
        en, de = f"Column {n}", f"Spalte {n}"
        if k == "s":
            attrs.append(s(name, en, de, 200, custom=True))
        elif k == "memo":
            attrs.append(memo(name, en, de, custom=True))
        elif k == "int":
            attrs.append(integer(name, en, de, custom=True))
        elif k == "big":
            attrs.append(bigint(name, en, de, custom=True))
        elif k == "dec":
            attrs.append(decimal(name, en, de, 4, custom=True))
        elif k == "money":
            attrs.append(money(name, en, de, custom=True))
        elif k == "dbl":
            attrs.append(double(name, en, de, custom=True))
        elif k == "bool":
            attrs.append(boolean(name, en, de, ("No", "Nein"), ("Yes", "Ja"), entity=e, custom=True))
        elif k == "pick":
            attrs.append(picklist(name, en, de, opts(f"{e}_{name}", "Picklist", [
                (100000000, "Low", "Niedrig"), (100000001, "High", "Hoch")]), custom=True))
        elif k == "date":
            attrs.append(dtime(name, en, de, custom=True))
        elif k == "dateonly":
            attrs.append(dtime(name, en, de, "DateOnly", custom=True))
        elif k == "lookup":
            attrs.append(lookup(name, en, de, ["account"], custom=True))
            attrs.append(companion(f"{name}name", name))
        else:
            attrs.append(multiselect(name, en, de, REGIONS, custom=True))
        n += 1
    attrs += [state("Status", "Status", state_opts(e)),
              status("Status Reason", "Statusgrund", status_opts(e)), *_special_tail(e)]
    return TableDef(e, f"new_Bulk{i:04d}", f"new_bulk{i:04d}s", f"new_bulk{i:04d}s", pk,
                    "new_name", 20000 + i, i % 2 == 0, "UserOwned", (f"Bulk {i}", f"Masse {i}"),
                    (f"Bulk {i}s", f"Massen {i}"), f"Synthetic table {i} of a big org.", attrs,
                    is_custom=True)


def all_tables(org_tables: int = 0) -> dict[str, TableDef]:
    """The org's tables: the three data tables, one of each special kind, and with
    ``org_tables`` > 0 that many synthetic ~150-column tables (the discovery benchmark)."""
    defs = [account_def(), contact_def(), systemuser_def(), private_def(), virtual_def(),
            elastic_def(), intersect_def(), restricted_def()]
    defs += [org_table_def(i) for i in range(org_tables)]
    return {t.logical: t for t in defs}


def relationships(tables: dict[str, TableDef]) -> list[dict]:
    """One-to-many relationships (one per lookup target) and many-to-many (one per intersect).

    Shapes follow ``OneToManyRelationshipMetadata`` / ``ManyToManyRelationshipMetadata``."""
    out: list[dict] = []
    pks = {"transactioncurrency": "transactioncurrencyid", "businessunit": "businessunitid",
           "team": "teamid", **{t.logical: t.pk for t in tables.values()}}
    for td in tables.values():
        for a in td.attrs:
            if a.atype not in ("Lookup", "Customer", "Owner") or not a.prop:
                continue
            for target in a.targets:
                name = f"{target}_{td.logical}_{a.logical}"
                out.append({
                    "@odata.type": f"#{NS}.OneToManyRelationshipMetadata",
                    "MetadataId": stable_guid("rel", name), "HasChanged": None,
                    "SchemaName": name, "RelationshipType": "OneToManyRelationship",
                    "IsCustomRelationship": a.custom, "IsManaged": True, "IsValidForAdvancedFind": True,
                    "SecurityTypes": "Append", "IntroducedVersion": "5.0.0.0",
                    "ReferencedEntity": target, "ReferencedAttribute": pks.get(target, f"{target}id"),
                    "ReferencingEntity": td.logical, "ReferencingAttribute": a.logical,
                    "ReferencedEntityNavigationPropertyName": name,
                    "ReferencingEntityNavigationPropertyName":
                        a.logical if len(a.targets) == 1 or a.atype == "Owner" else f"{a.logical}_{target}",
                    "IsHierarchical": target == td.logical,
                })
        if td.intersect_of:
            name, e1, a1, e2, a2 = td.intersect_of
            out.append({
                "@odata.type": f"#{NS}.ManyToManyRelationshipMetadata",
                "MetadataId": stable_guid("rel", name), "HasChanged": None, "SchemaName": name,
                "RelationshipType": "ManyToManyRelationship", "IsCustomRelationship": True,
                "IsManaged": False, "IsValidForAdvancedFind": True, "SecurityTypes": "None",
                "IntroducedVersion": "1.0", "Entity1LogicalName": e1, "Entity2LogicalName": e2,
                "IntersectEntityName": td.logical, "Entity1IntersectAttribute": a1,
                "Entity2IntersectAttribute": a2,
                "Entity1NavigationPropertyName": f"{name}_{e1}",
                "Entity2NavigationPropertyName": f"{name}_{e2}",
            })
    return out


def global_option_sets(tables: dict[str, TableDef]) -> list[OptionSetDef]:
    """Every global option set used by some column (by name, once)."""
    seen: dict[str, OptionSetDef] = {}
    for td in tables.values():
        for a in td.attrs:
            if a.optionset is not None and a.optionset.is_global:
                seen.setdefault(a.optionset.name, a.optionset)
    return list(seen.values())


# ---------------------------------------------------------------- value formatting

_TS_CACHE: dict[int, str] = {}


def iso_ts(ts: int) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SSZ`` (whole seconds, as Dataverse serves UserLocal)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def iso_date(ts: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


# ---------------------------------------------------------------- data generation

COMPANY_A = ["Contoso", "Fabrikam", "Litware", "Adventure Works", "Northwind", "Tailspin Toys",
             "Wingtip", "Alpine Ski House", "Coho Winery", "Blue Yonder", "Fourth Coffee",
             "Woodgrove", "Trey Research", "Proseware", "Wide World Importers",
             "Lucerne Publishing", "Margie's Travel", "Humongous Insurance", "City Power & Light",
             "Müller & Söhne", "Café Zürich", "Łódź Logistyka", "東京商事", "Société Générale d'Essai",
             "Ørsted Vind", "São Paulo Têxteis", "Graphic Design Institute", "A. Datum"]
COMPANY_B = ["Inc.", "Ltd", "GmbH", "LLC", "S.A.", "AG", "Corp.", "Group", "Holdings", "Partners",
             "& Co.", "KG", "Sp. z o.o.", "株式会社"]
FIRST = ["Nancy", "Andrew", "Janet", "Margaret", "Steven", "Michael", "Robert", "Laura", "Anne",
         "Yvonne", "Jürgen", "Zoë", "José", "François", "Søren", "Łukasz", "Ana", "Kenji", "Priya",
         "Olga", "Chidi", "Mei", "Ahmed", "Siobhán"]
LAST = ["Davolio", "Fuller", "Leverling", "Peacock", "Buchanan", "Suyama", "King", "Callahan",
        "Dodsworth", "McKay", "Müller", "Kowalski", "García", "Dubois", "Jørgensen", "Tanaka",
        "Patel", "Ivanova", "Okafor", "Chen", "Haddad", "O'Brien", "van der Berg", "Nguyễn"]
CITIES = [("Seattle", "98052", 47.61), ("Redmond", "98053", 47.67), ("London", "EC1A 1BB", 51.51),
          ("München", "80331", 48.14), ("Paris", "75001", 48.86), ("Zürich", "8001", 47.37),
          ("Tokyo", "100-0001", 35.68), ("São Paulo", "01000-000", -23.55),
          ("Sydney", "2000", -33.87), ("Kraków", "30-001", 50.06), ("Toronto", "M5H 2N2", 43.65),
          ("Cape Town", "8001", -33.92), ("Reykjavík", "101", 64.15), ("Dublin", "D02", 53.35)]
COUNTRIES = ["United States", "United Kingdom", "Germany", "France", "Switzerland", "Japan",
             "Brazil", "Australia", "Poland", "Canada", "South Africa", "Iceland", "Ireland"]
JOBS = ["Purchasing Manager", "CEO", "CTO", "Sales Representative", "Buyer", "Owner",
        "Accountant", "Data Engineer", "Operations Lead", None]
WORDS = ["Key account with long-standing relationship.", "Prefers email contact.",
         "Interested in the new product line; follow up in Q3.",
         "Ünïcödé notes — ümlauts, ß, emoji 🚀 and \"quotes\".",
         "Multi-line\nnote with a tab\tand a backslash \\.", "Potential upsell.", ""]


def fast_randint(rng: random.Random):
    """``randint`` without the argument checking (3x faster; fine for test data)."""
    r = rng.random
    return lambda a, b: a + int(r() * (b - a + 1))


def _guids(rng: random.Random, n: int) -> list[str]:
    gb = rng.getrandbits
    return [str(uuid.UUID(int=gb(128), version=4)) for _ in range(n)]


def modified_times(rng: random.Random, n: int, start: int = BASE_EPOCH) -> list[int]:
    """Non-decreasing whole-second timestamps, 5-10 rows sharing each second."""
    out: list[int] = []
    t = start
    ri = fast_randint(rng)
    while len(out) < n:
        out.extend([t] * ri(5, 10))
        t += ri(1, 3)
    return out[:n]


def _pick(rng: random.Random, pool: list, n: int, null_rate: float = 0.0) -> list:
    vals = rng.choices(pool, k=n)
    if null_rate:
        r = rng.random
        vals = [None if r() < null_rate else v for v in vals]
    return vals


def _money(rng: random.Random, n: int, big_every: int = 0, null_rate=0.1) -> list:
    r = rng.random
    ri = fast_randint(rng)
    out = []
    for i in range(n):
        if r() < null_rate:
            out.append(None)
        elif big_every and i % big_every == 3:
            out.append(Decimal("922337203685.4775") - Decimal(i % 1000))  # > 2**53 / 10**4
        else:
            out.append(Decimal(ri(0, 5_000_000_00)) / 100)
    return out


def generate(table: TableDef, n: int, rng: random.Random, ids: dict[str, list[str]],
             pks: list[str]) -> dict[str, list]:
    """Return ``prop -> list of python values`` (length n) for everything except the
    store-stamped columns (createdon, modifiedon, versionnumber)."""
    cols: dict[str, list] = {table.pk: pks}
    contacts, accounts, users = ids.get("contact", []), ids.get("account", []), ids.get("systemuser", [])
    r = rng.random
    ri = fast_randint(rng)
    state = [0 if r() < 0.85 else 1 for _ in range(n)]
    cols["statecode"] = state
    cols["statuscode"] = [1 if st == 0 else 2 for st in state]
    if table.logical == "account":
        a, b = rng.choices(COMPANY_A, k=n), rng.choices(COMPANY_B, k=n)
        cols["name"] = [f"{x} {y}" if i % 7 else f"{x} {y} ({i})" for i, (x, y) in enumerate(zip(a, b))]
        cols["accountnumber"] = [None if r() < 0.1 else f"AC-{ri(0, 99999999):08d}" for _ in range(n)]
        cols["telephone1"] = [None if r() < 0.15 else f"+1-425-555-{ri(0, 9999):04d}" for _ in range(n)]
        cols["emailaddress1"] = [
            None if r() < 0.2 else f"info{i}@{x.split()[0].lower().strip(',.')}.example.com"
            for i, x in enumerate(a)]
        cols["websiteurl"] = [None if r() < 0.3 else f"https://www.{x.split()[0].lower()}.example.com"
                              for x in a]
        city = rng.choices(CITIES, k=n)
        cols["address1_city"] = [c[0] for c in city]
        cols["address1_postalcode"] = [c[1] if r() > 0.1 else None for c in city]
        cols["address1_latitude"] = [None if r() < 0.1 else round(c[2] + (r() - 0.5) / 10, 5)
                                     for c in city]
        cols["description"] = _pick(rng, WORDS, n, 0.4)
        rev = _money(rng, n, big_every=50)
        cols["revenue"] = rev
        cols["revenue_base"] = rev
        cols["creditlimit"] = _money(rng, n, null_rate=0.3)
        cols["exchangerate"] = [Decimal("0.1") if i % 3 == 0 else Decimal("1") if i % 3 == 1
                                else Decimal("0.9234567891") for i in range(n)]
        cols["numberofemployees"] = [None if r() < 0.2 else ri(1, 250000) for _ in range(n)]
        cols["donotemail"] = [r() < 0.2 for _ in range(n)]
        cols["creditonhold"] = [r() < 0.05 for _ in range(n)]
        cols["industrycode"] = _pick(rng, [o.value for o in INDUSTRY.options], n, 0.25)
        cols["customertypecode"] = _pick(rng, [o.value for o in CUSTOMER_TYPE.options], n, 0.2)
        cols["accountcategorycode"] = _pick(rng, [1, 2], n, 0.3)
        regions = [o.value for o in REGIONS.options]
        cols["new_regions"] = [
            None if r() < 0.3 else ",".join(str(v) for v in sorted(rng.sample(regions, ri(1, 3))))
            for _ in range(n)]
        cols["new_foundedon"] = [None if r() < 0.2 else iso_date(ri(-1_500_000_000, 1_600_000_000))
                                 for _ in range(n)]
        cols["lastusedincampaign"] = [None if r() < 0.5 else iso_ts(ri(1_600_000_000, BASE_EPOCH))
                                      for _ in range(n)]
        cols["new_localopening"] = [
            None if r() < 0.3 else iso_ts(BASE_EPOCH + ri(0, 365) * 86400 + ri(6, 10) * 3600)
            for _ in range(n)]
        cols["_primarycontactid_value"] = _pick(rng, contacts, n, 0.2) if contacts else [None] * n
        cols["_parentaccountid_value"] = (
            [None if r() < 0.7 else accounts[ri(0, len(accounts) - 1)] for _ in range(n)]
            if accounts else [None] * n)
        cols["_ownerid_value"] = _pick(rng, users, n) if users else [None] * n
        cols["_modifiedby_value"] = _pick(rng, users, n) if users else [None] * n
        cols["_transactioncurrencyid_value"] = [CURRENCY_ID] * n
        cols["new_sourcetable"] = _pick(rng, ["lead", "contact", "opportunity"], n, 0.3)
    elif table.logical == "contact":
        f, l_ = rng.choices(FIRST, k=n), rng.choices(LAST, k=n)
        cols["firstname"] = f
        cols["lastname"] = l_
        cols["fullname"] = [f"{x} {y}" for x, y in zip(f, l_)]
        cols["emailaddress1"] = [None if r() < 0.1 else
                                 f"{x.lower()}.{y.lower().replace(' ', '')}{i}@example.org"
                                 for i, (x, y) in enumerate(zip(f, l_))]
        cols["telephone1"] = [None if r() < 0.2 else f"+49-89-555-{ri(0, 9999):04d}" for _ in range(n)]
        cols["mobilephone"] = [None if r() < 0.5 else f"+44-7700-{ri(0, 999999):06d}" for _ in range(n)]
        cols["jobtitle"] = _pick(rng, JOBS, n)
        cols["address1_city"] = [c[0] for c in rng.choices(CITIES, k=n)]
        cols["address1_country"] = _pick(rng, COUNTRIES, n, 0.1)
        cols["description"] = _pick(rng, WORDS, n, 0.5)
        cols["birthdate"] = [None if r() < 0.3 else iso_date(ri(-900_000_000, 1_000_000_000))
                             for _ in range(n)]
        cols["gendercode"] = _pick(rng, [1, 2], n, 0.2)
        cols["familystatuscode"] = _pick(rng, [1, 2, 3, 4], n, 0.4)
        cols["donotphone"] = [r() < 0.1 for _ in range(n)]
        cols["numberofchildren"] = [None if r() < 0.5 else ri(0, 5) for _ in range(n)]
        cols["annualincome"] = _money(rng, n, null_rate=0.4)
        pc = []
        for _ in range(n):
            x = r()
            if x < 0.6 and accounts:
                pc.append(accounts[ri(0, len(accounts) - 1)])
            elif x < 0.7 and contacts:
                pc.append(contacts[ri(0, len(contacts) - 1)])
            else:
                pc.append(None)
        cols["_parentcustomerid_value"] = pc
        cols["_ownerid_value"] = _pick(rng, users, n) if users else [None] * n
        cols["_transactioncurrencyid_value"] = [CURRENCY_ID] * n
    elif table.logical == "systemuser":
        f, l_ = rng.choices(FIRST, k=n), rng.choices(LAST, k=n)
        cols["firstname"] = f
        cols["lastname"] = l_
        cols["fullname"] = [f"{x} {y}" for x, y in zip(f, l_)]
        dom = [f"{x.lower()}.{y.lower().replace(' ', '')}{i}@contoso.onmicrosoft.com"
               for i, (x, y) in enumerate(zip(f, l_))]
        cols["domainname"] = dom
        cols["internalemailaddress"] = dom
        cols["isdisabled"] = [r() < 0.1 for _ in range(n)]
        cols["accessmode"] = [0 if r() < 0.8 else 4 for _ in range(n)]
        cols["_businessunitid_value"] = [BUSINESS_UNIT_ID] * n
        cols["azureactivedirectoryobjectid"] = _guids(rng, n)
        del cols["statecode"], cols["statuscode"]
    return cols
