"""Dataverse's paging cookie: the XML ``<cookie …>`` carried, URL-encoded, in ``$skiptoken``.

Why it is exact: the tap must follow ``@odata.nextLink`` verbatim; the cookie is encoded the
way Dataverse encodes it (twice, lower-case hex) so that a client that re-encodes or rebuilds
the link gets the same 400 a real org gives.
"""

from __future__ import annotations

import re
import urllib.parse
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

from ..odata import bad_request


def _lower_pct(s: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), s)


def encode_cookie(page: int, columns: list[tuple[str, str | None, str | None]],
                  tracking: bool = False, extra: dict[str, str] | None = None) -> str:
    """Build the decoded ``$skiptoken`` value.

    ``columns`` = [(name, last, first)]; order columns first, primary key last (GUIDs as
    ``{UPPER}``). The inner cookie is URL-encoded twice (lower-case hex, as Dataverse does)."""
    attrs = "".join(f" {k}={quoteattr(v)}" for k, v in (extra or {}).items())
    inner = f'<cookie page="{page - 1}"{attrs}>'
    for name, last, first in columns:
        if last is None:
            inner += f'<{name} lastnull="1" first={quoteattr(first or "")} />'
        else:
            inner += f"<{name} last={quoteattr(last)} first={quoteattr(first or '')} />"
    inner += "</cookie>"
    once = _lower_pct(urllib.parse.quote(inner, safe="-_.!~*()'"))
    twice = _lower_pct(urllib.parse.quote(once, safe="-_.!~*()'"))
    return (f'<cookie pagenumber="{page}" pagingcookie="{twice}" '
            f'istracking="{"True" if tracking else "False"}" />')


def skiptoken_param(cookie: str) -> str:
    """URL-encode the cookie for ``$skiptoken=`` (so a verbatim nextLink decodes to it)."""
    return urllib.parse.quote(cookie, safe="=")


_OUTER = re.compile(r'^<cookie pagenumber="(\d+)" pagingcookie="([^"]*)"(?: istracking="(True|False)")? ?/>$')


def decode_cookie(token: str) -> tuple[int, dict[str, str], list[tuple[str, str | None]], bool]:
    """Parse a decoded ``$skiptoken`` -> (pagenumber, inner attrs, [(col, last)], istracking)."""
    m = _OUTER.match(token.strip())
    if not m:
        raise bad_request("The $skiptoken value is not a valid paging cookie. Follow "
                          "@odata.nextLink verbatim; it is already URL-encoded.",
                          code="0x80040203")
    page, pc, tracking = int(m.group(1)), m.group(2), m.group(3) == "True"
    inner = urllib.parse.unquote(urllib.parse.unquote(pc))
    try:
        root = ET.fromstring(inner)
    except ET.ParseError:
        raise bad_request("The paging cookie in $skiptoken is malformed.", code="0x80040203") from None
    if root.tag != "cookie":
        raise bad_request("The paging cookie in $skiptoken is malformed.", code="0x80040203")
    cols = [(el.tag, None if el.get("lastnull") == "1" else el.get("last")) for el in root]
    return page, dict(root.attrib), cols, tracking
