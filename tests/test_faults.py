"""The fault-injection suite: the tap rides through throttling, outages and broken responses.

The matrix (``tests/fault_matrix.py``) runs a full sync of a 20k-row table through each fault
and through all of them at once, with the tap as a real process against the emulator. For every
run: the output equals the emulator's rows (none lost, none corrupted, none twice), every 429
was followed by a wait of at least its ``Retry-After`` (measured on the emulator's clock), the
in-flight cap held, and no secret appeared in stdout/stderr. Further tests cover what a matrix
cannot: non-retried errors, skipped tables, exit codes, loops and foreign hosts.
"""

from __future__ import annotations

import json
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

import pytest

from tap_dynamics.auth import build_token_provider
from tap_dynamics.client import DataverseClient
from tap_dynamics.config import load_settings
from tests.emulator.faults import THROTTLE_MESSAGES
from tests.fault_matrix import MAX_CONCURRENCY, SCENARIOS, Result, run_scenario, start_emulator
from tests.taprun import run_tap

WORKERS = 3  # scenarios run three at a time (each on its own emulator); most time is waiting


@pytest.fixture(scope="module")
def matrix() -> dict[str, Result]:
    groups = [SCENARIOS[i::WORKERS] for i in range(WORKERS)]

    def run_group(group: list) -> list[Result]:
        emu = start_emulator()
        try:
            return [run_scenario(emu, scenario) for scenario in group]
        finally:
            emu.stop()

    with ThreadPoolExecutor(WORKERS) as pool:
        results = [r for group in pool.map(run_group, groups) for r in group]
    return {r.scenario.name: r for r in results}


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_fault_matrix(matrix: dict[str, Result], name: str) -> None:
    result = matrix[name]
    run = result.run
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert result.lost == 0
    assert result.corrupted == 0
    assert result.duplicates == 0
    assert sum(len(rows) for rows in result.got.values()) == sum(len(rows) for rows in result.truth.values())
    if name not in ("none", "low rate-limit budget headers") and not name.startswith("short token"):
        assert sum(result.faults.values()) > 0, "the scenario injected no fault"
        assert result.tap_retries >= sum(result.faults.values())
    for asked, waited in result.retry_after_gaps:
        assert waited >= asked, f"retried after {waited:.3f} s although Retry-After was {asked} s"
    assert result.max_in_flight <= MAX_CONCURRENCY
    assert result.leaked == []


def test_matrix_throttling_is_reported_with_its_code(matrix: dict[str, Result]) -> None:
    result = matrix["429, all three service-protection codes"]
    assert len(result.retry_after_gaps) == result.faults["throttle"]
    for code in THROTTLE_MESSAGES:
        assert f"throttled (429, {code}" in result.run.stderr
    mix = matrix["all of the above at once"]
    assert mix.retry_after_gaps, "the mix should include 429s"
    assert len(mix.faults) >= 6, mix.faults


def test_matrix_page_size_halves_and_grows_back(matrix: dict[str, Result]) -> None:
    # "response too large" does not depend on timing: 1000 -> 500 on the first failure; after
    # 10 good pages it grows back to 1000, fails again and halves again — grow-back is what
    # makes the message appear more than once.
    stderr = matrix["page > 600 rows: response too large"].run.stderr
    assert stderr.count("asking for 500 rows per page instead") >= 2, stderr[-2000:]
    # Timeouts depend on the machine's speed (a loaded machine may time out smaller pages too):
    # the page size must have been lowered at least once, and the output is checked above.
    stderr = matrix["page > 600 rows times out"].run.stderr
    assert "rows per page instead" in stderr and "no response within 1 s" in stderr


def test_matrix_low_budget_slows_requests_down(matrix: dict[str, Result]) -> None:
    result = matrix["low rate-limit budget headers"]
    assert "service-protection budget is low" in result.run.stderr
    # Emulator-side arrival times of the account pages: the tap paused between them.
    emu_gaps = result_gaps(result)
    assert emu_gaps and min(emu_gaps) >= 0.09, emu_gaps  # the pause is 0.1 s at this budget


def result_gaps(result: Result) -> list[float]:
    times = [at for at, target in result.timeline if target.startswith("/api/data/v9.2/accounts")]
    return [b - a for a, b in zip(times, times[1:])]


def test_matrix_tokens_refreshed_after_401(matrix: dict[str, Result]) -> None:
    result = matrix["tokens revoked after 2 s (100 ms latency)"]
    assert result.faults.get("token_revoked", 0) >= 1
    assert "Access token rejected (401); getting a fresh one" in result.run.stderr
    short = matrix["short token lifetime (302 s: MSAL renews every 2 s)"]
    assert short.token_requests >= 2, "tokens should have been renewed during the run"


# --- single-fault tests on a small org ------------------------------------------------------------

SMALL = {"account": 2500, "contact": 40, "systemuser": 5}


def _config(emu, **extra: t.Any) -> dict[str, t.Any]:
    return {**emu.tap_config(), "entities": ["account", "contact"], "page_size": 1000, **extra}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tap-dynamics: error:")]


def test_forbidden_table_is_skipped_listed_and_not_retried(make_emulator) -> None:
    emu = make_emulator(rows=SMALL, forbidden_tables=["contact"])
    run = run_tap(_config(emu))
    assert run.returncode == 3, run.stderr
    assert len(run.records("account")) == SMALL["account"]
    assert run.records("contact") == []
    [line] = _error_lines(run.stderr)
    assert "1 table(s) failed and were skipped: contact" in line
    assert "prvReadcontacts" in run.stderr or "0x80040220" in run.stderr
    assert "failed (table contact: HTTP 403" in run.stderr  # the run summary lists it
    data_requests = [(p, s) for _m, p, s in emu.request_log() if p == "/api/data/v9.2/contacts"]
    assert data_requests == [("/api/data/v9.2/contacts", 403)], "a 403 must not be retried"
    assert "Traceback" not in run.stderr


def test_strict_stops_at_the_failing_table(make_emulator) -> None:
    emu = make_emulator(rows=SMALL, forbidden_tables=["account"])
    # One table at a time, so "the tables after it" is well defined (in parallel, tables
    # already running finish, and no further table starts).
    run = run_tap(_config(emu, strict=True, max_concurrency=1))
    assert run.returncode == 3
    [line] = _error_lines(run.stderr)
    assert "table account failed and strict is on" in line
    assert run.records("contact") == [], "strict stops the run at the first failing table"


@pytest.mark.parametrize("status", [400, 404])
def test_client_errors_are_not_retried(make_emulator, status: int) -> None:
    emu = make_emulator(rows=SMALL)
    body = {"error": {"code": "0x80060888", "message": "Could not find a property named 'x'."}}
    emu.set(serve_body={"/api/data/v9.2/accounts": {"status": status, "body": _json(body)}})
    run = run_tap(_config(emu))
    assert run.returncode == 3
    assert len([p for _m, p, _s in emu.request_log() if p == "/api/data/v9.2/accounts"]) == 1
    assert f"HTTP {status}" in run.stderr and "0x80060888" in run.stderr
    assert len(run.records("contact")) == SMALL["contact"]


def test_service_gives_up_with_table_and_request_id(make_emulator) -> None:
    emu = make_emulator(rows=SMALL)
    emu.set(serve_body={"/api/data/v9.2/accounts": {
        "status": 503, "headers": {"Retry-After": "0"},
        "body": _json({"error": {"code": "0x80040216", "message": "Service Unavailable"}})}})
    run = run_tap(_config(emu))
    assert run.returncode == 4, run.stderr
    assert "table account: giving up after 8 attempts" in run.stderr
    assert "request id " in run.stderr.split("giving up after", 1)[1].splitlines()[0]
    assert len([p for _m, p, _s in emu.request_log() if p == "/api/data/v9.2/accounts"]) == 8
    assert len(run.records("contact")) == SMALL["contact"], "other tables still sync"
    assert len(_error_lines(run.stderr)) == 1


def test_pagination_loop_is_detected(make_emulator) -> None:
    emu = make_emulator(rows=SMALL)
    row = emu.rows("account")[0]
    loop = f"{emu.org_url}/api/data/v9.2/accounts?$skiptoken=same"
    emu.set(serve_body={"/api/data/v9.2/accounts": {"body": _json({"value": [row], "@odata.nextLink": loop})}})
    run = run_tap(_config(emu))
    assert run.returncode == 3
    assert "stopping a pagination loop" in run.stderr
    assert len([p for _m, p, _s in emu.request_log() if p == "/api/data/v9.2/accounts"]) == 2


@pytest.mark.parametrize("how", ["nextLink", "redirect"])
def test_token_never_leaves_the_org_host(make_emulator, how: str) -> None:
    emu = make_emulator(rows=SMALL)
    elsewhere = f"https://localhost:{emu.port}/api/data/v9.2/accounts?$skiptoken=x"  # the authority's name
    if how == "nextLink":
        served = {"body": _json({"value": [], "@odata.nextLink": elsewhere})}
    else:
        served = {"status": 302, "headers": {"Location": elsewhere}, "body": ""}
    emu.set(serve_body={"/api/data/v9.2/accounts": served})
    run = run_tap(_config(emu))
    assert run.returncode == 2
    [line] = _error_lines(run.stderr)
    assert "refusing to send the access token to https://localhost" in line
    assert len([p for _m, p, _s in emu.request_log() if p == "/api/data/v9.2/accounts"]) == 1


def test_concurrency_cap_holds_under_parallel_requests(make_emulator) -> None:
    emu = make_emulator(rows=SMALL, latency_ms=50, throttle_rate=0.2, fault_max_per_request=1, retry_after=0)
    settings = load_settings({**emu.tap_config(), "max_concurrency": 3})
    client = DataverseClient(settings, build_token_provider(settings))
    client.tokens.token()
    emu.reset_stats()
    url = client.url("WhoAmI")

    def call(i: int) -> None:
        client.get_json(f"{url}?n={i}")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert emu.faults.counts().get("throttle", 0) > 0
    assert 2 <= emu.stats()["max_in_flight"] <= 3


def test_missing_retry_after_uses_the_default(make_emulator) -> None:
    emu = make_emulator(rows=SMALL, throttle_rate=1.0, retry_after=None, fault_max_per_request=1)
    settings = load_settings(emu.tap_config())
    client = DataverseClient(settings, build_token_provider(settings))
    client.DEFAULT_RETRY_AFTER = 0.3  # the real default is 5 s; the rule is what is tested here
    client.get_json(client.url("WhoAmI"))
    times = [at for at, target in emu.faults.timeline if "WhoAmI" in target]
    assert len(times) == 2
    assert times[1] - times[0] >= 0.3
    assert client.stats.throttled_seconds == pytest.approx(0.3)


def test_about_and_logs_hold_no_secret(emulator) -> None:
    config = emulator.tap_config()
    about = run_tap(config, "--about", "--format", "json")
    assert about.returncode == 0, about.stderr
    assert config["client_secret"] not in about.stdout + about.stderr
    run = run_tap({**config, "entities": ["systemuser"]}, env={"TAP_DYNAMICS_LOGLEVEL": "DEBUG"})
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr
    assert config["client_secret"] not in output
    assert not [tok for tok in emulator.issued_tokens if tok in output]


def _json(value: t.Any) -> str:
    return json.dumps(value, default=str)


def test_faults_are_deterministic_given_a_seed(make_emulator) -> None:
    import requests

    emu = make_emulator(rows=SMALL, throttle_rate=0.3, error_5xx_rate=0.2, malformed_rate=0.2, fault_seed=5)
    settings = load_settings(emu.tap_config())
    token = build_token_provider(settings).token()

    def statuses() -> list[tuple[int, bytes]]:
        emu.reset_stats()
        out = []
        for i in range(30):
            response = requests.get(
                f"{emu.org_url}/api/data/v9.2/WhoAmI?n={i % 10}",
                headers={"Authorization": f"Bearer {token}"},
                verify=emu.ca_path,
                timeout=30,
            )
            out.append((response.status_code, response.content[:20]))
        return out

    first = statuses()
    assert {status for status, _ in first} >= {200, 429}
    assert statuses() == first
    emu.set(fault_seed=6)
    assert statuses() != first


def test_row_without_its_bookmark_fails_the_table_clearly(make_emulator) -> None:
    emu = make_emulator(rows=SMALL)
    row = {k: v for k, v in emu.rows("account")[0].items() if k != "modifiedon"}
    emu.set(serve_body={"/api/data/v9.2/accounts": {"body": _json({"value": [row]})}})
    run = run_tap(_config(emu, replication={"account": "modifiedon"}))
    assert run.returncode == 3
    assert "table account: row 1 of a page has no modifiedon" in run.stderr
    assert run.records("account") == []
    assert "Traceback" not in run.stderr


def test_emulator_cli_fault_flags() -> None:
    import subprocess
    import sys

    import requests

    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "tests.emulator", "--rows", "account=10", "--throttle-rate", "0.5",
         "--retry-after", "2", "--throttle-code", "0x80072326", "--page-size-limit", "100",
         "--forbidden-table", "contact", "--fault", 'page_size_limit_mode="error"'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        knobs = requests.post(info["control_url"] + "set", json={}, verify=info["ca_bundle"], timeout=30).json()
        assert knobs["throttle_rate"] == 0.5
        assert knobs["retry_after"] == 2
        assert knobs["throttle_codes"] == ["0x80072326"]
        assert knobs["page_size_limit"] == 100
        assert knobs["page_size_limit_mode"] == "error"
        assert knobs["forbidden_tables"] == ["contact"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_second_401_in_a_row_is_fatal_with_guidance(make_emulator) -> None:
    emu = make_emulator(rows=SMALL, token_revoke_after_s=0)  # every token is rejected at once
    run = run_tap(_config(emu))
    assert run.returncode == 2
    [line] = _error_lines(run.stderr)
    assert "rejected a freshly issued token (401)" in line
    assert "Traceback" not in run.stderr
    assert emu.stats()["token_requests"] == 2, "exactly one fresh token, then stop"
