"""CLI: run the emulator out of process (demo, benchmarks).

    python -m tests.emulator --port 0 --rows account=200000 --rows contact=1000 \
        --latency-ms 300 --seed 42

Prints one JSON line with the connection details to stdout, serves until SIGTERM/SIGINT and
prints request/page statistics to stderr on exit.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from . import DEFAULT_ROWS, Emulator


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rows", action="append", default=[], metavar="TABLE=N",
                    help="rows per table (repeatable); unspecified tables use the defaults")
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--latency-scope", choices=("all", "pages"), default="all",
                    help="apply --latency-ms to every request (all) or to data pages only")
    ap.add_argument("--clone", action="append", default=[], metavar="TABLE=N",
                    help="also serve TABLE_1..TABLE_N, copies of TABLE's rows (repeatable)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--token-lifetime", type=int, default=3600)
    ap.add_argument("--tables", type=int, default=0, metavar="N",
                    help="add N synthetic ~150-column tables (org-size mode, e.g. --tables 1000)")
    args = ap.parse_args(argv)
    rows = dict(DEFAULT_ROWS)
    for spec in args.rows:
        table, _, n = spec.partition("=")
        rows[table.strip()] = int(n)
    clones = {}
    for spec in args.clone:
        table, _, n = spec.partition("=")
        clones[table.strip()] = int(n)
    emu = Emulator(rows=rows, seed=args.seed, latency_ms=args.latency_ms,
                   token_lifetime=args.token_lifetime, port=args.port,
                   org_tables=args.tables, clones=clones,
                   latency_scope=args.latency_scope).start()
    info = {"base_url": emu.base_url, "org_url": emu.org_url, "authority_host": emu.authority_host,
            "ca_bundle": emu.ca_path, "tenant_id": emu.tenant_id, "client_id": emu.client_id,
            "client_secret": emu.client_secret, "control_url": emu.org_url + "/_emulator/",
            "rows": rows}
    print(json.dumps(info), flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    stats = emu.stats()
    emu.stop()
    print(json.dumps({"emulator_stats": stats}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
