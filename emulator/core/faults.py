"""The host's fault pipeline: throttling, outages, broken bodies, expiring tokens — for any service.

Why it lives apart from the protocol code: faults are *not* how a service answers a correct
request, they are what a flaky network, a busy tenant or a proxy does to it. Keeping them here
keeps the services faithful and lets every fault be switched on and off with one knob. What a
fault looks like in one service's own words (Dataverse's ``0x80072322`` 429, Entra ID's
``AADSTS90033`` 503) comes from that service's :class:`~emulator.core.service.FaultAdapter`.

Every knob is also an :class:`~emulator.Emulator` constructor keyword and an ``emu.set(...)``
knob (and a CLI flag of ``python -m emulator``). The generic ones are here; a service adds its
own (Dataverse: ``throttle_codes``, ``page_size_limit``, ``forbidden_tables``, see
``emulator/dataverse/faults.py``):

=========================  ==============================================================
``fault_seed``             seed of the fault decisions (same seed, same faults)
``fault_targets``          names of the services the rate faults hit (None: the data
                           services, e.g. ``["dataverse"]``; add ``"entra"`` or ``"adfs"``
                           for the token endpoints)
``throttle_rate``          share of requests answered 429 (service protection)
``retry_after``            the ``Retry-After`` seconds sent with a 429 (None: no header)
``error_5xx_rate``         share answered 502/503/504 (502/504 as a gateway's HTML page)
``error_5xx_statuses``     which of 502/503/504 ``error_5xx_rate`` answers with
``error_5xx_retry_after``  the ``Retry-After`` seconds sent with an injected 503 (None: none)
``drop_rate``              share whose connection is closed half-way through the body
``truncate_rate``          share whose body is cut in half (with a matching Content-Length)
``html_rate``              share answered by a proxy's HTML page (status ``html_status``)
``malformed_rate``         share whose JSON body is corrupted
``fault_max_per_request``  most faults in a row for one URL (keeps a sync finishable)
``token_revoke_after_s``   bearer tokens older than this get 401 (revoked / expired early)
``serve_body``             {service-relative decoded path: {"status", "content_type", "body",
                           "headers", "times"}}: serve a given answer for a path (the first
                           ``times`` requests only, when given) — fuzzing, loops, redirects
=========================  ==============================================================

Scripted faults are exact rather than drawn: :meth:`Faults.script` makes the next ``count``
requests of a group of endpoints fail with one kind after ``after`` answered ones — the token
endpoints of every identity provider on the host are the group ``"token"`` (tests call it as
``emu.entra.fail_token_requests``). :meth:`Faults.spend` revokes a bearer token after a number
of uses (``revoke_after_uses``), so a refresh in the middle of a run is exercised by count.

Decisions are deterministic: a request's fate depends only on the seed, its URL (path and
query) and how many times that URL was requested before — not on timing or thread order — so
a failing test reproduces exactly. The fault log records what was injected and when (server
side), which is how tests check that the tap honoured ``Retry-After``.
"""

from __future__ import annotations

import email.utils
import hashlib
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .gates import Gate
from .limits import DEFAULTS as LIMIT_DEFAULTS
from .limits import ServiceProtection
from .service import Response, bearer_claims, seconds_header, std_headers

if TYPE_CHECKING:
    from .service import Request, Service

DEFAULTS: dict[str, Any] = {
    "fault_seed": 0,
    "fault_targets": None,
    "throttle_rate": 0.0,
    "retry_after": 1,
    "error_5xx_rate": 0.0,
    "error_5xx_statuses": [502, 503, 504],
    "error_5xx_retry_after": None,
    "drop_rate": 0.0,
    "truncate_rate": 0.0,
    "html_rate": 0.0,
    "html_status": 200,
    "malformed_rate": 0.0,
    "fault_max_per_request": 3,
    "token_revoke_after_s": None,
    "serve_body": {},
    **LIMIT_DEFAULTS,
}

# The order in which rates are drawn; one fault at most per request.
BEFORE_KINDS = ("throttle", "error_5xx", "html")
AFTER_KINDS = ("drop", "truncate", "malformed")

GATEWAY_PAGE = (b"<!DOCTYPE html><html><head><title>502 - Web server received an invalid response "
                b"while acting as a gateway or proxy server.</title></head><body><h1>Server Error"
                b"</h1><h2>502 - Web server received an invalid response while acting as a gateway "
                b"or proxy server.</h2></body></html>")
PROXY_PAGE = (b"<html><head><title>Access Denied</title></head><body><h1>Web Page Blocked</h1>"
              b"<p>Your organisation's proxy needs you to sign in.</p></body></html>")


class CutBody(bytes):
    """A body the server announces in full but closes the connection after ``send`` bytes."""

    send: int
    full_length: int


def cut_body(payload: bytes) -> CutBody:
    body = CutBody(payload)
    body.send = len(payload) // 2
    body.full_length = len(payload)
    return body


SCRIPTED_KINDS = ("429", "503", "proxy_html", "drop")


@dataclass
class ScriptedFault:
    """``count`` requests of a group that fail with ``kind``, after ``after`` answered ones.

    kinds: "429" (throttled, Retry-After), "503" (the service's transient error, Retry-After),
    "proxy_html" (a proxy's 502 HTML page), "drop" (the connection closes half-way through the
    answer). ``retry_after`` is sent as seconds, or as an HTTP-date that many seconds ahead when
    ``retry_after_form`` is "date".
    """

    kind: str
    count: int = 1
    after: int = 0
    retry_after: float | None = 1
    retry_after_form: str = "seconds"
    group: str = "token"

    def __post_init__(self) -> None:
        if self.kind not in SCRIPTED_KINDS:
            raise ValueError(f"unknown token fault {self.kind!r}; known: {SCRIPTED_KINDS}")
        if self.retry_after_form not in ("seconds", "date"):
            raise ValueError("retry_after_form must be 'seconds' or 'date'")

    def retry_after_header(self) -> str | None:
        if self.retry_after is None:
            return None
        if self.retry_after_form == "date":
            # HTTP-date has whole seconds: round up so the client never waits too little.
            return email.utils.formatdate(time.time() + float(self.retry_after) + 1, usegmt=True)
        return seconds_header(self.retry_after)


@dataclass
class FaultEvent:
    """One injected fault, timestamped on the server (time.monotonic())."""

    at: float
    target: str
    kind: str
    status: int
    retry_after: float | None = None
    code: str | None = None


@dataclass
class Decision:
    """What :meth:`Faults.before` decided for one request, carried to :meth:`Faults.after`."""

    target: str
    n: int = 0
    allowed: bool = False
    hit: bool = False  # the request is one the faults may touch (after-faults included)
    targeted: bool = True  # the service's own targeting (Dataverse: fault_tables) takes it


class Faults:
    """Per-host fault state: decision counters, the fault log and request arrivals."""

    def __init__(self, knobs: dict[str, Any]):
        self.knobs = knobs
        self.issued_at: dict[str, float] = {}  # access token -> time.time() it was issued
        self._lock = threading.Lock()
        self.scripts: list[ScriptedFault] = []  # pending scripted faults, in order
        self.script_log: list[str] = []  # the kind of every scripted fault injected, in order
        self.revoke_after_uses: int | None = None
        self.revoked_uses = 0  # requests refused because their token was revoked by use count
        self._token_uses: dict[str, int] = {}
        self.protection = ServiceProtection(knobs)  # not a fault: the services' real limits
        self.gates: list[Gate] = []
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._seen: dict[str, int] = {}
            self._streak: dict[str, int] = {}
            self._served: dict[str, int] = {}
            self.events: list[FaultEvent] = []
            self.arrivals: dict[str, list[float]] = {}
            self.timeline: list[tuple[float, str]] = []  # (arrival, target) of every faultable request
        self.protection.reset()

    # ------------------------------------------------------------ decisions
    def _draw(self, target: str, n: int, kind: str) -> random.Random:
        """The RNG of one fault kind for the n-th request of ``target`` (independent per kind)."""
        digest = hashlib.sha256(f"{self.knobs['fault_seed']}|{kind}|{target}|{n}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def arrive(self, target: str) -> tuple[int, bool]:
        """Record a request; return how many came before for this URL and whether it may fault."""
        now = time.monotonic()
        with self._lock:
            n = self._seen.get(target, 0)
            self._seen[target] = n + 1
            self.arrivals.setdefault(target, []).append(now)
            self.timeline.append((now, target))
            allowed = self._streak.get(target, 0) < int(self.knobs["fault_max_per_request"])
        return n, allowed

    def record(self, target: str, kind: str, status: int, retry_after: float | None = None,
               code: str | None = None) -> None:
        with self._lock:
            self._streak[target] = self._streak.get(target, 0) + 1
            self.events.append(FaultEvent(time.monotonic(), target, kind, status, retry_after, code))

    def _clean(self, target: str) -> None:
        with self._lock:
            self._streak.pop(target, None)

    def targeted(self, service: Service) -> bool:
        """Whether the rate faults hit ``service`` (the ``fault_targets`` knob)."""
        names = self.knobs["fault_targets"]
        return service.fault_default if names is None else service.name in names

    # ------------------------------------------------------------ hooks
    def served(self, path: str) -> Response | None:
        """The ``serve_body`` answer for a service-relative path, when one is configured."""
        k = self.knobs
        served = k["serve_body"].get(path) if k["serve_body"] else None
        if served is not None and "times" in served:
            with self._lock:
                used = self._served.get(path, 0)
                self._served[path] = used + 1
            if used >= int(served["times"]):
                served = None
        if served is None:
            return None
        hdrs = [("Content-Type", served.get("content_type", "application/json"))]
        hdrs += list((served.get("headers") or {}).items())
        body = served.get("body", b"")
        body = body.encode() if isinstance(body, str) else bytes(body)
        return int(served.get("status", 200)), std_headers() + hdrs, body

    # ------------------------------------------------------------ scripted faults, revocation
    def script(self, kind: str, count: int = 1, after: int = 0, retry_after: float | None = 1,
               retry_after_form: str = "seconds", group: str = "token") -> None:
        """Make the next ``count`` requests of ``group`` fail with ``kind`` after ``after``
        answered ones (``after=1``: the run's first token works, a refresh fails)."""
        fault = ScriptedFault(kind, int(count), int(after), retry_after, retry_after_form, group)
        with self._lock:
            self.scripts.append(fault)

    def pending(self, group: str = "token") -> list[ScriptedFault]:
        with self._lock:
            return [f for f in self.scripts if f.group == group]

    def _scripted(self, adapter: Any) -> Response | None:
        group = adapter.script_group
        with self._lock:
            fault = next((f for f in self.scripts if f.group == group), None)
            if fault is None:
                return None
            if fault.after > 0:
                fault.after -= 1
                return None
            fault.count -= 1
            if fault.count <= 0:
                self.scripts.remove(fault)
            self.script_log.append(fault.kind)
        header = fault.retry_after_header()
        if fault.kind == "429":
            return adapter.throttled(random.Random(0), header)[0]
        if fault.kind == "503":
            return adapter.unavailable(header)
        if fault.kind == "proxy_html":
            return 502, [("Content-Type", "text/html")], GATEWAY_PAGE
        # "drop": a success announced in full, cut off half-way (no real token in it).
        status, hdrs, filler = adapter.success_filler()
        return status, hdrs, cut_body(filler)

    def spend(self, token: str) -> bool:
        """Count one use of an access token; False once it was revoked (``revoke_after_uses``)."""
        limit = self.revoke_after_uses
        if limit is None:
            return True
        with self._lock:
            used = self._token_uses.get(token, 0) + 1
            self._token_uses[token] = used
            if used > int(limit):
                self.revoked_uses += 1
                return False
        return True

    # ------------------------------------------------------------ the pipeline
    def before(self, service: Service, req: Request) -> tuple[Response | None, Decision]:
        """Faults that replace the real answer of a request that reached ``service``."""
        adapter = service.faults
        decision = Decision(req.target)
        if not adapter.applies(req):
            return None, decision
        if adapter.script_group is not None:
            scripted = self._scripted(adapter)
            if scripted is not None:
                return scripted, decision
        if not self.targeted(service):
            return None, decision
        n, allowed = self.arrive(req.target)
        decision.n, decision.allowed, decision.hit = n, allowed, True
        revoke = self.knobs["token_revoke_after_s"]
        if (adapter.bearer and revoke is not None
                and self._token_age(req.headers.get("authorization", "")) > float(revoke)):
            self.record(req.target, "token_revoked", 401)
            return adapter.unauthorized(), decision
        refused = adapter.denied(req, self)
        if refused is not None:
            return refused, decision
        decision.targeted = adapter.targeted(req)
        if not allowed or not decision.targeted:
            return adapter.overloaded(req, self), decision
        for kind in BEFORE_KINDS:
            rate = float(self.knobs[f"{kind}_rate"])
            rng = self._draw(req.target, n, kind)
            if rate and rng.random() < rate:
                return self._inject(adapter, req.target, kind, rng), decision
        return adapter.overloaded(req, self), decision

    def _inject(self, adapter: Any, target: str, kind: str, rng: random.Random) -> Response:
        if kind == "throttle":
            ra = self.knobs["retry_after"]
            answer, code = adapter.throttled(rng, None if ra is None else seconds_header(ra))
            self.record(target, kind, 429, None if ra is None else float(ra), code)
            return answer
        if kind == "error_5xx":
            status = int(rng.choice(list(self.knobs["error_5xx_statuses"])))
            self.record(target, kind, status)
            if status == 503:
                ra = self.knobs["error_5xx_retry_after"]
                return adapter.unavailable(None if ra is None else seconds_header(ra))
            return status, [*std_headers(), ("Content-Type", "text/html")], GATEWAY_PAGE
        status = int(self.knobs["html_status"])
        self.record(target, kind, status)
        return status, [("Content-Type", "text/html; charset=utf-8")], PROXY_PAGE

    def after(self, decision: Decision, response: Response) -> Response:
        """Faults that damage a real 200 JSON answer on its way out (not CSDL XML or $count text)."""
        if not decision.hit:
            return response
        target = decision.target
        status, hdrs, payload = response
        is_json = any(k.lower() == "content-type" and "json" in v for k, v in hdrs)
        if status != 200 or not decision.allowed or not is_json or len(payload) < 2 or not decision.targeted:
            if status == 200:
                self._clean(target)
            return response
        for kind in AFTER_KINDS:
            rate = float(self.knobs[f"{kind}_rate"])
            if rate and self._draw(target, decision.n, kind).random() < rate:
                self.record(target, kind, 200)
                if kind == "drop":
                    return status, hdrs, cut_body(payload)
                if kind == "truncate":
                    return status, hdrs, payload[: len(payload) // 2]
                return status, hdrs, payload.replace(b'"', b"'", 3)
        self._clean(target)
        return response

    def _token_age(self, authorization: str) -> float:
        """Seconds since the bearer token was issued (precise for tokens this emulator issued)."""
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        issued = self.issued_at.get(token)
        return time.time() - issued if issued is not None else _token_age(authorization)

    # ------------------------------------------------------------ checks for tests
    def retry_after_gaps(self) -> list[tuple[float, float]]:
        """(Retry-After asked, seconds until the same URL came back) for every 429 sent."""
        out = []
        with self._lock:
            for e in self.events:
                if e.kind != "throttle" or e.retry_after is None:
                    continue
                later = [a for a in self.arrivals.get(e.target, []) if a > e.at]
                if later:
                    out.append((e.retry_after, later[0] - e.at))
        return out

    def counts(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for e in self.events:
                out[e.kind] = out.get(e.kind, 0) + 1
        return out


def _token_age(authorization: str) -> float:
    """Seconds since the bearer token was issued (0 when it cannot be read)."""
    try:
        return time.time() - float(bearer_claims(authorization).get("iat", time.time()))
    except (TypeError, ValueError):
        return 0.0
