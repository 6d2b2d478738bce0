"""OData v2 rendering (WCF Data Services, as CRM 2011-2015's ``OrganizationData.svc`` speaks it).

- JSON is "verbose": a collection is ``{"d": {"results": [...], "__next": "<url>"}}``, each entry
  carries ``__metadata`` (``uri``, ``type``), complex values carry their own ``__metadata``
  (``type``); ``Edm.DateTime`` is ``"\\/Date(<ms since the epoch, UTC>)\\/"`` (the slashes escaped,
  which is how a client tells a date from text), ``Edm.Int64`` and ``Edm.Decimal`` are strings.
- Without ``Accept: application/json`` the answer is ATOM XML (the service's default).
- Errors are ``{"error": {"code": …, "message": {"lang": "en-US", "value": …}}}``.

What is product-specific (the CRM type names, SchemaName casing) stays in the product's package.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import orjson

JSON_CONTENT_TYPE = "application/json;charset=utf-8"
ATOM_CONTENT_TYPE = "application/atom+xml;charset=utf-8"
XML_CONTENT_TYPE = "application/xml;charset=utf-8"
VERSION_HEADERS = [("DataServiceVersion", "2.0;")]


def date(epoch_seconds: float) -> str:
    """``Edm.DateTime`` in verbose JSON (the escaping of the slashes is added by :func:`dumps`)."""
    return f"/Date({round(epoch_seconds * 1000)})/"


def dumps(obj: Any) -> bytes:
    """JSON with ``/Date(…)/`` written as ``\\/Date(…)\\/``, as WCF Data Services writes it."""
    return orjson.dumps(obj).replace(b'"/Date(', b'"\\/Date(').replace(b')/"', b')\\/"')


def page(results: list[bytes], next_url: str | None) -> bytes:
    """A collection page from pre-serialised entries."""
    body = b'{"d":{"results":[' + b",".join(results) + b"]"
    if next_url:
        body += b',"__next":' + orjson.dumps(next_url)
    return body + b"}}"


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": {"lang": "en-US", "value": message}}}


def wants_json(accept: str) -> bool:
    """Verbose JSON only when asked for (``application/json``); ATOM otherwise."""
    return any(part.split(";")[0].strip().lower() == "application/json" for part in accept.split(","))


def _atom_value(value: Any, edm: str) -> str:
    if value is None:
        return ' m:null="true" />'
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str) and value.startswith("/Date(") and value.endswith(")/"):
        ms = int(value[6:-2])
        text = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    else:
        text = str(value)
    type_attr = "" if edm == "Edm.String" else f' m:type="{edm}"'
    return f"{type_attr}>{html.escape(text, quote=False)}"


def atom_feed(title: str, feed_id: str, entries: list[tuple[str, str, list[tuple[str, str, Any]]]],
              next_url: str | None, now: float) -> bytes:
    """An ATOM feed: ``entries`` are (id uri, type, [(property, Edm type or complex type, value)]);
    a complex value is a list of the same triples."""
    updated = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = ['<?xml version="1.0" encoding="utf-8" standalone="yes"?>',
           '<feed xmlns="http://www.w3.org/2005/Atom" '
           'xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" '
           'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">',
           f'<title type="text">{html.escape(title)}</title><id>{html.escape(feed_id)}</id>'
           f"<updated>{updated}</updated>"]
    for uri, type_name, props in entries:
        out.append(f"<entry><id>{html.escape(uri)}</id><updated>{updated}</updated>"
                   f'<category term="{type_name}" scheme="http://schemas.microsoft.com/ado/2007/08/dataservices/scheme" />'
                   '<content type="application/xml"><m:properties>')
        out.extend(_atom_property(name, edm, value) for name, edm, value in props)
        out.append("</m:properties></content></entry>")
    if next_url:
        out.append(f'<link rel="next" href="{html.escape(next_url)}" />')
    out.append("</feed>")
    return "".join(out).encode()


def _atom_property(name: str, edm: str, value: Any) -> str:
    if isinstance(value, list):
        inner = "".join(_atom_property(n, e, v) for n, e, v in value)
        return f'<d:{name} m:type="{edm}">{inner}</d:{name}>'
    rendered = _atom_value(value, edm)
    return f"<d:{name}{rendered}" if rendered.endswith("/>") else f"<d:{name}{rendered}</d:{name}>"
