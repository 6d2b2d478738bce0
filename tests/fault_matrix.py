"""The fault-injection matrix: a sync of a 20k-row table through each fault, and all at once.

Shared by ``tests/test_faults.py`` (which asserts) and ``python -m bench.faults`` (which prints
the table shown in the README). Every scenario runs the real tap process against one emulator
whose fault knobs are switched per scenario, then checks the output against the emulator's own
rows. Faults are seeded, so a run is reproducible.

Each replication method goes through the faults: change tracking (a first read, and — for
``delta`` scenarios — a delta read after a clean first sync and changes in the org), cursors
read in first-load time windows, ``versionnumber``, full table. A delta scenario's output is
applied to the clean sync's (upserts, deletes) like a warehouse would, and the result must
equal the org. One scenario injects more faults in a row than the tap's attempt budget, to
prove it gives up cleanly (``expect_exit`` 4, the table listed, its state untouched).
"""

from __future__ import annotations


import re
import time
import typing as t
from dataclasses import dataclass, field

from tap_dynamics.client import DataverseClient
from tests.emulator import Emulator
from tests.emulator.faults import DEFAULTS as FAULT_DEFAULTS
from tests.taprun import TapRun, normalise, run_tap

ROWS = {"account": 20000, "contact": 300, "systemuser": 20}
PAGE_SIZE = 1000
MAX_CONCURRENCY = 2  # discovery reads three tables' metadata in parallel: the cap is exercised

ALL_THROTTLE_CODES = ["0x80072322", "0x80072321", "0x80072326"]


@dataclass
class Scenario:
    """One row of the matrix: emulator fault knobs (and tap settings) for one full sync."""

    name: str
    rate: str
    knobs: dict[str, t.Any]
    config: dict[str, t.Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    delta: bool = False  # a clean first sync and changes in the org come first; faults hit the next run
    expect_exit: int = 0


MIX = {"throttle_rate": 0.05, "throttle_codes": ALL_THROTTLE_CODES, "retry_after": 1,
       "error_5xx_rate": 0.05, "drop_rate": 0.05, "truncate_rate": 0.05, "html_rate": 0.05,
       "malformed_rate": 0.05, "page_size_limit": 600, "page_size_limit_mode": "error",
       "token_revoke_after_s": 2, "token_lifetime": 305, "ratelimit_burst_remaining": 195}
GIVE_UP = "503 on every attempt of account: the tap gives up"

SCENARIOS: list[Scenario] = [
    Scenario("none", "-", {}),
    Scenario("429, all three service-protection codes", "15%, Retry-After 1 s",
             {"throttle_rate": 0.15, "throttle_codes": ALL_THROTTLE_CODES, "retry_after": 1}),
    Scenario("502/503/504", "15%", {"error_5xx_rate": 0.15}),
    Scenario("connection dropped mid-body", "15%", {"drop_rate": 0.15}),
    Scenario("truncated body", "15%", {"truncate_rate": 0.15}),
    Scenario("proxy HTML page (200 text/html)", "15%", {"html_rate": 0.15}),
    Scenario("malformed JSON", "15%", {"malformed_rate": 0.15}),
    Scenario("page > 600 rows times out", "every big page",
             {"page_size_limit": 600, "page_size_limit_mode": "timeout", "page_size_limit_delay_s": 3},
             {"request_timeout": 1}),
    Scenario("page > 600 rows: response too large", "every big page",
             {"page_size_limit": 600, "page_size_limit_mode": "error"}),
    Scenario("tokens revoked after 2 s (100 ms latency)", "every token",
             {"token_revoke_after_s": 2, "latency_ms": 100}),
    Scenario("short token lifetime (302 s: MSAL renews every 2 s)", "every token",
             {"token_lifetime": 302, "latency_ms": 100}),
    Scenario("low rate-limit budget headers", "every response",
             {"ratelimit_burst_remaining": 190, "ratelimit_time_remaining": 59}),
    Scenario("all of the above at once", "5% each", MIX, env={"TAP_DYNAMICS_LOGLEVEL": "DEBUG"}),
    Scenario("all at once: change tracking delta (upserts, deletes)", "5% each", MIX, delta=True),
    Scenario("all at once: modifiedon cursor, first-load windows", "5% each", MIX,
             {"replication": {"account": "modifiedon", "contact": "modifiedon"}}),
    Scenario("all at once: versionnumber cursor", "5% each", MIX, {"replication": {"*": "versionnumber"}}),
    Scenario("all at once: full table", "5% each", MIX, {"replication": {"*": "full_table"}}),
    # One more 503 in a row than the tap's attempt budget, on account only: it must give up on
    # that table (exit 4, named in the summary) without touching its state; the others sync.
    Scenario(GIVE_UP, f"{DataverseClient.MAX_ATTEMPTS + 1} in a row",
             {"fault_tables": ["account"], "error_5xx_rate": 1.0, "error_5xx_statuses": [503],
              "error_5xx_retry_after": 0, "fault_max_per_request": DataverseClient.MAX_ATTEMPTS + 1},
             delta=True, expect_exit=4),
]


@dataclass
class Result:
    """What one scenario did, and everything the assertions need."""

    scenario: Scenario
    run: TapRun
    truth: dict[str, dict[str, dict[str, t.Any]]]
    got: dict[str, dict[str, dict[str, t.Any]]]  # the warehouse: (clean sync +) this run's output applied
    emitted: int  # records this run wrote
    unique: int  # distinct (table, key) among them
    faults: dict[str, int]
    retry_after_gaps: list[tuple[float, float]]
    max_in_flight: int
    tap_retries: int
    seconds: float
    secrets: list[str]
    timeline: list[tuple[float, str]] = field(default_factory=list)
    token_requests: int = 0
    state_in: dict[str, t.Any] | None = None  # the state this run started from (delta scenarios)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # the emulator's request log

    @property
    def waited(self) -> str:
        """Seconds the tap waited on Retry-After and on proactive pacing (from its run summary)."""
        match = re.search(r"retries, ([\d.]+) s throttled, ([\d.]+) s paced", self.run.stderr)
        return f"{match.group(1)} / {match.group(2)}" if match else "?"

    @property
    def lost(self) -> int:
        """Rows of the emulator's truth missing from the output."""
        return sum(len(set(self.truth[s]) - set(self.got.get(s, {}))) for s in self.truth)

    @property
    def extra(self) -> int:
        """Rows in the output that the org does not have (e.g. a delete that was not applied)."""
        return sum(len(set(self.got.get(s, {})) - set(self.truth[s])) for s in self.truth)

    @property
    def corrupted(self) -> int:
        """Rows present in the output but different from the truth."""
        return sum(
            1
            for s, rows in self.truth.items()
            for pk, row in rows.items()
            if pk in self.got.get(s, {}) and self.got[s][pk] != row
        )

    @property
    def duplicates(self) -> int:
        """Rows emitted more than once."""
        return self.emitted - self.unique

    @property
    def leaked(self) -> list[str]:
        """Secrets (client secret, issued tokens) that appear in any captured output."""
        text = self.run.stdout + self.run.stderr
        return [s[:12] + "…" for s in self.secrets if s and s in text]


PRIMARY_KEYS = {"account": "accountid", "contact": "contactid", "systemuser": "systemuserid"}


def start_emulator(seed: int = 7) -> Emulator:
    """The one emulator the whole matrix runs against."""
    return Emulator(rows=dict(ROWS), fault_seed=seed).start()


def change_org(emu: Emulator) -> None:
    """Inserts, updates and deletes in the change-tracked tables (between two syncs)."""
    emu.advance_clock(300)
    for table, pk, column, count in (("account", "accountid", "name", 40), ("contact", "contactid", "jobtitle", 5)):
        rows = emu.rows(table)
        for i in range(count):
            emu.insert(table, {column: f"added between syncs {i}"})
        for row in rows[100 : 100 + count]:
            emu.update(table, row[pk], {column: "changed between syncs"})
        for row in rows[200 : 200 + count // 2]:
            emu.delete(table, row[pk])


def apply(warehouse: dict[str, dict[str, dict[str, t.Any]]], run: TapRun) -> tuple[int, int]:
    """Apply a run's records to ``warehouse`` (upserts; ``_sdc_deleted_at`` deletes) as a target
    would; return (records, distinct keys) written by the run."""
    emitted, keys = 0, set()
    for stream, pk in PRIMARY_KEYS.items():
        rows = warehouse.setdefault(stream, {})
        for record in run.records(stream):
            emitted += 1
            keys.add((stream, record[pk]))
            if record.get("_sdc_deleted_at") is not None:
                rows.pop(record[pk], None)
            else:
                rows[record[pk]] = normalise({k: v for k, v in record.items() if k != "_sdc_deleted_at"})
    return emitted, len(keys)


def run_scenario(emu: Emulator, scenario: Scenario) -> Result:
    """Switch the scenario's faults on, run a sync as a real process, collect the evidence."""
    emu.set(**{**FAULT_DEFAULTS, "fault_seed": emu.knobs["fault_seed"], "token_lifetime": 3600,
               "latency_ms": 0})
    emu.entra.token_lifetime = 3600
    config = {
        **emu.tap_config(),
        "entities": list(ROWS),
        "page_size": PAGE_SIZE,
        "max_concurrency": MAX_CONCURRENCY,
        **scenario.config,
    }
    warehouse: dict[str, dict[str, dict[str, t.Any]]] = {}
    state_in = None
    if scenario.delta:
        clean = run_tap(config)
        assert clean.returncode == 0, clean.stderr[-3000:]
        apply(warehouse, clean)
        state_in = clean.last_state
        change_org(emu)
    emu.set(**scenario.knobs)
    emu.reset_stats()
    emu.issued_tokens.clear()
    started = time.monotonic()
    run = run_tap(config, state=state_in, env=scenario.env)
    seconds = time.monotonic() - started
    stats = emu.stats()
    truth = {
        stream: {r[pk]: normalise(r) for r in emu.rows(stream)} for stream, pk in PRIMARY_KEYS.items()
    }
    emitted, unique = apply(warehouse, run)
    match = re.search(r"Run summary \((\d+) requests, (\d+) retries", run.stderr)
    return Result(
        scenario=scenario,
        run=run,
        truth=truth,
        got=warehouse,
        emitted=emitted,
        unique=unique,
        faults=emu.faults.counts(),
        retry_after_gaps=emu.faults.retry_after_gaps(),
        max_in_flight=stats["max_in_flight"],
        tap_retries=int(match.group(2)) if match else -1,
        seconds=seconds,
        secrets=[emu.client_secret, *emu.issued_tokens],
        timeline=list(emu.faults.timeline),
        token_requests=stats["token_requests"],
        state_in=state_in,
        requests=emu.request_log(),
    )


def table(results: list[Result]) -> str:
    """The README's markdown table of a matrix run."""
    lines = [
        "| fault | rate | faults injected | tap retries | throttled / paced (s) | rows lost | "
        "rows corrupted | max in flight | exit | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        injected = sum(r.faults.values())
        lines.append(
            f"| {r.scenario.name} | {r.scenario.rate} | {injected} | {r.tap_retries} | {r.waited} | {r.lost} | "
            f"{r.corrupted} | {r.max_in_flight}/{MAX_CONCURRENCY} | {r.run.returncode} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)
