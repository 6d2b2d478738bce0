"""How Microsoft Graph answers when the host's fault pipeline hits it: its error envelope
(``code``, ``message``, ``innerError`` with the request ids) for 429 and 503, both with
``Retry-After`` when the knob gives one. Graph's own faults — 410 resync, ``syncStateNotFound``,
an expired delta token, a missing permission — are decided by the service (knobs in
``emulator/graph/service.py``), since they depend on the token and the endpoint."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any, ClassVar

import orjson

from ..core.service import FaultAdapter, Response

CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


def graph_headers() -> list[tuple[str, str]]:
    rid = str(uuid.uuid4())
    return [("request-id", rid), ("client-request-id", rid), ("Content-Type", CONTENT_TYPE),
            ("x-ms-ags-diagnostic", '{"ServerInfo":{"DataCenter":"Emulated","Slice":"E","Ring":"1"}}')]


def graph_error(status: int, code: str, message: str, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = graph_headers()
    rid = headers[0][1]
    body: dict[str, Any] = {"error": {"code": code, "message": message, "innerError": {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": rid, "client-request-id": rid}}}
    return status, headers + (extra or []), orjson.dumps(body)


class GraphFaults(FaultAdapter):
    bearer = True
    limit_codes: ClassVar[dict[str, str]] = {"requests": "TooManyRequests", "execution": "TooManyRequests",
                                             "concurrency": "TooManyRequests"}

    def limited(self, code: str, retry_after: int) -> Response:
        return graph_error(429, code, "Too many requests", [("Retry-After", str(retry_after))])

    def throttled(self, rng: random.Random, retry_after: str | None) -> tuple[Response, str | None]:
        extra = [] if retry_after is None else [("Retry-After", retry_after)]
        return graph_error(429, "TooManyRequests", "Too many requests", extra), "TooManyRequests"

    def unavailable(self, retry_after: str | None) -> Response:
        extra = [] if retry_after is None else [("Retry-After", retry_after)]
        return graph_error(503, "serviceNotAvailable", "The service is temporarily unavailable.", extra)

    def unauthorized(self) -> Response:
        status, headers, body = graph_error(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
        return status, [*headers, ("WWW-Authenticate", 'Bearer realm="", error="invalid_token"')], body
