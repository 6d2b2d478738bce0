"""Dataverse Web API v9.x endpoints: auth challenge, service document, ``$metadata``,
``EntityDefinitions``, functions, entity sets with paging, annotations and change tracking.

Why it is written against raw paths and raw query strings: the paging contract is that the
client follows ``@odata.nextLink`` verbatim. We keep the caller's query pieces untouched when
building nextLinks and decode ``$skiptoken`` exactly once, so a client that re-encodes the
link gets the same 400 it would get from a real org.
"""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from . import metadata as M
from . import tables as T
from .odata import (
    ODataError, bad_request, compile_filter, decode_cookie, encode_cookie, parse_filter,
    parse_orderby, parse_select, skiptoken_param, split_expand,
)
from .faults import caller_of
from .store import LIGHT, TableStore, kind_of

if TYPE_CHECKING:
    from . import Emulator

JSON_CT = "application/json; odata.metadata=minimal"
MAX_PAGE = 5000
ALLOWED_OPTIONS = {"$select", "$filter", "$orderby", "$top", "$count", "$expand", "$skiptoken",
                   "$deltatoken", "$apply"}
CT_EXPIRED = "Version stamp associated with the client has expired. Please perform a full sync."


@dataclass
class Request:
    method: str
    path: str  # decoded path, no query
    raw_query: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Prefer:
    maxpagesize: int | None = None
    annotations: str | None = None
    track: bool = False

    def wants(self, term: str) -> bool:
        if not self.annotations:
            return False
        for pat in (p.strip() for p in self.annotations.split(",")):
            neg = pat.startswith("-")
            pat = pat.lstrip("-")
            if pat == "*" or pat == term or (pat.endswith(".*") and term.startswith(pat[:-1])):
                return not neg
        return False


def parse_prefer(value: str) -> Prefer:
    p = Prefer()
    if not value:
        return p
    m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", value)
    if m:
        p.maxpagesize = int(m.group(1))
    m = re.search(r'odata\.include-annotations\s*=\s*"([^"]*)"', value) or \
        re.search(r"odata\.include-annotations\s*=\s*([^,;\s]+)", value)
    if m:
        p.annotations = m.group(1)
    p.track = "odata.track-changes" in value
    return p


class Dataverse:
    def __init__(self, emu: Emulator):
        self.emu = emu
        self.store = emu.store
        self.by_set = {td.entity_set: td for td in self.store.tables.values()}

    # ------------------------------------------------------------ helpers
    @property
    def org(self) -> str:
        return self.emu.org_url

    def headers(self, ct: str | None = JSON_CT) -> list[tuple[str, str]]:
        rid = str(uuid.uuid4())
        # x-ms-ratelimit-* are the caller's own budget: added in handle(), which knows the caller
        h = [("OData-Version", "4.0"), ("REQ_ID", rid), ("x-ms-service-request-id", rid),
             ("Cache-Control", "no-cache"), ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")]
        if ct:
            h.append(("Content-Type", ct))
        return h

    def json(self, status: int, obj: Any, extra: list | None = None) -> tuple[int, list, bytes]:
        return status, self.headers() + (extra or []), orjson.dumps(obj)

    def error(self, e: ODataError, prefer: Prefer | None = None) -> tuple[int, list, bytes]:
        err: dict[str, Any] = {"code": e.code, "message": e.message}
        if prefer and prefer.wants("Microsoft.PowerApps.CDS.HelpLink"):
            err["@Microsoft.PowerApps.CDS.ErrorDetails.OperationStatus"] = "0"
            err["@Microsoft.PowerApps.CDS.HelpLink"] = (
                f"http://go.microsoft.com/fwlink/?LinkID=398563&error=Microsoft.Crm.CrmException%3a"
                f"{e.code[2:]}&client=platform")
            err["@Microsoft.PowerApps.CDS.TraceText"] = f"\r\n[Microsoft.Crm.ObjectModel]\r\n{e.message}"
        return self.json(e.status, {"error": err})

    # ------------------------------------------------------------ entry point
    def handle(self, req: Request) -> tuple[int, list, bytes]:
        prefer = parse_prefer(req.headers.get("prefer", ""))
        m = re.match(r"^/api/data/(v9\.[012]|v8\.[012])(?:/(.*))?$", req.path)  # online still serves v8.x
        if not m:
            return self.error(ODataError(404, "0x80060888", f"Resource not found for the segment '{req.path}'."))
        version, rest = m.group(1), (m.group(2) or "")
        auth = self.authenticate(req)
        if auth is not None:
            return auth
        # Service protection counts per caller (the token's user), not per URL or per client;
        # only online (an on-premises server's authenticate() names no caller: no limits).
        caller = req.headers.get("x-emulator-caller")
        limits = self.emu.faults.protection
        refused = None if caller is None else limits.admit(caller)
        if refused is not None:
            return refused
        started = time.perf_counter()
        try:
            for gate in list(self.emu.faults.gates):
                gate.hold(urllib.parse.unquote(req.path + "?" + req.raw_query))
            if req.method != "GET":
                raise ODataError(405, "0x80060888",
                                 f"The HTTP method '{req.method}' is not allowed for this resource "
                                 "in the emulator (read-only Web API).")
            status, hdrs, payload = self.route(req, prefer, version, rest)
        except ODataError as e:
            status, hdrs, payload = self.error(e, prefer)
        finally:
            if caller is not None:
                limits.done(caller, time.perf_counter() - started)
        return status, hdrs + ([] if caller is None else limits.headers(caller)), payload

    def authenticate(self, req: Request) -> tuple[int, list, bytes] | None:
        auth = req.headers.get("authorization", "")
        challenge = [("WWW-Authenticate",
                      f"Bearer authorization_uri={self.emu.authority_host}/{self.emu.tenant_id}"
                      f"/oauth2/authorize, resource_id={self.org}/")]
        if not auth.lower().startswith("bearer "):
            return 401, self.headers(None) + challenge, b""
        app, _why = self.emu.entra.validate(auth[7:].strip())
        if app is None:
            return 401, self.headers(None) + challenge, b""
        if not app.application_user:
            return self.error(ODataError(
                403, "0x80072560",
                f"The user is not a member of the organization. (Application '{app.client_id}' has "
                f"no application user in the environment; create one and assign a security role.)"))
        req.headers["x-emulator-app"] = app.client_id
        req.headers["x-emulator-caller"] = caller_of(auth)
        return None

    def route(self, req: Request, prefer: Prefer, version: str, rest: str) -> tuple[int, list, bytes]:
        base = f"{self.org}/api/data/{version}/"
        for k in req.query:
            if k == "$skip":
                raise bad_request("Skip Clause is not supported in CRM")
            if k == "$search":
                raise bad_request("The query parameter $search is not supported")
            if k == "$format":
                raise bad_request("The query parameter $format is not supported")
            if k.startswith("$") and k not in ALLOWED_OPTIONS:
                raise bad_request(f"The query parameter {k} is not supported")
        if rest in ("", "/"):
            sets = [{"name": td.entity_set, "kind": "EntitySet", "url": td.entity_set}
                    for td in self.store.tables.values()]
            sets += [{"name": n, "kind": "EntitySet", "url": n}
                     for n in ("organizations", "EntityDefinitions")]
            return self.json(200, {"@odata.context": base + "$metadata", "value": sets})
        if rest == "$metadata":
            ann = req.query.get("annotations", "").lower() == "true" or prefer.wants(
                "Org.OData.Capabilities.V1.ChangeTracking")
            return 200, self.headers("application/xml"), M.csdl(self.store.tables, ann)
        if rest in ("WhoAmI", "WhoAmI()"):
            app = self.emu.entra.apps[req.headers["x-emulator-app"]]
            return self.json(200, {"@odata.context": base + f"$metadata#{T.NS}.WhoAmIResponse",
                                   "BusinessUnitId": T.BUSINESS_UNIT_ID, "UserId": app.user_id,
                                   "OrganizationId": T.ORGANIZATION_ID})
        if rest.startswith("RetrieveTotalRecordCount"):
            return self.total_count(req, base, rest)
        if rest.startswith("EntityDefinitions"):
            return self.entity_definitions(req, base, rest[len("EntityDefinitions"):])
        if rest.startswith("GlobalOptionSetDefinitions"):
            return self.global_option_sets(req, base, rest[len("GlobalOptionSetDefinitions"):])
        if rest.startswith("RelationshipDefinitions"):
            return self.relationship_definitions(req, base, rest[len("RelationshipDefinitions"):])
        if rest == "organizations":
            self.check_read(req, "organization", "Organization", 1019, "Organization")
            row = {"@odata.etag": 'W/"1000"', "name": T.ORG_NAME, "organizationid": T.ORGANIZATION_ID}
            if "$select" in req.query:
                sel = parse_select(req.query["$select"])
                bad = [c for c in sel if c not in row]
                if bad:
                    raise bad_request(f"Could not find a property named '{bad[0]}' on type "
                                      f"'{T.NS}.organization'.")
            ctx = "organizations" + (f"({req.query['$select']})" if "$select" in req.query else "")
            return self.json(200, {"@odata.context": base + "$metadata#" + ctx, "value": [row]})
        m = re.match(r"^([A-Za-z_]\w*)(?:\(([^)]*)\))?(/\$count)?$", rest)
        if not m:
            seg = rest.split("/")[0].split("(")[0]
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{seg}'.")
        set_name, key, count = m.group(1), m.group(2), m.group(3)
        td = self.by_set.get(set_name)
        if td is None:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{set_name}'.")
        ts = self.store.t[td.logical]
        self.check_read(req, td.logical, td.schema, td.otc, td.display[0])
        if td.read_error is not None:  # e.g. a virtual table whose provider fails
            raise ODataError(*td.read_error)
        if key is not None:
            return self.single(req, base, ts, key)
        if count:
            return self.count_only(req, ts)
        return self.collection(req, prefer, base, ts)

    def check_read(self, req: Request, logical: str, schema: str, otc: int, display: str) -> None:
        """403 PrivilegeDenied when the caller's security role lacks Read on the table.

        The message is Dataverse's own (a real one, ids aside): the principal, the missing
        privilege ``prvRead<SchemaName>``, the table's type code and names.
        """
        app = self.emu.entra.apps[req.headers["x-emulator-app"]]
        if logical not in app.read_denied:
            return
        privilege = f"prvRead{schema}"
        raise ODataError(403, "0x80040220", (
            f"Principal user (Id={app.user_id}, type=8, roleCount=1, privilegeCount=412, "
            f"accessMode='0 Read-Write', AADObjectId='{app.object_id}', "
            f"MetadataCachePrivilegesCount=12471, businessUnitId={T.BUSINESS_UNIT_ID}), is missing "
            f"{privilege} privilege (Id={T.stable_guid('privilege', privilege)}) on OTC={otc} for "
            f"entity '{logical}' (LocalizedName='{display}'). context.Caller={app.user_id}. "
            "Consider adding missed privilege to one of the principal (user/team) roles."))

    # ------------------------------------------------------------ functions
    def total_count(self, req, base, rest):
        m = re.match(r"^RetrieveTotalRecordCount\(EntityNames=(.*)\)$", rest)
        if not m:
            raise bad_request("RetrieveTotalRecordCount requires the EntityNames parameter.")
        arg = m.group(1)
        if arg.startswith("@"):
            arg = req.query.get(arg, "")
        names = re.findall(r"'([^']*)'", arg)
        values = []
        for n in names:
            if n not in self.store.t:
                raise ODataError(404, "0x80040217",
                                 f"Could not find an entity with logical name '{n}'.")
            values.append(len(self.store.t[n].rows))
        return self.json(200, {
            "@odata.context": base + f"$metadata#{T.NS}.RetrieveTotalRecordCountResponse",
            "EntityRecordCountCollection": {"Count": len(names), "IsReadOnly": False,
                                            "Keys": names, "Values": values}})

    # ------------------------------------------------------------ metadata API
    def _find_entity(self, key: str) -> T.TableDef:
        m = re.match(r"^LogicalName='([^']*)'$", key)
        if m:
            for td in self.store.tables.values():
                if td.logical == m.group(1):
                    return td
            raise ODataError(404, "0x80040217",
                             f"Could not find entity with LogicalName = {m.group(1)}.")
        k = key.strip().lower()
        for td in self.store.tables.values():
            if td.metadata_id == k:
                return td
        raise ODataError(404, "0x80040217", f"Could not find entity with MetadataId = {key}.")

    @staticmethod
    def _resolver(sample: dict, type_name: str):
        def resolve(name: str):
            parts = name.split("/")
            if parts[0] not in sample:
                raise bad_request(f"Could not find a property named '{parts[0]}' on type '{T.NS}.{type_name}'.")
            v = sample[parts[0]]
            for p in parts[1:]:
                v = v.get(p) if isinstance(v, dict) else None

            def get(d, parts=parts):
                x = d.get(parts[0])
                for p in parts[1:]:
                    x = x.get(p) if isinstance(x, dict) else None
                return x

            kind = ("bool" if isinstance(v, bool) else "number" if isinstance(v, int | float)
                    else "string" if isinstance(v, str) else "any")
            return get, kind
        return resolve

    @staticmethod
    def _project(d: dict, select: list[str] | None, allowed: list[str], type_name: str) -> dict:
        """``$select`` on a metadata entity, with the real 400 for an unknown property."""
        try:
            return M.select_props(d, select, allowed, type_name)
        except ValueError as e:
            raise bad_request(str(e)) from None

    def entity_definitions(self, req, base, rest):
        q = req.query
        select = parse_select(q["$select"]) if "$select" in q else None
        m = re.match(r"^(?:\(([^)]*)\))?(?:/Attributes(?:\(([^)]*)\))?(?:/([\w.]+))?)?$", rest)
        if not m:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{rest}'.")
        key, attr_key, cast = m.group(1), m.group(2), m.group(3)
        if "/Attributes" in rest:
            td = self._find_entity(key) if key else None
            if td is None:
                raise bad_request("Attributes can only be read for a single entity.")
            return self.attributes(req, base, td, attr_key, cast, select)
        expand = split_expand(q["$expand"]) if "$expand" in q else []
        ents = [self.store.tables[n] for n in self.store.tables]
        if key is not None:
            ents = [self._find_entity(key)]
        sample = M.entity_json(ents[0])
        pred = None
        if "$filter" in q:
            pred, _ = compile_filter(parse_filter(q["$filter"]), self._resolver(sample, "EntityMetadata"))
        out = []
        for td in ents:
            d = M.entity_json(td)
            if pred is not None and not pred(d):
                continue
            p = self._project(d, select, M.ENTITY_PROPS, "EntityMetadata")
            for name, opts in expand:
                if name != "Attributes":
                    raise bad_request(f"Could not find a property named '{name}' on type '{T.NS}.EntityMetadata'.")
                p["Attributes"] = self._attr_list(td, None, opts)
            out.append(p)
        ctx = "EntityDefinitions" + (f"({','.join(select)})" if select else "")
        if key is not None:
            body = {"@odata.context": base + f"$metadata#{ctx}/$entity"}
            body.update(out[0])
            return self.json(200, body)
        return self.json(200, {"@odata.context": base + f"$metadata#{ctx}", "value": out})

    def _attr_list(self, td: T.TableDef, cast: str | None, opts: dict[str, str]) -> list[dict]:
        allowed = list(M.BASE_ATTR_PROPS)
        md_type = None
        if cast:
            if not cast.startswith(T.NS + ".") or cast[len(T.NS) + 1:] not in M.TYPE_PROPS:
                raise ODataError(404, "0x80060888", f"Resource not found for the segment '{cast}'.")
            md_type = cast[len(T.NS) + 1:]
            allowed += M.TYPE_PROPS[md_type]
        select = parse_select(opts["$select"]) if "$select" in opts else None
        expand = split_expand(opts["$expand"]) if "$expand" in opts else []
        attrs = [(i, a) for i, a in enumerate(td.attrs) if md_type is None or a.md_type == md_type]
        items = [(a, M.attr_json(td, a, i + 1)) for i, a in attrs]
        if "$filter" in opts and items:
            sample = dict(items[0][1])
            for k in M.BASE_ATTR_PROPS + (M.TYPE_PROPS.get(md_type, []) if md_type else []):
                sample.setdefault(k, None)
            pred, _ = compile_filter(parse_filter(opts["$filter"]),
                                     self._resolver(sample, md_type or "AttributeMetadata"))
            items = [(a, d) for a, d in items if pred(d)]
        out = []
        for a, d in items:
            p = self._project(d, select, allowed, md_type or "AttributeMetadata")
            for name, eopts in expand:
                navs = M.OPTIONSET_NAV.get(md_type or "", [])
                if name not in navs:
                    raise bad_request(f"Could not find a property named '{name}' on type "
                                      f"'{T.NS}.{md_type or 'AttributeMetadata'}'.")
                os_ = a.optionset
                val = None
                if os_ is not None and (name == "OptionSet" or os_.is_global):
                    val = M.optionset_json(os_)
                    if "$select" in eopts:
                        keep = parse_select(eopts["$select"])
                        val = {k: v for k, v in val.items() if k in keep or k == "MetadataId"}
                p[name] = val
            out.append(p)
        return out

    def attributes(self, req, base, td, attr_key, cast, select):
        if td.metadata_error is not None:
            raise ODataError(*td.metadata_error)
        q = dict(req.query)
        items = self._attr_list(td, cast, q)
        if attr_key is not None:
            m = re.match(r"^LogicalName='([^']*)'$", attr_key)
            want = m.group(1) if m else None
            items = [d for d in items if (d.get("LogicalName") == want if want else
                                          d.get("MetadataId") == attr_key.lower())]
            if not items:
                raise ODataError(404, "0x80040217", f"Could not find attribute {attr_key} on entity {td.logical}.")
        ctx = f"EntityDefinitions({td.metadata_id})/Attributes" + (f"/{cast}" if cast else "") + \
            (f"({','.join(select)})" if select else "")
        if attr_key is not None:
            body = {"@odata.context": base + f"$metadata#{ctx}/$entity"}
            body.update(items[0])
            return self.json(200, body)
        return self.json(200, {"@odata.context": base + f"$metadata#{ctx}", "value": items})

    def global_option_sets(self, req, base, rest):
        """``GlobalOptionSetDefinitions`` (unpaged; ``$filter`` is not supported there)."""
        if "$filter" in req.query:
            raise bad_request("The $filter query option is not supported on GlobalOptionSetDefinitions.")
        select = parse_select(req.query["$select"]) if "$select" in req.query else None
        sets = T.global_option_sets(self.store.tables)
        m = re.match(r"^(?:\((?:Name=)?'?([^')]*)'?\))?$", rest)
        if not m:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{rest}'.")
        out = []
        for os_ in sets:
            d = {"@odata.type": f"#{T.NS}.OptionSetMetadata", **M.optionset_json(os_)}
            if m.group(1) and m.group(1) not in (os_.name, d["MetadataId"]):
                continue
            out.append(self._project(d, select, M.OPTIONSET_PROPS, "OptionSetMetadata"))
        ctx = "GlobalOptionSetDefinitions" + (f"({','.join(select)})" if select else "")
        if m.group(1):
            if not out:
                raise ODataError(404, "0x80040217", f"Could not find optionset {m.group(1)}.")
            return self.json(200, {"@odata.context": base + f"$metadata#{ctx}/$entity", **out[0]})
        return self.json(200, {"@odata.context": base + f"$metadata#{ctx}", "value": out})

    def relationship_definitions(self, req, base, rest):
        """``RelationshipDefinitions`` with optional derived-type cast; type-specific
        properties are only selectable through the cast, like on ``Attributes``."""
        m = re.match(r"^(?:/([\w.]+))?$", rest)
        if not m:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{rest}'.")
        cast = m.group(1)
        allowed = list(M.RELATIONSHIP_BASE_PROPS)
        md_type = None
        if cast:
            md_type = cast[len(T.NS) + 1:] if cast.startswith(T.NS + ".") else None
            if md_type not in M.RELATIONSHIP_TYPE_PROPS:
                raise ODataError(404, "0x80060888", f"Resource not found for the segment '{cast}'.")
            allowed += M.RELATIONSHIP_TYPE_PROPS[md_type]
        select = parse_select(req.query["$select"]) if "$select" in req.query else None
        out = []
        for rel in T.relationships(self.store.tables):
            if md_type and rel["@odata.type"] != f"#{T.NS}.{md_type}":
                continue
            out.append(self._project(rel, select, allowed, md_type or "RelationshipMetadataBase"))
        ctx = "RelationshipDefinitions" + (f"/{cast}" if cast else "") + \
            (f"({','.join(select)})" if select else "")
        return self.json(200, {"@odata.context": base + f"$metadata#{ctx}", "value": out})

    # ------------------------------------------------------------ data
    def _select(self, td: T.TableDef, q: dict) -> tuple[list[str] | None, frozenset | None]:
        if "$select" not in q:
            return None, None
        cols = parse_select(q["$select"])
        for c in cols:
            if c not in td.by_prop:
                raise bad_request(f"Could not find a property named '{c}' on type '{td.type_name}'.")
        props = set(cols) | {td.pk}
        if any(td.by_prop[c].atype == "Money" for c in cols) and "_transactioncurrencyid_value" in td.by_prop:
            props.add("_transactioncurrencyid_value")
        if props == set(td.served_props):
            return cols, None
        return cols, frozenset(props)

    def _shape(self, props, prefer: Prefer) -> tuple:
        return (props, prefer.wants("OData.Community.Display.V1.FormattedValue"),
                prefer.wants("Microsoft.Dynamics.CRM.lookuplogicalname"),
                prefer.wants("Microsoft.Dynamics.CRM.associatednavigationproperty"))

    def _predicate(self, ts: TableStore, q: dict):
        if "$filter" not in q:
            return None, False
        td = ts.t

        def resolve(name: str):
            a = td.by_prop.get(name)
            if a is None:
                raise bad_request(f"Could not find a property named '{name}' on type '{td.type_name}'.")
            return (lambda d, p=name: d.get(p)), kind_of(a)

        pred, used = compile_filter(parse_filter(q["$filter"]), resolve)
        needs_full = not all(u in LIGHT or u == td.pk for u in used)
        return pred, needs_full

    def single(self, req, base, ts: TableStore, key: str):
        td = ts.t
        k = key.strip()
        m = re.match(rf"^(?:{td.pk}=)?([0-9a-fA-F-]{{36}})$", k)
        if not m:
            raise bad_request(f"Bad Request - Error in query syntax: key '{key}' is not a valid "
                              f"Edm.Guid for '{td.type_name}'.")
        rec = ts.rows.get(m.group(1).lower())
        if rec is None:
            raise ODataError(404, "0x80040217", f"{td.logical} With Id = {m.group(1).lower()} Does Not Exist")
        cols, props = self._select(td, req.query)
        prefer = parse_prefer(req.headers.get("prefer", ""))
        blob = ts.serialize(rec, self._shape(props, prefer))
        ctx = td.entity_set + (f"({','.join(cols)})" if cols else "")
        head = orjson.dumps({"@odata.context": base + f"$metadata#{ctx}/$entity"})
        return 200, self.headers(), head[:-1] + b"," + blob[1:]

    def count_only(self, req, ts: TableStore):
        if "$deltatoken" in req.query:
            since, _ = self._parse_deltatoken(req.query["$deltatoken"])
            ups, dels = ts.changes(since, self._snapshot())
            n = len(ups) + len(dels)
        else:
            pred, full = self._predicate(ts, req.query)
            n = min(ts.count(pred, full), MAX_PAGE)
        return 200, self.headers("text/plain"), str(n).encode()

    def _next_link(self, req: Request, cookie: str, drop=("$skiptoken",)) -> str:
        pieces = [p for p in req.raw_query.split("&") if p and
                  urllib.parse.unquote_plus(p.split("=", 1)[0]) not in drop]
        pieces.append("$skiptoken=" + skiptoken_param(cookie))
        return f"{self.org}{urllib.parse.quote(req.path)}?" + "&".join(pieces)

    def _delta_link(self, req: Request, version: int) -> str:
        stamp = time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(int(self.store.clock)))
        token = urllib.parse.quote(f"{version}!{stamp}", safe="")
        pieces = [p for p in req.raw_query.split("&") if p and
                  urllib.parse.unquote_plus(p.split("=", 1)[0]) == "$select"]
        pieces.append("$deltatoken=" + token)
        return f"{self.org}{urllib.parse.quote(req.path)}?" + "&".join(pieces)

    def _parse_deltatoken(self, token: str) -> tuple[int, float]:
        m = re.match(r"^(\d+)!(\d{2})/(\d{2})/(\d{4}) (\d{2}):(\d{2}):(\d{2})$", token)
        if not m:
            raise bad_request("The delta token is not valid.", code="0x80044352")
        mo, d, y, hh, mi, ss = (int(x) for x in m.groups()[1:])
        import calendar
        ts = calendar.timegm((y, mo, d, hh, mi, ss, 0, 0, 0))
        if self.store.clock - ts > self.emu.knobs["change_tracking_expiry_seconds"]:
            # 400 as observed; the status is a knob: only the code and message identify the error
            raise ODataError(self.emu.knobs["change_tracking_expiry_status"], "0x80044352", CT_EXPIRED)
        return int(m.group(1)), ts

    def _page_size(self, prefer: Prefer) -> int:
        n = prefer.maxpagesize or MAX_PAGE
        return max(1, min(n, MAX_PAGE))

    def _applied(self, prefer: Prefer, tracking: bool = False) -> list[tuple[str, str]]:
        bits = []
        if prefer.maxpagesize:
            bits.append(f"odata.maxpagesize={self._page_size(prefer)}")
        if prefer.annotations:
            bits.append(f'odata.include-annotations="{prefer.annotations}"')
        if tracking:
            bits.append("odata.track-changes")
        return [("Preference-Applied", ",".join(bits))] if bits else []

    def _body(self, head: dict, rows: list[bytes], tail: dict | None = None) -> bytes:
        h = orjson.dumps(head)
        parts = [h[:-1], b',"value":[', b",".join(rows), b"]"]
        if tail:
            parts += [b",", orjson.dumps(tail)[1:-1]]
        parts.append(b"}")
        return b"".join(parts)

    def collection(self, req: Request, prefer: Prefer, base: str, ts: TableStore):
        q, td = req.query, ts.t
        cols, props = self._select(td, q)
        shape = self._shape(props, prefer)
        ctx_base = base + "$metadata#" + td.entity_set + (f"({','.join(cols)})" if cols else "")
        cookie = None
        if "$skiptoken" in q:
            cookie = decode_cookie(q["$skiptoken"])
        tracking = prefer.track or "$deltatoken" in q or bool(cookie and cookie[3])
        if tracking:
            return self.tracked(req, prefer, base, ts, cols, shape, ctx_base, cookie)
        if "$expand" in q:
            raise bad_request("$expand is not supported by the emulator.", code="0x80060888")
        pred, needs_full = self._predicate(ts, q)
        order_spec = parse_orderby(q["$orderby"]) if "$orderby" in q else []
        order = []
        for name, desc in order_spec:
            a = td.by_prop.get(name)
            if a is None:
                raise bad_request(f"Could not find a property named '{name}' on type '{td.type_name}'.")
            order.append((a, desc))
        user_cols = list(order)
        if not order or order[-1][0].prop != td.pk:
            order.append((td.by_prop[td.pk], False))
        limit = self._page_size(prefer)
        top = None
        if "$top" in q:
            try:
                top = int(q["$top"])
            except ValueError:
                raise bad_request(f"Invalid value '{q['$top']}' for $top query option.") from None
            if top < 0:
                raise bad_request("Invalid value for $top query option.")
            if self.emu.knobs["top_wins"] or not prefer.maxpagesize:
                limit = min(top, MAX_PAGE)
            else:
                top = None
        after, page = None, 1
        if cookie is not None:
            page, _attrs, ccols, _trk = cookie
            names = [a.logical for a, _ in user_cols] + [td.pk]
            if [c for c, _ in ccols] != names or ccols[-1][1] is None:
                raise bad_request("The paging cookie does not match the query's order.",
                                  code="0x80040203")
            pk = ccols[-1][1].strip("{}").lower()
            vals = [v for _, v in ccols[:-1]] + [pk]
            after = ts.cookie_key(order, vals[: len(order)] if len(vals) >= len(order) else vals, pk)
        recs, more = ts.scan(order, pred, needs_full, after, limit)
        if top is not None:
            more = False
        rows = [ts.serialize(r, shape) for r in recs]
        head: dict[str, Any] = {"@odata.context": ctx_base}
        if prefer.wants("Microsoft.Dynamics.CRM.totalrecordcount") or q.get("$count") == "true":
            n = ts.count(pred, needs_full) if q.get("$count") == "true" else None
            if prefer.wants("Microsoft.Dynamics.CRM.totalrecordcount"):
                head["@Microsoft.Dynamics.CRM.totalrecordcount"] = -1 if n is None else min(n, MAX_PAGE)
                head["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = bool(n and n > MAX_PAGE)
            if n is not None:
                head["@odata.count"] = min(n, MAX_PAGE)
        tail = None
        if more:
            first, last = recs[0], recs[-1]
            ccols_out = []
            if user_cols:
                fd, ld = ts.decode(first, exact=False), ts.decode(last, exact=False)
                for a, _d in user_cols:
                    ccols_out.append((a.logical, _cookie_val(ld.get(a.prop)), _cookie_val(fd.get(a.prop))))
            ccols_out.append((td.pk, "{" + last.pk.upper() + "}", "{" + first.pk.upper() + "}"))
            tail = {"@odata.nextLink": self._next_link(req, encode_cookie(page + 1, ccols_out))}
        self.emu.count_page(len(rows))
        return 200, self.headers() + self._applied(prefer), self._body(head, rows, tail)

    def tracked(self, req, prefer, base, ts: TableStore, cols, shape, ctx_base, cookie):
        q, td = req.query, ts.t
        for opt in ("$filter", "$orderby", "$expand", "$top"):
            if opt in q:
                raise bad_request(f'The "{opt}" query parameter isn\'t supported when Change '
                                  f"Tracking is enabled.", code="0x80060888")
        if not td.change_tracking:
            raise bad_request(f"Change tracking is not enabled for the entity '{td.logical}'. "
                              f"Enable ChangeTrackingEnabled on the table to use "
                              f"odata.track-changes.", code="0x80044331")
        limit = self._page_size(prefer)
        page = 1
        attrs: dict[str, str] = {}
        if cookie is not None:
            page, attrs, _ccols, _ = cookie
        applied = self._applied(prefer, tracking=prefer.track)
        if "$deltatoken" in q:
            since, _ = self._parse_deltatoken(q["$deltatoken"])
            snap = int(attrs["snapshot"]) if "snapshot" in attrs else self._snapshot()
            phase = attrs.get("phase", "u")
            lastv = int(attrs.get("lastversion", since))
            ups, dels = ts.changes(since, snap)
            out: list[bytes] = []
            if phase == "u":
                ups = [r for r in ups if r.version > lastv]
                take = ups[:limit]
                out = [ts.serialize(r, shape) for r in take]
                more = len(ups) > limit or (len(take) == limit and bool(dels))
                if len(ups) > limit:
                    nxt = {"snapshot": str(snap), "phase": "u", "lastversion": str(take[-1].version)}
                else:
                    room = limit - len(take)
                    dtake = dels[:room]
                    out += [self._deleted(base, td, pk) for _, pk in dtake]
                    more = len(dels) > room
                    nxt = {"snapshot": str(snap), "phase": "d",
                           "lastversion": str(dtake[-1][0] if dtake else since)}
            else:
                dels = [d for d in dels if d[0] > lastv]
                dtake = dels[:limit]
                out = [self._deleted(base, td, pk) for _, pk in dtake]
                more = len(dels) > limit
                nxt = {"snapshot": str(snap), "phase": "d",
                       "lastversion": str(dtake[-1][0] if dtake else lastv)}
            head = {"@odata.context": ctx_base + "/$delta"}
            self.emu.count_page(len(out))
            if more:
                ck = encode_cookie(page + 1, [("versionnumber", nxt["lastversion"], str(since))],
                                   tracking=True, extra=nxt)
                return 200, self.headers() + applied, self._body(
                    head, out, {"@odata.nextLink": self._next_link(req, ck)})
            head["@odata.deltaLink"] = self._delta_link(req, snap)
            return 200, self.headers() + applied, self._body(head, out)
        # initial full read with tracking: pk order, snapshot carried in the cookie
        snap = int(attrs["snapshot"]) if "snapshot" in attrs else self._snapshot()
        after = None
        if cookie is not None:
            ccols = cookie[2]
            if not ccols or ccols[-1][0] != td.pk or ccols[-1][1] is None:
                raise bad_request("The paging cookie does not match the query.", code="0x80040203")
        order = [(td.by_prop[td.pk], False)]
        if cookie is not None:
            pk = ccols[-1][1].strip("{}").lower()
            after = ts.cookie_key(order, [pk], pk)
        recs, more = ts.scan(order, None, False, after, limit)
        rows = [ts.serialize(r, shape) for r in recs]
        head = {"@odata.context": ctx_base}
        self.emu.count_page(len(rows))
        if more:
            ck = encode_cookie(page + 1, [(td.pk, "{" + recs[-1].pk.upper() + "}",
                                           "{" + recs[0].pk.upper() + "}")],
                               tracking=True, extra={"snapshot": str(snap)})
            return 200, self.headers() + applied, self._body(
                head, rows, {"@odata.nextLink": self._next_link(req, ck)})
        head["@odata.deltaLink"] = self._delta_link(req, snap)
        return 200, self.headers() + applied, self._body(head, rows)

    def _snapshot(self) -> int:
        """The org version as of now, taken under the store lock.

        A mutation bumps the version and logs its change inside that lock, so every change with
        a version at or below the snapshot is already visible: like a committed transaction in
        Dataverse, nothing can later appear "in the past" of a delta token.
        """
        with self.store.lock:
            return self.store.version

    @staticmethod
    def _deleted(base: str, td: T.TableDef, pk: str) -> bytes:
        return orjson.dumps({"@odata.context": base + f"$metadata#{td.entity_set}/$deletedEntity",
                             "id": pk, "reason": "deleted"})


def _cookie_val(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    return orjson.dumps(v).decode()
