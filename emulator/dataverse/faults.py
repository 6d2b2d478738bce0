"""How Dataverse answers when the host's fault pipeline hits it, and the faults only Dataverse has.

Knobs (constructor keywords and ``emu.set(...)``, beside the generic ones of
``emulator/core/faults.py``):

=========================  ==============================================================
``throttle_codes``         which of the three service-protection codes a 429 carries
``page_size_limit``        pages larger than this fail: ``page_size_limit_mode`` "timeout"
                           (the server sleeps ``page_size_limit_delay_s``) or "error" (500)
``forbidden_tables``       tables (logical or entity-set names) whose rows always 403
=========================  ==============================================================
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ..core.service import FaultAdapter, Response, std_headers

if TYPE_CHECKING:
    from ..core.faults import Faults
    from ..core.service import Request
    from .service import DataverseService

THROTTLE_MESSAGES = {
    "0x80072322": "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
    "0x80072321": ("Combined execution time of incoming requests exceeded limit of 1,200,000 "
                   "milliseconds over time window of 300 seconds. Decrease number of concurrent "
                   "requests or reduce the duration of requests and try again later."),
    "0x80072326": "Number of concurrent requests exceeded the limit of 52.",
}

_TABLE_RE = re.compile(r"^/api/data/v9\.\d/([A-Za-z_]\w*)(?:\(|/|$)")
_COLLECTION_RE = re.compile(r"^/api/data/v9\.\d/(?!EntityDefinitions)[A-Za-z_]\w*$")
_NOT_TABLES = ("EntityDefinitions", "WhoAmI", "RetrieveTotalRecordCount", "$metadata")


def _json(status: int, obj: Any, extra: list | None = None) -> Response:
    return status, std_headers() + [("Content-Type", "application/json; odata.metadata=minimal")] + (
        extra or []), orjson.dumps(obj)


class DataverseFaults(FaultAdapter):
    service: DataverseService

    KNOBS: ClassVar[dict[str, Any]] = {
        "throttle_codes": list(THROTTLE_MESSAGES),
        "page_size_limit": None,
        "page_size_limit_mode": "timeout",
        "page_size_limit_delay_s": 2.5,
        "forbidden_tables": [],
    }
    bearer = True

    def throttled(self, rng: random.Random, retry_after: str | None) -> tuple[Response, str | None]:
        code = rng.choice(list(self.knobs["throttle_codes"]))
        extra = [] if retry_after is None else [("Retry-After", retry_after)]
        return _json(429, {"error": {"code": code, "message": THROTTLE_MESSAGES[code]}}, extra), code

    def unavailable(self, retry_after: str | None) -> Response:
        extra = [] if retry_after is None else [("Retry-After", retry_after)]
        return _json(503, {"error": {"code": "0x80040216", "message": "Service Unavailable"}}, extra)

    def denied(self, req: Request, faults: Faults) -> Response | None:
        """A table the identity may not read: 403 on every row request."""
        table = _table_of(req.path)
        if not table:
            return None
        sets = {td.logical: td.entity_set for td in self.service.store.tables.values()}
        forbidden = {t.lower() for t in self.knobs["forbidden_tables"]}
        forbidden |= {sets.get(t, t).lower() for t in forbidden}
        if table not in forbidden:
            return None
        faults.record(req.target, "forbidden", 403, code="0x80040220")
        return _json(403, {"error": {"code": "0x80040220", "message": (
            f"Principal user (Id=00000000-0000-0000-0000-000000000000, type=8) is missing "
            f"prvRead{table} privilege on OTC=1 for entity '{table}'.")}})

    def overloaded(self, req: Request, faults: Faults) -> Response | None:
        """The page-size fault: a collection page bigger than ``page_size_limit`` "times out"
        (the server sleeps, outside the in-flight count: the client is expected to have given
        up by then) or errors."""
        limit = self.knobs["page_size_limit"]
        if limit is None or not _COLLECTION_RE.match(req.path):
            return None
        m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", req.headers.get("prefer", ""))
        if (int(m.group(1)) if m else 5000) <= int(limit):
            return None
        if self.knobs["page_size_limit_mode"] == "timeout":
            faults.record(req.target, "timeout", 0)
            self.service.host.statistics.idle(float(self.knobs["page_size_limit_delay_s"]))
            return _json(500, {"error": {"code": "0x80040216", "message": "Timeout expired."}})
        faults.record(req.target, "too_large", 500, code="0x80040216")
        return _json(500, {"error": {"code": "0x80040216", "message": (
            "The response for this request is too large to be returned within the time limit; "
            "request fewer rows per page (odata.maxpagesize).")}})


def _table_of(path: str) -> str | None:
    m = _TABLE_RE.match(path)
    if not m or m.group(1) in _NOT_TABLES:
        return None
    return m.group(1).lower()
