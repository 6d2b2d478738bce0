"""Fault injection for the emulator: throttling, outages, broken bodies, expiring tokens.

Why it lives apart from the protocol code: faults are *not* how Dataverse answers a correct
request, they are what a flaky network, a busy tenant or a proxy does to it. Keeping them here
keeps ``dataverse.py`` faithful and lets every fault be switched on and off with one knob.

Every knob is also an :class:`~emulator.Emulator` constructor keyword and an
``emu.set(...)`` knob (and a CLI flag of ``python -m emulator``):

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
                           ``x-ms-ratelimit-*`` headers (None: computed)
``serve_body``             {decoded path: {"status", "content_type", "body", "headers",
                           "times"}}: serve a given answer for a path (the first ``times``
                           requests only, when given) — fuzzing, loops, redirects
=========================  ==============================================================

Decisions are deterministic: a request's fate depends only on the seed, its URL (path and
query) and how many times that URL was requested before — not on timing or thread order — so
a failing test reproduces exactly. The fault log records what was injected and when (server
side), which is how tests check that the tap honoured ``Retry-After``.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
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
        if not allowed:
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
                    status = rng.choice((502, 503, 504))
                    self._record(target, kind, status)
                    if status == 503:
                        return _json(503, {"error": {"code": "0x80040216", "message":
                                                     "Service Unavailable"}}), n, allowed
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
        if status != 200 or not allowed or not is_json or len(payload) < 2:
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


def _token_age(authorization: str) -> float:
    """Seconds since the bearer token was issued (0 when it cannot be read)."""
    parts = authorization[7:].strip().split(".") if authorization.lower().startswith("bearer ") else []
    if len(parts) != 3:
        return 0.0
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = orjson.loads(base64.urlsafe_b64decode(padded))
        return time.time() - float(payload.get("iat", time.time()))
    except Exception:
        return 0.0
