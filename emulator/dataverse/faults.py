"""How Dataverse answers when the host's fault pipeline hits it, and the faults only Dataverse has.

Knobs (constructor keywords and ``emu.set(...)``, beside the generic ones of
``emulator/core/faults.py``):

=========================  ==============================================================
``throttle_codes``         which of the three service-protection codes a 429 carries
``page_size_limit``        pages larger than this fail: ``page_size_limit_mode`` "timeout"
                           (the server sleeps ``page_size_limit_delay_s``) or "error" (500)
``forbidden_tables``       tables (logical or entity-set names) whose rows always 403
``fault_tables``           the rate faults hit only these tables' requests (empty: every
                           request)
=========================  ==============================================================

Service protection (``emulator/core/limits.py``) answers in Dataverse's words here too:
``0x80072322`` (requests), ``0x80072321`` (execution time), ``0x80072326`` (concurrency).
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
        "fault_tables": [],
    }
    bearer = True
    limit_codes: ClassVar[dict[str, str]] = {"requests": "0x80072322", "execution": "0x80072321",
                                             "concurrency": "0x80072326"}

    def limited(self, code: str, retry_after: int) -> Response:
        return _json(429, {"error": {"code": code, "message": THROTTLE_MESSAGES[code]}},
                     [("Retry-After", str(retry_after))])

    def _tables(self, names: list[str]) -> set[str]:
        """Table names as they appear in paths (entity sets), lower-case, from logical or
        entity-set names."""
        sets = {td.logical: td.entity_set for td in self.service.store.tables.values()}
        lowered = {t.lower() for t in names}
        return lowered | {sets.get(t, t).lower() for t in lowered}

    def targeted(self, req: Request) -> bool:
        only = self.knobs["fault_tables"]
        if not only:
            return True
        table = _table_of(req.path)
        return table is not None and table in self._tables(only)

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
        if not table or table not in self._tables(self.knobs["forbidden_tables"]):
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
        size = int(m.group(1)) if m else 5000
        top = re.search(r"(?:^|[?&])(?:\$|%24)top=(\d+)", req.target)
        if top:  # a $top query answers at most that many rows, whatever the page size
            size = min(size, int(top.group(1)))
        if size <= int(limit):
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
