"""The fast record path, prefetch, parallel tables and progress: correctness only, nothing timed.

Speed is measured by ``bench/`` (``make bench``); these tests prove that going fast changes
nothing a target can see: the page-at-a-time path emits what the SDK's per-record path emits on
the same data, the output is valid Singer (SCHEMA first, STATE covering only what was written)
when tables are read in parallel, and buffering is bounded by the page budget.
"""

from __future__ import annotations

import re

import decimal
import threading
import weakref
import typing as t
from pathlib import Path

import pytest

from tap_dynamics.engine.pages import Page, Rows
from tap_dynamics.engine.prefetch import PageBudget, prefetch, prefetch_pages
from tests.taprun import TAP, TapRun, hermetic_env, parse_messages, run_tap, write_json

SDK_PATH = {"TAP_DYNAMICS_FAST_PATH": "0"}


def _messages_without_time(run: TapRun) -> list[dict[str, t.Any]]:
    out = []
    for message in run.messages:
        message = dict(message)
        message.pop("time_extracted", None)
        out.append(message)
    return out


def _records_and_final_state(run: TapRun) -> tuple[list[dict], dict | None]:
    return [m for m in _messages_without_time(run) if m["type"] == "RECORD"], run.last_state


def test_fast_path_emits_what_the_sdk_path_emits(make_emulator) -> None:
    emu = make_emulator(rows={"account": 1234, "contact": 300, "systemuser": 7})
    config = {**emu.tap_config(), "entities": ["account", "contact", "systemuser"], "page_size": 200, "max_concurrency": 1}
    fast = run_tap(config)
    slow = run_tap(config, env=SDK_PATH)
    assert fast.returncode == 0, fast.stderr
    assert slow.returncode == 0, slow.stderr
    fast_records, fast_state = _records_and_final_state(fast)
    slow_records, slow_state = _records_and_final_state(slow)
    assert len(fast_records) == 1234 + 300 + 7
    assert fast_records == slow_records  # same rows, same values, same key order, same streams
    assert fast_state == slow_state
    assert [m["type"] for m in fast.messages if m["type"] == "SCHEMA"] == ["SCHEMA"] * 3
    # Lossless decimals and split multi-selects survive the fast path.
    account = {r["record"]["accountid"]: r["record"] for r in fast_records if r["stream"] == "account"}
    truth = {r["accountid"]: r for r in emu.rows("account")}
    for key, row in account.items():
        assert row["exchangerate"] == truth[key]["exchangerate"]
        assert isinstance(row["exchangerate"], decimal.Decimal)
        regions = truth[key]["new_regions"]
        assert row["new_regions"] == ([int(p) for p in regions.split(",")] if regions else None)
    assert any(r["exchangerate"] == decimal.Decimal("0.1") for r in account.values())
    # Every RECORD line has what the SDK puts there.
    assert all("time_extracted" in m for m in fast.messages if m["type"] == "RECORD")


def test_incremental_runs_match_the_sdk_path(make_emulator) -> None:
    """Boundary dedupe and bookmarks: a second run from the first run's state, both paths."""
    emu = make_emulator(rows={"account": 900, "contact": 1, "systemuser": 2})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 250, "replication": {"account": "modifiedon"}}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    state = first.last_state
    assert state["bookmarks"]["account"]["replication_key_value"]
    emu.insert("account", {"name": "Same second as the bookmark"})
    emu.advance_clock(30)
    changed = emu.rows("account")[5]["accountid"]
    emu.update("account", changed, {"telephone1": "+1 555 0199"})
    fast = run_tap(config, state=state)
    slow = run_tap(config, state=state, env=SDK_PATH)
    assert fast.returncode == 0, fast.stderr
    assert slow.returncode == 0, slow.stderr
    assert _records_and_final_state(fast) == _records_and_final_state(slow)
    ids = [r["accountid"] for r in fast.records("account")]
    assert changed in ids
    assert len(ids) == len(set(ids))  # rows emitted at the bookmark second are not repeated


def _check_valid_singer(run: TapRun) -> dict[str, int]:
    """SCHEMA before a stream's records; every STATE bookmark is covered by records before it."""
    schema_seen: set[str] = set()
    max_emitted: dict[str, str] = {}
    counts: dict[str, int] = {}
    for message in run.messages:
        kind = message["type"]
        if kind == "SCHEMA":
            schema_seen.add(message["stream"])
        elif kind == "RECORD":
            stream = message["stream"]
            assert stream in schema_seen, f"RECORD of {stream} before its SCHEMA"
            counts[stream] = counts.get(stream, 0) + 1
            value = message["record"].get("modifiedon")
            if value is not None:
                max_emitted[stream] = max(max_emitted.get(stream, value), value)
        elif kind == "STATE":
            for stream, bookmark in message["value"].get("bookmarks", {}).items():
                value = bookmark.get("replication_key_value")
                if value is not None:
                    assert stream in max_emitted and value <= max_emitted[stream], (
                        f"STATE bookmark {value} of {stream} ahead of what was emitted"
                    )
    return counts


def test_parallel_tables_are_valid_singer(make_emulator) -> None:
    emu = make_emulator(rows={"account": 1500, "contact": 1200, "systemuser": 30}, clones={"account": 3})
    tables = ["account", "contact", "systemuser", "account_1", "account_2", "account_3"]
    config = {**emu.tap_config(), "entities": tables, "page_size": 100, "max_concurrency": 4}
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    counts = _check_valid_singer(run)
    assert counts == {"account": 1500, "contact": 1200, "systemuser": 30, "account_1": 1500, "account_2": 1500, "account_3": 1500}
    for name in tables:
        ids = [r[("contactid" if name == "contact" else "systemuserid" if name == "systemuser" else "accountid")] for r in run.records(name)]
        assert len(ids) == len(set(ids))
    # Sequential run of the same data: same rows per table, same final bookmarks.
    sequential = run_tap({**config, "max_concurrency": 1})
    assert sequential.returncode == 0, sequential.stderr
    for name in tables:
        assert run.records(name) == sequential.records(name)
    assert run.last_state["bookmarks"] == sequential.last_state["bookmarks"]
    # The emulator never saw more requests in flight than the cap.
    assert emu.stats()["max_in_flight"] <= 4


def test_stream_maps_fall_back_to_the_sdk_path(make_emulator) -> None:
    emu = make_emulator(rows={"account": 300, "contact": 1, "systemuser": 1})
    config = {
        **emu.tap_config(),
        "entities": ["account"],
        "page_size": 100,
        "stream_maps": {"account": {"name_upper": "name.upper()", "description": None}},
    }
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    records = run.records("account")
    assert len(records) == 300
    assert all(r["name_upper"] == r["name"].upper() for r in records)
    assert all("description" not in r for r in records)


def test_flattening_falls_back_to_the_sdk_path(make_emulator) -> None:
    emu = make_emulator(rows={"account": 120, "contact": 1, "systemuser": 1})
    base = {**emu.tap_config(), "entities": ["account"], "page_size": 50}
    flattening = {**base, "flattening_enabled": True, "flattening_max_depth": 1}
    flat = run_tap(flattening)
    sdk = run_tap(flattening, env=SDK_PATH)
    assert flat.returncode == 0, flat.stderr
    assert _records_and_final_state(flat) == _records_and_final_state(sdk)
    # Flattening did apply (multi-select arrays become JSON text), so the SDK path ran.
    assert any(isinstance(r["new_regions"], str) for r in flat.records("account"))


def _run_holding_page_2_until(emu, config: dict[str, t.Any], wanted: str, tmp_path: Path) -> TapRun:
    """Run the tap while the emulator holds account's second page until the tap's stderr shows
    ``wanted`` (a regex): a progress line is then proven by an event, not by timing."""
    import subprocess
    import time

    gate = emu.gate(r"/accounts\?.*skiptoken")
    config_path = write_json(tmp_path, "config.json", config)
    out, err = tmp_path / "out.jsonl", tmp_path / "err.log"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([TAP, "--config", config_path], stdout=stdout, stderr=stderr,
                                env=hermetic_env())
        try:
            assert gate.wait_for(1), "the second page should have been asked for"
            deadline = time.monotonic() + 120  # against a hung run, not a timing assertion
            while not re.search(wanted, err.read_text()) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            gate.open()
            proc.wait(timeout=300)
    run = TapRun(proc.returncode, out.read_text(), err.read_text())
    run.messages = parse_messages(run.stdout)
    return run


def test_progress_lines_and_summary(make_emulator, tmp_path: Path) -> None:
    emu = make_emulator(rows={"account": 2000, "contact": 1, "systemuser": 1})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 250, "progress_interval": 0.05}
    run = _run_holding_page_2_until(emu, config, r"Progress account: ", tmp_path)
    assert run.returncode == 0, run.stderr
    progress = [line for line in run.stderr.splitlines() if "Progress account:" in line]
    assert progress, run.stderr
    assert all("rows/s" in line and "% of ~2000" in line for line in progress)
    summary = run.stderr[run.stderr.index("Run summary"):].splitlines()
    row = next(line.split() for line in summary if line.startswith("account "))
    assert row[:5] == ["account", "CHANGE_TRACKING", "2000", "0", "8"]
    assert row[-1] == "ok"


def test_progress_can_be_turned_off(make_emulator) -> None:
    emu = make_emulator(rows={"account": 300, "contact": 1, "systemuser": 1})
    emu.reset_stats()
    run = run_tap({**emu.tap_config(), "entities": ["account"], "page_size": 100, "progress_interval": 0})
    assert run.returncode == 0, run.stderr
    assert "Progress" not in run.stderr
    assert not any("RetrieveTotalRecordCount" in path for _m, path, _s in emu.request_log())


@pytest.mark.parametrize("progress_interval", [10, 0])
def test_a_windowed_first_load_asks_the_row_count_once(make_emulator, progress_interval: float) -> None:
    """The progress totals' count is the window planning's table size: one request either way."""
    emu = make_emulator(rows={"account": 3000, "contact": 1, "systemuser": 1})
    emu.reset_stats()
    run = run_tap({**emu.tap_config(), "entities": ["account"], "page_size": 500, "first_load_windows": 4,
                   "replication": {"account": "modifiedon"}, "progress_interval": progress_interval})
    assert run.returncode == 0, run.stderr
    assert "time windows concurrently" in run.stderr
    assert len({r["accountid"] for r in run.records("account")}) == 3000
    counts = [path for _m, path, _s in emu.request_log() if "RetrieveTotalRecordCount" in path]
    assert len(counts) == 1, counts


def test_bad_progress_interval_is_one_line(emulator) -> None:
    run = run_tap({**emulator.tap_config(), "progress_interval": -5})
    assert run.returncode == 2
    assert "tap-dynamics: error: setting 'progress_interval' must be a number of seconds" in run.stderr
    assert "Traceback" not in run.stderr


# -- prefetch, in process ---------------------------------------------------------------------


class _Source:
    """A page sequence whose pages are released one by one by the test (no sleeps, no timing)."""

    def __init__(self, name: str, pages: int, fail_at: int | None = None) -> None:
        self.name = name
        self.pages = pages
        self.fail_at = fail_at
        self.fetched = 0
        self.closed = False

    def __call__(self) -> t.Iterator[Page]:
        try:
            for i in range(self.pages):
                if self.fail_at == i:
                    raise RuntimeError(f"{self.name} broke at page {i}")
                self.fetched += 1
                yield Page([{"n": i, "source": self.name}], None, None, None)
        finally:
            self.closed = True


def test_prefetch_keeps_order_and_bounds_buffered_pages() -> None:
    budget = PageBudget(3)
    sources = [_Source(f"s{i}", 25) for i in range(6)]
    seen: dict[int, list[int]] = {}
    for index, page in prefetch_pages(sources, budget, depth=1):
        seen.setdefault(index, []).append(page.records[0]["n"])
        assert budget.held <= 3
    assert all(seen[i] == list(range(25)) for i in range(6))
    assert budget.max_held <= 3
    assert budget.held == 0


def test_prefetch_depth_limits_one_sequence() -> None:
    budget = PageBudget(50)
    source = _Source("only", 40)
    pages = prefetch(source, budget, depth=2)
    first = next(pages)
    assert first.records[0]["n"] == 0
    # Give the feed every chance to run ahead; it may not pass depth + 1 pages past the consumer.
    for _ in range(100):
        threading.Event().wait(0.001)
    assert source.fetched <= 1 + 2 + 1
    assert [p.records[0]["n"] for p in pages] == list(range(1, 40))
    assert budget.max_held <= 2 + 1 + 1


def test_prefetch_raises_errors_in_order_and_returns_the_budget() -> None:
    budget = PageBudget(2)
    source = _Source("bad", 10, fail_at=4)
    got = []
    with pytest.raises(RuntimeError, match="broke at page 4"):
        for page in prefetch(source, budget):
            got.append(page.records[0]["n"])
    assert got == [0, 1, 2, 3]
    assert budget.held == 0


def test_closing_prefetch_early_stops_the_feed_and_returns_the_budget() -> None:
    budget = PageBudget(4)
    source = _Source("long", 1000)
    pages = prefetch(source, budget, depth=1)
    assert next(pages).records[0]["n"] == 0
    pages.close()
    for _ in range(200):
        if source.closed:
            break
        threading.Event().wait(0.01)
    assert source.closed
    assert source.fetched < 1000
    assert budget.held == 0


def test_progress_counts_rows_on_the_sdk_path_too(make_emulator, tmp_path: Path) -> None:
    emu = make_emulator(rows={"account": 1000, "contact": 1, "systemuser": 1})
    config = {**emu.tap_config(), "entities": ["account"], "page_size": 100, "progress_interval": 0.05,
              "stream_maps": {"account": {"name_upper": "name.upper()"}}}
    # The first page's rows are out before the second page is served: a line must count them.
    run = _run_holding_page_2_until(emu, config, r"Progress account: [1-9]\d* rows", tmp_path)
    assert run.returncode == 0, run.stderr
    counts = [int(m) for m in re.findall(r"Progress account: (\d+) rows", run.stderr)]
    assert counts and max(counts) > 0, run.stderr
    assert len(run.records("account")) == 1000


class _Rows(list):
    """A page's rows that a test can hold a weak reference to (plain lists cannot be)."""

    __hash__ = object.__hash__  # identity, for the WeakSet


def test_prefetch_never_keeps_more_pages_alive_than_the_budget() -> None:
    """Counted with weak references, so a page held by any frame (feed, consumer) is counted."""
    budget = PageBudget(3)
    alive: weakref.WeakSet = weakref.WeakSet()
    most = [0]

    def source(name: str) -> t.Callable[[], t.Iterator[Page]]:
        def pages() -> t.Iterator[Page]:
            for i in range(30):
                # This request holds a budget slot and its page does not exist yet.
                most[0] = max(most[0], len(alive))
                assert len(alive) <= budget.pages - 1, (name, i, len(alive))
                rows = _Rows([{"n": i}])
                alive.add(rows)
                pending = [Page(rows, None, None, None)]
                del rows
                yield pending.pop()  # a suspended source keeps nothing (like iter_pages)
        return pages

    got = 0
    for _index, page in prefetch_pages([source(f"s{i}") for i in range(5)], budget, depth=1):
        got += len(page.records)
        del page
    assert got == 150
    assert most[0] >= 1  # the check ran while pages were alive


@pytest.mark.parametrize("method", ["change_tracking", "modifiedon", "full_table"])
def test_a_sync_never_keeps_more_pages_alive_than_the_budget(make_emulator, capfd, method: str) -> None:
    """Every generator between the wire and stdout lets go of a page once it is written.

    The tap runs in-process so that the pages can be watched: ``iter_pages`` (the tap's own
    transport, over real HTTP) is wrapped to hand out weakly referenceable rows and to count, at
    every page request, the pages still alive anywhere in the process.
    """
    from tap_dynamics.tap import TapDynamics

    emu = make_emulator(rows={"account": 900, "contact": 700, "systemuser": 5})
    config = {**emu.tap_config(), "entities": ["account", "contact"], "page_size": 50, "max_concurrency": 2,
              "progress_interval": 0, "replication": {"*": method}, "first_load_windows": 3}
    tap = TapDynamics(config=config, setup_mapper=True)
    client = tap.client
    original = client.iter_pages
    alive: weakref.WeakSet = weakref.WeakSet()
    checks: list[int] = []
    lock = threading.Lock()

    def watched(*args: t.Any, **kwargs: t.Any) -> t.Iterator[Page]:
        pages = original(*args, **kwargs)
        while True:
            with lock:
                checks.append(len(alive))
            try:
                page = next(pages)
            except StopIteration:
                return
            # Pages arrive as raw rows, decoded only by the thread that writes them.
            assert isinstance(page.records, Rows), page.records
            alive.add(page.records)
            pending = [page]
            del page
            yield pending.pop()  # suspended, this wrapper keeps nothing (like iter_pages)

    client.iter_pages = watched
    tap.sync_all()
    out = capfd.readouterr().out
    assert out.count('"type":"RECORD"') == 900 + 700
    # At a page request its budget slot is taken and its page does not exist yet.
    assert checks and max(checks) <= tap.run_context.page_budget.pages - 1, (max(checks), tap.run_context.page_budget.pages)


def test_malloc_arenas_are_capped_unless_the_user_chose(monkeypatch) -> None:
    import platform

    from tap_dynamics.memory import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # the user's MALLOC_ARENA_MAX wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert limit_malloc_arenas() is expected


def test_rows_stay_raw_until_used_then_decode_once_and_check() -> None:
    import msgspec

    from tap_dynamics.engine.formats import ODATA_V4
    from tap_dynamics.errors import ServiceError

    body = ODATA_V4.decoder.decode(b'{"value":[{"id":"a","m":0.1},{"id":"b","m":922337203685477.5807}],'
                                b'"@odata.nextLink":"https://org/next"}')
    assert body.next_link == "https://org/next"
    checked: list[int] = []
    rows = Rows(body.value, lambda decoded: checked.append(len(decoded)))
    assert len(rows) == 2 and checked == []  # counting does not decode
    assert "raw" in repr(rows)
    first = rows.decoded()
    assert first == [{"id": "a", "m": decimal.Decimal("0.1")},
                     {"id": "b", "m": decimal.Decimal("922337203685477.5807")}]
    assert rows.decoded() is first and list(rows) == first and rows[1]["id"] == "b"
    assert checked == [2]  # checked once, on the first decode

    def refuse(decoded: list) -> None:
        raise ServiceError("table t: row 2 is bad")

    bad = Rows(ODATA_V4.decoder.decode(b'{"value":[{"id":"a"},3]}').value, refuse)
    with pytest.raises(ServiceError, match="row 2 is bad"):
        list(bad)
    with pytest.raises(msgspec.DecodeError):  # a cut-off body never becomes a page
        ODATA_V4.decoder.decode(b'{"value":[{"id":"a"},{"id":')


def test_record_path_rows_keep_each_number_as_its_exact_json_text() -> None:
    """The fast path's rows keep non-integer numbers as their JSON text (no Decimal is built or
    formatted), and the RECORD line carries exactly the server's digits; the SDK's path still
    gets Decimals. A bad cursor value is named by its text, not by an object's repr."""
    import msgspec

    from tap_dynamics.engine.fastpath import _ENCODER
    from tap_dynamics.engine.formats import ODATA_V4, check_cursor
    from tap_dynamics.errors import ServiceError

    body = b'{"value":[{"id":"a","m":0.1,"t":0.00000010,"e":1E+2,"big":922337203685477.5807,"n":7,"x":null}]}'
    rows = Rows(ODATA_V4.decoder.decode(body).value, None)
    rows.keep_number_text()
    (row,) = rows.decoded()
    assert all(row[k].__class__ is msgspec.Raw for k in ("m", "t", "e", "big"))
    assert row["n"] == 7 and row["x"] is None and row["id"] == "a"  # integers, nulls, text as before
    assert _ENCODER.encode(row) == b'{"id":"a","m":0.1,"t":0.00000010,"e":1E+2,"big":922337203685477.5807,"n":7,"x":null}'
    # The SDK's path (rows not told otherwise): exact Decimals, as before.
    (sdk_row,) = Rows(ODATA_V4.decoder.decode(body).value, None).decoded()
    assert sdk_row["t"] == decimal.Decimal("1.0E-7") and sdk_row["big"] == decimal.Decimal("922337203685477.5807")
    with pytest.raises(ServiceError, match=r"has v = '1717\.5', which is not a whole number"):
        check_cursor([{"v": 1}, {"v": row["m"].__class__(b"1717.5")}], ("v", int), "t", None)


def test_numbers_in_boolean_columns_come_out_alike_on_both_paths(make_emulator) -> None:
    """A boolean column holding a non-integer number (kept as JSON text on the fast path) comes
    out as the SDK's path writes it: the SDK coerces whole numbers (``value != 0``) but passes
    floats and Decimals through, and so does the fast path."""
    import orjson

    emu = make_emulator(rows={"account": 4, "contact": 0, "systemuser": 1})
    rows = [dict(r) for r in emu.rows("account")[:4]]
    for row, value in zip(rows, (0.0, 1.5, True, 0), strict=True):
        row["donotemail"] = value
    emu.set(serve_body={"/api/data/v9.2/accounts": {"body": orjson.dumps({"value": rows}, default=str).decode()}})
    config = {**emu.tap_config(), "entities": ["account"], "replication": {"account": "full_table"}}
    fast, slow = run_tap(config), run_tap(config, env=SDK_PATH)
    assert fast.returncode == 0, fast.stderr
    assert slow.returncode == 0, slow.stderr
    values = [r["donotemail"] for r in fast.records("account")]
    assert values == [decimal.Decimal("0.0"), decimal.Decimal("1.5"), True, False]
    assert [type(v) for v in values] == [decimal.Decimal, decimal.Decimal, bool, bool]
    # Full-table reads carry a per-run table version; the records are the same.
    fast_rows, slow_rows = ([r["record"] for r in _records_and_final_state(run)[0]] for run in (fast, slow))
    assert fast_rows == slow_rows


def test_tables_in_parallel_change_the_tap_state_only_under_the_output_lock(make_emulator, capfd) -> None:
    """A STATE message serialises (and the SDK deep-copies) every stream's bookmark, so a thread
    adding a bookmark while another writes STATE crashed a 1,000-table sync with "dictionary
    changed size during iteration". Here the bookmarks dict records any change made without the
    lock; racing would need luck to show, the rule does not."""
    from tap_dynamics.engine.run import OUTPUT_LOCK
    from tap_dynamics.tap import TapDynamics

    violations: list[str] = []

    class LockChecked(dict):
        def _check(self, what: str) -> None:
            if not OUTPUT_LOCK._is_owned():  # noqa: SLF001
                violations.append(f"{what} in {threading.current_thread().name}")

        def __setitem__(self, key: str, value: t.Any) -> None:
            self._check(f"set {key}")
            super().__setitem__(key, value)

        def __delitem__(self, key: str) -> None:
            self._check(f"del {key}")
            super().__delitem__(key)

        def pop(self, *args: t.Any) -> t.Any:
            self._check(f"pop {args[0]}")
            return super().pop(*args)

        def setdefault(self, key: str, default: t.Any = None) -> t.Any:
            if key not in self:
                self._check(f"setdefault {key}")
            return super().setdefault(key, default)

    emu = make_emulator(rows={"account": 1, "contact": 1, "systemuser": 3}, clones={"systemuser": 30})
    config = {**emu.tap_config(), "entities": ["systemuser_*"], "max_concurrency": 4, "progress_interval": 0}
    tap = TapDynamics(config=config, setup_mapper=True)
    tap.state["bookmarks"] = LockChecked()
    tap.sync_all()
    out = capfd.readouterr().out
    assert out.count('"type":"RECORD"') == 30 * 3
    assert set(tap.state["bookmarks"]) == {f"systemuser_{i}" for i in range(1, 31)}
    assert violations == []
