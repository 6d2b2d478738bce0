"""The shape of the code, checked: no import circles, a product-neutral engine, the SDK fenced in.

These read the source (``ast``), so they count what a reviewer would: every import (also the ones
inside functions and under ``TYPE_CHECKING``), every access to a private Singer SDK member, every
override of a method the SDK marks ``@final``, and the length of each module.
"""

from __future__ import annotations

import ast
import inspect
import pathlib

import pytest
from singer_sdk import Stream, Tap
from singer_sdk.plugin_base import PluginBase

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tap_dynamics"
SDK_COMPAT = "tap_dynamics.engine.sdk_compat"
MAX_LINES = 500


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _imports(name: str) -> set[str]:
    """Every tap_dynamics module ``name`` imports, wherever the import statement is."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(target for target in targets if target in MODULES and target != name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.add(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    graph = {name: _imports(name) for name in MODULES}
    circles = [sorted(c) for c in _cycles(graph)]
    assert circles == []


def test_the_engine_knows_no_product() -> None:
    """The engine imports nothing of a system package (Dataverse, on-premises, sign-in, settings)."""
    engine = [name for name in MODULES if name.startswith("tap_dynamics.engine")]
    allowed = ("tap_dynamics.engine", "tap_dynamics.errors")
    offending = {
        name: sorted(i for i in _imports(name) if not i.startswith(allowed) and i != "tap_dynamics")
        for name in engine
    }
    assert {k: v for k, v in offending.items() if v} == {}
    # and no Dataverse wire fact either: those live in dataverse/policy.py and dataverse/streams.py
    facts = ("0x80040216", "0x80072560", "0x80044352", "If-None-Match", "x-ms-service-request-id",
             "xrm-requests", "/api/data", "$deletedEntity", "RetrieveTotalRecordCount",
             "OrganizationData", "Microsoft.Crm", "EntityReference", "OptionSetValue")
    for name in engine:
        code = MODULES[name].read_text(encoding="utf-8")
        body = code.split('"""', 2)[-1]  # the module docstring may name what lives elsewhere
        assert not [fact for fact in facts if fact in body], name


def _sdk_private_names() -> set[str]:
    names: set[str] = set()
    for cls in (Stream, Tap, PluginBase):
        for klass in cls.__mro__:
            if klass.__module__.startswith("singer_sdk"):
                names.update(n for n in vars(klass) if n.startswith("_") and not n.startswith("__"))
    return names


def _sdk_final_names() -> set[str]:
    names: set[str] = set()
    for cls in (Stream, Tap, PluginBase):
        for name, member in inspect.getmembers(cls):
            target = member.fget if isinstance(member, property) else member
            if getattr(target, "__final__", False):
                names.add(name)
    return names


def test_private_sdk_members_and_final_overrides_only_in_sdk_compat() -> None:
    private = _sdk_private_names()
    final = _sdk_final_names()
    assert {"sync_all", "run_connection_test", "sync"} <= final  # the check sees what it must
    assert {"_sync_records", "_write_state_message"} <= private
    found: list[str] = []
    for name, tree in TREES.items():
        if name == SDK_COMPAT:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in private:
                found.append(f"{name}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("singer_sdk"):
                module_private = any(part.startswith("_") for part in (node.module or "").split("."))
                if module_private or any(a.name.startswith("_") for a in node.names):
                    found.append(f"{name}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.ClassDef):
                found.extend(
                    f"{name}:{item.lineno} def {item.name}"
                    for item in node.body
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and (item.name in final or item.name in private)
                )
    assert found == []


def test_no_system_package_imports_another() -> None:
    """Each system (tap_dynamics/<system>/, registered in systems.py) imports no other system's
    package: what two systems share lives in the engine or in a neutral module (checks.py)."""
    from tap_dynamics.systems import _MODULES

    packages = {module.rpartition(".")[0] for module in _MODULES.values()}
    assert len(packages) >= 2
    crossing = {
        name: sorted(i for i in _imports(name) for other in packages - {package} if i.startswith(other))
        for package in packages
        for name in MODULES
        if name.startswith(package + ".") or name == package
    }
    assert {k: v for k, v in crossing.items() if v} == {}


def test_modules_stay_readable() -> None:
    """No module over ~500 lines unless it says at its top why it is longer."""
    long = [
        name
        for name, path in MODULES.items()
        if len(path.read_text(encoding="utf-8").splitlines()) > MAX_LINES
        and "Longer than" not in (ast.get_docstring(TREES[name]) or "")
    ]
    assert long == []


def test_singer_sdk_deprecations_fail_the_suite() -> None:
    """pytest's filterwarnings turn the SDK's deprecations into errors (pyproject.toml)."""
    import warnings

    from singer_sdk.helpers._compat import SingerSDKDeprecationWarning

    with pytest.raises(SingerSDKDeprecationWarning):
        warnings.warn("a deprecated SDK call", SingerSDKDeprecationWarning, stacklevel=1)


def test_tap_processes_show_sdk_deprecations_and_the_tests_fail_on_them() -> None:
    """Tap processes run with DeprecationWarnings shown; an SDK one fails ``run_tap``'s checks."""
    import subprocess
    import sys

    from tests.taprun import SHOW_DEPRECATIONS, assert_no_sdk_deprecation, hermetic_env

    probe = (
        "import warnings\n"
        "from singer_sdk.helpers._compat import SingerSDKDeprecationWarning\n"
        "warnings.warn('a deprecated SDK call', SingerSDKDeprecationWarning, stacklevel=1)\n"
    )
    shown = subprocess.run(  # noqa: S603 - a fixed probe
        [sys.executable, "-c", probe], capture_output=True, text=True, env=hermetic_env(SHOW_DEPRECATIONS), check=True
    )
    with pytest.raises(AssertionError, match="Singer SDK deprecation"):
        assert_no_sdk_deprecation(shown.stderr)
    assert_no_sdk_deprecation("/venv/lib/urllib3/util.py:3: DeprecationWarning: not the SDK's\n")


def test_a_run_loads_only_its_own_sign_in_and_system() -> None:
    """Start-up cost: every run imports the tap and the auth package, but only one scheme's
    credential module and one system's package (NTLM's spnego, the signed-in user's
    msal_extensions, Kerberos' gssapi, F&O, Graph and OData v2 load when a run uses them)."""
    import subprocess
    import sys

    heavy = ("spnego", "requests_ntlm", "msal_extensions", "gssapi", "krb5", "tap_dynamics.auth.windows",
             "tap_dynamics.auth.kerberos", "tap_dynamics.auth.delegated", "tap_dynamics.finops",
             "tap_dynamics.graph", "tap_dynamics.onprem.v2streams")
    script = (
        "import sys, tap_dynamics.tap, tap_dynamics.auth\n"
        "from tap_dynamics.auth import SCHEMES\n"
        "SCHEMES['AzureServicePrincipal']\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
