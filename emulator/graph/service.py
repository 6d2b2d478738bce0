"""Microsoft Graph v1.0: directory collections, delta queries, memberships and calendar views.

- collections (``/v1.0/users`` …): ``$select`` checked against the entity type, ``$top`` within
  the collection's bounds (users 1-999; 500 with ``signInActivity``), opaque ``$skiptoken``
  next links that keep the caller's other query pieces verbatim; ``domains``,
  ``organization``, ``subscribedSkus`` and ``directoryRoles`` do not page and refuse ``$top``;
- delta (``/v1.0/<collection>/delta``): ``$top``/``$orderby``/``$expand`` refused; pages end
  in an ``@odata.deltaLink`` whose token is tied to the change log; later rounds return each
  changed object once in its state now, ``@removed`` (``changed``: soft-deleted,
  ``deleted``: gone), replays (knob), ``members@delta`` spread over repeated group rows,
  ``$deltatoken=latest``; tokens expire (knob, 7 days) and 410 ``resyncRequired`` with a
  ``Location`` or 400 ``syncStateNotFound`` can be injected per collection;
- ``/v1.0/users/{id}/calendarView`` and ``…/calendarView/delta`` (the window fixed into the
  token; ``Prefer: odata.maxpagesize``; 404 ``MailboxNotEnabledForRESTAPI`` for a user without a
  mailbox); requests in flight per mailbox are counted (``/_emulator/graph/stats``);
- 403 ``Authorization_RequestDenied`` when the granted permissions do not cover the endpoint:
  the application permissions (``graph_permissions``) for an app-only token, the delegated
  permissions consented for the app (``graph_delegated_permissions``) for a signed-in user's.

Tokens must be issued for the service's own audience (its origin, like ``https://graph.microsoft.com``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ..core.service import Request, Response, Service, bearer_claims, caller_of
from ..odata import ODataError
from ..odata.query import parse_prefer
from . import model as m
from .faults import GraphFaults, graph_error, graph_headers

if TYPE_CHECKING:
    from ..core.host import Host
    from ..identity.entra import Entra
    from .directory import Directory

ALL_PERMISSIONS = ("User.Read.All", "Group.Read.All", "GroupMember.Read.All", "Device.Read.All",
                   "Application.Read.All", "RoleManagement.Read.Directory", "Domain.Read.All",
                   "Organization.Read.All", "Calendars.Read", "AuditLog.Read.All", "Directory.Read.All")
# Any one of these application permissions reads the collection.
NEEDS: dict[str, frozenset[str]] = {
    "users": frozenset({"User.Read.All", "Directory.Read.All"}),
    "groups": frozenset({"Group.Read.All", "GroupMember.Read.All", "Directory.Read.All"}),
    "members": frozenset({"GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"}),
    "devices": frozenset({"Device.Read.All", "Directory.Read.All"}),
    "applications": frozenset({"Application.Read.All", "Directory.Read.All"}),
    "servicePrincipals": frozenset({"Application.Read.All", "Directory.Read.All"}),
    "directoryRoles": frozenset({"RoleManagement.Read.Directory", "Directory.Read.All"}),
    "domains": frozenset({"Domain.Read.All", "Directory.Read.All"}),
    "organization": frozenset({"Organization.Read.All", "Directory.Read.All"}),
    "subscribedSkus": frozenset({"Organization.Read.All", "Directory.Read.All"}),
    "calendar": frozenset({"Calendars.Read", "Calendars.ReadWrite"}),
    "signInActivity": frozenset({"AuditLog.Read.All"}),
}
PAGED = {"users": 999, "groups": 999, "devices": 999, "applications": 999, "servicePrincipals": 999}
SIGN_IN_TOP = 500
DELTA_REFUSED = ("$top", "$orderby", "$expand", "$search", "$count")
_MAILBOX = re.compile(r"^/v1\.0/users/([^/]+)/calendarView(/delta)?$")
_MEMBERS = re.compile(r"^/v1\.0/groups/([^/]+)/members$")


def _encode(obj: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).decode().rstrip("=")


def _decode(token: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except Exception:
        return None


@dataclass
class Sequence:
    """One paged answer in progress: what to return, in order, and where it ends."""

    kind: str  # "list" | "delta" | "events"
    collection: str
    entries: list[tuple[str, Any]]  # ("object", id) | ("members", (group, [member ids])) | ("event", id)
    select: list[str] | None
    until: int  # the change-log position the round ends at (delta)
    extra: dict[str, Any]  # the list's query pieces to keep, the events window, the mailbox


class GraphService(Service):
    name = "graph"
    prefix = "/v1.0/"
    fault_default = True
    fault_adapter_class = GraphFaults
    KNOBS: ClassVar[dict[str, Any]] = {
        "graph_permissions": list(ALL_PERMISSIONS),  # application permissions granted (consented)
        "graph_delegated_permissions": list(ALL_PERMISSIONS),  # delegated permissions consented
        "graph_delta_page_size": 200,  # the most objects per delta page (Graph pages delta itself)
        "graph_default_top": 100,  # page size of a list without $top
        "graph_replay_every": 7,  # every n-th object of a delta round comes again later (0: never)
        "graph_members_per_row": 20,  # members@delta entries per group row (a big group repeats)
        "graph_empty_first_page": True,  # a delta round starts with an empty page and a nextLink
        "graph_delta_token_expiry_seconds": 7 * 86400,
        "graph_resync": {},  # {"users": n}: the next n delta-token requests answer 410 Gone
        "graph_sync_state_not_found": {},  # {"users": n}: … answer 400 syncStateNotFound
        "graph_events_default_page": 10,  # Outlook's page size without Prefer
    }

    def __init__(self, host: Host, directory: Directory, identity: Entra) -> None:
        super().__init__(host)
        self.directory = directory
        self.identity = identity
        self.sequences: dict[str, Sequence] = {}
        self._starts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.in_flight: dict[str, int] = {}
        self.max_per_mailbox = 0
        self.mailbox_requests = 0

    @property
    def audience(self) -> str:
        return self.base_url

    def received(self, req: Request) -> None:
        self.host.statistics.query(req.path, req.raw_query, req.headers.get("prefer", ""))

    # ------------------------------------------------------------ plumbing
    def json(self, obj: Any) -> Response:
        return 200, graph_headers(), orjson.dumps(obj)

    def authenticate(self, req: Request) -> Response | None:
        auth = req.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        app, why = self.identity.validate(auth[7:].strip(), self.audience)
        if app is None:
            message = {"audience": "Access token validation failure. Invalid audience.",
                       "expired": "Lifetime validation failed, the token is expired."}.get(
                why, "Access token validation failure.")
            return graph_error(401, "InvalidAuthenticationToken", message)
        req.principal, req.caller = app, caller_of(auth)
        if bearer_claims(auth).get("idtyp") == "user":  # a signed-in user's (delegated) token
            req.user_id = req.caller
        return None

    def require(self, need: str, req: Request) -> None:
        """403 unless the token's kind of permission (delegated for a user, else application)
        granted covers ``need``."""
        granted = set(self.knobs["graph_delegated_permissions" if req.user_id else "graph_permissions"])
        if not NEEDS[need] & granted:
            raise ODataError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    def handle(self, req: Request) -> Response:
        denied = self.authenticate(req)
        if denied is not None:
            return denied
        mailbox = _MAILBOX.match(req.path)
        key = mailbox.group(1).lower() if mailbox else None
        if key is not None:
            with self._lock:
                self.in_flight[key] = self.in_flight.get(key, 0) + 1
                self.max_per_mailbox = max(self.max_per_mailbox, self.in_flight[key])
                self.mailbox_requests += 1
        try:
            return self.route(req)
        except ODataError as e:
            extra = [("Location", self.base_url + e.location)] if getattr(e, "location", None) else []
            return graph_error(e.status, e.code, e.message, extra)
        finally:
            if key is not None:
                with self._lock:
                    self.in_flight[key] -= 1

    def control(self, method: str, parts: list[str], data: Any) -> Response | None:
        if parts[:1] != ["graph"]:
            return None
        json = [("Content-Type", "application/json")]
        if parts == ["graph", "stats"] and method == "GET":
            return 200, json, orjson.dumps({"max_per_mailbox": self.max_per_mailbox,
                                            "mailbox_requests": self.mailbox_requests})
        if parts == ["graph", "truth"] and method == "GET":
            return 200, json, orjson.dumps(self.directory.truth())
        if parts == ["graph", "change"] and method == "POST":
            op = data.pop("op")
            result = getattr(self.directory, op)(**data)
            return 200, json, orjson.dumps(result)
        return None

    # ------------------------------------------------------------ routing
    def route(self, req: Request) -> Response:
        path = req.path
        mailbox = _MAILBOX.match(path)
        if mailbox:
            self.require("calendar", req)
            user = mailbox.group(1)
            if user not in self.directory.mailboxes:
                raise ODataError(404, "MailboxNotEnabledForRESTAPI",
                                 "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
            return self.events(req, user, delta=bool(mailbox.group(2)))
        members = _MEMBERS.match(path)
        if members:
            self.require("members", req)
            group = members.group(1)
            ids = sorted(self.directory.members.get(group, {}))
            return self.listing(req, "members", [("member", (group, i)) for i in ids], None)
        parts = path[len("/v1.0/"):].split("/")
        collection = parts[0]
        if collection not in m.COLLECTIONS or len(parts) > 2 or (len(parts) == 2 and parts[1] != "delta"):
            raise ODataError(400, "BadRequest", f"Resource not found for the segment '{parts[-1]}'.")
        self.require(collection, req)
        delta = len(parts) == 2
        if delta and collection not in m.DELTA_COLLECTIONS:
            raise ODataError(400, "BadRequest", "Resource not found for the segment 'delta'.")
        if delta:
            return self.delta(req, collection)
        select = self.select(req, collection)
        if collection in self.directory.static:
            if "$top" in req.query or "$skiptoken" in req.query:
                raise ODataError(400, "Request_BadRequest", f"The query parameter '$top' is not supported on {collection}.")
            rows = [self.shape(row, select, omit_nulls=False) for row in self.directory.static[collection]]
            return self.json({"@odata.context": self.context(collection, select), "value": rows})
        if collection == "directoryRoles" and "$top" in req.query:
            raise ODataError(400, "Request_BadRequest", "The query parameter '$top' is not supported on directoryRoles.")
        with self.directory.lock:
            ids = sorted(self.directory.objects[collection])
        return self.listing(req, collection, [("object", i) for i in ids], select)

    def select(self, req: Request, collection: str) -> list[str] | None:
        text = req.query.get("$select")
        if text is None:
            return None
        entity = m.COLLECTIONS[collection]
        names = [name.strip() for name in text.split(",")]
        for name in names:
            if name not in m.PROPERTIES[entity] and not (collection == "groups" and name == "members"):
                raise ODataError(400, "Request_BadRequest", (
                    f"Parsing OData Select and Expand failed: Could not find a property named '{name}' on "
                    f"type 'microsoft.graph.{entity}'."))
        if "signInActivity" in names:
            self.require("signInActivity", req)
        return names

    def context(self, collection: str, select: list[str] | None, delta: bool = False) -> str:
        sel = f"({','.join(select)})" if select else ""
        return f"{self.base_url}/v1.0/$metadata#{collection}{sel}" + ("/$delta" if delta else "")

    @staticmethod
    def shape(row: dict[str, Any], select: list[str] | None, *, omit_nulls: bool) -> dict[str, Any]:
        names = select or [k for k in row if not k.startswith("@")]
        out = {"id": row["id"]}
        for name in names:
            if name == "members":
                continue
            value = row.get(name)
            if value is not None or not omit_nulls:
                out[name] = value
        return out

    # ------------------------------------------------------------ sequences and pages
    def start(self, seq: Sequence, req: Request) -> str:
        """Register a sequence; its id depends only on the request that started it and how often
        that request came before, so that the fault pipeline's per-URL decisions (a hash of the
        URL) are the same in every run whatever the threads' order."""
        with self._lock:
            n = self._starts.get(req.target, 0)
            self._starts[req.target] = n + 1
            sid = base64.urlsafe_b64encode(hashlib.sha256(f"{req.target}|{n}".encode()).digest()[:12]).decode()
            self.sequences[sid] = seq
        return sid

    def resume(self, token: str) -> tuple[Sequence, int]:
        data = _decode(token)
        with self._lock:
            seq = self.sequences.get(data[0]) if isinstance(data, list) and len(data) == 2 else None
        if seq is None:
            raise ODataError(400, "Request_BadRequest", "Invalid skip token.")
        return seq, int(data[1])

    def page_of(self, seq: Sequence, sid: str, pos: int, size: int, link: str) -> tuple[list[dict], str | None]:
        """The rows of entries[pos:pos+size] and the next link (None: the sequence is done)."""
        chunk = seq.entries[pos: pos + size]
        rows = [row for row in (self.render(seq, entry) for entry in chunk) if row is not None]
        following = pos + len(chunk)
        next_link = link + _encode([sid, following]) if following < len(seq.entries) else None
        self.host.count_page(len(rows))
        return rows, next_link

    def render(self, seq: Sequence, entry: tuple[str, Any]) -> dict[str, Any] | None:
        kind, value = entry
        directory = self.directory
        if kind == "member":
            group, member = value
            return {"@odata.type": f"#microsoft.graph.{directory.members.get(group, {}).get(member, 'user')}", "id": member}
        if kind == "empty":
            return None
        if kind == "event":
            row = directory.events.get(seq.extra["user"], {}).get(value)
            if row is None or not self.in_window(row, seq.extra):
                return {"id": value, "@removed": {"reason": "deleted"}}
            return dict(row)
        if kind == "members":
            group, changed = value
            current = directory.members.get(group, {})
            row = {"id": group, "members@delta": [
                {"@odata.type": f"#microsoft.graph.{current.get(mid, 'user')}", "id": mid,
                 **({} if mid in current else {"@removed": {"reason": "deleted"}})} for mid in changed]}
            state, obj = directory.state_of("groups", group)
            if state == "live" and obj is not None:
                row = {**self.shape(obj, seq.select, omit_nulls=True), **row}
            return row
        state, obj = directory.state_of(seq.collection, value)
        if state != "live" or obj is None:
            return {"id": value, "@removed": {"reason": state}}
        return self.shape(obj, seq.select, omit_nulls=seq.kind == "delta")

    def listing(self, req: Request, collection: str, entries: list[tuple[str, Any]], select: list[str] | None) -> Response:
        top_text = req.query.get("$top")
        limit = PAGED.get(collection, 999)
        if select and "signInActivity" in select:
            limit = SIGN_IN_TOP
        top = self.knobs["graph_default_top"]
        if top_text is not None:
            try:
                top = int(top_text)
            except ValueError:
                top = 0
            if not 1 <= top <= limit:
                raise ODataError(400, "Request_BadRequest",
                                 f"Invalid page size specified: '{top_text}'. Must be between 1 and {limit} inclusive.")
        token = req.query.get("$skiptoken")
        if token is None:
            seq = Sequence("list", collection, entries, select, 0, {})
            sid, pos = self.start(seq, req), 0
        else:
            seq, pos = self.resume(token)
            sid = _decode(token)[0]
        keep = [p for p in req.raw_query.split("&") if p and not p.startswith(("$skiptoken=", "%24skiptoken="))]
        link = f"{self.base_url}{urllib.parse.quote(req.path)}?" + "".join(f"{p}&" for p in keep) + "$skiptoken="
        rows, next_link = self.page_of(seq, sid, pos, top, link)
        body: dict[str, Any] = {"@odata.context": self.context(collection, select), "value": rows}
        if next_link:
            body["@odata.nextLink"] = next_link
        return self.json(body)

    # ------------------------------------------------------------ delta
    def delta(self, req: Request, collection: str) -> Response:
        for option in DELTA_REFUSED:
            if option in req.query:
                raise ODataError(400, "Request_BadRequest", f"Unsupported query option '{option}' on delta.")
        base = f"{self.base_url}/v1.0/{collection}/delta?"
        size = min(parse_prefer(req.headers.get("prefer", "")).maxpagesize or 100, int(self.knobs["graph_delta_page_size"]))
        if "$skiptoken" in req.query:
            seq, pos = self.resume(req.query["$skiptoken"])
            return self.delta_page(seq, _decode(req.query["$skiptoken"])[0], pos, size, base, collection)
        directory = self.directory
        if "$deltatoken" in req.query:
            token = req.query["$deltatoken"]
            if token == "latest":
                with directory.lock:
                    until = directory.seq
                state = _encode({"c": collection, "s": until, "sel": None, "t": time.time()})
                return self.json({"@odata.context": self.context(collection, None, True), "value": [],
                                  "@odata.deltaLink": base + "$deltatoken=" + state})
            data = self.check_token(token, collection, base)
            select, since = data["sel"], int(data["s"])
        else:
            select, since = self.select(req, collection), 0
        with directory.lock:
            until = directory.seq
            if since == 0:
                ids = sorted(directory.objects[collection])
                member_changes = ({g: sorted(directory.members.get(g, {})) for g in ids}
                                  if select and "members" in select else {})
            else:
                ids, member_changes = directory.changed_since(collection, since, until)
                if not (select and "members" in select):
                    member_changes = {}
        entries = self.delta_entries(ids, member_changes, select)
        seq = Sequence("delta", collection, entries, select, until, {})
        return self.delta_page(seq, self.start(seq, req), 0, size, base, collection)

    def delta_entries(self, ids: list[str], member_changes: dict[str, list[str]],
                      select: list[str] | None) -> list[tuple[str, Any]]:
        entries: list[tuple[str, Any]] = []
        per_row = max(1, int(self.knobs["graph_members_per_row"]))
        members_only = select is not None and set(select) <= {"id", "members"}
        for object_id in ids:
            changed = member_changes.pop(object_id, None)
            if changed is None:
                if not members_only:
                    entries.append(("object", object_id))
                continue
            chunks = [changed[i: i + per_row] for i in range(0, len(changed), per_row)] or [[]]
            entries += [("members", (object_id, chunk)) for chunk in chunks]
        for group, changed in member_changes.items():  # groups whose only change is membership
            entries += [("members", (group, changed[i: i + per_row])) for i in range(0, len(changed), per_row)]
        every = int(self.knobs["graph_replay_every"])
        if every:
            entries += [entry for i, entry in enumerate(entries) if i % every == every - 1]
        if self.knobs["graph_empty_first_page"]:
            entries = [("empty", None)] * 1 + entries
        return entries

    def delta_page(self, seq: Sequence, sid: str, pos: int, size: int, base: str, collection: str) -> Response:
        # The leading empty entry makes a page of its own (an empty page with a nextLink).
        if seq.entries[pos: pos + 1] == [("empty", None)]:
            size = 1
        rows, next_link = self.page_of(seq, sid, pos, size, base + "$skiptoken=")
        body: dict[str, Any] = {"@odata.context": self.context(collection, seq.select, True), "value": rows}
        if next_link:
            body["@odata.nextLink"] = next_link
        else:
            state = {"c": collection, "s": seq.until, "sel": seq.select, "t": time.time(), **seq.extra}
            body["@odata.deltaLink"] = base + "$deltatoken=" + _encode(state)
        return self.json(body)

    def check_token(self, token: str, collection: str, base: str) -> dict[str, Any]:
        """A delta token's state, or the resync/expiry errors (injected or by age)."""
        key = collection if not collection.startswith("events:") else "events"
        for knob, status, code, message in (
            ("graph_resync", 410, "resyncRequired", "Resync required. Replace any local cached data with the data "
                                                     "returned by the new delta query."),
            ("graph_sync_state_not_found", 400, "syncStateNotFound", "The sync state generation is not found."),
        ):
            pending = self.knobs[knob]
            if pending.get(key):
                pending[key] -= 1
                error = ODataError(status, code, message)
                if status == 410:
                    error.location = base[len(self.base_url):] + "$deltatoken="  # type: ignore[attr-defined]
                raise error
        data = _decode(token)
        if not isinstance(data, dict) or data.get("c") != collection:
            raise ODataError(400, "syncStateInvalid", "The delta token is invalid.")
        if time.time() - float(data.get("t", 0)) >= float(self.knobs["graph_delta_token_expiry_seconds"]):
            raise ODataError(400, "syncStateNotFound", "The sync state generation is not found. The delta token has expired.")
        return data

    # ------------------------------------------------------------ calendars
    @staticmethod
    def in_window(row: dict[str, Any], window: dict[str, Any]) -> bool:
        start = row["start"]["dateTime"][:19] + "Z"
        return window["start"] <= start < window["end"]

    def events(self, req: Request, user: str, *, delta: bool) -> Response:
        collection = f"events:{user}"
        base = f"{self.base_url}/v1.0/users/{user}/calendarView" + ("/delta?" if delta else "?")
        prefer = parse_prefer(req.headers.get("prefer", ""))
        size = prefer.maxpagesize or int(self.knobs["graph_events_default_page"])
        directory = self.directory
        if delta and "$skiptoken" in req.query:
            seq, pos = self.resume(req.query["$skiptoken"])
            return self.events_page(seq, _decode(req.query["$skiptoken"])[0], pos, size, base)
        if delta and "$deltatoken" in req.query:
            data = self.check_token(req.query["$deltatoken"], collection, base)
            window, since = {"start": data["start"], "end": data["end"]}, int(data["s"])
        else:
            for option in ("startDateTime", "endDateTime"):
                if option not in req.query:
                    raise ODataError(400, "ErrorInvalidParameter", "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.")
            try:
                window = {k: _utc(req.query[v]) for k, v in (("start", "startDateTime"), ("end", "endDateTime"))}
            except ValueError:
                raise ODataError(400, "ErrorInvalidParameter", "The value of the StartDateTime or EndDateTime is invalid.") from None
            since = 0
            if delta:
                for option in ("$select", "$filter", "$orderby", "$expand", "$search", "$top"):
                    if option in req.query:
                        raise ODataError(400, "ErrorInvalidUrlQuery", f"The following parameters are not supported with change tracking over the 'CalendarView' resource: '{option}'.")
        with directory.lock:
            until = directory.seq
            if since == 0:
                ids = sorted(i for i, row in directory.events[user].items() if self.in_window(row, window))
            else:
                ids, _ = directory.changed_since(collection, since, until)
        seq = Sequence("events", collection, [("event", i) for i in ids], None, until, {**window, "user": user})
        if not delta:
            top = int(req.query.get("$top", size))
            rows, _ = self.page_of(seq, self.start(seq, req), 0, top, base)
            return self.json({"@odata.context": self.context("events", None), "value": rows})
        return self.events_page(seq, self.start(seq, req), 0, size, base)

    def events_page(self, seq: Sequence, sid: str, pos: int, size: int, base: str) -> Response:
        rows, next_link = self.page_of(seq, sid, pos, size, base + "$skiptoken=")
        body: dict[str, Any] = {"@odata.context": self.context("events", None, True), "value": rows}
        if next_link:
            body["@odata.nextLink"] = next_link
        else:
            state = {"c": seq.collection, "s": seq.until, "t": time.time(), "start": seq.extra["start"],
                     "end": seq.extra["end"]}
            body["@odata.deltaLink"] = base + "$deltatoken=" + _encode(state)
        return self.json(body)


def _utc(text: str) -> str:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
