"""OData v4 JSON rendering (``odata.metadata=minimal``), written against raw bytes.

Why bytes: rows are stored pre-serialised, so a page is the head's JSON, the rows joined by
commas and the tail — no decode/encode of a 5,000-row page. Why raw query strings for links:
the paging contract is that the client follows ``@odata.nextLink`` verbatim, so the caller's
query pieces are kept untouched (re-encoding them would hide a client that rebuilds links).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from ..core.service import Request

CONTENT_TYPE = "application/json; odata.metadata=minimal"


def page(head: dict[str, Any], rows: list[bytes], tail: dict[str, Any] | None = None) -> bytes:
    """A collection page: ``head`` (``@odata.context``, counts), ``value`` and ``tail``
    (``@odata.nextLink`` or ``@odata.deltaLink``)."""
    h = orjson.dumps(head)
    parts = [h[:-1], b',"value":[', b",".join(rows), b"]"]
    if tail:
        parts += [b",", orjson.dumps(tail)[1:-1]]
    parts.append(b"}")
    return b"".join(parts)


def entity(context: str, row: bytes) -> bytes:
    """A single entity: its ``@odata.context`` followed by the row's own properties."""
    head = orjson.dumps({"@odata.context": context})
    return head[:-1] + b"," + row[1:]


def error(code: str, message: str, **annotations: Any) -> dict[str, Any]:
    """The ``{"error": {...}}`` body (instance annotations such as help links appended)."""
    return {"error": {"code": code, "message": message, **annotations}}


def link(base_url: str, req: Request, keep: Callable[[str], bool], param: str, value: str) -> str:
    """``base_url`` + the request's path + the query pieces whose (decoded) names ``keep``
    accepts, verbatim, + ``param=value`` (``value`` already encoded)."""
    pieces = [p for p in req.raw_query.split("&") if p and keep(urllib.parse.unquote_plus(p.split("=", 1)[0]))]
    pieces.append(f"{param}={value}")
    return f"{base_url}{urllib.parse.quote(req.path)}?" + "&".join(pieces)
