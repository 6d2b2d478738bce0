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
import re
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

import pytest

from tap_dynamics.auth import build_token_provider
from tap_dynamics.dataverse.client import DataverseClient
from tap_dynamics.config import load_settings
from emulator.dataverse.faults import THROTTLE_MESSAGES
from tests.fault_matrix import GIVE_UP, MAX_CONCURRENCY, SCENARIOS, Result, run_scenario, start_emulator
from tests.taprun import hermetic_env, run_tap

WORKERS = 3  # scenarios run three at a time (each on its own emulator); most time is waiting
# The whole matrix is built by the first test that asks for it: a few minutes on a quiet 2-core
# machine, much more on a loaded one — a generous bound for a hang, not a performance check.
MATRIX_TIMEOUT = pytest.mark.timeout(2400)


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


@MATRIX_TIMEOUT
@pytest.mark.parametrize("name", [s.name for s in SCENARIOS if not s.expect_exit])
def test_fault_matrix(matrix: dict[str, Result], name: str) -> None:
    result = matrix[name]
    run = result.run
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert result.lost == 0
    assert result.extra == 0
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


def _read_with(result: Result, method: str, table: str = "account") -> None:
    """The run summary says ``table`` was read with ``method`` (the matrix row is what it claims)."""
    summary = result.run.stderr[result.run.stderr.index("Run summary"):].splitlines()
    row = next(line.split() for line in summary if line.startswith(f"{table} "))
    assert row[1] == method or row[1].startswith(f"{method}("), row  # e.g. INCREMENTAL(versionnumber)


@MATRIX_TIMEOUT
def test_matrix_covers_every_replication_method(matrix: dict[str, Result]) -> None:
    first = matrix["all of the above at once"]
    _read_with(first, "CHANGE_TRACKING")
    delta = matrix["all at once: change tracking delta (upserts, deletes)"]
    _read_with(delta, "CHANGE_TRACKING")
    assert any("deltatoken" in target for _at, target in delta.timeline), "the faulty run read a delta link"
    deleted = [r for r in delta.run.records("account") if r.get("_sdc_deleted_at")]
    assert len(deleted) == 20 and delta.emitted < 200, "a delta, not a re-read of the table"
    windows = matrix["all at once: modifiedon cursor, first-load windows"]
    _read_with(windows, "INCREMENTAL(modifiedon)")
    assert "time windows concurrently" in windows.run.stderr
    version = matrix["all at once: versionnumber cursor"]
    _read_with(version, "INCREMENTAL(versionnumber)")
    _read_with(matrix["all at once: full table"], "FULL_TABLE")


@MATRIX_TIMEOUT
def test_matrix_gives_up_cleanly_past_the_attempt_budget(matrix: dict[str, Result]) -> None:
    result = matrix[GIVE_UP]
    run = result.run
    attempts = DataverseClient.MAX_ATTEMPTS
    assert run.returncode == 4, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert f"table account: giving up after {attempts} attempts" in run.stderr
    [line] = _error_lines(run.stderr)
    summary = run.stderr[run.stderr.index("Run summary"):]
    assert re.search(r"^account .*fail", summary, re.M), summary  # the table is listed as failed
    # Every attempt really reached the server (the fault cap is above the attempt budget).
    account = [s for _m, p, s in result.requests if p == "/api/data/v9.2/accounts"]
    assert account == [503] * attempts
    # The state of account is the one the run started from; the other tables did sync.
    assert result.state_in is not None
    before = result.state_in["bookmarks"]["account"]
    after = (run.last_state or result.state_in)["bookmarks"]["account"]
    assert before["delta_link"] and {key: after.get(key) for key in before} == before
    assert result.got["contact"] == result.truth["contact"]
    assert result.got["systemuser"] == result.truth["systemuser"]
    assert result.leaked == []


@MATRIX_TIMEOUT
def test_matrix_throttling_is_reported_with_its_code(matrix: dict[str, Result]) -> None:
    result = matrix["429, all three service-protection codes"]
    assert len(result.retry_after_gaps) == result.faults["throttle"]
    for code in THROTTLE_MESSAGES:
        assert f"throttled (429, {code}" in result.run.stderr
    mix = matrix["all of the above at once"]
    assert mix.retry_after_gaps, "the mix should include 429s"
    assert len(mix.faults) >= 6, mix.faults


@MATRIX_TIMEOUT
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


@MATRIX_TIMEOUT
def test_matrix_low_budget_slows_requests_down(matrix: dict[str, Result]) -> None:
    result = matrix["low rate-limit budget headers"]
    assert "service-protection budget is low" in result.run.stderr
    # Counted, not timed: at 190 requests left every answer asks for a 0.1 s pause, and the
    # run summary's paced seconds are the sum of the pauses — one per Web API answer.
    match = re.search(r"Run summary \((\d+) requests, (\d+) retries, [\d.]+ s throttled, ([\d.]+) s paced",
                      result.run.stderr)
    assert match, result.run.stderr[-2000:]
    requests_, retries, paced = int(match.group(1)), int(match.group(2)), float(match.group(3))
    assert retries == 0
    answered = [p for _m, p, status in result.requests if p.startswith("/api/data/") and status == 200]
    assert requests_ == len(answered)
    assert paced == pytest.approx(0.1 * requests_, abs=0.05)


@MATRIX_TIMEOUT
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
    emu = make_emulator(rows=SMALL, throttle_rate=0.2, fault_max_per_request=1, retry_after=0)
    settings = load_settings({**emu.tap_config(), "max_concurrency": 3})
    client = DataverseClient(settings, build_token_provider(settings))
    client.tokens.token()
    emu.reset_stats()
    url = client.url("WhoAmI")
    # The emulator holds every WhoAmI in flight until three are there at once: no timing.
    gate = emu.gate(r"/WhoAmI\?n=")

    def call(i: int) -> None:
        client.get_json(f"{url}?n={i}")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    assert gate.wait_for(3), "three requests should be in flight at once"
    gate.open()
    for thread in threads:
        thread.join()
    assert emu.faults.counts().get("throttle", 0) > 0
    assert gate.most_waiting == 3
    assert emu.stats()["max_in_flight"] == 3
    answered = [p for _m, p, status in emu.request_log() if p.endswith("/WhoAmI") and status == 200]
    assert len(answered) == 24


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
        [sys.executable, "-m", "emulator", "--rows", "account=10", "--throttle-rate", "0.5",
         "--retry-after", "2", "--throttle-code", "0x80072326", "--page-size-limit", "100",
         "--forbidden-table", "contact", "--fault", 'page_size_limit_mode="error"'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=hermetic_env(),
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


# --- service protection: per user, sliding window (the emulator's limits, and the tap under them) ---


def _get(emu, token: str, path: str = "WhoAmI"):
    import requests

    return requests.get(f"{emu.org_url}/api/data/v9.2/{path}", headers={"Authorization": f"Bearer {token}"},
                        verify=emu.ca_path, timeout=60)


def _burst(response) -> int:
    return int(response.headers["x-ms-ratelimit-burst-remaining-xrm-requests"])


def test_service_protection_counts_requests_per_caller_over_a_sliding_window(make_emulator) -> None:
    import time

    emu = make_emulator(rows=SMALL, limit_requests=5, limit_window_s=3)
    other = emu.register_app("7d0c6e62-3f1e-4c55-9d0e-6a4f6f1c2b10")
    app_token, other_token = emu.issue_token(), emu.issue_token(client_id=other.client_id)
    user_token = emu.entra.issue(emu.entra.apps[emu.client_id.lower()], user=True)  # delegated: the user
    answers = [_get(emu, app_token) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert [_burst(a) for a in answers] == [4, 3, 2, 1, 0]  # the caller's own budget, counting down
    refused = _get(emu, app_token)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "0x80072322"
    wait = int(refused.headers["Retry-After"])  # whole seconds until the window has room
    assert 1 <= wait <= 3
    # Another application user, and a signed-in user of the same app, have budgets of their own.
    for token in (other_token, user_token):
        answer = _get(emu, token)
        assert answer.status_code == 200 and _burst(answer) == 4
    assert [r.caller for r in emu.faults.protection.refusals] == [_caller_of_token(emu, app_token)]
    time.sleep(wait)  # the window slides: the oldest request has left it
    again = _get(emu, app_token)
    assert again.status_code == 200, again.text


def _caller_of_token(emu, token: str) -> str:
    from emulator.core.service import caller_of

    return caller_of(f"Bearer {token}")


def test_service_protection_concurrency_and_execution_time(make_emulator) -> None:
    emu = make_emulator(rows=SMALL, limit_concurrent=2, latency_ms=150, latency_scope="pages",
                        limit_execution_s=0.25)
    token = emu.issue_token()
    gate = emu.gate(r"/WhoAmI")
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(_get, emu, token) for _ in range(2)]
        assert gate.wait_for(2)
        third = _get(emu, token, "accounts?$select=name")  # a third request in flight for this user
        gate.open()
        assert [f.result().status_code for f in held] == [200, 200]
    assert third.status_code == 429 and third.json()["error"]["code"] == "0x80072326"
    assert third.headers["Retry-After"] == "1"
    # Execution time: each page is served for at least 150 ms, so at most two pages fit in
    # 0.25 s (one, on a slow machine); the next request is refused until the window slides.
    emu.reset_stats()
    pages = [_get(emu, token, "accounts?$select=name")]
    while pages[-1].status_code == 200 and len(pages) < 5:
        pages.append(_get(emu, token, "accounts?$select=name"))
    *served, refused = pages
    assert 1 <= len(served) <= 2 and all(p.status_code == 200 for p in served)
    assert float(served[-1].headers["x-ms-ratelimit-time-remaining-xrm-requests"]) == 0
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "0x80072321"
    assert refused.headers["Retry-After"].isdigit()


def test_every_request_of_the_run_waits_on_a_per_user_429(make_emulator) -> None:
    """Parallel tables and first-load windows share one user's budget: a 429 on any request
    (concurrency limit 3, the tap allows 4 in flight) makes the whole run wait.

    The emulator holds window pages in flight until the test lets them go, so a fourth request
    in flight — and its 429 — happen on every machine, without relying on timing.
    """
    emu = make_emulator(rows={"account": 1200, "contact": 500, "systemuser": 5}, clones={"account": 2},
                        limit_concurrent=3)
    tables = ["account", "account_1", "account_2", "contact"]
    config = {**emu.tap_config(), "entities": tables, "page_size": 200, "max_concurrency": 4,
              "replication": {"account*": "modifiedon"}}
    emu.reset_stats()
    gate = emu.gate(r"^(?!.*\$top).*modifiedon (ge|lt) ")  # window pages, not the planning probes
    refusals = emu.faults.protection.refusals
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_tap, config)
        try:
            assert gate.wait_for(3), "three window pages should be in flight at once"
            assert _eventually(lambda: len(refusals) > 0), "the fourth request in flight is refused"
        finally:
            gate.open()
        run = running.result()
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("time windows concurrently") == 3
    for table in tables:
        pk = "contactid" if table == "contact" else "accountid"
        ids = [r[pk] for r in run.records(table)]
        assert sorted(ids) == sorted(r[pk] for r in emu.rows(table)), table
    assert {r.code for r in refusals} == {"0x80072326"}
    assert {r.caller for r in refusals} == {_caller_of_token(emu, emu.issued_tokens[-1])}
    assert run.stderr.count("throttled (429, 0x80072326") == len(refusals)
    assert run.stderr.count("waiting 1.0 s as Retry-After asks") == len(refusals)
    # Honouring Retry-After run-wide: once one thread learned of a 429, the others stop too; only
    # requests already under way may still be refused (at most one per other thread and 429).
    first = [r for r in refusals if not r.early]
    assert len(refusals) - len(first) <= (4 - 1) * len(first), [(r.at, r.early) for r in refusals]


def _eventually(condition: t.Callable[[], object], timeout_s: float = 120.0) -> bool:
    """Poll ``condition`` until it holds (a deadline for a hung run, not a timing assertion)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def test_429_wait_caps(make_emulator, monkeypatch) -> None:
    """README, "Retries and errors": a 429 waits exactly Retry-After (5 s when the header is
    missing, at most 900 s per wait), up to 30 minutes of waiting per request, then exit 4."""
    from tap_dynamics.engine import pacing as client_module
    from tap_dynamics.errors import ServiceUnavailable

    emu = make_emulator(rows=SMALL)
    settings = load_settings(emu.tap_config())
    client = DataverseClient(settings, build_token_provider(settings))
    client.tokens.token()
    slept: list[float] = []
    clock = [0.0]

    def fake_sleep(seconds: float) -> None:  # the waits are recorded, not slept
        slept.append(seconds)
        clock[0] += seconds

    real_monotonic = client_module.time.monotonic
    monkeypatch.setattr(client_module.time, "sleep", fake_sleep)
    monkeypatch.setattr(client_module.time, "monotonic", lambda: real_monotonic() + clock[0])
    throttled = _json({"error": {"code": "0x80072322", "message": THROTTLE_MESSAGES["0x80072322"]}})
    emu.set(serve_body={"/api/data/v9.2/WhoAmI": {"status": 429, "headers": {"Retry-After": "100000"},
                                                  "body": throttled}})
    with pytest.raises(ServiceUnavailable, match="kept throttling requests for 1800 s"):
        client.get_json(client.url("WhoAmI"))
    assert [round(s) for s in slept] == [900, 900]  # capped per wait, and 1800 s in all
    slept.clear()
    emu.set(serve_body={"/api/data/v9.2/WhoAmI": {"status": 429, "body": throttled, "times": 1}})
    client.get_json(client.url("WhoAmI"))
    assert [round(s, 1) for s in slept] == [5.0]  # no Retry-After: the 5 s default


def test_429_count_cap_ends_the_run_with_exit_4(make_emulator) -> None:
    """The other 429 cap (``MAX_THROTTLES``): a Retry-After of 0 cannot loop forever — at most
    100 429s for one request, then the table fails with exit 4 (the service kept failing)."""
    emu = make_emulator(rows=SMALL)
    throttled = _json({"error": {"code": "0x80072326", "message": THROTTLE_MESSAGES["0x80072326"]}})
    emu.set(serve_body={"/api/data/v9.2/accounts": {"status": 429, "headers": {"Retry-After": "0"},
                                                    "body": throttled}})
    run = run_tap(_config(emu))
    assert run.returncode == 4, run.stderr[-2000:]
    assert "table account: Dataverse kept throttling requests" in run.stderr
    requests = [p for _m, p, _s in emu.request_log() if p == "/api/data/v9.2/accounts"]
    assert len(requests) == DataverseClient.MAX_THROTTLES + 1
    assert len(run.records("contact")) == SMALL["contact"]
