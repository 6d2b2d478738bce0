"""Run tap-dynamics as a real process (its console script) and collect its Singer output."""

from __future__ import annotations

import decimal
import json
import os
import re
import subprocess
import sys
import tempfile
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

TAP = str(Path(sys.executable).parent / "tap-dynamics")

# What a tap process started by the tests must never inherit from whoever runs them: a proxy
# (the emulator is on loopback), a managed-identity endpoint (MSAL would use it), the tap's or
# Meltano's own settings, a CA bundle that would change which certificates are trusted, or the
# caller's Kerberos configuration and tickets (KRB5_CONFIG, KRB5CCNAME, KRB5_KTNAME, ...).
SCRUBBED_NAMES = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY")
    for name in (base, base.lower())
) | {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}
SCRUBBED_PREFIXES = ("TAP_DYNAMICS_", "MELTANO_", "TARGET_DUCKDB_", "IDENTITY_", "MSI_", "IMDS_", "MSAL_", "KRB5")


def scrubbed(name: str) -> bool:
    """Whether the environment variable ``name`` is kept away from processes the tests start."""
    return name in SCRUBBED_NAMES or name.upper().startswith(SCRUBBED_PREFIXES)


def hermetic_env(extra: t.Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process the tests start: the caller's minus :func:`scrubbed`
    variables, plus ``extra`` (what the test itself sets, e.g. ``REQUESTS_CA_BUNDLE``)."""
    return {**{k: v for k, v in os.environ.items() if not scrubbed(k)}, **(extra or {})}


@dataclass
class TapRun:
    """Everything one tap process wrote."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, t.Any]] = field(default_factory=list)

    def records(self, stream: str | None = None) -> list[dict[str, t.Any]]:
        """RECORD payloads, optionally of one stream."""
        return [
            m["record"]
            for m in self.messages
            if m.get("type") == "RECORD" and (stream is None or m.get("stream") == stream)
        ]

    def schemas(self) -> dict[str, dict[str, t.Any]]:
        """Last SCHEMA message per stream."""
        return {m["stream"]: m for m in self.messages if m.get("type") == "SCHEMA"}

    @property
    def last_state(self) -> dict[str, t.Any] | None:
        """The value of the last STATE message."""
        states = [m["value"] for m in self.messages if m.get("type") == "STATE"]
        return states[-1] if states else None

    @property
    def catalog(self) -> dict[str, t.Any]:
        """The discovery output (for --discover runs)."""
        return json.loads(self.stdout)


def parse_messages(stdout: str) -> list[dict[str, t.Any]]:
    """Singer messages, one JSON object per line (numbers with decimals as Decimal: lossless)."""
    return [json.loads(line, parse_float=decimal.Decimal) for line in stdout.splitlines() if line.strip()]


def write_json(directory: Path, name: str, value: object) -> str:
    """Write ``value`` as JSON into ``directory`` and return the path."""
    path = directory / name
    path.write_text(json.dumps(value))
    return str(path)


def run_tap(
    config: dict[str, t.Any],
    *args: str,
    state: dict[str, t.Any] | None = None,
    catalog: dict[str, t.Any] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> TapRun:
    """Run ``tap-dynamics --config … [args]`` and parse what it printed."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        argv = [TAP, "--config", write_json(directory, "config.json", config), *args]
        if state is not None:
            argv += ["--state", write_json(directory, "state.json", state)]
        if catalog is not None:
            argv += ["--catalog", write_json(directory, "catalog.json", catalog)]
        result = subprocess.run(  # noqa: S603
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=hermetic_env({**SHOW_DEPRECATIONS, **(env or {})}),
        )
    run = TapRun(result.returncode, result.stdout, result.stderr)
    assert_no_secrets(run.stdout + run.stderr, config)
    assert_no_sdk_deprecation(run.stderr)
    if "--discover" not in args and "--about" not in args:
        run.messages = parse_messages(result.stdout)
    return run


def run_killed(
    config: dict[str, t.Any],
    kill_when: t.Callable[[dict[str, t.Any]], bool],
    *,
    state: dict[str, t.Any] | None = None,
) -> tuple[list[dict[str, t.Any]], dict[str, t.Any]]:
    """Run the tap and SIGKILL it at the first STATE whose value ``kill_when`` accepts.

    Returns the messages read up to the kill and the last STATE value (what a scheduler would
    resume from). Fails when the run finished before the kill point.
    """
    import signal

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        argv = [TAP, "--config", write_json(directory, "config.json", config)]
        if state is not None:
            argv += ["--state", write_json(directory, "state.json", state)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=hermetic_env())  # noqa: S603
        assert proc.stdout is not None
        messages: list[dict[str, t.Any]] = []
        killed = False
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                break  # a line cut by the kill
            messages.append(message)
            if not killed and message["type"] == "STATE" and kill_when(message["value"]):
                proc.send_signal(signal.SIGKILL)
                killed = True
        proc.wait()
    assert killed, "the run finished before the kill point"
    return messages, next(m["value"] for m in reversed(messages) if m["type"] == "STATE")


def select_streams(catalog: dict[str, t.Any], names: t.Iterable[str]) -> dict[str, t.Any]:
    """Mark only ``names`` as selected in a discovered catalog."""
    wanted = set(names)
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in wanted
    return catalog


# --- secrets never leak -------------------------------------------------------------------------
SECRET_SETTINGS = ("client_secret", "certificate_password", "refresh_token", "access_token", "connection_string", "password")
EXTRA_SECRETS: set[str] = set()  # tests add e.g. certificate passwords here
CHECKED_RUNS: list[int] = []  # one entry per tap process whose output was checked


def known_secrets(config: dict[str, t.Any] | None = None) -> set[str]:
    """Every secret a tap run must never print: the config's secret settings, every credential
    the emulator issued (tokens, refresh tokens, codes, app secrets) and test-registered ones."""
    from emulator.identity import ISSUED_SECRETS

    found = set(ISSUED_SECRETS) | EXTRA_SECRETS
    for name in SECRET_SETTINGS:
        value = (config or {}).get(name)
        if isinstance(value, str) and value:
            found.add(value)
    text = (config or {}).get("connection_string")
    if isinstance(text, str):  # the secret parts of a connection string, one by one
        for part in text.split(";"):
            key, _, value = part.partition("=")
            if key.strip().lower() in ("oauthclientsecret", "oauthjwtcertpassword", "oauthaccesstoken", "oauthrefreshtoken", "password") and value.strip():
                found.add(value.strip().strip("'\""))
    return {s for s in found if len(s) >= 8}


# Python hides DeprecationWarning outside ``__main__``; tap processes show them, and a Singer SDK
# deprecation (raised in the SDK, or attributed to the tap's code calling it) fails the test, as
# it does in-process (pyproject.toml's filterwarnings).
SHOW_DEPRECATIONS = {"PYTHONWARNINGS": "default::DeprecationWarning"}
SDK_DEPRECATION = re.compile(r"(?:singer_sdk|tap_dynamics)[/\\][^:\n]*:\d+: \w*DeprecationWarning|SingerSDKDeprecationWarning")


def assert_no_sdk_deprecation(stderr: str) -> None:
    """No Singer SDK deprecation warning in a tap process's stderr."""
    found = SDK_DEPRECATION.search(stderr)
    assert found is None, f"Singer SDK deprecation: {stderr[found.start():found.start() + 300]}"


def assert_no_secrets(output: str, config: dict[str, t.Any] | None = None) -> None:
    """Fail the test when any known secret appears in a tap process's output."""
    leaked = [s for s in known_secrets(config) if s in output]
    assert not leaked, f"a secret appeared in the tap's output ({len(leaked)} value(s), e.g. {leaked[0][:6]}…)"
    CHECKED_RUNS.append(len(output))


def run_command(
    argv: list[str], config: dict[str, t.Any], *, env: dict[str, str] | None = None, timeout: float = 300
) -> TapRun:
    """Run ``tap-dynamics <argv…> --config <file>`` (check, login, --test) and check its output."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_json(Path(tmp), "config.json", config)
        result = subprocess.run(  # noqa: S603
            [TAP, *argv, "--config", path],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=hermetic_env({**SHOW_DEPRECATIONS, **(env or {})}),
        )
    assert_no_secrets(result.stdout + result.stderr, config)
    assert_no_sdk_deprecation(result.stderr)
    return TapRun(result.returncode, result.stdout, result.stderr)


def normalise(row: dict) -> dict:
    """A served row as the tap should emit it: no etag, multi-selects split, numbers as Decimal."""
    out = {}
    for key, value in row.items():
        if key == "@odata.etag":
            continue
        if key == "new_regions" and isinstance(value, str):
            value = [int(x) for x in value.split(",") if x]
        if isinstance(value, float):
            value = decimal.Decimal(str(value))
        out[key] = value
    return out


def error_lines(stderr: str) -> list[str]:
    """The tap's one-line errors (``tap-dynamics: error: …``) in a process's stderr; never a traceback."""
    assert "Traceback" not in stderr, stderr[-2000:]
    return [line for line in stderr.splitlines() if line.startswith("tap-dynamics: error:")]


def one_error(run: TapRun | subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one error line of a run that ended with exit code ``code`` (2: config or credentials)."""
    assert run.returncode == code, run.stderr[-3000:]
    [line] = error_lines(run.stderr)
    return line


def assert_rows_equal(run: TapRun, emu: t.Any, tables: t.Iterable[str]) -> None:
    """Every row of ``tables`` (keyed ``<table>id``) as the emulator serves it, once, with every
    served column unchanged (the tap adds only ``_sdc_deleted_at``)."""
    for table in tables:
        key = f"{table}id"
        got = sorted(run.records(table), key=lambda r: r[key])
        want = sorted((normalise(r) for r in emu.rows(table)), key=lambda r: r[key])
        assert len(got) == len(want), table
        assert [{k: v for k, v in g.items() if k != "_sdc_deleted_at"} for g in got] == want, table
