"""CRM 2011-2015's OData v2 "REST endpoint": ``/{org}/XRMServices/2011/OrganizationData.svc``.

Served on the on-premises host beside the Web API (a CRM 2016+ server still has it, deprecated;
a 2011-2015 server, ``server_version`` 5.0-7.1, has only this one), behind the same IIS Windows
sign-in or AD FS bearer tokens. As the reference (§3.1) describes it:

- Entity sets are ``<SchemaName>Set`` (``AccountSet``), properties use SchemaName casing
  (``AccountId``, ``ModifiedOn``, ``Address1_City``); the logical name is the SchemaName in
  lower case.
- Verbose JSON only with ``Accept: application/json`` (ATOM otherwise): ``d.results``,
  ``d.__next``, ``__metadata`` per entry, ``\\/Date(ms)\\/`` dates, Int64/Decimal as strings.
- Lookups are ``EntityReference {Id, LogicalName, Name}`` (a null lookup is a reference whose
  fields are null), choices ``OptionSetValue {Value}``, money ``Money {Value}`` (a string).
  Multi-select choices, file and image columns (all 9.x) do not exist here.
- A fixed page size of 50; ``$top`` limits the whole result, ``$skip`` skips into it (skip + top
  at most 5,000: :data:`MAX_SKIP_TOP`); the ``$skiptoken`` is opaque; ``$filter`` with v2 literals (``datetime'…'``, ``guid'…'``,
  ``StateCode/Value eq 0``); ``$orderby`` on the entity's own properties; ``$format`` and
  ``$inlinecount`` are refused.
- ``$metadata`` is EDMX 1.0 / CSDL 2008-09 with the CRM complex types.
- No functions (no ``WhoAmI``): a client finds its user in ``SystemUserSet`` (``DomainName``)
  and the organization's name in ``OrganizationSet``; a table the signed-in identity's role may
  not read (``host.read_denied``) answers 403 with the platform's PrivilegeDenied.
"""

from __future__ import annotations

import base64
import html
import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..core.service import Request, Response, Service
from ..odata import ODataError, bad_request, v2
from ..odata.filter import compile_filter, parse_filter
from ..odata.query import parse_orderby, parse_select
from ..odata.v4 import link
from ..dataverse.rows import LIGHT, kind_of
from ..dataverse.schema import ORG_NAME, ORGANIZATION_ID, stable_guid

if TYPE_CHECKING:
    from ..core.host import Host
    from ..dataverse.schema import Attr, TableDef
    from ..dataverse.rows import TableStore
    from ..dataverse.store import Store
    from .service import OnPremDataverse

PATH = "/XRMServices/2011/OrganizationData.svc"
NS = "Microsoft.Crm.Sdk.Data.Services"
PAGE = 50
# CRM reads a `$skip` query without a paging cookie, so skip + top may not pass the platform's
# 5,000-record limit. Documented for distinct queries; applied to every query here, so a client
# that stays within it works on every server [unverified: the status and text of the refusal].
MAX_SKIP_TOP = 5000
# SchemaNames of common columns (the rest: each part of the logical name capitalised).
KNOWN_SCHEMA = {
    "accountid": "AccountId", "contactid": "ContactId", "systemuserid": "SystemUserId",
    "accountnumber": "AccountNumber", "emailaddress1": "EMailAddress1", "websiteurl": "WebSiteURL",
    "numberofemployees": "NumberOfEmployees", "donotemail": "DoNotEMail", "creditonhold": "CreditOnHold",
    "creditlimit": "CreditLimit", "exchangerate": "ExchangeRate", "industrycode": "IndustryCode",
    "customertypecode": "CustomerTypeCode", "accountcategorycode": "AccountCategoryCode",
    "statecode": "StateCode", "statuscode": "StatusCode", "lastusedincampaign": "LastUsedInCampaign",
    "primarycontactid": "PrimaryContactId", "parentaccountid": "ParentAccountId", "ownerid": "OwnerId",
    "modifiedby": "ModifiedBy", "transactioncurrencyid": "TransactionCurrencyId",
    "createdon": "CreatedOn", "modifiedon": "ModifiedOn", "versionnumber": "VersionNumber",
    "fullname": "FullName", "firstname": "FirstName", "lastname": "LastName", "jobtitle": "JobTitle",
    "mobilephone": "MobilePhone", "birthdate": "BirthDate", "gendercode": "GenderCode",
    "familystatuscode": "FamilyStatusCode", "donotphone": "DoNotPhone", "numberofchildren": "NumberOfChildren",
    "annualincome": "AnnualIncome", "parentcustomerid": "ParentCustomerId", "domainname": "DomainName",
    "internalemailaddress": "InternalEMailAddress", "isdisabled": "IsDisabled", "accessmode": "AccessMode",
    "businessunitid": "BusinessUnitId", "azureactivedirectoryobjectid": "AzureActiveDirectoryObjectId",
}
REFERENCE_TYPES = ("Lookup", "Customer", "Owner")
OPTION_TYPES = ("Picklist", "State", "Status")


def schema_name(logical: str) -> str:
    """The SchemaName of a column: ``Address1_City``, ``new_Regions``, ``AccountId``…"""
    if logical in KNOWN_SCHEMA:
        return KNOWN_SCHEMA[logical]
    if logical.startswith("new_"):
        return "new_" + logical[4:].capitalize()
    return "_".join(part[:1].upper() + part[1:] for part in logical.split("_"))


@dataclass(frozen=True)
class Prop:
    """One property of an entity type as the v2 endpoint serves it."""

    name: str  # SchemaName
    attr: Attr
    kind: str  # plain, reference, option, money, date, int64, decimal
    edm: str  # Edm type or complex type name


def _prop(attr: Attr) -> Prop | None:
    name = schema_name(attr.logical)
    at = attr.atype
    if at in REFERENCE_TYPES:
        return Prop(name, attr, "reference", f"{NS}.EntityReference")
    if at in OPTION_TYPES:
        return Prop(name, attr, "option", f"{NS}.OptionSetValue")
    if at == "Money":
        return Prop(name, attr, "money", f"{NS}.Money")
    if at == "DateTime":
        return Prop(name, attr, "date", "Edm.DateTime")
    if at == "BigInt":
        return Prop(name, attr, "int64", "Edm.Int64")
    if at == "Decimal":
        return Prop(name, attr, "decimal", "Edm.Decimal")
    if at == "Virtual":  # multi-select choices, files and images arrived with 9.x
        return None
    edm = {"String": "Edm.String", "Memo": "Edm.String", "EntityName": "Edm.String",
           "Uniqueidentifier": "Edm.Guid", "Integer": "Edm.Int32", "Double": "Edm.Double",
           "Boolean": "Edm.Boolean"}.get(at)
    return None if edm is None else Prop(name, attr, "plain", edm)


class EntityType:
    """A table as an OData v2 entity type: its set, its properties by SchemaName."""

    def __init__(self, td: TableDef) -> None:
        self.td = td
        self.name = td.schema
        self.set_name = f"{td.schema}Set"
        self.props = [p for p in (_prop(a) for a in td.props if a.served) if p is not None]
        self.by_name = {p.name: p for p in self.props}
        self.key = next(p for p in self.props if p.attr.prop == td.pk)

    def resolve(self, path: str) -> tuple[Prop, str]:
        """A ``$filter``/``$orderby`` path (``Name``, ``StateCode/Value``, ``OwnerId/Id``)."""
        name, _, member = path.partition("/")
        prop = self.by_name.get(name)
        if prop is None:
            raise bad_request(f"No property '{name}' exists in type '{NS}.{self.name}' at position 0.")
        wanted = {"reference": "Id", "option": "Value", "money": "Value"}.get(prop.kind)
        if (wanted or "") != member:
            if wanted is None:
                raise bad_request(f"No property '{member}' exists in type '{prop.edm}'.")
            raise bad_request(f"Operator or property '{name}' of complex type '{prop.edm}' cannot be "
                              f"compared; use {name}/{wanted}.")
        return prop, member


def serve_tables(store: Store) -> list[TableDef]:
    """What the endpoint has: the ordinary tables (no virtual, elastic or private ones)."""
    return [td for td in store.tables.values()
            if td.table_type in ("Standard", "Activity") and not td.is_private]


class OrganizationData(Service):
    """``OrganizationData.svc`` of one organization (see the module docstring)."""

    name = "organizationdata"
    prefix = PATH

    def __init__(self, host: Host, store: Store, mount: str, dataverse: OnPremDataverse) -> None:
        super().__init__(host, mount)
        self.store = store
        self.dataverse = dataverse  # the same IIS site: its sign-in, its bearer-token check
        self.types = {et.set_name: et for et in map(EntityType, serve_tables(store))}

    @property
    def service_url(self) -> str:
        return f"{self.base_url}{PATH}"

    def gate(self, req: Request) -> Response | None:
        return self.dataverse.signin.gate(req) if self.dataverse.signin is not None else None

    def received(self, req: Request) -> None:
        self.host.statistics.query(req.path, req.raw_query, req.headers.get("accept", ""))

    def respond(self, req: Request, response: Response) -> Response:
        return self.dataverse.respond(req, response)

    def connection_closed(self, connection_id: str) -> None:
        pass  # the Web API service forgets the connection's sign-in (the same IIS site)

    def headers(self, content_type: str) -> list[tuple[str, str]]:
        return [*v2.VERSION_HEADERS, ("Content-Type", content_type), ("Cache-Control", "no-cache"),
                *[(k, v) for k, v in self.dataverse.headers(None) if k == "REQ_ID"]]

    def error(self, e: ODataError) -> Response:
        return e.status, self.headers(v2.JSON_CONTENT_TYPE), orjson.dumps(v2.error(e.code, e.message))

    # ------------------------------------------------------------ entry point
    def handle(self, req: Request) -> Response:
        denied = self.dataverse.authenticate(req)
        if denied is not None:
            return denied
        try:
            self.host.hold(urllib.parse.unquote(req.path + "?" + req.raw_query))
            if req.method != "GET":
                raise ODataError(405, "", "The emulator's OrganizationData.svc is read-only.")
            return self.route(req, req.path[len(PATH):].lstrip("/"))
        except ODataError as e:
            return self.error(e)

    def route(self, req: Request, rest: str) -> Response:
        for option in req.query:
            if option in ("$format", "$inlinecount"):
                raise bad_request(f"The query parameter '{option}' is not supported.")
            if option.startswith("$") and option not in ("$select", "$filter", "$orderby", "$top",
                                                         "$skip", "$skiptoken", "$expand"):
                raise bad_request(f"The query parameter '{option}' begins with a system-reserved "
                                  "'$' character but is not recognized.")
        if rest == "":
            return self.service_document(req)
        if rest == "$metadata":
            return 200, self.headers(v2.XML_CONTENT_TYPE), edmx(self.types.values())
        m = re.match(r"^([A-Za-z_]\w*)(?:\((.*)\))?$", rest)
        if m and m.group(1) == "OrganizationSet" and m.group(2) is None:
            return self.organization(req)
        et = self.types.get(m.group(1)) if m else None
        if et is None:
            raise ODataError(404, "", f"Resource not found for the segment '{rest.split('(')[0]}'.")
        if "$expand" in req.query:
            raise bad_request("$expand is not supported by the emulator.")
        self.check_read(req, et.td.logical, et.name)
        if m.group(2) is not None:
            return self.single(req, et, m.group(2))
        return self.collection(req, et)

    def check_read(self, req: Request, logical: str, schema: str) -> None:
        """403 when the signed-in identity's security role lacks Read on the table (the
        platform's PrivilegeDenied, -2147220960; the status code is [unverified])."""
        if logical in getattr(self.host, "read_denied", ()):
            privilege = stable_guid("privilege", f"prvRead{schema}")
            raise ODataError(403, "-2147220960", "SecLib::CheckPrivilege failed. Returned hr = -2147220960 "
                             f"on UserId: {req.user_id} and PrivilegeId: {privilege}")

    def organization(self, req: Request) -> Response:
        """``OrganizationSet``: the one organization (its id and name; the emulator serves no
        other column of it, and lists it in no ``$metadata``)."""
        self.check_read(req, "organization", "Organization")
        row = {"OrganizationId": ORGANIZATION_ID, "Name": ORG_NAME}
        names = parse_select(req.query["$select"]) if "$select" in req.query else list(row)
        for name in names:
            if name not in row:
                raise bad_request(f"No property '{name}' exists in type '{NS}.Organization' at position 0.")
        top = _whole(req.query, "$top")
        uri = f"{self.service_url}/OrganizationSet(guid'{ORGANIZATION_ID}')"
        entries = [] if top == 0 else [{"__metadata": {"uri": uri, "type": f"{NS}.Organization"},
                                        **{n: row[n] for n in names}}]
        if not v2.wants_json(req.headers.get("accept", "")):
            props = [[(n, "Edm.Guid" if n == "OrganizationId" else "Edm.String", row[n]) for n in names]
                     for _ in entries]
            return 200, self.headers(v2.ATOM_CONTENT_TYPE), v2.atom_feed(
                "OrganizationSet", f"{self.service_url}/OrganizationSet",
                [(uri, f"{NS}.Organization", p) for p in props], None, self.store.clock)
        return 200, self.headers(v2.JSON_CONTENT_TYPE), v2.page([v2.dumps(e) for e in entries], None)

    def service_document(self, req: Request) -> Response:
        names = sorted(self.types)
        if v2.wants_json(req.headers.get("accept", "")):
            return 200, self.headers(v2.JSON_CONTENT_TYPE), orjson.dumps({"d": {"EntitySets": names}})
        body = ('<?xml version="1.0" encoding="utf-8" standalone="yes"?><service xml:base="'
                f'{html.escape(self.service_url)}/" xmlns="http://www.w3.org/2007/app" '
                'xmlns:atom="http://www.w3.org/2005/Atom"><workspace><atom:title>Default</atom:title>'
                + "".join(f'<collection href="{n}"><atom:title>{n}</atom:title></collection>' for n in names)
                + "</workspace></service>")
        return 200, self.headers("application/atomsvc+xml;charset=utf-8"), body.encode()

    # ------------------------------------------------------------ rows
    def entry(self, ts: TableStore, et: EntityType, rec: Any, select: list[Prop] | None) -> dict[str, Any]:
        """One row in verbose JSON (values not yet escaped: :func:`v2.dumps` does that)."""
        row = ts.decode(rec)
        out: dict[str, Any] = {"__metadata": {"uri": f"{self.service_url}/{et.set_name}(guid'{rec.pk}')",
                                              "type": f"{NS}.{et.name}"}}
        for prop in select or et.props:
            value = row.get(prop.attr.prop)
            out[prop.name] = self.value(ts, prop, value)
        return out

    def value(self, ts: TableStore, prop: Prop, value: Any) -> Any:
        kind = prop.kind
        if kind == "reference":
            target, name = ts.org.resolve_lookup(prop.attr, value) if value is not None else (None, None)
            return {"__metadata": {"type": prop.edm}, "Id": value, "LogicalName": target, "Name": name}
        if kind == "option":
            return {"__metadata": {"type": prop.edm}, "Value": value}
        if kind == "money":
            return {"__metadata": {"type": prop.edm}, "Value": None if value is None else f"{value:.4f}"}
        if value is None:
            return None
        if kind == "date":
            text = str(value) if len(str(value)) > 10 else f"{value}T00:00:00Z"  # DateOnly: midnight
            return v2.date(_epoch(text))
        if kind == "int64":
            return str(value)
        if kind == "decimal":
            return str(value)
        return value

    def _select(self, et: EntityType, req: Request) -> list[Prop] | None:
        if "$select" not in req.query:
            return None
        names = parse_select(req.query["$select"])
        if names == ["*"]:
            return None
        props = []
        for name in names:
            prop = et.by_name.get(name)
            if prop is None:
                raise bad_request(f"No property '{name}' exists in type '{NS}.{et.name}' at position 0.")
            props.append(prop)
        return props

    def single(self, req: Request, et: EntityType, key: str) -> Response:
        m = re.fullmatch(r"guid'([0-9a-fA-F-]{36})'", key.strip())
        if not m:
            raise bad_request(f"Bad Request - Error in query syntax: '{key}' is not a guid'…' key.")
        ts = self.store.t[et.td.logical]
        rec = ts.rows.get(m.group(1).lower())
        if rec is None:
            raise ODataError(404, "", f"{et.td.logical} With Id = {m.group(1).lower()} Does Not Exist")
        return 200, self.headers(v2.JSON_CONTENT_TYPE), v2.dumps({"d": self.entry(ts, et, rec, self._select(et, req))})

    def collection(self, req: Request, et: EntityType) -> Response:
        q, ts = req.query, self.store.t[et.td.logical]
        select = self._select(et, req)
        pred, needs_full = None, False
        if "$filter" in q:
            def resolve(path: str):
                prop, _member = et.resolve(path)
                return (lambda d, p=prop.attr.prop: d.get(p)), kind_of(prop.attr)

            pred, used = compile_filter(parse_filter(q["$filter"], version=2), resolve)
            needs_full = not all(et.resolve(u)[0].attr.prop in LIGHT or et.resolve(u)[0].attr.prop == et.td.pk
                                 for u in used)
        order = []
        for path, desc in (parse_orderby(q["$orderby"]) if "$orderby" in q else []):
            order.append((et.resolve(path)[0].attr, desc))
        if not order or order[-1][0].prop != et.td.pk:
            order.append((et.td.by_prop[et.td.pk], False))
        top = _whole(q, "$top")
        skip = _whole(q, "$skip") or 0
        if skip and skip + (PAGE if top is None else top) > MAX_SKIP_TOP:
            raise bad_request(f"$skip and $top together may not pass {MAX_SKIP_TOP} records (the query "
                              "is read without a paging cookie); follow __next instead.")
        after = None
        if "$skiptoken" in q:
            after_values, top = _read_token(q["$skiptoken"])
            after = ts.cookie_key(order, after_values, str(after_values[-1]))
            skip = 0
        limit = PAGE if top is None else min(PAGE, top)
        recs, more = ts.scan(order, pred, needs_full, after, skip + limit)
        recs = recs[skip:]
        left = None if top is None else top - len(recs)
        if left is not None and left <= 0:
            more = False
        next_url = None
        if more and recs:
            last = ts.decode(recs[-1], exact=False)
            values = [_token_value(last.get(a.prop)) for a, _ in order[:-1]] + [recs[-1].pk]
            token = _write_token(values, left)
            next_url = link(self.base_url, req, lambda n: n not in ("$skiptoken", "$skip", "$top"),
                            "$skiptoken", token)
        self.host.count_page(len(recs))
        if not v2.wants_json(req.headers.get("accept", "")):
            entries = [self.atom_entry(ts, et, rec, select) for rec in recs]
            return 200, self.headers(v2.ATOM_CONTENT_TYPE), v2.atom_feed(
                et.set_name, f"{self.service_url}/{et.set_name}", entries, next_url, self.store.clock)
        body = v2.page([v2.dumps(self.entry(ts, et, rec, select)) for rec in recs], next_url)
        return 200, self.headers(v2.JSON_CONTENT_TYPE), body

    def atom_entry(self, ts: TableStore, et: EntityType, rec: Any, select: list[Prop] | None):
        entry = self.entry(ts, et, rec, select)
        props: list[tuple[str, str, Any]] = []
        for prop in select or et.props:
            value = entry[prop.name]
            if isinstance(value, dict):
                members = [(k, "Edm.Guid" if k == "Id" else "Edm.Int32" if prop.kind == "option"
                            else "Edm.Decimal" if prop.kind == "money" else "Edm.String", v)
                           for k, v in value.items() if k != "__metadata"]
                props.append((prop.name, prop.edm, members))
            else:
                props.append((prop.name, prop.edm, value))
        return entry["__metadata"]["uri"], f"{NS}.{et.name}", props


def _epoch(text: str) -> float:
    from ..odata.filter import row_datetime

    return row_datetime(text)


def _whole(q: dict[str, str], option: str) -> int | None:
    if option not in q:
        return None
    try:
        value = int(q[option])
    except ValueError:
        value = -1
    if value < 0:
        raise bad_request(f"Invalid value '{q[option]}' for {option} query option.")
    return value


def _token_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _write_token(values: list[str | None], left: int | None) -> str:
    """The opaque ``$skiptoken``: the last row's order values and key, and what ``$top`` left."""
    raw = orjson.dumps({"after": values, "top": left})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str) -> tuple[list[str | None], int | None]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return list(data["after"]), data.get("top")
    except Exception:
        raise bad_request("The skip token is not valid.") from None


def edmx(types: Any) -> bytes:
    """``$metadata``: EDMX 1.0 with the entity types, the CRM complex types and one container."""
    out = ['<?xml version="1.0" encoding="utf-8" standalone="yes"?>',
           '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx">',
           '<edmx:DataServices xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
           'm:DataServiceVersion="2.0">',
           f'<Schema Namespace="{NS}" xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" '
           'xmlns="http://schemas.microsoft.com/ado/2008/09/edm">']
    sets = []
    for et in types:
        out.append(f'<EntityType Name="{et.name}"><Key><PropertyRef Name="{et.key.name}" /></Key>')
        for prop in et.props:
            nullable = ' Nullable="false"' if prop is et.key or prop.kind in ("reference", "option", "money") else ""
            out.append(f'<Property Name="{prop.name}" Type="{prop.edm}"{nullable} />')
        out.append("</EntityType>")
        sets.append(f'<EntitySet Name="{et.set_name}" EntityType="{NS}.{et.name}" />')
    out += ['<ComplexType Name="EntityReference"><Property Name="Id" Type="Edm.Guid" />'
            '<Property Name="LogicalName" Type="Edm.String" /><Property Name="Name" Type="Edm.String" />'
            "</ComplexType>",
            '<ComplexType Name="OptionSetValue"><Property Name="Value" Type="Edm.Int32" /></ComplexType>',
            '<ComplexType Name="Money"><Property Name="Value" Type="Edm.Decimal" /></ComplexType>',
            '<ComplexType Name="BooleanManagedProperty"><Property Name="Value" Type="Edm.Boolean" Nullable="false" />'
            '<Property Name="CanBeChanged" Type="Edm.Boolean" Nullable="false" />'
            '<Property Name="ManagedPropertyLogicalName" Type="Edm.String" /></ComplexType>',
            '<EntityContainer Name="ContosoContext" m:IsDefaultEntityContainer="true">', *sets,
            "</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"]
    return "".join(out).encode()
