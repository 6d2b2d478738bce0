"""Settings are declared once and mirrored: every secret of the tap's schema is a password
(``kind: password``, ``sensitive: true``) in meltano.yml and "Sensitive" in the README's settings
table, and nothing else is; each system has an extractor of its own that inherits tap-dynamics."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tap_dynamics.config import CONFIG_SCHEMA
from tap_dynamics.config.system import EDITIONS

ROOT = Path(__file__).resolve().parent.parent


def _extractors() -> dict[str, dict]:
    plugins = yaml.safe_load((ROOT / "meltano.yml").read_text())["plugins"]["extractors"]
    return {p["name"]: p for p in plugins}


def test_secrets_are_sensitive_in_meltano_and_the_readme() -> None:
    secrets = {name for name, prop in CONFIG_SCHEMA["properties"].items() if prop.get("secret")}
    assert {"client_secret", "password", "connection_string"} <= secrets
    settings = {s["name"]: s for s in _extractors()["tap-dynamics"]["settings"]}
    sensitive = {name for name, s in settings.items() if s.get("sensitive") or s.get("kind") == "password"}
    assert sensitive == secrets
    assert all(settings[name].get("kind") == "password" and settings[name].get("sensitive") for name in secrets)
    rows = re.findall(r"^\| `(\w+)` \|(.*)$", (ROOT / "README.md").read_text(), re.M)
    table = {name: rest for name, rest in rows if name in CONFIG_SCHEMA["properties"]}
    assert {name for name, rest in table.items() if rest.rstrip(" |").endswith("Sensitive")} == secrets


def test_each_system_has_an_extractor_inheriting_tap_dynamics() -> None:
    """F&O and Office 365 each get a tap-dynamics-<system> extractor with its own settings and
    state, selecting its system by edition."""
    extractors = _extractors()
    children = {name: p for name, p in extractors.items() if p.get("inherit_from") == "tap-dynamics"}
    assert set(children) == {"tap-dynamics-finops", "tap-dynamics-office365"}
    assert {EDITIONS[p["config"]["edition"]] for p in children.values()} == {"finops", "graph"}
