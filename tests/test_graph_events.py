"""The events stream: every mailbox's calendarView/delta inside the window, mailboxes read
concurrently under both caps (max_concurrency, 4 per mailbox), mailboxes without a calendar
counted and skipped, deletions as tombstones, a lost sync state re-read, a resumed run."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from tap_dynamics.auth import build_token_provider
from tap_dynamics.config import load_settings
from tap_dynamics.graph.client import GraphClient
from tests.taprun import run_tap


def _events(run) -> list[dict]:
    return [m["record"] for m in run.messages if m["type"] == "RECORD" and m["stream"] == "events"]


def _truth(emu, back: int = 365, forward: int = 180) -> set[tuple[str, str]]:
    now = dt.datetime.now(dt.timezone.utc)
    start = (now - dt.timedelta(days=back)).strftime("%Y-%m-%dT%H:%M:%S")
    end = (now + dt.timedelta(days=forward)).strftime("%Y-%m-%dT%H:%M:%S")
    return {(user, event_id) for user, events in emu.directory.events.items() for event_id, row in events.items()
            if start <= row["start"]["dateTime"][:19] < end}


def test_every_mailbox_is_read_and_mailboxes_without_calendar_are_skipped(make_graph_emulator) -> None:
    emu = make_graph_emulator(counts={"users": 60}, events_per_user=12, no_mailbox_every=5,
                              latency_ms=20, latency_scope="pages")
    run = run_tap({**emu.tap_config(), "entities": ["events"], "max_concurrency": 3, "page_size": 4})
    assert run.returncode == 0, run.stderr
    events = _events(run)
    assert {(r["user_id"], r["id"]) for r in events} == _truth(emu)
    assert len(events) == len(_truth(emu))
    assert all(r["_sdc_deleted_at"] is None for r in events)  # live rows of a delta read
    assert "60 mailboxes: 48 read, 12 without a mailbox skipped" in run.stderr
    assert emu.stats()["max_in_flight"] <= 3  # the global cap
    assert 1 <= emu.graph.max_per_mailbox <= 4  # Outlook's per-mailbox cap
    first = next(q for q in emu.query_log() if q[0].endswith("/calendarView/delta"))
    query = dict(urllib.parse.parse_qsl(first[1]))
    start = dt.datetime.fromisoformat(query["startDateTime"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - start) - dt.timedelta(days=365)) < dt.timedelta(hours=1)
    assert 'odata.maxpagesize=4' in first[2] and 'outlook.timezone="UTC"' in first[2]
    state = run.last_state["bookmarks"]["events"]
    assert len(state["mailboxes"]) == 48 and all("$deltatoken=" in m["delta_link"] for m in state["mailboxes"].values())


def test_the_transport_keeps_a_mailbox_at_four_requests(make_graph_emulator) -> None:
    emu = make_graph_emulator(counts={"users": 3}, latency_ms=150, latency_scope="pages")
    settings = load_settings({**emu.tap_config(), "max_concurrency": 12})
    client = GraphClient(settings, build_token_provider(settings))
    user = sorted(emu.directory.mailboxes)[0]
    url = client.url(f"users/{user}/calendarView", {"startDateTime": "2020-01-01T00:00:00Z",
                                                     "endDateTime": "2030-01-01T00:00:00Z"})
    client.get_json(url)  # the token first
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda _: client.get_json(url), range(12)))
    assert emu.graph.max_per_mailbox == 4


def test_change_run_reads_only_changed_events_with_tombstones(make_graph_emulator) -> None:
    emu = make_graph_emulator(counts={"users": 8}, events_per_user=6)
    config = {**emu.tap_config(), "entities": ["events"]}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    user = sorted(emu.directory.mailboxes)[0]
    inside = sorted(e for u, e in _truth(emu) if u == user)
    emu.directory.delete_event(user, inside[0])
    changed = dict(emu.directory.events[user][inside[1]], subject="Moved to Friday")
    emu.directory.put_event(user, changed)
    second = run_tap(config, state=first.last_state)
    assert second.returncode == 0, second.stderr
    events = _events(second)
    assert {(r["user_id"], r["id"]) for r in events} == {(user, inside[0]), (user, inside[1])}
    by_id = {r["id"]: r for r in events}
    assert by_id[inside[0]]["_sdc_deleted_at"] and by_id[inside[1]]["subject"] == "Moved to Friday"
    assert not [m for m in second.messages if m["type"] == "ACTIVATE_VERSION"]


def test_a_lost_mailbox_sync_state_rereads_that_mailbox(make_graph_emulator) -> None:
    emu = make_graph_emulator(counts={"users": 6}, events_per_user=4)
    config = {**emu.tap_config(), "entities": ["events"], "max_concurrency": 1}
    first = run_tap(config)
    emu.set(graph_sync_state_not_found={"events": 1})
    second = run_tap(config, state=first.last_state)
    assert second.returncode == 0, second.stderr
    assert "re-baselined" in second.stderr
    reread = {r["user_id"] for r in _events(second)}
    assert len(reread) == 1  # that mailbox's events again, no other mailbox's
    assert not [m for m in second.messages if m["type"] == "ACTIVATE_VERSION"]  # not the whole table
    assert len(second.last_state["bookmarks"]["events"]["mailboxes"]) == 6


def test_an_interrupted_events_run_resumes_at_the_mailboxes_not_done(make_graph_emulator) -> None:
    emu = make_graph_emulator(counts={"users": 120}, events_per_user=3)
    config = {**emu.tap_config(), "entities": ["events"], "max_concurrency": 2}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    states = [m["value"] for m in first.messages if m["type"] == "STATE"
              and 0 < len(m["value"]["bookmarks"].get("events", {}).get("mailboxes", {})) < 120]
    killed = states[0]
    done = set(killed["bookmarks"]["events"]["mailboxes"])
    before = []
    for message in first.messages:
        if message["type"] == "STATE" and message["value"] == killed:
            break
        if message["type"] == "RECORD":
            before.append(message["record"])
    resumed = run_tap(config, state=killed)
    assert resumed.returncode == 0, resumed.stderr
    again = {r["user_id"] for r in _events(resumed)}
    assert not again & done  # finished mailboxes are not read again
    assert {(r["user_id"], r["id"]) for r in before + _events(resumed)} == _truth(emu)


def test_missing_calendar_permission_names_it(make_graph_emulator) -> None:
    emu = make_graph_emulator(counts={"users": 30})
    emu.deny("Calendars.Read")
    run = run_tap({**emu.tap_config(), "entities": ["events", "users"]})
    assert run.returncode == 2
    assert "missing Microsoft Graph application permission Calendars.Read" in run.stderr
    assert len([m for m in run.messages if m["type"] == "RECORD" and m["stream"] == "users"]) >= 30


def test_the_window_is_reanchored_when_a_week_old_or_changed(make_graph_emulator) -> None:
    emu = make_graph_emulator(counts={"users": 5}, events_per_user=4)
    config = {**emu.tap_config(), "entities": ["events"]}
    first = run_tap(config)
    state = first.last_state
    window = state["bookmarks"]["events"]["window"]
    assert (window["back"], window["forward"]) == (365, 180)
    quiet = run_tap(config, state=state)  # same window: only changes (none)
    assert _events(quiet) == []
    old = dict(window, anchor="2020-01-01T00:00:00Z")
    aged = {"bookmarks": {"events": {**state["bookmarks"]["events"], "window": old}}}
    again = run_tap(config, state=aged)
    assert {(r["user_id"], r["id"]) for r in _events(again)} == _truth(emu)  # every mailbox afresh
    assert again.last_state["bookmarks"]["events"]["window"]["anchor"] != old["anchor"]
    narrower = run_tap({**config, "events_window_days_back": 30}, state=state)
    assert {(r["user_id"], r["id"]) for r in _events(narrower)} == _truth(emu, back=30)
