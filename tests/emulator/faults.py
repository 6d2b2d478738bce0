"""Fault injection for the emulator: throttling, outages, broken bodies, expiring tokens.

Why it lives apart from the protocol code: faults are *not* how Dataverse answers a correct
request, they are what a flaky network, a busy tenant or a proxy does to it. Keeping them here
keeps ``dataverse.py`` faithful and lets every fault be switched on and off with one knob.

Every knob is also an :class:`~tests.emulator.Emulator` constructor keyword and an
``emu.set(...)`` knob (and a CLI flag of ``python -m tests.emulator``):

=========================  ==============================================================
``fault_seed``             seed of the fault decisions (same seed, same faults)
``throttle_rate``          share of Web API requests answered 429 (service protection)
``throttle_codes``         which of the three service-protection codes to use
``retry_after``            the ``Retry-After`` seconds sent with a 429 (None: no header)
``error_5xx_rate``         share answered 502/503/504 (502/504 as a gateway's HTML page)
``drop_rate``              share whose connection is closed half-way through the body
``truncate_rate``          share whose body is cut in half (with a matching Content-Length)
``html_rate``              share answered by a proxy's HTML page (status ``html_status``)
``malformed_rate``         share whose JSON body is corrupted
``fault_max_per_request``  most faults in a row for one URL (keeps a sync finishable)
``page_size_limit``        pages larger than this fail: ``page_size_limit_mode`` "timeout"
                           (the server sleeps ``page_size_limit_delay_s``) or "error" (500)
``token_revoke_after_s``   bearer tokens older than this get 401 (revoked / expired early)
``forbidden_tables``       tables (logical or entity-set names) whose rows always 403
``ratelimit_burst_remaining`` / ``ratelimit_time_remaining``: override the
                           ``x-ms-ratelimit-*`` headers (None: computed per caller)
``limit_requests``         service protection: requests per caller per window (6000)
``limit_execution_s``      ... seconds of execution time per caller per window (1200)
``limit_concurrent``       ... concurrent requests per caller (52)
``limit_window_s``         ... the sliding window, in seconds (300)
``error_5xx_statuses``     which of 502/503/504 ``error_5xx_rate`` answers with
``error_5xx_retry_after``  the ``Retry-After`` seconds sent with an injected 503 (None: none)
``fault_tables``           faults hit only these tables' requests (empty: every request)
``serve_body``             {decoded path: {"status", "content_type", "body", "headers",
                           "times"}}: serve a given answer for a path (the first ``times``
                           requests only, when given) — fuzzing, loops, redirects
=========================  ==============================================================

Service protection (:class:`ServiceProtection`) is not a fault but how Dataverse really limits
callers: per user (the token's ``oid``: an application user or a signed-in user) and per web
server, over a sliding window, with ``Retry-After`` saying when the window has room again. Two
identities never share a budget; every thread of one identity does.

Fault decisions are deterministic: a request's fate depends only on the seed, its URL (path and
query) and how many times that URL was requested before — not on timing or thread order — so
a failing test reproduces exactly. The fault log records what was injected and when (server
side), which is how tests check that the tap honoured ``Retry-After``.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

THROTTLE_MESSAGES = {
    "0x80072322": "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
    "0x80072321": ("Combined execution time of incoming requests exceeded limit of 1,200,000 "
                   "milliseconds over time window of 300 seconds. Decrease number of concurrent "
                   "requests or reduce the duration of requests and try again later."),
    "0x80072326": "Number of concurrent requests exceeded the limit of 52.",
}

DEFAULTS: dict[str, Any] = {
    "fault_seed": 0,
    "throttle_rate": 0.0,
    "throttle_codes": list(THROTTLE_MESSAGES),
    "retry_after": 1,
    "error_5xx_rate": 0.0,
    "drop_rate": 0.0,
    "truncate_rate": 0.0,
    "html_rate": 0.0,
    "html_status": 200,
    "malformed_rate": 0.0,
    "fault_max_per_request": 3,
    "page_size_limit": None,
    "page_size_limit_mode": "timeout",
    "page_size_limit_delay_s": 2.5,
    "token_revoke_after_s": None,
    "forbidden_tables": [],
    "ratelimit_burst_remaining": None,
    "ratelimit_time_remaining": None,
    "serve_body": {},
    "limit_requests": 6000,
    "limit_execution_s": 1200.0,
    "limit_concurrent": 52,
    "limit_window_s": 300.0,
    "error_5xx_statuses": [502, 503, 504],
    "error_5xx_retry_after": None,
    "fault_tables": [],
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


@dataclass
class FaultEvent:
    """One injected fault, timestamped on the server (time.monotonic())."""

    at: float
    target: str
    kind: str
    status: int
    retry_after: float | None = None
    code: str | None = None


class Faults:
    """Per-emulator fault state: decision counters, the fault log and request arrivals."""

    def __init__(self, knobs: dict[str, Any]):
        self.knobs = knobs
        self.entity_sets: dict[str, str] = {}  # logical name -> entity set, filled at start()
        self.issued_at: dict[str, float] = {}  # access token -> time.time() it was issued
        self.protection = ServiceProtection(knobs)
        self.gates: list[Gate] = []
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._seen: dict[str, int] = {}
            self._streak: dict[str, int] = {}
            self._served: dict[str, int] = {}
            self.events: list[FaultEvent] = []
            self.arrivals: dict[str, list[float]] = {}
            self.timeline: list[tuple[float, str]] = []  # (arrival, target) of every API request
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

    def _record(self, target: str, kind: str, status: int, retry_after: float | None = None,
                code: str | None = None) -> None:
        with self._lock:
            self._streak[target] = self._streak.get(target, 0) + 1
            self.events.append(FaultEvent(time.monotonic(), target, kind, status, retry_after, code))

    def _clean(self, target: str) -> None:
        with self._lock:
            self._streak.pop(target, None)

    # ------------------------------------------------------------ hooks
    def before(self, method: str, path: str, target: str, headers: dict[str, str]
               ) -> tuple[tuple[int, list, bytes] | None, int, bool]:
        """Faults that replace the real answer. Returns (response or None, n, may_fault)."""
        k = self.knobs
        served = k["serve_body"].get(path) if k["serve_body"] else None
        if served is not None and "times" in served:
            with self._lock:
                used = self._served.get(path, 0)
                self._served[path] = used + 1
            if used >= int(served["times"]):
                served = None
        if served is not None:
            hdrs = [("Content-Type", served.get("content_type", "application/json"))]
            hdrs += [(a, b) for a, b in (served.get("headers") or {}).items()]
            body = served.get("body", b"")
            body = body.encode() if isinstance(body, str) else bytes(body)
            return (int(served.get("status", 200)), _std_headers() + hdrs, body), 0, False
        if not path.startswith("/api/data/"):
            return None, 0, False
        n, allowed = self.arrive(target)
        revoke = k["token_revoke_after_s"]
        if revoke is not None and self._token_age(headers.get("authorization", "")) > float(revoke):
            self._record(target, "token_revoked", 401)
            return (401, _std_headers() + [("WWW-Authenticate", 'Bearer error="invalid_token"')], b""), n, allowed
        table = _table_of(path)
        forbidden = {t.lower() for t in k["forbidden_tables"]}
        forbidden |= {self.entity_sets.get(t, t).lower() for t in forbidden}
        if table and table in forbidden:
            self._record(target, "forbidden", 403, code="0x80040220")
            return _json(403, {"error": {"code": "0x80040220", "message": (
                f"Principal user (Id=00000000-0000-0000-0000-000000000000, type=8) is missing "
                f"prvRead{table} privilege on OTC=1 for entity '{table}'.")}}), n, allowed
        if not allowed or not self._targeted(table):
            return None, n, allowed
        for kind in BEFORE_KINDS:
            rate = float(k[f"{kind}_rate"])
            rng = self._draw(target, n, kind)
            if rate and rng.random() < rate:
                if kind == "throttle":
                    code = rng.choice(list(k["throttle_codes"]))
                    ra = k["retry_after"]
                    extra = [] if ra is None else [("Retry-After", _seconds(ra))]
                    self._record(target, kind, 429, None if ra is None else float(ra), code)
                    return _json(429, {"error": {"code": code, "message": THROTTLE_MESSAGES[code]}},
                                 extra), n, allowed
                if kind == "error_5xx":
                    status = int(rng.choice(list(k["error_5xx_statuses"])))
                    self._record(target, kind, status)
                    if status == 503:
                        ra = k["error_5xx_retry_after"]
                        extra = [] if ra is None else [("Retry-After", _seconds(ra))]
                        return _json(503, {"error": {"code": "0x80040216", "message":
                                                     "Service Unavailable"}}, extra), n, allowed
                    return (status, _std_headers() + [("Content-Type", "text/html")],
                            GATEWAY_PAGE), n, allowed
                status = int(k["html_status"])
                self._record(target, kind, status)
                return (status, [("Content-Type", "text/html; charset=utf-8")], PROXY_PAGE), n, allowed
        return None, n, allowed

    def oversized(self, target: str, page_size: int) -> tuple[int, list, bytes] | None:
        """The page-size threshold: too big a page "times out" (sleeps) or errors."""
        limit = self.knobs["page_size_limit"]
        if limit is None or page_size <= int(limit):
            return None
        if self.knobs["page_size_limit_mode"] == "timeout":
            # The caller sleeps page_size_limit_delay_s first (outside the in-flight count:
            # the client is expected to have given up by then).
            self._record(target, "timeout", 0)
            return _json(500, {"error": {"code": "0x80040216", "message": "Timeout expired."}})
        self._record(target, "too_large", 500, code="0x80040216")
        return _json(500, {"error": {"code": "0x80040216", "message": (
            "The response for this request is too large to be returned within the time limit; "
            "request fewer rows per page (odata.maxpagesize).")}})

    def after(self, target: str, n: int, allowed: bool,
              response: tuple[int, list, bytes]) -> tuple[int, list, bytes]:
        """Faults that damage a real 200 JSON answer on its way out (not CSDL XML or $count text)."""
        status, hdrs, payload = response
        is_json = any(k.lower() == "content-type" and "json" in v for k, v in hdrs)
        targeted = self._targeted(_table_of(target.partition("?")[0]))
        if status != 200 or not allowed or not is_json or len(payload) < 2 or not targeted:
            self._clean(target) if status == 200 else None
            return response
        for kind in AFTER_KINDS:
            rate = float(self.knobs[f"{kind}_rate"])
            if rate and self._draw(target, n, kind).random() < rate:
                self._record(target, kind, 200)
                if kind == "drop":
                    return status, hdrs, cut_body(payload)
                if kind == "truncate":
                    return status, hdrs, payload[: len(payload) // 2]
                return status, hdrs, payload.replace(b'"', b"'", 3)
        self._clean(target)
        return response

    def _targeted(self, table: str | None) -> bool:
        """Whether faults may hit a request of ``table`` (``fault_tables``; empty: all)."""
        only = self.knobs["fault_tables"]
        if not only:
            return True
        names = {t.lower() for t in only} | {self.entity_sets.get(t, t).lower() for t in only}
        return table is not None and table in names

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


@dataclass
class Refusal:
    """One 429 of the service-protection limits (server clock: time.monotonic())."""

    at: float
    caller: str
    code: str
    retry_after: int
    early: bool  # the caller was still asked to wait (by an earlier 429) when this one came


@dataclass
class _Caller:
    arrivals: deque = field(default_factory=deque)  # admitted requests in the window
    executions: deque = field(default_factory=deque)  # (finished at, seconds) in the window
    in_flight: int = 0
    blocked_until: float = 0.0


class ServiceProtection:
    """Dataverse's service-protection limits: per caller, per web server, sliding window.

    Three measures, as documented for Dataverse: the number of requests (``0x80072322``) and
    their combined execution time (``0x80072321``) over the last ``limit_window_s`` seconds, and
    the number of concurrent requests (``0x80072326``). A refused request is answered 429 with a
    whole-seconds ``Retry-After``: when the window has room again (the oldest request or
    execution leaves it), 1 s for concurrency. Refused requests use no budget; a refusal that
    reaches a caller still asked to wait by an earlier one is marked ``early`` (a client that
    honours ``Retry-After`` for all its threads sends few: only requests already under way).
    The ``x-ms-ratelimit-*`` headers of every answer report the caller's own remaining budget.
    """

    def __init__(self, knobs: dict[str, Any]):
        self.knobs = knobs
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._callers: dict[str, _Caller] = {}
            self.refusals: list[Refusal] = []
            self.admitted: dict[str, int] = {}

    def _prune(self, c: _Caller, now: float) -> None:
        cutoff = now - float(self.knobs["limit_window_s"])
        while c.arrivals and c.arrivals[0] <= cutoff:
            c.arrivals.popleft()
        while c.executions and c.executions[0][0] <= cutoff:
            c.executions.popleft()

    def admit(self, caller: str) -> tuple[int, list, bytes] | None:
        """Count a request of ``caller`` in, or return the 429 that refuses it."""
        k = self.knobs
        window = float(k["limit_window_s"])
        now = time.monotonic()
        with self._lock:
            c = self._callers.setdefault(caller, _Caller())
            self._prune(c, now)
            early = now < c.blocked_until
            code = None
            wait = 0.0
            if c.in_flight >= int(k["limit_concurrent"]):
                code, wait = "0x80072326", 1.0
            elif len(c.arrivals) >= int(k["limit_requests"]):
                code, wait = "0x80072322", c.arrivals[0] + window - now
            elif sum(seconds for _at, seconds in c.executions) >= float(k["limit_execution_s"]):
                code, wait = "0x80072321", c.executions[0][0] + window - now
            if code is None:
                c.arrivals.append(now)
                c.in_flight += 1
                self.admitted[caller] = self.admitted.get(caller, 0) + 1
                return None
            retry_after = max(1, math.ceil(wait))
            c.blocked_until = max(c.blocked_until, now + retry_after)
            self.refusals.append(Refusal(now, caller, code, retry_after, early))
        return _json(429, {"error": {"code": code, "message": THROTTLE_MESSAGES[code]}},
                     [("Retry-After", str(retry_after))])

    def done(self, caller: str, seconds: float) -> None:
        """An admitted request of ``caller`` finished after ``seconds`` of execution."""
        now = time.monotonic()
        with self._lock:
            c = self._callers[caller]
            c.in_flight -= 1
            c.executions.append((now, seconds))

    def headers(self, caller: str) -> list[tuple[str, str]]:
        """``x-ms-ratelimit-*``: the caller's remaining requests and execution seconds."""
        k = self.knobs
        with self._lock:
            c = self._callers.get(caller) or _Caller()
            self._prune(c, time.monotonic())
            used = sum(seconds for _at, seconds in c.executions)
            burst = int(k["limit_requests"]) - len(c.arrivals)
            left = float(k["limit_execution_s"]) - used
        if k["ratelimit_burst_remaining"] is not None:
            burst = k["ratelimit_burst_remaining"]
        if k["ratelimit_time_remaining"] is not None:
            left = k["ratelimit_time_remaining"]
        return [("x-ms-ratelimit-burst-remaining-xrm-requests", str(max(0, int(burst)))),
                ("x-ms-ratelimit-time-remaining-xrm-requests", f"{max(0.0, float(left)):,.2f}")]


class Gate:
    """Holds the Web API requests whose decoded target matches ``pattern`` inside the server
    (admitted, in flight) until it opens: by :meth:`open`, or by itself once ``open_at`` of
    them wait together. Tests use it to have several requests in flight at once without
    relying on timing; ``met`` says whether ``open_at`` requests really were in flight at once.
    """

    def __init__(self, pattern: str, open_at: int | None = None, timeout_s: float = 120.0):
        self.pattern = re.compile(pattern)
        self.open_at = open_at
        self.timeout_s = timeout_s
        self.waiting = 0
        self.most_waiting = 0
        self.passed = 0
        self.met = False
        self._open = False
        self._cond = threading.Condition()

    def hold(self, target: str) -> None:
        """Called by the server for every admitted Web API request."""
        if self._open or not self.pattern.search(target):
            return
        with self._cond:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            if self.open_at is not None and self.waiting >= self.open_at:
                self.met = True
                self._open = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._open, self.timeout_s)
            self.waiting -= 1
            self.passed += 1

    def wait_for(self, count: int, timeout_s: float = 120.0) -> bool:
        """Block the test until ``count`` requests are held (False if that never happens)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.waiting >= count, timeout_s)

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()


def _seconds(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number == int(number) else str(number)


def _std_headers() -> list[tuple[str, str]]:
    rid = str(uuid.uuid4())
    return [("REQ_ID", rid), ("x-ms-service-request-id", rid)]


def _json(status: int, obj: Any, extra: list | None = None) -> tuple[int, list, bytes]:
    return status, _std_headers() + [("Content-Type", "application/json; odata.metadata=minimal")] + (
        extra or []), orjson.dumps(obj)


_TABLE_RE = re.compile(r"^/api/data/v9\.\d/([A-Za-z_]\w*)(?:\(|/|$)")


def _table_of(path: str) -> str | None:
    m = _TABLE_RE.match(path)
    if not m or m.group(1) in ("EntityDefinitions", "WhoAmI", "RetrieveTotalRecordCount", "$metadata"):
        return None
    return m.group(1).lower()


def _claims(authorization: str) -> dict[str, Any]:
    """The payload of a bearer token ({} when it cannot be read; the signature is not checked)."""
    parts = authorization[7:].strip().split(".") if authorization.lower().startswith("bearer ") else []
    if len(parts) != 3:
        return {}
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = orjson.loads(base64.urlsafe_b64decode(padded))
    except Exception:
        return {}
    return payload if isinstance(payload, dict) else {}


def _token_age(authorization: str) -> float:
    """Seconds since the bearer token was issued (0 when it cannot be read)."""
    try:
        return time.time() - float(_claims(authorization).get("iat", time.time()))
    except (TypeError, ValueError):
        return 0.0


def caller_of(authorization: str) -> str:
    """Who a (validated) bearer token speaks for: its ``oid`` — the application user of an
    app-only token, the signed-in user of a delegated one. Service protection counts per caller."""
    claims = _claims(authorization)
    return str(claims.get("oid") or claims.get("appid") or "anonymous")
