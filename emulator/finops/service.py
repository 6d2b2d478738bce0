"""Dynamics 365 Finance & Operations' OData service (``/data``) and its JSON metadata service.

As reference §2 describes it, and no kinder:

- ``/data/`` service document, ``/data/$metadata`` (CSDL with enum types, composite keys with
  ``dataAreaId`` first, binary and navigation properties), ``/data/<Set>``, ``/data/<Set>/$count``;
  ``/Metadata/PublicEntities`` and ``/Metadata/PublicEnumerations`` (JSON) and
  ``/Metadata/Labels(Id='…',Language='…')``.
- Only the caller's default company (``usmf``) unless ``cross-company=true`` — also when the
  ``$filter`` names another ``dataAreaId``.
- Pages of ``min(odata.maxpagesize, $top, 10000)`` rows with ``@odata.nextLink`` carrying
  ``$skip`` (the caller's query kept verbatim). Without ``$orderby`` the order is the database's,
  which changes whenever data changes: a client that pages without a stable order skips rows.
- Enum values as member names; enum literals ``Microsoft.Dynamics.DataEntities.NoYes'Yes'`` with
  ``eq``/``ne`` only; ``in`` and ``has`` rejected; empty dates as ``1900-01-01`` sentinels.
- Bearer tokens for the environment URL only; an app with a token that is not registered in
  F&O (System administration > Setup > Microsoft Entra applications) gets 401.
- ``forbidden_entities`` answer 403, ``failing_entities`` 500 (an entity that errors on the server).
- ``user_limits``: the optional user-based service protection limits, per caller (the ``limit_*``
  knobs of emulator/core/limits.py), 429 with ``Retry-After``; ``user_limit_headers`` adds the
  budget left as ``x-ms-ratelimit-*`` (undocumented for F&O, so off unless asked for).
"""

from __future__ import annotations

import email.utils
import re
import time
import urllib.parse
import uuid
from functools import cmp_to_key
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ..core.service import FaultAdapter, Request, Response, Service, caller_of
from ..odata import ODataError, bad_request, v4
from ..odata.filter import compile_filter, parse_filter
from ..odata.query import parse_orderby, parse_prefer, parse_select
from .csdl import csdl, public_entities, public_enumerations
from .model import DEFAULT_COMPANY, ENUMS, LABELS, NS, Entity, Store

if TYPE_CHECKING:
    from ..core.host import Host
    from ..identity.adfs import Adfs
    from ..identity.entra import Entra

MAX_PAGE = 10_000
THROTTLE_MESSAGE = ("This request could not be processed at this time due to system experiencing high resource "
                    "utilization. Retry the request after {0} seconds")
KINDS = {"Edm.String": "string", "Edm.Decimal": "number", "Edm.Int32": "number", "Edm.Int64": "number",
         "Edm.Double": "number", "Edm.Boolean": "bool", "Edm.DateTimeOffset": "datetime", "Edm.Date": "date",
         "Edm.Guid": "guid"}


def _json(status: int, obj: Any, extra: list | None = None) -> Response:
    return status, [("Content-Type", "application/json; odata.metadata=minimal"), ("OData-Version", "4.0"),
                    ("ms-dyn-aid", str(uuid.uuid4())), *(extra or [])], orjson.dumps(obj, default=_exact)


def _exact(value: Any) -> Any:
    return orjson.Fragment(str(value))  # Decimals as exact JSON numbers


def _error(status: int, message: str, code: str = "") -> Response:
    return _json(status, {"error": {"code": code, "message": message,
                                    "innererror": {"message": message, "type": "Microsoft.Dynamics.Platform.Integration.Services.OData.ODataException", "stacktrace": ""}}})


# The optional user-based service protection limits (Feature management, off by default since
# 10.0.35): Microsoft documents that they mirror Dataverse's three measures and messages.
USER_LIMIT_MESSAGES = {
    "requests": "Number of requests exceeded the limit of {requests} over time window of {window} seconds.",
    "execution": ("Combined execution time of incoming requests exceeded limit of {execution_ms:,} milliseconds "
                  "over time window of {window} seconds. Decrease number of concurrent requests or reduce the "
                  "duration of requests and try again later."),
    "concurrency": "Number of concurrent requests exceeded the limit of {concurrent}.",
}


class FinOpsFaults(FaultAdapter):
    """F&O's own throttling answer (resource-based, environment-wide), its 503, and the 429 of
    the optional user-based limits (``user_limits``: per caller, by the shared limits of
    emulator/core/limits.py). Whether F&O also reports the budget left in Dataverse's
    ``x-ms-ratelimit-*`` headers is not documented: they are sent only with
    ``user_limit_headers`` (never kinder than the service by default)."""

    bearer = True
    KNOBS: ClassVar[dict[str, Any]] = {"forbidden_entities": [], "failing_entities": [],
                                       "user_limits": False, "user_limit_headers": False}
    limit_codes: ClassVar[dict[str, str]] = {measure: measure for measure in USER_LIMIT_MESSAGES}

    def limited(self, code: str, retry_after: int) -> Response:
        k = self.knobs
        message = USER_LIMIT_MESSAGES[code].format(
            requests=int(k["limit_requests"]), window=int(float(k["limit_window_s"])),
            execution_ms=int(float(k["limit_execution_s"]) * 1000), concurrent=int(k["limit_concurrent"]))
        status, headers, body = _error(429, message)
        return status, [*headers, ("Retry-After", str(retry_after))], body

    def applies(self, req: Request) -> bool:
        return req.path.startswith("/data")

    def throttled(self, rng: Any, retry_after: str | None) -> tuple[Response, str | None]:
        status, headers, body = _error(429, THROTTLE_MESSAGE.format(retry_after or "a few"))
        return (status, [*headers, *([("Retry-After", retry_after)] if retry_after else [])], body), None

    def unavailable(self, retry_after: str | None) -> Response:
        status, headers, body = _error(503, "Service Unavailable")
        return status, [*headers, *([("Retry-After", retry_after)] if retry_after else [])], body

    def success_filler(self) -> Response:
        return _json(200, {"value": ["x" * 1200]})


class FinOpsService(Service):
    """One F&O environment: ``/data`` and ``/Metadata`` of its :class:`~.model.Store`."""

    name = "finops"
    prefix = "/"
    fault_default = True
    fault_adapter_class = FinOpsFaults

    def __init__(self, host: Host, store: Store, identity: Entra, adfs: Adfs | None = None) -> None:
        super().__init__(host)
        self.store = store
        self.identity = identity
        self.adfs = adfs  # on-premises: AD FS issues the tokens, Entra ID none
        self._metadata: bytes | None = None
        self._orders: dict[tuple, list] = {}
        self._selections: dict[tuple, list] = {}
        self._encoded: dict[tuple, list[bytes]] = {}

    @property
    def audience(self) -> str:
        """Tokens must be for the environment URL."""
        return self.base_url

    def match(self, path: str) -> str | None:
        head = path.split("/", 2)[1] if path.startswith("/") else ""
        return path if head in ("data", "Metadata") else None

    def received(self, req: Request) -> None:
        self.host.statistics.query(req.path, req.raw_query, req.headers.get("prefer", ""))

    def respond(self, req: Request, response: Response) -> Response:
        status, headers, body = response
        return status, [*headers, ("Date", email.utils.formatdate(self.store.clock, usegmt=True))], body

    def control(self, method: str, parts: list[str], data: Any) -> Response | None:
        """``POST /_emulator/finops/<Set>`` upserts a row; ``DELETE …/<Set>`` with ``{"key": [...]}``."""
        if len(parts) == 2 and parts[0] == "finops" and parts[1] in self.store.entities:
            if method == "POST":
                return _json(200, self.store.upsert(parts[1], data))
            if method == "DELETE":
                self.store.delete(parts[1], tuple(data["key"]))
                return 204, [], b""
        return None

    # ------------------------------------------------------------------ entry
    def handle(self, req: Request) -> Response:
        refused = self.authenticate(req)
        if refused is not None:
            return refused
        caller = req.caller if self.knobs["user_limits"] and req.path.startswith("/data") else None
        if caller is None:
            return self.serve(req)
        limits = self.host.faults.protection
        refused = limits.admit(caller, self.faults)
        if refused is not None:
            return refused
        started = time.perf_counter()
        try:
            status, headers, body = self.serve(req)
        finally:
            limits.done(caller, time.perf_counter() - started)
        if self.knobs["user_limit_headers"]:
            burst, left = limits.remaining(caller)
            headers = [*headers, ("x-ms-ratelimit-burst-remaining-xrm-requests", str(max(0, burst))),
                       ("x-ms-ratelimit-time-remaining-xrm-requests", f"{max(0.0, left):,.2f}")]
        return status, headers, body

    def serve(self, req: Request) -> Response:
        """The answer to an authenticated request (within the user-based limits, if on)."""
        try:
            self.host.hold(urllib.parse.unquote(req.path + "?" + req.raw_query))
            if req.method != "GET":
                return _error(405, f"The HTTP method '{req.method}' is not allowed in the emulator (read-only).")
            if req.path.startswith("/Metadata/"):
                return self.metadata_service(req.path[len("/Metadata/"):])
            rest = req.path[len("/data"):].strip("/")
            if rest == "":
                return _json(200, {"@odata.context": f"{self.base_url}/data/$metadata", "value": [
                    {"name": e.entity_set, "kind": "EntitySet", "url": e.entity_set}
                    for e in self.store.entities.values()]})
            if rest == "$metadata":
                if self._metadata is None:
                    self._metadata = csdl(self.store.entities.values())
                return 200, [("Content-Type", "application/xml"), ("OData-Version", "4.0")], self._metadata
            name, _, count = rest.partition("/")
            entity = self.store.entities.get(name)
            if entity is None:
                raise ODataError(404, "", f"No HTTP resource was found that matches the request URI '{req.path}'.")
            faults = self.knobs
            if name in faults["forbidden_entities"]:
                raise ODataError(403, "", f"Access denied: the user has no access to entity {name}.")
            if name in faults["failing_entities"]:
                raise ODataError(500, "", f"An error has occurred while reading {name}: X++ exception.")
            return self.collection(req, entity, count == "$count")
        except ODataError as e:
            return _error(e.status, e.message, e.code)

    def authenticate(self, req: Request) -> Response | None:
        auth = req.headers.get("authorization", "")
        if self.adfs is not None:
            return self.authenticate_adfs(req, auth)
        challenge = [("WWW-Authenticate", f'Bearer authorization_uri="{self.identity.authority_host}/'
                                          f'{self.identity.tenant_id}/oauth2/authorize"')]
        if not auth.lower().startswith("bearer "):
            return 401, challenge, b""
        app, _why = self.identity.validate(auth[7:].strip(), self.audience)
        if app is None or not app.application_user:
            # F&O answers an app missing from Microsoft Entra applications like a bad token.
            return 401, challenge, b""
        req.principal, req.caller = app, caller_of(auth)
        return None

    def authenticate_adfs(self, req: Request, auth: str) -> Response | None:
        """On-premises: a bearer token the AD FS issued for this environment (its relying party
        trust), else 401 with the AD FS challenge."""
        assert self.adfs is not None
        client = self.adfs.validate(auth[7:].strip(), self.audience) if auth.lower().startswith("bearer ") else None
        if client is None:
            challenge = (f"Bearer authorization_uri={self.host.authority_host}/adfs/oauth2/authorize, "
                         f"resource_id={self.audience}/")
            return 401, [("WWW-Authenticate", challenge)], b""
        req.caller = caller_of(auth)
        return None

    # ------------------------------------------------------------------ metadata service
    def metadata_service(self, rest: str) -> Response:
        if rest == "PublicEntities":
            return _json(200, {"value": public_entities(self.store.entities.values())})
        if rest == "PublicEnumerations":
            return _json(200, {"value": public_enumerations()})
        m = re.fullmatch(r"Labels\(Id='([^']+)',Language='([^']+)'\)", rest)
        if m:
            member, language = m.group(1).removeprefix("@FinOps:"), m.group(2).lower()
            if language not in LABELS:
                raise ODataError(404, "", f"Language '{language}' is not installed.")
            return _json(200, {"Id": m.group(1), "Language": language,
                               "Value": LABELS[language].get(member, member)})
        raise ODataError(404, "", f"No HTTP resource was found that matches 'Metadata/{rest}'.")

    # ------------------------------------------------------------------ data
    def collection(self, req: Request, entity: Entity, count_only: bool) -> Response:
        q = req.query
        for option in q:
            if option.startswith("$") and option not in ("$filter", "$select", "$orderby", "$top", "$skip",
                                                         "$count", "$expand"):
                raise bad_request(f"The query parameter '{option}' is not supported.", "")
        cross = q.get("cross-company", "").lower() == "true"
        rows, key = self.selected(entity, q.get("$orderby"), q.get("$filter"), cross)
        if count_only:
            return 200, [("Content-Type", "text/plain")], str(len(rows)).encode()
        skip = _int(q.get("$skip", "0"), "$skip")
        top = _int(q["$top"], "$top") if "$top" in q else None
        prefer = parse_prefer(req.headers.get("prefer", ""))
        size = min(MAX_PAGE, prefer.maxpagesize or MAX_PAGE)
        end = len(rows) if top is None else min(len(rows), skip + top)
        chunk = rows[skip:min(end, skip + size)]
        select = parse_select(q["$select"]) if "$select" in q else None
        if select:
            unknown = [c for c in select if entity.prop(c) is None]
            if unknown:
                raise bad_request(f"Could not find a property named '{unknown[0]}' on type '{NS}.{entity.name}'.", "")
        self.host.count_page(len(chunk))
        head: dict[str, Any] = {"@odata.context": f"{self.base_url}/data/$metadata#{entity.entity_set}"}
        if q.get("$count") == "true":
            head["@odata.count"] = len(rows)
        encoded = self.encoded(rows, (*key, tuple(select or ())), select)
        body = encoded[skip:skip + len(chunk)]
        tail = None
        if skip + len(chunk) < end:
            link = v4.link(self.base_url, req, lambda k: k != "$skip", "$skip", str(skip + len(chunk)))
            tail = {"@odata.nextLink": link}
        return 200, [("Content-Type", v4.CONTENT_TYPE), ("OData-Version", "4.0"),
                     ("ms-dyn-aid", str(uuid.uuid4()))], v4.page(head, body, tail)

    def selected(self, entity: Entity, orderby: str | None, text: str | None,
                 cross: bool) -> tuple[list[dict[str, Any]], tuple]:
        """The rows a query selects, in its order, and the key they are kept under until the data
        changes, so that the pages of one chain cost a slice each, not a filter over the table."""
        with self.store.lock:
            key = (entity.entity_set, orderby, text, cross, self.store.generation)
            cached = self._selections.get(key)
            if cached is not None:
                return cached, key
            predicate = self.filter(entity, text)
            rows = [r for r in self.ordered(entity, orderby)
                    if (cross or not entity.company or r["dataAreaId"].lower() == DEFAULT_COMPANY)
                    and predicate(r)]
            if len(self._selections) > 32:
                self._selections.clear()
            self._selections[key] = rows
            return rows, key

    def encoded(self, rows: list[dict[str, Any]], key: tuple, select: list[str] | None) -> list[bytes]:
        """The selected rows as JSON, encoded once per query shape and data generation: the
        emulator's own serving cost stays small next to the latency it is told to add."""
        with self.store.lock:
            cached = self._encoded.get(key)
            if cached is None:
                cached = [orjson.dumps(_shape(r, select), default=_exact) for r in rows]
                if len(self._encoded) > 8:
                    self._encoded.clear()
                self._encoded[key] = cached
            return cached

    def ordered(self, entity: Entity, orderby: str | None) -> list[dict[str, Any]]:
        """The rows in ``$orderby`` order, or in the database's (changing) order without one."""
        key = (entity.entity_set, orderby, self.store.generation)
        cached = self._orders.get(key)
        if cached is not None:
            return cached
        rows = list(entity.rows.values())
        if orderby:
            terms = parse_orderby(orderby)
            for name, _desc in terms:
                if entity.prop(name) is None:
                    raise bad_request(f"Could not find a property named '{name}' on type '{NS}.{entity.name}'.", "")
            rows.sort(key=cmp_to_key(lambda a, b: _compare(a, b, terms)))
        else:
            generation = self.store.generation
            rows.sort(key=lambda r: hash((r["@odata.etag"], generation)))
        if len(self._orders) > 32:
            self._orders.clear()
        self._orders[key] = rows
        return rows

    def filter(self, entity: Entity, text: str | None) -> Any:
        if not text:
            return lambda _r: True
        if re.search(r"\s(in|has)\s", f" {text} "):
            raise bad_request("The 'in' and 'has' operators are not supported.", "")
        ast = parse_filter(text)
        _check_enums(ast, entity)

        def resolve(name: str) -> tuple[Any, str]:
            prop = entity.prop(name)
            if prop is None:
                raise bad_request(f"Could not find a property named '{name}' on type '{NS}.{entity.name}'.", "")
            kind = "string" if prop.enum else KINDS.get(prop.type, "any")
            return (lambda r: r.get(name)), kind

        predicate, _used = compile_filter(ast, resolve)
        return predicate


def _check_enums(node: Any, entity: Entity) -> None:
    """Enum properties: only ``eq``/``ne``, only against ``Namespace.Enum'Member'`` literals."""
    if not isinstance(node, tuple) or not node:
        return
    if node[0] == "cmp":
        op, left, right = node[1], node[2], node[3]
        prop_node, lit = (left, right) if left[0] == "prop" else (right, left)
        prop = entity.prop(prop_node[1]) if prop_node[0] == "prop" else None
        if prop is not None and prop.enum:
            if op not in ("eq", "ne"):
                raise bad_request(f"The operator '{op}' is not supported for enum property '{prop.name}'.", "")
            members = [m for m, _v in ENUMS[prop.enum]]
            literal = lit[2] if lit[0] == "lit" else None
            if lit[1] != "enum" or not isinstance(literal, str):
                raise bad_request(f"A binary operator with incompatible types was detected. Found operand types "
                                  f"'{NS}.{prop.enum}' and 'Edm.String' for operator kind 'Equal'.", "")
            if literal not in members:
                raise bad_request(f"The string '{literal}' is not a valid enumerated type constant.", "")
        return
    for child in node[1:]:
        _check_enums(child, entity)


def _int(value: str, name: str) -> int:
    if not value.isdigit():
        raise bad_request(f"Invalid value '{value}' for {name}.", "")
    return int(value)


def _shape(row: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if not select:
        return row
    return {"@odata.etag": row["@odata.etag"], **{c: row.get(c) for c in select}}


def _compare(a: dict[str, Any], b: dict[str, Any], terms: list[tuple[str, bool]]) -> int:
    for name, desc in terms:
        x, y = a.get(name), b.get(name)
        if isinstance(x, str) and isinstance(y, str):
            x, y = x.casefold(), y.casefold()  # SQL Server's case-insensitive collation
        if x == y:
            continue
        result = -1 if x is None or (y is not None and x < y) else 1
        return -result if desc else result
    return 0

