"""``tap-dynamics check`` / ``--test`` / ``login`` at the top level, against the emulator.

What the check promises (README "Ways to connect"): a token plus a successful ``WhoAmI`` is a
working connection, even when the organisation table cannot be read; for the configured tables
it says which ones the identity can read; exit 0 when available, 2 when a person must change
something (config, credentials, privileges), 4 only when the service itself kept failing —
never 4 for a 4xx. Every test runs the tap as a real process.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from emulator.dataverse.schema import ORGANIZATION_ID
from tests.taprun import TAP, hermetic_env, run_command, run_tap, write_json

LIMITED_APP = "77777777-7777-4777-8777-777777777777"
LIMITED_SECRET = "limited-role-secret-value-7"
FIX = "(give the identity's security role Read on them)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_lines(stderr: str) -> list[str]:
    """The lines a person reads: no log records, and never a traceback."""
    assert "Traceback" not in stderr, stderr[-2000:]
    return [line for line in stderr.splitlines() if line.strip() and " | " not in line]


@pytest.fixture
def emu(make_emulator):
    return make_emulator(rows={"account": 7, "contact": 5, "systemuser": 3})


def limited(emu, denied: list[str], **config) -> dict:
    """Config for an app whose application user's role lacks Read on ``denied``."""
    emu.register_app(LIMITED_APP, secret=LIMITED_SECRET, read_denied=denied)
    return {**emu.tap_config(), "client_id": LIMITED_APP, "client_secret": LIMITED_SECRET, **config}


def identity(emu) -> str:
    return f"as application {LIMITED_APP}, user id {emu.entra.apps[LIMITED_APP].user_id}"


def test_check_without_read_on_organization_and_some_tables(emu) -> None:
    """The issue's case: 403 on ``organizations`` is a working connection (exit 0, not 4), named
    by WhoAmI's OrganizationId; globs resolve as discovery resolves them; one probe per table."""
    config = limited(emu, ["organization", "contact"], entities=["account", "cont*", "system*"],
                     exclude_entities=["systemuser"])
    emu.reset_stats()
    run = run_command(["check"], config)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        f"connection available: organization {ORGANIZATION_ID} ({emu.org_url}) {identity(emu)}; "
        f"can read 1 of 2 tables — no read privilege on: contact {FIX}")
    data = [(path, status) for _m, path, status in emu.request_log() if "/api/data/v9.2/" in path
            and path.rsplit("/", 1)[-1] in ("accounts", "contacts", "systemusers", "organizations")]
    assert sorted(data) == [("/api/data/v9.2/accounts", 200), ("/api/data/v9.2/contacts", 403),
                            ("/api/data/v9.2/organizations", 403)]


def test_check_when_no_configured_table_is_readable_is_exit_2(emu) -> None:
    config = limited(emu, ["account", "contact"], entities=["account", "contact"])
    run = run_command(["check"], config)
    assert run.returncode == 2
    assert error_lines(run.stderr) == [
        f"connection unavailable: Contoso Emulated ({emu.org_url}) {identity(emu)}; can read 0 of 2 "
        f"tables — no read privilege on: account, contact {FIX}"]


def test_check_probes_stay_inside_max_concurrency(make_emulator) -> None:
    emu = make_emulator(rows={"account": 3, "contact": 3, "systemuser": 3}, latency_ms=30)
    emu.reset_stats()
    run = run_command(["check"], {**emu.tap_config(), "max_concurrency": 2})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("; can read 4 of 4 tables")
    assert emu.stats()["max_in_flight"] <= 2


@pytest.mark.parametrize(
    ("status", "exit_code", "expected"),
    [
        # A 4xx is an answer: a person must change something. Never exit 4 for it.
        (404, 2, "connection unavailable: HTTP 404: Resource not found for the segment 'WhoAmI'. "
                 "(code 0x80060888)"),
        # The service itself kept failing: the check gives up after its own short budget.
        (503, 4, "connection unavailable: giving up after 2 attempts"),
    ],
)
def test_check_exit_codes_for_whoami_failures(emu, status: int, exit_code: int, expected: str) -> None:
    body = {"error": {"code": "0x80060888" if status == 404 else "0x80040216",
                      "message": "Resource not found for the segment 'WhoAmI'." if status == 404
                      else "Service Unavailable"}}
    emu.set(serve_body={"/api/data/v9.2/WhoAmI": {"status": status, "body": json.dumps(body)}})
    run = run_command(["check"], emu.tap_config())
    assert run.returncode == exit_code
    lines = error_lines(run.stderr)  # the retry warnings come first, then the answer
    assert [line for line in lines if line.startswith("connection ")] == lines[-1:]
    assert lines[-1].startswith(expected), lines[-1]


def test_test_flag_keeps_the_syncs_retry_budget(emu) -> None:
    """``--test`` runs the check and then a sync on the same run: the check's budget of two
    attempts must not become the sync's. The first four reads of ``accounts`` fail: the check's
    probe spends two (and reports the table), the sync needs a third attempt for its first read."""
    failing = {"status": 503, "body": json.dumps({"error": {"code": "0x80040216", "message": "Service Unavailable"}}),
               "times": 4}
    emu.set(serve_body={"/api/data/v9.2/accounts": failing})
    emu.reset_stats()
    run = run_command(["--test"], {**emu.tap_config(), "entities": ["account", "contact"]})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "can read 1 of 2 tables — could not read: account" in run.stderr
    served = [status for _m, path, status in emu.request_log() if path == "/api/data/v9.2/accounts"]
    assert served[:4] == [503] * 4 and served[4:] and set(served[4:]) == {200}, served


def test_sync_against_an_unreachable_org_says_cannot_reach() -> None:
    """README, Troubleshooting: "`cannot reach https://…` — URL unreachable (typo, DNS, proxy) —
    fix `url` / network" holds for a sync, not only for `check`: a closed port gives that one
    line and exit 2 after a few attempts, not minutes of backoff and "giving up"."""
    url = f"https://127.0.0.1:{free_port()}"
    config = {"url": url, "auth_scheme": "AzureAD", "tenant_id": "11111111-1111-4111-8111-111111111111",
              "client_id": "22222222-2222-4222-8222-222222222222", "initiate_oauth": "OFF",
              "access_token": "never-sent-anywhere-token", "entities": ["account"]}
    run = run_tap(config)
    assert run.returncode == 2
    assert error_lines(run.stderr) == [
        f"tap-dynamics: error: cannot reach {url} (connection refused; 3 attempts) — check url (the org "
        "URL as the browser shows it, e.g. https://myorg.crm.dynamics.com) and the network/proxy"]
    assert run.messages == []


def test_login_errors_go_through_the_top_level_handler(emulator) -> None:
    run = run_command(["login"], emulator.tap_config())
    assert run.returncode == 2
    assert error_lines(run.stderr) == [
        "tap-dynamics: error: login is for auth_scheme AzureAD (signing in as a user); auth_scheme "
        "AzureServicePrincipal needs no sign-in — run `tap-dynamics check` instead"]


def assert_ctrl_c_is_one_line(command: str, config: dict, tmp_path: Path,
                              waiting: Callable[[subprocess.Popen], None]) -> None:
    """Start ``tap-dynamics <command>``, send SIGINT once ``waiting(proc)`` returns (the
    process is blocked on something), and expect one line, exit 130 and no traceback."""
    proc = subprocess.Popen(  # noqa: S603
        [TAP, command, "--config", write_json(tmp_path, "config.json", config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=hermetic_env())
    try:
        waiting(proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert out == ""
    assert error_lines(err) == ["tap-dynamics: interrupted"]


def test_ctrl_c_during_login_is_one_line(emu, tmp_path: Path) -> None:
    """README, Errors and exit codes: "130 — `tap-dynamics login` (or `check`) interrupted with
    Ctrl-C: one line". Ctrl-C while ``login`` waits for the browser."""
    port = free_port()
    emu.register_app(LIMITED_APP, secret="", redirect_uris=[f"http://localhost:{port}"])
    config = {"url": emu.org_url, "authority_host": emu.authority_host, "ca_bundle": emu.ca_path,
              "auth_scheme": "AzureAD", "tenant_id": emu.tenant_id, "client_id": LIMITED_APP,
              "callback_url": f"http://localhost:{port}",
              "token_cache_path": str(tmp_path / "cache" / "tokens.json")}

    def prompted(proc: subprocess.Popen) -> None:
        before: list[str] = []  # up to the prompt, printed once the listener is up and waiting
        while not before or "open this URL in a browser" not in before[-1]:
            line = proc.stderr.readline()
            assert line, "".join(before)[-2000:]
            before.append(line)

    assert_ctrl_c_is_one_line("login", config, tmp_path, prompted)


def test_ctrl_c_during_check_is_one_line(emu, tmp_path: Path) -> None:
    """The same README row for ``check``: interrupted while a request is on the wire."""
    emu.set(latency_ms=20_000)  # every request hangs long enough to be interrupted
    emu.reset_stats()

    def on_the_wire(proc: subprocess.Popen) -> None:
        while emu.stats()["in_flight"] < 1:  # counted on the server: the check is waiting on it
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)

    assert_ctrl_c_is_one_line("check", emu.tap_config(), tmp_path, on_the_wire)


def test_emulator_denies_read_as_dataverse_does(emu) -> None:
    """The emulator's privilege knob answers like Dataverse (403, PrivilegeDenied 0x80040220, the
    principal and the missing prvRead<SchemaName>), for that identity only."""
    config = limited(emu, ["contact", "organization"])
    app = emu.entra.apps[LIMITED_APP]
    token = emu.issue_token(LIMITED_APP)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def get(path: str, bearer: dict[str, str]) -> requests.Response:
        return requests.get(f"{config['url']}/api/data/v9.2/{path}", headers=bearer,
                            verify=emu.ca_path, timeout=30)

    for path, privilege, entity in (("contacts?$select=contactid&$top=1", "prvReadContact", "contact"),
                                    ("organizations", "prvReadOrganization", "organization")):
        answer = get(path, headers)
        assert answer.status_code == 403
        error = answer.json()["error"]
        assert error["code"] == "0x80040220"
        assert error["message"].startswith(f"Principal user (Id={app.user_id}, type=8, ")
        assert f"is missing {privilege} privilege (Id=" in error["message"]
        assert f"for entity '{entity}' (LocalizedName=" in error["message"]
    assert get("accounts?$select=accountid&$top=1", headers).status_code == 200
    other = {"Authorization": f"Bearer {emu.issue_token()}", "Accept": "application/json"}
    assert get("contacts?$select=contactid&$top=1", other).status_code == 200
