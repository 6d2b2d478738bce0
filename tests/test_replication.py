"""Replication correctness against the emulator, each through a real tap process: nullable
cursors, row-shape errors that fail one table, a re-baseline killed and resumed, late commits,
and the one ``$top`` the tap sends."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from tests.taprun import parse_messages, run_killed, run_tap, write_json

SDK_PATH = {"TAP_DYNAMICS_FAST_PATH": "0"}  # the SDK's per-record path instead of the fast one


def _messages(run, kind: str, stream: str | None = None) -> list[dict]:
    return [m for m in run.messages if m["type"] == kind and (stream is None or m.get("stream") == stream)]


# --- nullable cursors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("windows", "env"),
    [
        pytest.param(4, {}, id="windows"),
        pytest.param(1, {}, id="one-sequence"),
        pytest.param(1, SDK_PATH, id="one-sequence-sdk-path"),
    ],
)
def test_nullable_cursor_first_load_emits_every_row(make_emulator, windows: int, env: dict) -> None:
    # account.lastusedincampaign is a nullable date-time column, null in about half the rows.
    emu = make_emulator(rows={"account": 3000, "contact": 5, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 500,
              "replication": {"account": "lastusedincampaign"}, "first_load_windows": windows}
    truth = emu.rows("account")
    nulls = {r["accountid"] for r in truth if r["lastusedincampaign"] is None}
    assert 500 < len(nulls) < 2500

    first = run_tap(config, env=env)
    assert first.returncode == 0, first.stderr
    assert ("time windows concurrently" in first.stderr) == (windows > 1)
    ids = [r["accountid"] for r in first.records("account")]
    assert len(ids) == len(set(ids)) == 3000
    assert set(ids) == {r["accountid"] for r in truth}
    assert nulls <= set(ids)
    assert "malformed" not in first.stderr
    assert "replication value is null" not in first.stderr  # the SDK's warning, once per such row
    bookmark = first.last_state["bookmarks"]["account"]
    assert bookmark["replication_key"] == "lastusedincampaign"
    assert bookmark["replication_key_value"] == max(
        r["lastusedincampaign"] for r in truth if r["lastusedincampaign"] is not None
    )
    assert "windows" not in bookmark

    second = run_tap(config, state=first.last_state, env=env)
    assert second.returncode == 0, second.stderr
    assert second.records() == []  # the bookmark's rows are not emitted again, nulls not re-read


# --- row-shape errors fail one table, not the run -----------------------------------------------


def _assert_one_table_failed(run, table: str, other: str, expected_rows: int, words: tuple[str, ...]) -> None:
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    failure = [line for line in run.stderr.splitlines() if f"Table {table} failed and was skipped" in line]
    assert len(failure) == 1, run.stderr
    assert all(word in failure[0] for word in words), failure[0]
    assert f"table(s) failed and were skipped: {table}" in run.stderr
    assert len(run.records(other)) == expected_rows


@pytest.mark.parametrize("env", [pytest.param({}, id="fast-path"), pytest.param(SDK_PATH, id="sdk-path")])
def test_malformed_multi_select_value_fails_only_its_table(make_emulator, env: dict) -> None:
    emu = make_emulator(rows={"account": 40, "contact": 5, "systemuser": 12})
    victim = emu.rows("account")[7]["accountid"]
    emu.update("account", victim, {"new_regions": "2,north"})  # the emulator serves it as stored
    config = {**emu.tap_config(), "entities": ["account", "systemuser"], "page_size": 10}
    run = run_tap(config, env=env)
    _assert_one_table_failed(run, "account", "systemuser", 12, ("new_regions", "'2,north'", "malformed"))


@pytest.mark.parametrize("env", [pytest.param({}, id="fast-path"), pytest.param(SDK_PATH, id="sdk-path")])
def test_non_date_cursor_value_fails_only_its_table(make_emulator, env: dict) -> None:
    emu = make_emulator(rows={"account": 5, "contact": 30, "systemuser": 12})
    rows = [dict(r) for r in emu.rows("contact")[:3]]
    rows[1]["modifiedon"] = 1717171717  # a number where the date-time cursor must be
    for row in rows:
        row["@odata.etag"] = 'W/"1"'
    emu.set(serve_body={"/api/data/v9.2/contacts": {"body": orjson.dumps({"value": rows}, default=float).decode()}})
    config = {**emu.tap_config(), "entities": ["contact", "systemuser"],
              "replication": {"contact": "modifiedon"}, "first_load_windows": 1}
    run = run_tap(config, env=env)
    _assert_one_table_failed(run, "contact", "systemuser", 12, ("modifiedon", "1717171717", "not a date-time"))
    assert [r["contactid"] for r in run.records("contact")] == []  # the bad page is not emitted


# --- a re-baseline killed and resumed ----------------------------------------------------------


def _apply(warehouse: dict[str, tuple[int | None, dict]], messages: list[dict]) -> None:
    """A target that upserts by key and honours ACTIVATE_VERSION (drops other versions)."""
    for message in messages:
        if message.get("stream") != "account":
            continue
        if message["type"] == "RECORD":
            record = message["record"]
            if record.get("_sdc_deleted_at"):
                warehouse.pop(record["accountid"], None)
            else:
                warehouse[record["accountid"]] = (message.get("version"), record)
        elif message["type"] == "ACTIVATE_VERSION":
            for key in [k for k, (version, _) in warehouse.items() if version != message["version"]]:
                del warehouse[key]


def _run_killed(config_path: str, state: dict, tmp: Path, kill_when) -> tuple[list[dict], dict]:
    """Run the tap and SIGKILL it when ``kill_when(bookmark)`` holds for a STATE it wrote."""
    config = json.loads(Path(config_path).read_text())
    return run_killed(config, lambda value: kill_when(value["bookmarks"]["account"]), state=state)


@pytest.mark.parametrize(
    "kill_when",
    [
        pytest.param(lambda b: b.get("phase") == "rebaseline" and not b.get("next_link"), id="before-first-page"),
        pytest.param(lambda b: b.get("phase") == "rebaseline" and b.get("next_link"), id="after-first-page"),
    ],
)
def test_killed_rebaseline_resumes_as_the_same_version(make_emulator, tmp_path: Path, kill_when) -> None:
    # Slow pages: the kill lands where the STATE that triggers it says, not pages later.
    emu = make_emulator(rows={"account": 2000, "contact": 5, "systemuser": 3}, latency_ms=300, latency_scope="pages")
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 400}
    config_path = write_json(tmp_path, "config.json", config)
    warehouse: dict[str, tuple[int | None, dict]] = {}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    _apply(warehouse, first.messages)
    emu.set(change_tracking_expiry_seconds=60)
    emu.advance_clock(3600)
    gone = [r["accountid"] for r in emu.rows("account")[100:110]]
    for row_id in gone:  # deleted while the token was expiring: no $deletedEntity will say so
        emu.delete("account", row_id)

    messages, state = _run_killed(config_path, first.last_state, tmp_path, kill_when)
    _apply(warehouse, messages)
    killed = state["bookmarks"]["account"]
    assert killed["phase"] == "rebaseline" and "delta_link" not in killed
    version = killed["table_version"]

    resumed = run_tap(config, state=state)
    assert resumed.returncode == 0, resumed.stderr
    _apply(warehouse, resumed.messages)
    activations = _messages(resumed, "ACTIVATE_VERSION", "account")
    assert [m["version"] for m in activations] == [version]
    assert {m.get("version") for m in _messages(resumed, "RECORD", "account")} == {version}
    final = resumed.last_state["bookmarks"]["account"]
    assert "$deltatoken=" in final["delta_link"] and "phase" not in final and "table_version" not in final
    truth = {r["accountid"] for r in emu.rows("account")}
    assert set(warehouse) == truth  # every row, and none of the deleted ones
    assert not set(gone) & set(warehouse)


@pytest.mark.parametrize("status", [409, 500])
def test_expired_change_token_is_recognised_at_any_status(make_emulator, status: int) -> None:
    emu = make_emulator(rows={"account": 300, "contact": 5, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"]}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    emu.set(change_tracking_expiry_seconds=60, change_tracking_expiry_status=status)
    emu.advance_clock(3600)
    emu.reset_stats()
    second = run_tap(config, state=first.last_state)
    assert second.returncode == 0, second.stderr
    assert "re-baselined" in second.stderr
    assert len(_messages(second, "ACTIVATE_VERSION", "account")) == 1
    assert len(second.records("account")) == 300
    expired = [entry for entry in emu.request_log() if entry[2] == status]
    assert len(expired) == 1  # not retried, even as a 5xx


# --- late commits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "prior_run", "margin", "kept"),
    [
        pytest.param(300, True, None, True, id="incremental-default-margin"),
        pytest.param(12000, False, None, True, id="windowed-first-load-default-margin"),
        # What the margin is for: without it the late row is lost, as before it existed.
        pytest.param(300, True, 0, False, id="no-margin-loses-it"),
    ],
)
def test_late_commit_is_read_by_the_next_run(make_emulator, rows: int, prior_run: bool, margin, kept: bool) -> None:
    emu = make_emulator(rows={"account": rows, "contact": 5, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 1000,
              "replication": {"account": "modifiedon"}}
    if margin is not None:
        config["commit_margin_seconds"] = margin
    emitted: dict[str, dict] = {}
    state = None
    if prior_run:
        first = run_tap(config)
        assert first.returncode == 0, first.stderr
        emitted.update({r["accountid"]: r for r in first.records("account")})
        state = first.last_state
    emu.advance_clock(10)
    # A write that starts now but commits 100 s later (a long plug-in), then a quick one.
    late = emu.insert("account", {"name": "Late commit"}, commit_after=100)["accountid"]
    emu.advance_clock(20)
    quick = emu.insert("account", {"name": "Quick commit"})["accountid"]

    before = run_tap(config, state=state)
    assert before.returncode == 0, before.stderr
    got = [r["accountid"] for r in before.records("account")]
    assert quick in got and late not in got
    emitted.update({r["accountid"]: r for r in before.records("account")})

    emu.advance_clock(100)  # the late write commits: visible now, stamped before `quick`
    after = run_tap(config, state=before.last_state)
    assert after.returncode == 0, after.stderr
    emitted.update({r["accountid"]: r for r in after.records("account")})
    truth = {r["accountid"] for r in emu.rows("account")}
    if kept:
        # The margin is re-read; of it only the unseen version is emitted (boundary etags).
        assert [r["accountid"] for r in after.records("account")] == [late]
        assert set(emitted) == truth  # zero rows lost
    else:
        assert after.records("account") == []
        assert truth - set(emitted) == {late}


# --- $top -----------------------------------------------------------------------------------------


def test_top_only_for_one_row_lookups_never_with_paging(make_emulator) -> None:
    # README claim (How it reads Dynamics, Paging): "never `$top` on a paged read. The one `$top`
    # the tap sends is `$top=1` without `Prefer: odata.maxpagesize`, when it plans a first load's
    # time windows". A windowed first load, then an incremental run, then change tracking.
    emu = make_emulator(rows={"account": 12000, "contact": 50, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account", "contact"], "page_size": 1000,
              "replication": {"account": "modifiedon"}}
    emu.reset_stats()
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    assert "reading 4 time windows concurrently" in first.stderr
    second = run_tap(config, state=first.last_state)
    assert second.returncode == 0, second.stderr
    queries = emu.query_log()
    with_top = [(path, query, prefer) for path, query, prefer in queries if "$top" in query]
    assert len(with_top) == 2  # the smallest and the largest modifiedon of the first load
    for path, query, prefer in with_top:
        assert path.endswith("/accounts")
        assert "$top=1" in query.split("&")
        assert "maxpagesize" not in prefer and "$skiptoken" not in query
    paged = [q for q in queries if "maxpagesize" in q[2]]
    assert paged and not [q for q in paged if "$top" in q[1]]
    assert parse_messages(first.stdout)  # the run wrote Singer messages
