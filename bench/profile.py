"""Profile the record path: one full sync of ``account`` against the emulator, every thread.

    python -m bench.profile [--rows N] [--top N] [--sort tottime|cumulative] [--out FILE] [--finops]

Starts the emulator as ``make bench`` does (its own process, no latency), discovers, then runs
the tap in a child process under cProfile with one profiler per thread, timed by thread CPU time (so a loaded
machine or a slow emulator does not show up as the tap's cost) (the prefetch feeds read
and check pages on their own threads; cProfile alone sees only the main thread), merges them and
prints the top functions. The tap's stdout goes to /dev/null, as in the benchmark.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.run import PY, SCENARIOS, EmulatorProcess, Scenario, discover, write_config


def _child(out: str, argv: list[str]) -> None:
    """Run the tap in this process with a profiler in every thread; dump the merged stats."""
    profiles: list[cProfile.Profile] = []
    start = threading.Thread.start

    def start_profiled(self: threading.Thread) -> None:
        run = self.run  # the subclass's own run (prefetch feeds override it)

        def profiled() -> None:
            profile = cProfile.Profile(time.thread_time)
            profiles.append(profile)
            profile.enable()
            try:
                run()
            finally:
                profile.disable()

        self.run = profiled  # type: ignore[method-assign]
        start(self)

    threading.Thread.start = start_profiled  # type: ignore[method-assign]
    from tap_dynamics.tap import cli

    sys.argv = ["tap-dynamics", *argv]
    main = cProfile.Profile(time.thread_time)
    main.enable()
    try:
        cli()
    except SystemExit:
        pass
    finally:
        main.disable()
    stats = pstats.Stats(main)
    for profile in profiles:
        stats.add(profile)
    stats.dump_stats(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--out", default=None, help="keep the merged pstats file here")
    ap.add_argument("--finops", action="store_true", help="sync F&O's CustomersV3 (3 companies) instead")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1:])
        return 0
    if args.finops:  # F&O's CustomersV3: one chain per company
        base = SCENARIOS["finops-0ms"]
        scenario = Scenario("profile", base.description, {"CustomersV3": args.rows}, ["CustomersV3"], 0,
                            finops=True)
    else:
        base = SCENARIOS["account-0ms"]
        scenario = Scenario("profile", base.description, {"account": args.rows}, ["account"], 0)
    emu = EmulatorProcess(scenario)
    with tempfile.TemporaryDirectory(prefix="tap-dynamics-profile-") as tmp:
        workdir = Path(tmp)
        config_path = write_config(emu.info, scenario.entities, workdir)
        try:
            discover(str(config_path), workdir)
            out = args.out or str(workdir / "tap.pstats")
            tap_args = ["--config", str(config_path), "--catalog", str(workdir / "catalog.json")]
            with open(os.devnull, "wb") as devnull:
                subprocess.run(  # noqa: S603
                    [PY, "-m", "bench.profile", "--child", out, *tap_args],
                    stdout=devnull, stderr=subprocess.DEVNULL, check=True,
                )
        finally:
            emu.stop()
        stats = pstats.Stats(out)
        stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
