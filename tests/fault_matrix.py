"""The fault-injection matrix: a full sync of a 20k-row table through each fault, and all at once.

Shared by ``tests/test_faults.py`` (which asserts) and ``python -m bench.faults`` (which prints
the table shown in the README). Every scenario runs the real tap process against one emulator
whose fault knobs are switched per scenario, then checks the output against the emulator's own
rows. Faults are seeded, so a run is reproducible.
"""

from __future__ import annotations


import re
import time
import typing as t
from dataclasses import dataclass, field

from emulator import FAULT_DEFAULTS, Emulator
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
    Scenario("all of the above at once", "5% each",
             {"throttle_rate": 0.05, "throttle_codes": ALL_THROTTLE_CODES, "retry_after": 1,
              "error_5xx_rate": 0.05, "drop_rate": 0.05, "truncate_rate": 0.05, "html_rate": 0.05,
              "malformed_rate": 0.05, "page_size_limit": 600, "page_size_limit_mode": "error",
              "token_revoke_after_s": 2, "token_lifetime": 305,
              "ratelimit_burst_remaining": 195},
             env={"TAP_DYNAMICS_LOGLEVEL": "DEBUG"}),
]


@dataclass
class Result:
    """What one scenario did, and everything the assertions need."""

    scenario: Scenario
    run: TapRun
    truth: dict[str, dict[str, dict[str, t.Any]]]
    got: dict[str, dict[str, dict[str, t.Any]]]
    emitted: int
    faults: dict[str, int]
    retry_after_gaps: list[tuple[float, float]]
    max_in_flight: int
    tap_retries: int
    seconds: float
    secrets: list[str]
    timeline: list[tuple[float, str]] = field(default_factory=list)
    token_requests: int = 0

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
        return self.emitted - sum(len(rows) for rows in self.got.values())

    @property
    def leaked(self) -> list[str]:
        """Secrets (client secret, issued tokens) that appear in any captured output."""
        text = self.run.stdout + self.run.stderr
        return [s[:12] + "…" for s in self.secrets if s and s in text]


PRIMARY_KEYS = {"account": "accountid", "contact": "contactid", "systemuser": "systemuserid"}


def start_emulator(seed: int = 7) -> Emulator:
    """The one emulator the whole matrix runs against."""
    return Emulator(rows=dict(ROWS), fault_seed=seed).start()


def run_scenario(emu: Emulator, scenario: Scenario) -> Result:
    """Switch the scenario's faults on, run a full sync as a real process, collect the evidence."""
    emu.set(**{**FAULT_DEFAULTS, "fault_seed": emu.knobs["fault_seed"], "token_lifetime": 3600,
               "latency_ms": 0})
    emu.entra.token_lifetime = 3600
    emu.set(**scenario.knobs)
    emu.reset_stats()
    emu.issued_tokens.clear()
    config = {
        **emu.tap_config(),
        "entities": list(ROWS),
        "page_size": PAGE_SIZE,
        "max_concurrency": MAX_CONCURRENCY,
        **scenario.config,
    }
    started = time.monotonic()
    run = run_tap(config, env=scenario.env)
    seconds = time.monotonic() - started
    stats = emu.stats()
    truth = {
        stream: {r[pk]: normalise(r) for r in emu.rows(stream)} for stream, pk in PRIMARY_KEYS.items()
    }
    got: dict[str, dict[str, dict[str, t.Any]]] = {}
    emitted = 0
    for stream, pk in PRIMARY_KEYS.items():
        records = run.records(stream)
        emitted += len(records)
        got[stream] = {r[pk]: normalise(r) for r in records}
    match = re.search(r"Run summary \((\d+) requests, (\d+) retries", run.stderr)
    return Result(
        scenario=scenario,
        run=run,
        truth=truth,
        got=got,
        emitted=emitted,
        faults=emu.faults.counts(),
        retry_after_gaps=emu.faults.retry_after_gaps(),
        max_in_flight=stats["max_in_flight"],
        tap_retries=int(match.group(2)) if match else -1,
        seconds=seconds,
        secrets=[emu.client_secret, *emu.issued_tokens],
        timeline=list(emu.faults.timeline),
        token_requests=stats["token_requests"],
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
