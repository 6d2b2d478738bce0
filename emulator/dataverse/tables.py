"""The emulated org's tables: account, contact, systemuser, one table of each special kind
(private, virtual, elastic, intersect, restricted) and the synthetic tables of the org-size
mode, with their relationships and global choices."""

from __future__ import annotations

from .schema import (
    NS,
    Attr,
    OptionSetDef,
    TableDef,
    bigint,
    boolean,
    companion,
    decimal,
    double,
    dtime,
    entityname,
    file,
    guid,
    image,
    integer,
    lookup,
    memo,
    money,
    multiselect,
    opts,
    picklist,
    s,
    stable_guid,
    state,
    state_opts,
    status,
    status_opts,
)

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

def private_def() -> TableDef:
    """A private table (``IsPrivate``): internal plumbing, skipped unless named."""
    e = "new_internalqueueitem"
    attrs = [guid(f"{e}id", "Queue Item", "Warteschlangenelement", primary_id=True),
             s("new_name", "Name", "Name", 100, primary_name=True), *_common_tail(e)]
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
             money("new_amount", "Amount", "Betrag"), *_common_tail(e)]
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
             double("new_value", "Value", "Wert", 5, -1e9, 1e9), *_common_tail(e)]
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
             s("new_name", "Name", "Name", 100, primary_name=True), *_common_tail(e)]
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
              status("Status Reason", "Statusgrund", status_opts(e)), *_common_tail(e)]
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
