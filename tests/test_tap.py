"""The tap as a real process against the emulator over HTTPS: discovery, paging, incremental, errors."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import time
from pathlib import Path


from tests.emulator.tls import make_tls
from tests.taprun import TAP, hermetic_env, normalise, run_tap, select_streams, write_json


MODIFIEDON = {"account": "modifiedon"}


def test_discovery_describes_tables_faithfully(emulator) -> None:
    run = run_tap(emulator.tap_config(), "--discover")
    assert run.returncode == 0, run.stderr
    streams = {s["tap_stream_id"]: s for s in run.catalog["streams"]}
    assert {"account", "contact", "systemuser"} <= set(streams)

    account = streams["account"]
    assert account["key_properties"] == ["accountid"]
    # account has change tracking enabled: that is its default method; systemuser does not.
    root = next(m["metadata"] for m in account["metadata"] if m["breadcrumb"] == [])
    assert root["forced-replication-method"] == "LOG_BASED"
    assert streams["systemuser"]["replication_key"] == "modifiedon"
    props = account["schema"]["properties"]
    assert props["accountid"]["format"] == "uuid"
    assert props["_sdc_deleted_at"]["format"] == "date-time"
    assert props["_primarycontactid_value"]["format"] == "uuid"
    assert props["_ownerid_value"]["format"] == "uuid"
    assert "primarycontactid" not in props and "primarycontactidname" not in props
    assert props["new_foundedon"]["format"] == "date"
    assert props["modifiedon"]["format"] == "date-time"
    assert props["new_regions"]["items"]["type"] == "integer"
    assert "integer" in props["industrycode"]["type"]
    assert "number" in props["revenue"]["type"]
    # systemuser inherits its key in CSDL; the primary key still comes from PrimaryIdAttribute.
    assert streams["systemuser"]["key_properties"] == ["systemuserid"]
    # Every declared column is one the emulator really serves.
    served = set(emulator.rows("account")[0])
    assert set(props) <= served | {"@odata.etag", "_sdc_deleted_at"}


def test_paging_returns_every_row_exactly_once(make_emulator) -> None:
    emu = make_emulator(rows={"account": 12345, "contact": 1, "systemuser": 1})
    emu.reset_stats()
    run = run_tap({**emu.tap_config(), "entities": ["account"], "page_size": 5000})
    assert run.returncode == 0, run.stderr
    ids = [r["accountid"] for r in run.records("account")]
    assert len(ids) == 12345
    assert len(set(ids)) == 12345
    assert emu.stats()["data_pages"] == 3


def test_records_match_the_emulator_truth(emulator) -> None:
    run = run_tap({**emulator.tap_config(), "entities": ["account"]})
    assert run.returncode == 0, run.stderr
    truth = {r["accountid"]: normalise(r) for r in emulator.rows("account")}
    got = {r["accountid"]: normalise(r) for r in run.records("account")}
    assert got == truth


def _second_with_many_rows(rows: list[dict]) -> str:
    counts = collections.Counter(r["modifiedon"] for r in rows)
    value, count = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    assert count > 1, "the emulator should put several rows in the same second"
    return value


def test_bookmark_is_inclusive(emulator) -> None:
    rows = emulator.rows("account")
    boundary = _second_with_many_rows(rows)
    state = {"bookmarks": {"account": {"replication_key": "modifiedon", "replication_key_value": boundary}}}
    run = run_tap({**emulator.tap_config(), "entities": ["account"], "replication": MODIFIEDON}, state=state)
    assert run.returncode == 0, run.stderr
    expected = {r["accountid"] for r in rows if r["modifiedon"] >= boundary}
    got = {r["accountid"] for r in run.records("account")}
    assert got == expected
    assert {r["accountid"] for r in rows if r["modifiedon"] == boundary} <= got


def test_second_run_emits_only_changed_rows(make_emulator) -> None:
    emu = make_emulator(rows={"account": 3000, "contact": 50, "systemuser": 5})
    config = {**emu.tap_config(), "entities": ["account", "contact"], "replication": {"*": "modifiedon"}}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    assert len(first.records("account")) == 3000
    state = first.last_state

    emu.advance_clock(60)
    inserted = [emu.insert("account", {"name": f"New {i}"})["accountid"] for i in range(2)]
    some = [r["accountid"] for r in emu.rows("account")[:3]]
    for row_id in some:
        emu.update("account", row_id, {"telephone1": "+1 555 0100"})
    second = run_tap(config, state=state)
    assert second.returncode == 0, second.stderr
    assert sorted(r["accountid"] for r in second.records("account")) == sorted(inserted + some)
    assert second.records("contact") == []
    changed = {r["accountid"]: r for r in second.records("account")}
    assert all(changed[i]["telephone1"] == "+1 555 0100" for i in some)

    third = run_tap(config, state=second.last_state)
    assert third.returncode == 0, third.stderr
    assert third.records() == []


def test_killed_run_resumes_without_losing_rows(make_emulator, tmp_path: Path) -> None:
    emu = make_emulator(rows={"account": 20000, "contact": 1, "systemuser": 1})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 1000, "replication": MODIFIEDON}
    config_path = write_json(tmp_path, "config.json", config)
    out = tmp_path / "out.jsonl"
    # Every page after a chain's first is held in the emulator: the tap cannot finish, so the
    # kill lands mid-run by construction (an event, not timing), after a checkpointed page.
    gate = emu.gate(r"/accounts\?.*skiptoken")
    with out.open("w") as sink:
        proc = subprocess.Popen(  # noqa: S603
            [TAP, "--config", config_path], stdout=sink, stderr=subprocess.DEVNULL, env=hermetic_env()
        )
        try:
            assert gate.wait_for(1), "the tap never asked for a second page"
            deadline = time.monotonic() + 120  # against a hung run, not a timing assertion
            while time.monotonic() < deadline and proc.poll() is None:
                text = out.read_text()
                if text.count('"type":"RECORD"') >= 1000 and '"type":"STATE"' in text.rsplit('"type":"RECORD"', 1)[-1]:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            gate.open()
    lines = out.read_text().splitlines()
    complete = [json.loads(line) for line in lines if line.endswith("}")]
    states = [m["value"] for m in complete if m.get("type") == "STATE"]
    first_records = [m["record"] for m in complete if m.get("type") == "RECORD"]
    assert states, "the tap must checkpoint state while it runs"
    assert len(first_records) < 20000, "the tap finished before it could be killed"

    resumed = run_tap(config, state=states[-1])
    assert resumed.returncode == 0, resumed.stderr
    union = {r["accountid"] for r in first_records} | {r["accountid"] for r in resumed.records("account")}
    assert union == {r["accountid"] for r in emu.rows("account")}
    # Re-read rows are bounded by what came after the last checkpoint (at most about one page).
    duplicates = len(first_records) + len(resumed.records("account")) - len(union)
    assert duplicates <= 1000 + 50


def test_wrong_secret_is_one_actionable_line(emulator) -> None:
    secret = "definitely-the-wrong-secret-value"
    run = run_tap({**emulator.tap_config(), "client_secret": secret})
    assert run.returncode == 2
    assert "AADSTS7000215" in run.stderr
    assert "Value (not its Secret ID)" in run.stderr
    assert "Traceback" not in run.stderr
    assert secret not in run.stderr + run.stdout
    error_lines = [line for line in run.stderr.splitlines() if line.startswith("tap-dynamics: error:")]
    assert len(error_lines) == 1


def test_bad_config_fails_before_any_request(emulator) -> None:
    emulator.reset_stats()
    run = run_tap({**emulator.tap_config(), "page_size": 9000})
    assert run.returncode == 2
    assert "'page_size' must be from 1 to 5000" in run.stderr
    assert "Traceback" not in run.stderr
    assert emulator.stats()["requests"] == 0


def test_catalog_run_skips_column_discovery(emulator, tmp_path: Path) -> None:
    discovered = run_tap(emulator.tap_config(), "--discover")
    catalog = select_streams(discovered.catalog, ["contact"])
    emulator.reset_stats()
    run = run_tap(emulator.tap_config(), catalog=catalog)
    assert run.returncode == 0, run.stderr
    assert len(run.records("contact")) == len(emulator.rows("contact"))
    assert run.records("account") == []
    assert not [p for _m, p, _s in emulator.request_log() if "/Attributes" in p]


def test_ca_bundle_setting_beats_requests_ca_bundle(emulator, tmp_path: Path) -> None:
    # REQUESTS_CA_BUNDLE names a real CA that did not sign the emulator's certificate (made
    # here, so the test does not depend on where the host keeps its CA file): on its own it
    # breaks TLS, which proves the variable is in effect; with ca_bundle set the setting wins.
    foreign = make_tls(str(tmp_path))
    env = {"REQUESTS_CA_BUNDLE": foreign.ca_path}
    config = {**emulator.tap_config(), "entities": ["systemuser"]}
    without = run_tap({k: v for k, v in config.items() if k != "ca_bundle"}, env=env)
    assert without.returncode == 2, without.stderr
    assert "TLS verification failed" in without.stderr
    run = run_tap(config, env=env)
    assert run.returncode == 0, run.stderr
    assert len(run.records("systemuser")) == len(emulator.rows("systemuser"))


def test_without_ca_bundle_tls_failure_is_explained(emulator) -> None:
    config = {k: v for k, v in emulator.tap_config().items() if k != "ca_bundle"}
    env = {"REQUESTS_CA_BUNDLE": ""}
    run = run_tap(config, env=env)
    assert run.returncode == 2
    assert "TLS verification failed" in run.stderr
    assert "ca_bundle" in run.stderr
    assert "Traceback" not in run.stderr



