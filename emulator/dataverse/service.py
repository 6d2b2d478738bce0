"""Dataverse Web API v9.x (online): auth challenge, service document, ``$metadata``, functions,
and the metadata (:mod:`.metadata_api`) and data (:mod:`.data`) endpoints.

Why it is written against raw paths and raw query strings: the paging contract is that the
client follows ``@odata.nextLink`` verbatim. We keep the caller's query pieces untouched when
building nextLinks and decode ``$skiptoken`` exactly once, so a client that re-encodes the
link gets the same 400 it would get from a real org.

The service accepts only bearer tokens issued for its own audience (the org URL) by the
identity provider it was given; the on-premises variant (``emulator/onprem``) subclasses it.
"""

from __future__ import annotations

import email.utils
import re
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ..core.service import Request, Response, Service, caller_of
from ..odata import ODataError, bad_request, v4
from ..odata.query import Prefer, parse_prefer, parse_select
from . import metadata as M  # noqa: N812 - M.csdl: the rendering module
from .data import DataApi
from .deployment import data_control
from .faults import DataverseFaults
from .metadata_api import MetadataApi
from .schema import BUSINESS_UNIT_ID, NS, ORG_NAME, ORGANIZATION_ID, stable_guid

if TYPE_CHECKING:
    from ..core.host import Host
    from ..identity.entra import Entra
    from .store import Store

ALLOWED_OPTIONS = {"$select", "$filter", "$orderby", "$top", "$count", "$expand", "$skiptoken",
                   "$deltatoken", "$apply"}


class DataverseService(MetadataApi, DataApi, Service):
    """One Dataverse environment: its tables (``store``) behind ``/api/data/vX.Y``."""

    name = "dataverse"
    prefix = "/api/data/"
    fault_default = True
    fault_adapter_class = DataverseFaults
    KNOBS: ClassVar[dict[str, Any]] = {
        "change_tracking_expiry_seconds": 7 * 86400,
        # the HTTP status of the expired-token error (observed: 400; the code is what counts)
        "change_tracking_expiry_status": 400,
        # $top with odata.maxpagesize: True = $top wins (one page), False = paging wins
        "top_wins": True,
        # override the x-ms-ratelimit-* headers (None: computed from recent requests)
        "ratelimit_burst_remaining": None,
        "ratelimit_time_remaining": None,
    }

    def __init__(self, host: Host, store: Store, identity: Entra | None, mount: str = "") -> None:
        super().__init__(host, mount)
        self.store = store
        self.identity = identity
        self.by_set = {td.entity_set: td for td in store.tables.values()}

    @property
    def audience(self) -> str:
        """The resource its bearer tokens must be issued for (``aud``): the org URL."""
        return self.base_url

    def received(self, req: Request) -> None:
        self.host.statistics.query(req.path, req.raw_query, req.headers.get("prefer", ""))

    def respond(self, req: Request, response: Response) -> Response:
        """Dataverse dates every response; here by the emulator's clock, which is the clock its
        rows are stamped with (a client compares its bookmarks with it)."""
        status, hdrs, payload = response
        return status, [*hdrs, ("Date", email.utils.formatdate(self.store.clock, usegmt=True))], payload

    def control(self, method: str, parts: list[str], data: Any) -> Response | None:
        return data_control(self.host, method, parts, data)  # type: ignore[arg-type]

    # ------------------------------------------------------------ helpers
    def headers(self, ct: str | None = v4.CONTENT_TYPE) -> list[tuple[str, str]]:
        rid = str(uuid.uuid4())
        # x-ms-ratelimit-* are the caller's own budget: added in handle(), which knows the caller
        h = [("OData-Version", "4.0"), ("REQ_ID", rid), ("x-ms-service-request-id", rid),
             ("Cache-Control", "no-cache"), ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")]
        if ct:
            h.append(("Content-Type", ct))
        return h

    def json(self, status: int, obj: Any, extra: list | None = None) -> Response:
        return status, self.headers() + (extra or []), orjson.dumps(obj)

    def error(self, e: ODataError, prefer: Prefer | None = None) -> Response:
        annotations: dict[str, Any] = {}
        if prefer and prefer.wants("Microsoft.PowerApps.CDS.HelpLink"):
            annotations["@Microsoft.PowerApps.CDS.ErrorDetails.OperationStatus"] = "0"
            annotations["@Microsoft.PowerApps.CDS.HelpLink"] = (
                f"http://go.microsoft.com/fwlink/?LinkID=398563&error=Microsoft.Crm.CrmException%3a"
                f"{e.code[2:]}&client=platform")
            annotations["@Microsoft.PowerApps.CDS.TraceText"] = f"\r\n[Microsoft.Crm.ObjectModel]\r\n{e.message}"
        return self.json(e.status, v4.error(e.code, e.message, **annotations))

    def internal_error(self) -> Response:
        return self.json(500, v4.error("0x80040216", "An unexpected error occurred."))

    # ------------------------------------------------------------ entry point
    def handle(self, req: Request) -> Response:
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
        caller = req.caller
        limits = self.host.faults.protection
        refused = None if caller is None else limits.admit(caller, self.faults)
        if refused is not None:
            return refused
        started = time.perf_counter()
        try:
            self.host.hold(urllib.parse.unquote(req.path + "?" + req.raw_query))
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
        return status, hdrs + ([] if caller is None else self.budget_headers(caller)), payload

    def budget_headers(self, caller: str) -> list[tuple[str, str]]:
        """``x-ms-ratelimit-*``: the caller's remaining requests and execution seconds."""
        burst, left = self.host.faults.protection.remaining(caller)
        if self.knobs["ratelimit_burst_remaining"] is not None:
            burst = self.knobs["ratelimit_burst_remaining"]
        if self.knobs["ratelimit_time_remaining"] is not None:
            left = self.knobs["ratelimit_time_remaining"]
        return [("x-ms-ratelimit-burst-remaining-xrm-requests", str(max(0, int(burst)))),
                ("x-ms-ratelimit-time-remaining-xrm-requests", f"{max(0.0, float(left)):,.2f}")]

    def authenticate(self, req: Request) -> Response | None:
        """None when the bearer token is good for this org (``req.user_id`` set); else the
        401 challenge or the 403 of an app without an application user."""
        identity = self.identity
        auth = req.headers.get("authorization", "")
        challenge = [("WWW-Authenticate",
                      f"Bearer authorization_uri={identity.authority_host if identity else ''}/"
                      f"{identity.tenant_id if identity else ''}"
                      f"/oauth2/authorize, resource_id={self.base_url}/")]
        if not auth.lower().startswith("bearer ") or identity is None:
            return 401, self.headers(None) + challenge, b""
        app, _why = identity.validate(auth[7:].strip(), self.audience)
        if app is None:
            return 401, self.headers(None) + challenge, b""
        if not app.application_user:
            return self.error(ODataError(
                403, "0x80072560",
                f"The user is not a member of the organization. (Application '{app.client_id}' has "
                f"no application user in the environment; create one and assign a security role.)"))
        req.user_id, req.principal = app.user_id, app
        req.caller = caller_of(auth)
        return None

    def route(self, req: Request, prefer: Prefer, version: str, rest: str) -> Response:
        base = f"{self.base_url}/api/data/{version}/"
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
            return self.json(200, {"@odata.context": base + f"$metadata#{NS}.WhoAmIResponse",
                                   "BusinessUnitId": BUSINESS_UNIT_ID, "UserId": req.user_id,
                                   "OrganizationId": ORGANIZATION_ID})
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
            row = {"@odata.etag": 'W/"1000"', "name": ORG_NAME, "organizationid": ORGANIZATION_ID}
            if "$select" in req.query:
                sel = parse_select(req.query["$select"])
                bad = [c for c in sel if c not in row]
                if bad:
                    raise bad_request(f"Could not find a property named '{bad[0]}' on type "
                                      f"'{NS}.organization'.")
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
        app = req.principal
        if app is None or logical not in app.read_denied:
            return
        raise privilege_denied(app.user_id, logical, schema, otc, display, aad_object_id=app.object_id)

    # ------------------------------------------------------------ functions
    def total_count(self, req: Request, base: str, rest: str) -> Response:
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
            "@odata.context": base + f"$metadata#{NS}.RetrieveTotalRecordCountResponse",
            "EntityRecordCountCollection": {"Count": len(names), "IsReadOnly": False,
                                            "Keys": names, "Values": values}})


def privilege_denied(user_id: str, logical: str, schema: str, otc: int, display: str, *,
                     aad_object_id: str | None = None) -> ODataError:
    """Dataverse's 403 PrivilegeDenied for a caller whose role lacks ``prvRead<SchemaName>``
    (an on-premises user has no Entra ID object id in the message)."""
    privilege = f"prvRead{schema}"
    aad = f"AADObjectId='{aad_object_id}', " if aad_object_id else ""
    return ODataError(403, "0x80040220", (
        f"Principal user (Id={user_id}, type=8, roleCount=1, privilegeCount=412, "
        f"accessMode='0 Read-Write', {aad}"
        f"MetadataCachePrivilegesCount=12471, businessUnitId={BUSINESS_UNIT_ID}), is missing "
        f"{privilege} privilege (Id={stable_guid('privilege', privilege)}) on OTC={otc} for "
        f"entity '{logical}' (LocalizedName='{display}'). context.Caller={user_id}. "
        "Consider adding missed privilege to one of the principal (user/team) roles."))
