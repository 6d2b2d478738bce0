"""Replication methods against the emulator: change tracking with deletes, token expiry,
cursors (versionnumber, createdon), full table with ACTIVATE_VERSION, and kill-and-resume chaos."""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.taprun import TAP, hermetic_env, run_tap, write_json


def _messages(run, kind: str, stream: str | None = None) -> list[dict]:
    return [m for m in run.messages if m["type"] == kind and (stream is None or m.get("stream") == stream)]


def test_change_tracking_then_deltas_with_deletes(make_emulator) -> None:
    emu = make_emulator(rows={"account": 2500, "contact": 10, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 1000}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    assert len(first.records("account")) == 2500
    bookmark = first.last_state["bookmarks"]["account"]
    assert "$deltatoken=" in bookmark["delta_link"]
    assert "next_link" not in bookmark

    emu.advance_clock(30)
    inserted = [emu.insert("account", {"name": f"Delta {i}"})["accountid"] for i in range(2)]
    rows = emu.rows("account")
    updated = [r["accountid"] for r in rows[10:13]]
    for row_id in updated:
        emu.update("account", row_id, {"name": "Renamed"})
    deleted = [r["accountid"] for r in rows[100:102]]
    for row_id in deleted:
        emu.delete("account", row_id)
    before = dt.datetime.now(dt.timezone.utc)

    second = run_tap(config, state=first.last_state)
    assert second.returncode == 0, second.stderr
    records = second.records("account")
    upserts = {r["accountid"]: r for r in records if r.get("_sdc_deleted_at") is None}
    deletes = {r["accountid"]: r for r in records if r.get("_sdc_deleted_at") is not None}
    assert set(upserts) == set(inserted + updated)
    assert all(upserts[i]["name"] == "Renamed" for i in updated)
    assert set(deletes) == set(deleted)
    for record in deletes.values():
        stamp = dt.datetime.fromisoformat(record["_sdc_deleted_at"].replace("Z", "+00:00"))
        assert stamp.tzinfo is not None and stamp >= before - dt.timedelta(seconds=1)
    assert "deletes" in second.stderr  # the run summary has a deletes column
    third = run_tap(config, state=second.last_state)
    assert third.returncode == 0, third.stderr
    assert third.records() == []


def test_expired_change_token_rebaselines(make_emulator) -> None:
    emu = make_emulator(rows={"account": 1200, "contact": 10, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 500}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    emu.set(change_tracking_expiry_seconds=60)
    emu.advance_clock(3600)
    gone = emu.rows("account")[5]["accountid"]
    emu.delete("account", gone)

    second = run_tap(config, state=first.last_state)
    assert second.returncode == 0, second.stderr
    assert "change-tracking token has expired" in second.stderr
    assert "re-baselined" in second.stderr
    got = {r["accountid"] for r in second.records("account")}
    assert got == {r["accountid"] for r in emu.rows("account")}
    activate = _messages(second, "ACTIVATE_VERSION", "account")
    assert len(activate) == 1
    versions = {m.get("version") for m in _messages(second, "RECORD", "account")}
    assert versions == {activate[0]["version"]}
    assert "$deltatoken=" in second.last_state["bookmarks"]["account"]["delta_link"]


def test_change_tracking_on_a_table_without_it_is_a_config_error(emulator) -> None:
    run = run_tap({**emulator.tap_config(), "replication": {"systemuser": "change_tracking"}}, "--discover")
    assert run.returncode == 2
    assert "does not have it enabled" in run.stderr
    assert "Traceback" not in run.stderr


def test_unknown_cursor_column_is_a_config_error(emulator) -> None:
    run = run_tap({**emulator.tap_config(), "replication": {"account": "modifiedonn"}}, "--discover")
    assert run.returncode == 2
    assert "'modifiedonn'" in run.stderr and "no such column" in run.stderr


def test_versionnumber_cursor(make_emulator) -> None:
    emu = make_emulator(rows={"account": 1500, "contact": 10, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"], "replication": {"account": "versionnumber"}}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    assert len(first.records("account")) == 1500
    numbers = [r["versionnumber"] for r in first.records("account")]
    assert numbers == sorted(numbers)
    changed = [r["accountid"] for r in emu.rows("account")[:4]]
    for row_id in changed:
        emu.update("account", row_id, {"telephone1": "555"})
    second = run_tap(config, state=first.last_state)
    assert sorted(r["accountid"] for r in second.records("account")) == sorted(changed)


def test_createdon_cursor_for_append_only_tables(make_emulator) -> None:
    emu = make_emulator(rows={"account": 800, "contact": 10, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"], "replication": {"account": "createdon"}}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    assert first.last_state["bookmarks"]["account"]["replication_key"] == "createdon"
    emu.advance_clock(10)
    new = emu.insert("account", {"name": "Appended"})["accountid"]
    second = run_tap(config, state=first.last_state)
    assert [r["accountid"] for r in second.records("account")] == [new]


def test_lookback_rereads_recent_rows(make_emulator) -> None:
    emu = make_emulator(rows={"account": 600, "contact": 10, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"], "replication": {"account": "modifiedon"}}
    first = run_tap(config)
    bookmark = first.last_state["bookmarks"]["account"]["replication_key_value"]
    week = 7 * 24 * 3600
    second = run_tap({**config, "lookback_seconds": week}, state=first.last_state)
    assert second.returncode == 0, second.stderr
    start = dt.datetime.fromisoformat(bookmark.replace("Z", "+00:00")) - dt.timedelta(seconds=week)
    expected = {
        r["accountid"]
        for r in emu.rows("account")
        if start <= dt.datetime.fromisoformat(r["modifiedon"].replace("Z", "+00:00")) and r["modifiedon"] != bookmark
    }
    assert expected, "the lookback window should contain rows"
    assert {r["accountid"] for r in second.records("account")} == expected


def test_full_table_emits_activate_version(make_emulator) -> None:
    emu = make_emulator(rows={"account": 10, "contact": 10, "systemuser": 40})
    config = {**emu.tap_config(), "entities": ["systemuser"], "replication": {"systemuser": "full_table"}, "page_size": 15}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    kinds = [m["type"] for m in first.messages if m.get("stream") == "systemuser"]
    assert kinds[0] == "SCHEMA" and kinds[1] == "ACTIVATE_VERSION" and kinds[-1] == "ACTIVATE_VERSION"
    version = _messages(first, "ACTIVATE_VERSION")[-1]["version"]
    assert {m["version"] for m in _messages(first, "RECORD")} == {version}
    assert len(first.records()) == 40

    emu.delete("systemuser", emu.rows("systemuser")[0]["systemuserid"])
    second = run_tap(config, state=first.last_state)
    activations = _messages(second, "ACTIVATE_VERSION")
    assert len(activations) == 1  # only at the end now: the table stays visible meanwhile
    assert activations[0]["version"] > version
    assert len(second.records()) == 39


def test_full_table_resumes_from_the_in_flight_page(make_emulator) -> None:
    emu = make_emulator(rows={"account": 10, "contact": 10, "systemuser": 50})
    config = {**emu.tap_config(), "entities": ["systemuser"], "replication": {"systemuser": "full_table"}, "page_size": 10}
    first = run_tap(config)
    states = [m["value"] for m in first.messages if m["type"] == "STATE"]
    mid = next(s for s in states if s["bookmarks"]["systemuser"].get("next_link"))
    emitted_before = 10  # the first page was emitted before that checkpoint
    resumed = run_tap(config, state=mid)
    assert resumed.returncode == 0, resumed.stderr
    ids = [r["systemuserid"] for r in resumed.records()]
    assert len(ids) == 50 - emitted_before
    union = set(ids) | {r["systemuserid"] for r in first.records()[:emitted_before]}
    assert union == {r["systemuserid"] for r in emu.rows("systemuser")}
    same_version = {m["version"] for m in _messages(resumed, "RECORD")}
    assert same_version == {mid["bookmarks"]["systemuser"]["table_version"]}


# --- kill-and-resume chaos ----------------------------------------------------------------------


class Mutator(threading.Thread):
    """Keeps inserting, updating and deleting account rows while the tap runs."""

    def __init__(self, emu, rng: random.Random, *, deletes: bool = True) -> None:
        super().__init__(daemon=True)
        self.emu, self.rng, self.stop, self.deletes = emu, rng, threading.Event(), deletes
        self.ids = [r["accountid"] for r in emu.rows("account")]

    def step(self) -> None:
        action = self.rng.random()
        if action < 0.4:
            self.ids.append(self.emu.insert("account", {"name": f"Chaos {self.rng.random():.6f}"})["accountid"])
        elif (action < 0.8 or not self.deletes) and self.ids:
            self.emu.update("account", self.rng.choice(self.ids), {"telephone1": f"{self.rng.randrange(10**6)}"})
        elif self.ids:
            victim = self.ids.pop(self.rng.randrange(len(self.ids)))
            self.emu.delete("account", victim)
        if self.rng.random() < 0.3:
            self.emu.advance_clock(1)

    def run(self) -> None:
        while not self.stop.is_set():
            self.step()
            time.sleep(0.01)


def _run_until(config_path: str, state: dict | None, tmp: Path, kill_after: int | None) -> tuple[list[dict], bool]:
    argv = [TAP, "--config", config_path]
    if state is not None:
        argv += ["--state", write_json(tmp, "state.json", state)]
    # Bytes, not text: a kill can cut a line in the middle of a UTF-8 sequence.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=hermetic_env())  # noqa: S603
    assert proc.stdout is not None
    messages, records, killed = [], 0, False
    for line in proc.stdout:
        try:
            message = json.loads(line)
        except ValueError:  # includes UnicodeDecodeError
            break  # a line cut by the kill
        messages.append(message)
        if message["type"] == "RECORD":
            records += 1
            if kill_after is not None and records >= kill_after and not killed:
                proc.send_signal(signal.SIGKILL)
                killed = True
    proc.wait()
    return messages, killed


def _apply(table: dict[str, dict], messages: list[dict], pk: str) -> None:
    for message in messages:
        if message["type"] != "RECORD":
            continue
        record = message["record"]
        if record.get("_sdc_deleted_at"):
            table.pop(record[pk], None)
        else:
            table[record[pk]] = record


@pytest.mark.parametrize(
    "replication",
    [
        pytest.param({}, id="change-tracking"),
        # modifiedon cannot see deletes; its first load is read in concurrent time windows.
        pytest.param({"account": "modifiedon"}, id="modifiedon-windows"),
    ],
)
def test_kill_and_resume_under_activity_loses_nothing(make_emulator, tmp_path: Path, replication: dict) -> None:
    rng = random.Random(20261122)
    page = 2000
    emu = make_emulator(rows={"account": 50000, "contact": 5, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": page, "replication": replication}
    config_path = write_json(tmp_path, "config.json", config)
    warehouse: dict[str, dict] = {}
    state = None
    mutator = Mutator(emu, rng, deletes=not replication)
    mutator.start()
    kills = 0
    limit = 20000  # first kills land inside the initial load; later ones inside delta reads
    try:
        for _ in range(16):
            if kills >= 6:
                break
            messages, killed = _run_until(config_path, state, tmp_path, kill_after=rng.randrange(1, limit))
            _apply(warehouse, messages, "accountid")
            emitted = sum(m["type"] == "RECORD" for m in messages)
            if not killed:
                limit = max(2, emitted)  # a run that finished: kill the next one inside its size
            states = [m["value"] for m in messages if m["type"] == "STATE"]
            if killed:
                kills += 1
                after_checkpoint = 0
                for message in reversed(messages):
                    if message["type"] == "STATE":
                        break
                    after_checkpoint += message["type"] == "RECORD"
                assert after_checkpoint <= page, "more than one page would be re-read on resume"
            state = states[-1] if states else state
    finally:
        mutator.stop.set()
        mutator.join()
    # Activity has stopped: runs that are not killed bring the warehouse up to date. If the
    # first of them finishes an initial change-tracking read, changes made during that read
    # come with the next (delta) run, so run until one finds nothing new.
    for _ in range(4):
        messages, killed = _run_until(config_path, state, tmp_path, kill_after=None)
        assert not killed
        _apply(warehouse, messages, "accountid")
        state = [m["value"] for m in messages if m["type"] == "STATE"][-1]
        if not any(m["type"] == "RECORD" for m in messages):
            break
    assert kills >= 4
    truth = {r["accountid"]: r for r in emu.rows("account")}
    assert warehouse.keys() == truth.keys()
    for key, row in truth.items():
        assert warehouse[key]["telephone1"] == row["telephone1"]
        assert warehouse[key]["versionnumber"] == row["versionnumber"]


def test_first_load_in_windows_reads_every_row_once(make_emulator) -> None:
    emu = make_emulator(rows={"account": 12000, "contact": 5, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 1000, "replication": {"account": "modifiedon"}}
    emu.reset_stats()
    # Window pages wait in the emulator until two are in flight together: concurrency is
    # proven by a count, not by timing (a sequential reader would never meet the gate).
    gate = emu.gate(r"^(?!.*\$top).*modifiedon (ge|lt) ", open_at=2)
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    assert "reading 4 time windows concurrently" in first.stderr
    assert gate.met, "two window pages should have been in flight at once"
    ids = [r["accountid"] for r in first.records("account")]
    assert len(ids) == len(set(ids)) == 12000
    windowed_states = [m["value"]["bookmarks"]["account"] for m in first.messages if m["type"] == "STATE"]
    assert any("windows" in s for s in windowed_states)
    final = first.last_state["bookmarks"]["account"]
    assert "windows" not in final
    assert final["replication_key_value"] == max(r["modifiedon"] for r in emu.rows("account"))
    second = run_tap(config, state=first.last_state)
    assert second.returncode == 0, second.stderr
    assert second.records() == []
    emu.advance_clock(5)
    emu.update("account", ids[0], {"name": "After windows"})
    third = run_tap(config, state=second.last_state)
    assert [r["accountid"] for r in third.records()] == [ids[0]]


def test_small_tables_and_disabled_windows_read_in_one_sequence(make_emulator) -> None:
    emu = make_emulator(rows={"account": 12000, "contact": 5, "systemuser": 3})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 1000,
              "replication": {"account": "modifiedon"}, "first_load_windows": 1}
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    assert "time windows" not in run.stderr
    assert len(run.records()) == 12000
