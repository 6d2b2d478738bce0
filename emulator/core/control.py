"""The ``/_emulator/`` control API: what tests and benchmarks in another process use to read
statistics and change knobs (no authentication; never counted as a request).

The host answers the endpoints every deployment has; each service adds its own through
:meth:`~emulator.core.service.Service.control` (Dataverse: rows and the clock; Entra ID: apps).

    GET  /_emulator/stats            counters (see stats.py)
    POST /_emulator/stats/reset      reset the counters and the fault log
    GET  /_emulator/config           the tap's config for this deployment
    POST /_emulator/set              {knob: value, ...}
    POST /_emulator/token_faults     {"kind", "count", "after", "retry_after", "retry_after_form"}
                                     scripted faults of every token endpoint (faults.py)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from .service import Request, Response

if TYPE_CHECKING:
    from .host import Host

JSON = [("Content-Type", "application/json")]


def control(host: Host, req: Request) -> Response:
    data = orjson.loads(req.body) if req.body else {}
    parts = req.path.strip("/").split("/")[1:]
    method = req.method
    if parts == ["stats"] and method == "GET":
        return 200, JSON, orjson.dumps(host.stats())
    if parts == ["stats", "reset"] and method == "POST":
        host.reset_stats()
        return 200, JSON, orjson.dumps(host.stats())
    if parts == ["config"] and method == "GET":
        return 200, JSON, orjson.dumps(host.tap_config())
    if parts == ["set"] and method == "POST":
        host.set(**data)
        return 200, JSON, orjson.dumps(host.knobs)
    if parts == ["token_faults"] and method == "POST":
        host.faults.script(**data, group="token")
        return 200, JSON, orjson.dumps({"pending": len(host.faults.pending("token"))})
    for service in host.routes:
        answer = service.control(method, parts, data)
        if answer is not None:
            return answer
    return 404, JSON, b'{"error":"unknown control endpoint"}'
