"""``$filter`` parsing and compilation.

Why a real parser: the tap builds filters such as
``modifiedon ge 2024-01-01T00:00:00Z and statecode eq 0`` and metadata filters with enum
literals; the emulator must evaluate them with the service's semantics (Dataverse:
case-insensitive strings, unquoted GUIDs and datetimes) rather than accept anything.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from . import bad_request

# ---------------------------------------------------------------- tokenizer

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<enum>[A-Za-z_][\w.]*'(?:[^']|'')*')
  | (?P<str>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-]))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\w:]))
  | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDlLfF]?(?![\w]))
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<comma>,)
  | (?P<ident>[A-Za-z_@$][\w.]*(?:/[A-Za-z_][\w.]*)*)
    """,
    re.VERBOSE,
)

KEYWORDS = {"and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "null", "true", "false"}
CMP_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}
FUNCS = {"contains", "startswith", "endswith"}


def tokenize(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise bad_request(
                f"Syntax error at position {pos} in '{text}'.")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        val = m.group()
        if kind == "ident" and val in KEYWORDS:
            kind = val
        out.append((kind, val))
    out.append(("eof", ""))
    return out


# ---------------------------------------------------------------- parser -> AST tuples

class _Parser:
    def __init__(self, text: str, version: int = 4):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0
        self.version = version

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i]

    def take(self, kind: str | None = None) -> tuple[str, str]:
        tok = self.toks[self.i]
        if kind and tok[0] != kind:
            raise bad_request(f"Syntax error: expected {kind} but found '{tok[1]}' in '{self.text}'.")
        self.i += 1
        return tok

    def parse(self):
        node = self.or_()
        if self.peek()[0] != "eof":
            raise bad_request(f"Syntax error at '{self.peek()[1]}' in '{self.text}'.")
        return node

    def or_(self):
        node = self.and_()
        while self.peek()[0] == "or":
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self):
        node = self.not_()
        while self.peek()[0] == "and":
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self):
        if self.peek()[0] == "not":
            self.take()
            return ("not", self.not_())
        return self.cmp()

    def cmp(self):
        left = self.primary()
        if self.peek()[0] in CMP_OPS:
            op = self.take()[0]
            right = self.primary()
            return ("cmp", op, left, right)
        return left

    def primary(self):
        kind, val = self.take()
        if kind == "lp":
            node = self.or_()
            self.take("rp")
            return node
        if kind == "ident":
            if self.peek()[0] == "lp" and val.lower() in FUNCS:
                self.take()
                args = [self.primary()]
                while self.peek()[0] == "comma":
                    self.take()
                    args.append(self.primary())
                self.take("rp")
                return ("func", val.lower(), args)
            if self.peek()[0] == "lp":
                raise bad_request(f"The function '{val}' is not supported.")
            return ("prop", val)
        if kind == "str":
            return ("lit", "string", val[1:-1].replace("''", "'"))
        if kind == "enum":
            q = val.index("'")
            inner = val[q + 1:-1].replace("''", "'")
            if self.version == 2:
                return self._v2_literal(val[:q], inner)
            return ("lit", "enum", inner)
        if kind == "null":
            return ("lit", "null", None)
        if kind in ("true", "false"):
            return ("lit", "bool", kind == "true")
        if kind in ("guid", "datetime", "date") and self.version == 2:
            # OData v2 has no bare GUID or date literals: they are typed, guid'…'/datetime'…'.
            raise bad_request(f"Syntax error at position {self.text.find(val)} in '{self.text}'.")
        if kind == "guid":
            return ("lit", "guid", val.lower())
        if kind == "datetime":
            return ("lit", "datetime", parse_datetime(val))
        if kind == "date":
            return ("lit", "date", val)
        if kind == "num":
            v = val.rstrip("mMdDlLfF")
            return ("lit", "num", float(v) if ("." in v or "e" in v.lower()) else int(v))
        raise bad_request(f"Syntax error at '{val}' in '{self.text}'.")


    def _v2_literal(self, prefix: str, inner: str):
        """An OData v2 typed literal: ``datetime'2012-01-01T00:00:00'`` (UTC when it has no
        offset, as CRM reads it), ``datetimeoffset'…'``, ``guid'…'``."""
        kind = prefix.lower()
        if kind in ("datetime", "datetimeoffset"):
            try:
                return ("lit", "datetime", parse_datetime(inner))
            except ValueError:
                raise bad_request(f"Unrecognized 'Edm.DateTime' literal '{prefix}'{inner}'' "
                                  f"in '{self.text}'.") from None
        if kind == "guid":
            if not re.fullmatch(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", inner):
                raise bad_request(f"Unrecognized 'Edm.Guid' literal '{prefix}'{inner}'' in '{self.text}'.")
            return ("lit", "guid", inner.lower())
        raise bad_request(f"Unrecognized literal '{prefix}'{inner}'' in '{self.text}'.")


def parse_filter(text: str, version: int = 4):
    """``version`` 2: OData v2 literals (``datetime'…'``, ``guid'…'``; no bare ones)."""
    return _Parser(text, version).parse()


def parse_datetime(text: str) -> float:
    """ISO-8601 -> epoch seconds (naive values are UTC)."""
    t = text
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    d = dt.datetime.fromisoformat(t)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.timestamp()


_DT_CACHE: dict[str, float] = {}


def row_datetime(v: str) -> float:
    r = _DT_CACHE.get(v)
    if r is None:
        r = parse_datetime(v)
        if len(_DT_CACHE) < 500_000:
            _DT_CACHE[v] = r
    return r


# ---------------------------------------------------------------- compiler

# kinds: "string", "guid", "datetime", "date", "number", "bool", "any"
Resolver = Callable[[str], tuple[Callable[[dict], Any], str]]


def _coerce_lit(kind: str, lit: tuple) -> Any:
    _, lkind, v = lit
    if v is None:
        return None
    if kind == "datetime":
        if lkind == "datetime":
            return v
        if lkind == "date":
            return parse_datetime(v + "T00:00:00Z")
        raise bad_request(f"A binary operator with incompatible types was detected. Found operand "
                          f"types 'Edm.DateTimeOffset' and '{_edm_of(lkind)}' for operator kind 'Equal'.")
    if kind == "date":
        if lkind == "date":
            return v
        if lkind == "datetime":
            return dt.datetime.fromtimestamp(v, dt.timezone.utc).strftime("%Y-%m-%d")
        raise bad_request(f"A binary operator with incompatible types was detected. Found operand "
                          f"types 'Edm.Date' and '{_edm_of(lkind)}' for operator kind 'Equal'.")
    if kind == "guid":
        if lkind in ("guid", "string"):
            return str(v).lower()
        raise bad_request(f"A binary operator with incompatible types was detected. Found operand "
                          f"types 'Edm.Guid' and '{_edm_of(lkind)}' for operator kind 'Equal'.")
    if kind == "string":
        if lkind in ("string", "enum"):
            return str(v).casefold()
        raise bad_request(f"A binary operator with incompatible types was detected. Found operand "
                          f"types 'Edm.String' and '{_edm_of(lkind)}' for operator kind 'Equal'.")
    if kind == "number":
        if lkind == "num":
            return v
        if lkind == "bool":
            return int(v)
        raise bad_request(f"A binary operator with incompatible types was detected. Found operand "
                          f"types 'Edm.Int32' and '{_edm_of(lkind)}' for operator kind 'Equal'.")
    if kind == "bool":
        if lkind == "bool":
            return v
        raise bad_request(f"A binary operator with incompatible types was detected. Found operand "
                          f"types 'Edm.Boolean' and '{_edm_of(lkind)}' for operator kind 'Equal'.")
    if lkind in ("string", "enum"):
        return str(v).casefold()
    return v


def _edm_of(lkind: str) -> str:
    return {"string": "Edm.String", "num": "Edm.Int32", "bool": "Edm.Boolean", "guid": "Edm.Guid",
            "datetime": "Edm.DateTimeOffset", "date": "Edm.Date", "enum": "Edm.Enum"}.get(lkind, lkind)


def _row_conv(kind: str) -> Callable[[Any], Any]:
    if kind == "datetime":
        return row_datetime
    if kind == "string":
        return lambda v: v.casefold() if isinstance(v, str) else v
    if kind == "guid":
        return lambda v: v.lower() if isinstance(v, str) else v
    if kind == "any":
        return lambda v: v.casefold() if isinstance(v, str) else v
    return lambda v: v


_OPS = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}


def compile_filter(ast, resolve: Resolver) -> tuple[Callable[[dict], bool], set[str]]:
    """Compile to ``predicate(row_dict)``; also returns the referenced property names."""
    used: set[str] = set()

    def c(node) -> Callable[[dict], Any]:
        tag = node[0]
        if tag == "and":
            a, b = c(node[1]), c(node[2])
            return lambda r: bool(a(r)) and bool(b(r))
        if tag == "or":
            a, b = c(node[1]), c(node[2])
            return lambda r: bool(a(r)) or bool(b(r))
        if tag == "not":
            a = c(node[1])
            return lambda r: not a(r)
        if tag == "prop":
            get, kind = resolve(node[1])
            used.add(node[1])
            if kind != "bool":
                raise bad_request("The $filter expression must evaluate to a single boolean value.")
            return lambda r: get(r) is True
        if tag == "lit":
            raise bad_request("The $filter expression must evaluate to a single boolean value.")
        if tag == "func":
            name, args = node[1], node[2]
            if len(args) != 2 or args[0][0] != "prop" or args[1][0] != "lit":
                raise bad_request(f"The '{name}' function requires a property and a string literal.")
            get, _kind = resolve(args[0][1])
            used.add(args[0][1])
            needle = str(args[1][2]).casefold()
            if name == "contains":
                return lambda r: isinstance(v := get(r), str) and needle in v.casefold()
            if name == "startswith":
                return lambda r: isinstance(v := get(r), str) and v.casefold().startswith(needle)
            return lambda r: isinstance(v := get(r), str) and v.casefold().endswith(needle)
        if tag == "cmp":
            op, left, right = node[1], node[2], node[3]
            if left[0] == "lit" and right[0] == "prop":
                flip = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}
                op, left, right = flip.get(op, op), right, left
            if left[0] != "prop" or right[0] != "lit":
                raise bad_request("Comparisons must be between a property and a literal value.")
            get, kind = resolve(left[1])
            used.add(left[1])
            lit = _coerce_lit(kind, right)
            conv = _row_conv(kind)
            fn = _OPS[op]
            if lit is None:
                if op == "eq":
                    return lambda r: get(r) is None
                if op == "ne":
                    return lambda r: get(r) is not None
                return lambda r: False

            def cmp(r, get=get, conv=conv, fn=fn, lit=lit, op=op):
                v = get(r)
                if v is None:
                    return op == "ne"
                try:
                    return fn(conv(v), lit)
                except TypeError:
                    return False

            return cmp
        raise bad_request("Unsupported $filter expression.")

    return c(ast), used
