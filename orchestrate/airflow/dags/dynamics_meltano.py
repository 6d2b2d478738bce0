"""What the tap-dynamics DAG runs, kept free of scheduler imports so it loads fast and tests alone.

The DAG file (``dynamics_to_warehouse.py``) is parsed by the scheduler every few seconds, so it
must not call Meltano while parsing: its stream groups, schedule and target come from the small
YAML file next to it, read by :func:`load_config`. Everything that happens at run time — the
``meltano`` command line of a group, its environment, reading Meltano's output and turning the
tap's exit code into a scheduler decision — lives here.

Exit codes of tap-dynamics (see the README): 0 ok, 2 settings/credentials (a person must fix
them: fail without retry), 3 some tables failed and were skipped (fail after the other tables
finished, naming them), 4 the service kept failing (retry later, with an increasing delay).
``meltano run`` itself only exits 1, so the tap's code is read from Meltano's JSON log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_ENV = "TAP_DYNAMICS_DAG_CONFIG"
DEFAULT_CONFIG = Path(__file__).with_name("dynamics_to_warehouse.yml")
EXTRACTOR = "tap-dynamics"

EXIT_CONFIG = 2
EXIT_TABLES_FAILED = 3
EXIT_SERVICE = 4

GROUP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,50}$")
DISCOVERY_FAILED = re.compile(r"returned (\d+) with stderr")
SKIPPED_TABLES = re.compile(r"failed and were skipped: (.+?) \(see")
# The per-table lines of the tap's run summary: "<stream>  <method> ... failed (<why>)".
FAILED_ROW = re.compile(r"^(\S+)\s+\S+.*\s(failed|skipped)\b(.*)$")


class DagConfigError(ValueError):
    """The DAG's YAML file is wrong; the message says where and how to fix it."""


@dataclass
class Group:
    """One stream group: one mapped task, one ``meltano run``, its own state id."""

    name: str
    streams: list[str]
    env: dict[str, str] = field(default_factory=dict)  # variable -> "env:NAME" / "var:NAME" / value
    environment: str | None = None  # Meltano environment (e.g. other credentials)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "streams": self.streams, "env": self.env,
                "environment": self.environment}


@dataclass
class Config:
    """The DAG's settings (dynamics_to_warehouse.yml)."""

    dag_id: str
    schedule: str | None
    start_date: str
    target: str
    groups: list[Group]
    project_root: Path
    meltano: str
    environment: str | None = None
    pool: str | None = None
    retries: int = 4
    retry_delay_seconds: float = 300.0
    max_retry_delay_seconds: float = 3600.0
    retry_backoff: float = 2.0
    timeout_minutes: int = 720
    tags: list[str] = field(default_factory=list)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and check the YAML file (``TAP_DYNAMICS_DAG_CONFIG`` or the one next to the DAG)."""
    path = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise DagConfigError(f"cannot read the DAG configuration {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise DagConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise DagConfigError(f"{path} must hold a mapping of settings")

    def need(key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        value = raw.get(key, default)
        if value is ...:
            raise DagConfigError(f"{path}: '{key}' is required")
        if value is not None and not isinstance(value, kind):
            raise DagConfigError(f"{path}: '{key}' must be {getattr(kind, '__name__', kind)}")
        return value

    groups = []
    for i, item in enumerate(need("groups", list)):
        where = f"{path}: groups[{i}]"
        if not isinstance(item, dict) or not GROUP_NAME.match(str(item.get("name", ""))):
            raise DagConfigError(f"{where} needs a 'name' of letters, digits, '_' or '-'")
        streams = item.get("streams")
        if not streams or not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
            raise DagConfigError(f"{where} ({item['name']}) needs 'streams': a list of stream names")
        env = item.get("env") or {}
        if not isinstance(env, dict):
            raise DagConfigError(f"{where} ({item['name']}): 'env' must map variable names to values")
        groups.append(Group(str(item["name"]), streams, {str(k): str(v) for k, v in env.items()},
                            item.get("environment")))
    names = [g.name for g in groups]
    if not groups or len(set(names)) != len(names):
        raise DagConfigError(f"{path}: 'groups' must list at least one group, with unique names")
    claimed: dict[str, str] = {}
    for group in groups:
        for stream in group.streams:
            if stream in claimed:
                raise DagConfigError(
                    f"{path}: stream {stream} is in groups {claimed[stream]} and {group.name}; "
                    "a stream belongs to one group (each group keeps its own bookmarks)"
                )
            claimed[stream] = group.name

    root = os.environ.get("MELTANO_PROJECT_ROOT") or need("project_root", str, None)
    project_root = (path.parent / root).resolve() if root else path.resolve().parents[3]
    schedule = need("schedule", str, None)
    return Config(
        dag_id=need("dag_id", str, "tap_dynamics"),
        schedule=schedule,
        start_date=str(need("start_date", (str, object), "2026-01-01")),
        target=need("target", str),
        groups=groups,
        project_root=project_root,
        meltano=os.environ.get("TAP_DYNAMICS_DAG_MELTANO") or need("meltano", str, "meltano"),
        environment=need("environment", str, None),
        pool=need("pool", str, None),
        retries=int(need("retries", int, 4)),
        retry_delay_seconds=float(need("retry_delay_seconds", (int, float), 300)),
        max_retry_delay_seconds=float(need("max_retry_delay_seconds", (int, float), 3600)),
        retry_backoff=float(need("retry_backoff", (int, float), 2.0)),
        timeout_minutes=int(need("timeout_minutes", int, 720)),
        tags=list(need("tags", list, ["tap-dynamics"])),
    )


@dataclass
class MeltanoResult:
    """What one Meltano command did, read from its JSON log."""

    exit_code: int
    tap_exit_code: int | None = None
    target_exit_code: int | None = None
    failed_tables: list[str] = field(default_factory=list)
    summary: str = ""
    error: str = ""

    @property
    def code(self) -> int:
        """The code that decides what the scheduler does: the tap's when it failed."""
        if self.exit_code == 0:
            return 0
        return self.tap_exit_code or self.exit_code

    def as_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "tap_exit_code": self.tap_exit_code,
                "target_exit_code": self.target_exit_code, "failed_tables": self.failed_tables,
                "summary": self.summary, "error": self.error}


def resolve_env(spec: Mapping[str, str], variable: Callable[[str], str]) -> dict[str, str]:
    """A group's extra variables: ``env:NAME`` copies the worker's $NAME, ``var:NAME`` reads
    the scheduler's Variable NAME (a secrets backend can serve it), anything else is literal."""
    out = {}
    for key, value in spec.items():
        if value.startswith("env:"):
            name = value[4:]
            if name not in os.environ:
                raise DagConfigError(f"{key} should come from ${name}, which is not set on this worker")
            out[key] = os.environ[name]
        elif value.startswith("var:"):
            out[key] = variable(value[4:])
        else:
            out[key] = value
    return out


def sys_dir(config: Config) -> Path:
    """The project's ``.meltano`` directory (``MELTANO_SYS_DIR_ROOT`` wins, as for Meltano)."""
    override = os.environ.get("MELTANO_SYS_DIR_ROOT")
    return Path(override) if override else config.project_root / ".meltano"


def group_sys_dir(config: Config, group: str) -> Path:
    """A ``.meltano`` of the group's own, sharing the installed plugins of the project's.

    Meltano writes the tap's catalog, state and config files to ``.meltano/run/<plugin>/``;
    two groups running at once in one project would overwrite each other's catalog (and so
    their stream selection). Each group gets its own ``run`` (and ``logs``) directory, and
    links to everything else (plugin virtualenvs), so nothing is installed twice.
    """
    shared = sys_dir(config)
    own = shared / "run" / "airflow-groups" / group
    own.mkdir(parents=True, exist_ok=True)
    for entry in shared.iterdir():
        if entry.name in {"run", "logs"} or entry.name.startswith("meltano.db"):
            continue
        link = own / entry.name
        if not link.is_symlink() and not link.exists():
            link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return own


def base_env(config: Config) -> dict[str, str]:
    """Variables every Meltano command of the DAG gets."""
    env = {**os.environ, "MELTANO_PROJECT_ROOT": str(config.project_root), "NO_COLOR": "1"}
    # The system database holds the state; it must stay the project's when .meltano moves.
    env.setdefault("MELTANO_DATABASE_URI", f"sqlite:///{sys_dir(config) / 'meltano.db'}")
    return env


def check_command(config: Config) -> list[str]:
    """``tap-dynamics check`` through Meltano (settings as TAP_DYNAMICS_* variables)."""
    cmd = [config.meltano, "--log-format=json"]
    if config.environment:
        cmd += ["--environment", config.environment]
    return [*cmd, "invoke", f"{EXTRACTOR}:check", "--config", "ENV"]


def group_command(config: Config, group: Group) -> list[str]:
    """``meltano run tap-dynamics <target>`` with the group's own state id."""
    cmd = [config.meltano, "--log-format=json"]
    environment = group.environment or config.environment
    if environment:
        cmd += ["--environment", environment]
    return [*cmd, "run", "--state-id-suffix", group.name, EXTRACTOR, config.target]


def group_env(config: Config, group: Group, variable: Callable[[str], str]) -> dict[str, str]:
    """The group's environment: only its streams selected, its own run directory, its secrets."""
    select = [f"{stream}.*" for stream in group.streams]
    return {
        **base_env(config),
        "TAP_DYNAMICS__SELECT": json.dumps(select),
        "MELTANO_SYS_DIR_ROOT": str(group_sys_dir(config, group.name)),
        **resolve_env(group.env, variable),
    }


def state_id(config: Config, group: Group) -> str:
    """The Meltano state id of a group (``<environment>:tap-dynamics-to-<target>:<group>``)."""
    environment = group.environment or config.environment or "dev"
    return f"{environment}:{EXTRACTOR}-to-{config.target}:{group.name}"


def _readable(entry: dict[str, Any]) -> str:
    name = entry.get("name") or entry.get("string_id") or "meltano"
    return f"{name}: {entry.get('event', '')}".rstrip()


def run_meltano(cmd: list[str], env: Mapping[str, str], cwd: Path, log: Callable[[str], None]) -> MeltanoResult:
    """Run one Meltano command, echo its log readably (line by line, as it comes) and read it."""
    result = MeltanoResult(exit_code=0)
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace",
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            log(line)
            _read_plain(line, result)
            continue
        for text in _readable(entry).splitlines():
            log(text)
        _read_entry(entry, result)
    result.exit_code = proc.wait()
    if result.exit_code == 0:
        result.tap_exit_code = result.tap_exit_code or 0
    return result


def _read_plain(text: str, result: MeltanoResult) -> None:
    """Lines a plugin printed (``meltano invoke`` passes them through as they are)."""
    skipped = SKIPPED_TABLES.search(text)
    if skipped:
        result.failed_tables = [t.strip() for t in skipped.group(1).split(",")]
    if "error:" in text or text.startswith("connection unavailable"):
        result.error = text.strip()


def _read_entry(entry: dict[str, Any], result: MeltanoResult) -> None:
    event = str(entry.get("event", ""))
    codes = entry.get("exit_codes")
    if isinstance(codes, dict):
        result.tap_exit_code = codes.get("extractors", result.tap_exit_code)
        result.target_exit_code = codes.get("loaders", result.target_exit_code)
    discovery = DISCOVERY_FAILED.search(event)
    if discovery and "Catalog discovery failed" in event:
        result.tap_exit_code = int(discovery.group(1))
    if event.startswith("Run summary"):
        result.summary = event
        for row in event.splitlines()[2:]:
            failed = FAILED_ROW.match(row)
            if failed and failed.group(1) not in result.failed_tables:
                result.failed_tables.append(failed.group(1))
    for line in event.splitlines():
        _read_plain(line, result)


def outcome(result: MeltanoResult) -> tuple[str, str]:
    """``(decision, message)``: decision is ``ok``, ``fail`` (no retry) or ``retry``."""
    code = result.code
    if code == 0:
        return "ok", "ok"
    if code == EXIT_CONFIG:
        why = result.error or "a setting or credential is wrong"
        return "fail", f"exit 2 (settings or credentials; retrying will not help): {why}"
    if code == EXIT_TABLES_FAILED:
        tables = ", ".join(result.failed_tables) or "see the run summary"
        return "fail", f"exit 3: these tables failed and were skipped (the others loaded): {tables}"
    if code == EXIT_SERVICE:
        tables = ", ".join(result.failed_tables)
        where = f" ({tables})" if tables else ""
        return "retry", f"exit 4: the service kept failing beyond the tap's retry budget{where}; retrying later"
    if result.target_exit_code:
        return "retry", f"the loader failed (exit {result.target_exit_code}); see its log above"
    return "retry", f"meltano failed with exit code {result.exit_code}; see the log above"
