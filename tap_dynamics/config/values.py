"""From a raw config dict to JSON Schema's verdict, told in one line.

The value rules of every setting (types, ranges, enums, patterns, and which settings each
``auth_scheme`` needs) are declared once, in the JSON Schema the tap publishes. This module
applies that schema the way people actually write config, and turns its verdict into the one
line the tap prints:

* :func:`normalise` accepts the spellings that arrive from environment variables, connection
  strings and Meltano (``"true"``, ``"100"``, ``"a,b"``, ``" x "``, ``"azuread"``) and treats a
  blank value as unset, so that the schema judges what was meant;
* :func:`check` runs the schema and reports its first complaint as a :class:`ConfigError` that
  names the setting and the fix. The fix texts live in the schema next to the rule, under
  ``x-missing`` (for ``required``) and ``x-error`` (for unions and exclusions); per-setting texts
  for patterns and types are given by the groups that declare those settings.

Checks that JSON Schema cannot express (the shape of a URL, a file that must be readable) stay
code, in the group modules, and use :func:`checked_url` here.
"""

from __future__ import annotations

import json
import math
import re
import typing as t
from urllib.parse import SplitResult, urlsplit

import jsonschema

from tap_dynamics.errors import ConfigError

GUID_PATTERN = r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"

_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
# Values that must keep their spaces: a password may legitimately start or end with one.
UNSTRIPPED = frozenset({"password", "certificate_password"})

# A message for one (setting, JSON Schema keyword) pair; ``{name}`` and ``{value!r}`` are filled
# in. Settings without an entry get the generic wording of :func:`_generic`.
Messages = t.Mapping[str, t.Mapping[str, str]]
# Per-setting explanations computed from the value and the rest of the config (e.g. "CRM 4.0 is
# not supported"), consulted before the message table when an enum, pattern or exclusion rejects
# a value.
Explainer = t.Callable[[t.Any, t.Mapping[str, t.Any]], "str | None"]
Explainers = t.Mapping[str, Explainer]


def _types(schema: t.Mapping[str, t.Any]) -> set[str]:
    kind = schema.get("type")
    return {kind} if isinstance(kind, str) else set(kind or ())


def _blank(value: t.Any, schema: t.Mapping[str, t.Any] | None) -> bool:
    """Unset in effect: null, a blank string, or an empty list or map where one is expected."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    types = _types(schema or {})
    return (value == [] and "array" in types) or (value == {} and "object" in types)


def _lenient(name: str, value: t.Any, schema: t.Mapping[str, t.Any]) -> t.Any:
    """``value`` as the schema's type, when it is an unambiguous spelling of one; else as is."""
    types = _types(schema)
    if isinstance(value, str):
        text = value if name in UNSTRIPPED else value.strip()
        if "boolean" in types and text.lower() in ("true", "false", "1", "0"):
            return text.lower() in ("true", "1")
        if "integer" in types and _WHOLE_NUMBER.fullmatch(text):
            return int(text)
        if "number" in types:
            try:
                return float(text)
            except ValueError:
                return text
        if "array" in types:
            return [_lenient(name, part, schema.get("items", {})) for part in text.split(",") if part.strip()]
        if "object" in types:
            try:
                parsed = json.loads(text)
            except ValueError:
                return text
            return parsed if isinstance(parsed, dict) else text
        enum = schema.get("enum")
        if enum:  # connection strings and other tools spell choices freely: AzureAd, refresh
            return next((choice for choice in enum if str(choice).lower() == text.lower()), text)
        return text
    if isinstance(value, list) and "array" in types:
        return [_lenient(name, item, schema.get("items", {})) for item in value]
    if isinstance(value, dict) and "object" in types:
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return {key: _lenient(name, item, extra) for key, item in value.items()}
    return value


def normalise(config: t.Mapping[str, t.Any], schema: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """``config`` with blank values dropped and lenient spellings turned into the schema's types.

    Keys the schema does not declare (the SDK's own, such as ``stream_maps``) pass through.
    """
    properties = schema.get("properties", {})
    out: dict[str, t.Any] = {}
    for name, raw in config.items():
        prop = properties.get(name)
        if raw in (None, "") or (name not in UNSTRIPPED and _blank(raw, prop)):
            continue
        out[name] = _lenient(name, raw, prop) if prop is not None else raw
    return out


def check(
    config: t.Mapping[str, t.Any],
    schema: t.Mapping[str, t.Any],
    messages: Messages,
    explainers: Explainers,
) -> None:
    """Validate a normalised ``config``; raise the first problem as a one-line :class:`ConfigError`."""
    properties = schema.get("properties", {})
    for name, value in config.items():
        # JSON Schema compares NaN with nothing, so ``minimum`` would let it through.
        if isinstance(value, float) and not math.isfinite(value) and name in properties:
            raise ConfigError(_message("type", name, value, properties[name], messages, explainers, config))
    validator = jsonschema.Draft7Validator(schema)
    for error in validator.iter_errors(config):
        raise ConfigError(_describe(error, config, properties, messages, explainers))


def _describe(
    error: jsonschema.ValidationError,
    config: t.Mapping[str, t.Any],
    properties: t.Mapping[str, t.Any],
    messages: Messages,
    explainers: Explainers,
) -> str:
    node = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "required":
        missing = next(n for n in t.cast("list[str]", error.validator_value) if n not in config)
        fix = node.get("x-missing", {}).get(missing, f"set {missing}")
        return f"setting '{missing}' is missing — {fix}"
    if "x-error" in node:  # a union or an exclusion: its own sentence, naming the settings
        return str(node["x-error"]).format_map(_Names(config))
    path = list(error.absolute_path)
    name = str(path[0]) if path else ""
    # Inside a list or a map, the setting as a whole is judged ("must be a list of …").
    keyword = str(error.validator) if len(path) == 1 else "items"
    prop = {**properties.get(name, {}), **(node if len(path) == 1 else {})}
    return _message(keyword, name, config.get(name, error.instance), prop, messages, explainers, config)


def _message(
    keyword: str,
    name: str,
    value: t.Any,
    prop: t.Mapping[str, t.Any],
    messages: Messages,
    explainers: Explainers,
    config: t.Mapping[str, t.Any],
) -> str:
    if keyword in ("enum", "pattern", "not") and name in explainers:
        explained = explainers[name](value, config)
        if explained:
            return explained
    own = messages.get(name, {})
    template = own.get(keyword) or own.get("*")
    if template:
        return template.format(name=name, value=value)
    return _generic(keyword, name, value, prop)


def _generic(keyword: str, name: str, value: t.Any, prop: t.Mapping[str, t.Any]) -> str:
    types = _types(prop)
    low, high = prop.get("minimum"), prop.get("maximum")
    if keyword in ("minimum", "maximum"):
        return f"setting '{name}' must be from {low} to {high} (got {value})"
    if keyword == "enum":
        return f"setting '{name}' is {value!r}; valid values: {', '.join(map(str, prop.get('enum', ())))}"
    if "integer" in types:
        return f"setting '{name}' must be a whole number from {low} to {high} (got {value!r})"
    if "boolean" in types:
        return f"setting '{name}' must be true or false (got {value!r})"
    if "number" in types:
        return f"setting '{name}' must be a number from {low} to {high} (got {value!r})"
    if "string" in types:
        return f"setting '{name}' must be a string"
    if "object" in types:
        return f"setting '{name}' must be a JSON object of the documented keys (--about lists them)"
    if "array" in types:
        return f"setting '{name}' must be a list"
    return f"setting '{name}' has an invalid value"


class _Names(dict[str, t.Any]):
    """What ``x-error`` templates may name: the discriminators, never a credential."""

    ALLOWED = frozenset({"auth_scheme", "crm_version"})

    def __init__(self, config: t.Mapping[str, t.Any]) -> None:
        super().__init__({k: v for k, v in config.items() if k in self.ALLOWED})

    def __missing__(self, key: str) -> str:
        return key


def checked_url(name: str, value: str, schemes: tuple[str, ...], example: str) -> SplitResult:
    """``value`` split, if its scheme is one of ``schemes`` and it has a host and no query.

    Code rather than a ``pattern``: the message says which part is wrong.
    """
    refuse_userinfo(name, value)
    parts = split_url(name, value)
    if parts.scheme.lower() not in schemes:
        msg = f"setting '{name}' must be an https:// URL (got {value!r}) — e.g. {example}"
        raise ConfigError(msg)
    if not parts.hostname:
        msg = f"setting '{name}' has no host name (got {value!r}) — e.g. {example}"
        raise ConfigError(msg)
    if parts.query or parts.fragment:
        msg = f"setting '{name}' must not contain a query string or fragment (got {value!r})"
        raise ConfigError(msg)
    return parts


def split_url(name: str, value: str) -> SplitResult:
    """``value`` split into its parts, or a one-line error when it cannot be (``https://[host``).

    The value is not repeated: a URL that cannot be split cannot have its password removed.
    """
    try:
        return urlsplit(value)
    except ValueError as exc:
        msg = f"setting '{name}' is not a valid URL ({exc}) — check its host, brackets and port"
        raise ConfigError(msg) from None


def refuse_userinfo(name: str, value: str) -> None:
    """Refuse a URL that carries ``user:password@``: it would reach every log line, error and
    request URL built from the setting. The message shows the URL without it."""
    parts = split_url(name, value)
    if "@" in parts.netloc:
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        msg = (
            f"setting '{name}' must not contain a user name or password (got {shown!r} with them removed) "
            "— give the address alone, and the credentials in the sign-in settings"
        )
        raise ConfigError(msg)


def https_origin(name: str, value: str, example: str = "https://myorg.crm.dynamics.com") -> str:
    """``https://host[:port]`` of an https URL setting (its path, if any, is not used)."""
    parts = checked_url(name, value, ("https",), example)
    return f"https://{parts.netloc.lower()}"
