"""The fault-injection table: a full 20k-row sync through each fault, and through all at once.

    .venv/bin/python -m bench.faults            # the whole matrix, one scenario after another
    .venv/bin/python -m bench.faults 429 HTML   # only scenarios whose name contains a word

Prints a markdown table (fault, rate, faults injected, tap retries, rows lost/corrupted, the
highest number of requests in flight against the cap, exit code, seconds) — the table shown in
the README. The scenarios and checks are the ones ``tests/test_faults.py`` asserts
(``tests/fault_matrix.py``); here they run one at a time so that the times mean something.
"""

from __future__ import annotations

import sys

from tests.fault_matrix import SCENARIOS, start_emulator, run_scenario, table


def main(argv: list[str]) -> int:
    wanted = [s for s in SCENARIOS if not argv or any(word.lower() in s.name.lower() for word in argv)]
    emu = start_emulator()
    results = []
    try:
        for scenario in wanted:
            result = run_scenario(emu, scenario)
            results.append(result)
            print(f"  {scenario.name}: exit {result.run.returncode}, {result.seconds:.1f} s", file=sys.stderr, flush=True)
    finally:
        emu.stop()
    print(table(results))
    bad = [r for r in results if r.run.returncode != r.scenario.expect_exit or r.lost or r.corrupted or r.leaked]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
