"""Query options shared by OData services: ``$select``, ``$orderby``, ``$expand`` and the
``Prefer`` header (page size, annotations, change tracking)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import bad_request


@dataclass
class Prefer:
    maxpagesize: int | None = None
    annotations: str | None = None
    track: bool = False

    def wants(self, term: str) -> bool:
        if not self.annotations:
            return False
        for pat in (p.strip() for p in self.annotations.split(",")):
            neg = pat.startswith("-")
            pat = pat.lstrip("-")
            if pat == "*" or pat == term or (pat.endswith(".*") and term.startswith(pat[:-1])):
                return not neg
        return False


def parse_prefer(value: str) -> Prefer:
    p = Prefer()
    if not value:
        return p
    m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", value)
    if m:
        p.maxpagesize = int(m.group(1))
    m = re.search(r'odata\.include-annotations\s*=\s*"([^"]*)"', value) or \
        re.search(r"odata\.include-annotations\s*=\s*([^,;\s]+)", value)
    if m:
        p.annotations = m.group(1)
    p.track = "odata.track-changes" in value
    return p


def parse_orderby(text: str) -> list[tuple[str, bool]]:
    """``"modifiedon asc,accountid desc"`` -> ``[("modifiedon", False), ("accountid", True)]``."""
    out = []
    for part in text.split(","):
        bits = part.strip().split()
        if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
            raise bad_request(f"Syntax error in $orderby '{text}'.")
        out.append((bits[0], len(bits) == 2 and bits[1].lower() == "desc"))
    return out


def parse_select(text: str) -> list[str]:
    cols = [c.strip() for c in text.split(",")]
    if any(not c for c in cols):
        raise bad_request(f"Syntax error in $select '{text}'.")
    return cols


def split_expand(text: str) -> list[tuple[str, dict[str, str]]]:
    """``OptionSet($select=Options),GlobalOptionSet`` -> [(name, {"$select": ...}), ...]."""
    out, depth, cur = [], 0, ""
    for ch in text + ",":
        if ch == "," and depth == 0:
            cur = cur.strip()
            if cur:
                if "(" in cur:
                    name, inner = cur.split("(", 1)
                    inner = inner[:-1] if inner.endswith(")") else inner
                    opts = {}
                    d2, piece = 0, ""
                    for c2 in inner + ";":
                        if c2 == ";" and d2 == 0:
                            if piece.strip():
                                k, _, v = piece.strip().partition("=")
                                opts[k] = v
                            piece = ""
                            continue
                        d2 += c2 == "("
                        d2 -= c2 == ")"
                        piece += c2
                    out.append((name.strip(), opts))
                else:
                    out.append((cur, {}))
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    return out
