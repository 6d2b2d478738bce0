"""CLI: run the emulator out of process (demo, benchmarks).

    python -m emulator --port 0 --rows account=200000 --rows contact=1000 \
        --latency-ms 300 --seed 42
    python -m emulator --onprem --onprem-http      # on-premises server, NTLM, plain http
    python -m emulator --onprem --onprem-keytab http.keytab   # Kerberos only (HTTP/localhost)
    python -m emulator --graph --graph-objects users=1000   # an Office 365 tenant (Microsoft Graph)

Prints one JSON line with the connection details to stdout, serves until SIGTERM/SIGINT and
prints request/page statistics to stderr on exit.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from . import DEFAULT_ROWS, Emulator, OnPremEmulator
from .core.faults import DEFAULTS as _CORE_FAULTS
from .graph import GraphEmulator


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emulator", description=__doc__,
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
    faults = ap.add_argument_group("fault injection (see emulator/core/faults.py and emulator/dataverse/faults.py)")
    faults.add_argument("--fault-seed", type=int, default=0)
    for name in ("throttle", "error-5xx", "drop", "truncate", "html", "malformed"):
        faults.add_argument(f"--{name}-rate", type=float, default=0.0, metavar="P",
                            help=f"share of Web API requests hit by the {name} fault (0-1)")
    faults.add_argument("--retry-after", type=float, default=1, help="Retry-After seconds of 429s")
    faults.add_argument("--throttle-code", action="append", default=[],
                        help="service-protection code(s) for 429s (default: all three)")
    faults.add_argument("--page-size-limit", type=int, default=None,
                        help="pages larger than this time out (or error, see --fault)")
    faults.add_argument("--token-revoke-after", type=float, default=None, metavar="SECONDS",
                        help="reject bearer tokens older than this with 401")
    faults.add_argument("--forbidden-table", action="append", default=[],
                        help="a table whose rows always answer 403 (repeatable)")
    faults.add_argument("--fault", action="append", default=[], metavar="KNOB=JSON",
                        help="any other fault knob, value as JSON (repeatable)")
    onprem = ap.add_argument_group("on-premises server (see emulator/onprem/)")
    onprem.add_argument("--onprem", action="store_true",
                        help="serve an on-premises server: NTLM sign-in, /{org}/api/data/v8.0-v9.1")
    onprem.add_argument("--onprem-http", action="store_true", help="on-premises over plain http://")
    onprem.add_argument("--onprem-keytab", metavar="PATH",
                        help="Kerberos sign-in (NTLM off): tickets for HTTP/localhost verified with this "
                             "keytab, issued by your KDC")
    onprem.add_argument("--onprem-version", default="9.1",
                        choices=("5.0", "6.0", "6.1", "7.0", "7.1", "8.0", "8.1", "8.2", "9.0", "9.1"),
                        help="the server's newest Web API version (5.0-7.1: CRM 2011-2015, no Web API, "
                             "only OrganizationData.svc)")
    finops = ap.add_argument_group("Finance & Operations environment (see emulator/finops/)")
    finops.add_argument("--finops", action="store_true",
                        help="serve an F&O environment (/data) instead; --rows then names its entity sets "
                             "(CustomersV3=N, SalesOrderHeadersV2=N)")
    finops.add_argument("--finops-entities", type=int, default=0, metavar="N",
                        help="add N synthetic ~40-property entities to $metadata (discovery benchmark)")
    graph = ap.add_argument_group("Office 365 tenant (Microsoft Graph, see emulator/graph/)")
    graph.add_argument("--graph", action="store_true", help="serve Entra ID + Microsoft Graph v1.0 instead")
    graph.add_argument("--graph-objects", action="append", default=[], metavar="COLLECTION=N",
                       help="objects per directory collection, e.g. users=1000 (repeatable)")
    graph.add_argument("--graph-events-per-user", type=int, default=5)
    graph.add_argument("--graph-no-mailbox-every", type=int, default=0, metavar="N",
                       help="every N-th user has no mailbox (0: all have one)")
    args = ap.parse_args(argv)
    knobs = {"fault_seed": args.fault_seed, "retry_after": args.retry_after,
             "page_size_limit": args.page_size_limit,
             "token_revoke_after_s": args.token_revoke_after,
             "forbidden_tables": args.forbidden_table}
    for name in ("throttle", "error_5xx", "drop", "truncate", "html", "malformed"):
        knobs[f"{name}_rate"] = getattr(args, f"{name}_rate")
    if args.throttle_code:
        knobs["throttle_codes"] = args.throttle_code
    for spec in args.fault:
        key, _, value = spec.partition("=")
        knobs[key.strip()] = json.loads(value)
    if args.finops:
        return _serve_finops(args, knobs)
    rows = dict(DEFAULT_ROWS)
    for spec in args.rows:
        table, _, n = spec.partition("=")
        rows[table.strip()] = int(n)
    clones = {}
    for spec in args.clone:
        table, _, n = spec.partition("=")
        clones[table.strip()] = int(n)
    if args.graph:
        return _serve_graph(args, knobs)
    if args.onprem:
        emu = OnPremEmulator(rows=rows, seed=args.seed, latency_ms=args.latency_ms, port=args.port,
                             org_tables=args.tables, clones=clones, latency_scope=args.latency_scope,
                             tls=not args.onprem_http, server_version=args.onprem_version,
                             auth="kerberos" if args.onprem_keytab else "ntlm", keytab=args.onprem_keytab,
                             **knobs).start()
        info = {"org_url": emu.org_url, "tap_config": emu.tap_config(),
                "control_url": emu.server_url + "/_emulator/", "rows": rows}
        return _serve(emu, info)
    emu = Emulator(rows=rows, seed=args.seed, latency_ms=args.latency_ms,
                   token_lifetime=args.token_lifetime, port=args.port,
                   org_tables=args.tables, clones=clones,
                   latency_scope=args.latency_scope, **knobs).start()
    info = {"base_url": emu.base_url, "org_url": emu.org_url, "authority_host": emu.authority_host,
            "ca_bundle": emu.ca_path, "tenant_id": emu.tenant_id, "client_id": emu.client_id,
            "client_secret": emu.client_secret, "control_url": emu.org_url + "/_emulator/",
            "rows": rows}
    return _serve(emu, info)


def _serve_finops(args: argparse.Namespace, knobs: dict) -> int:
    """An F&O environment: the faults every service shares, its own rows and entities."""
    from .finops import DEFAULT_ROWS as FINOPS_ROWS
    from .finops import FinOpsEmulator

    rows = dict(FINOPS_ROWS)
    for spec in args.rows:
        entity_set, _, n = spec.partition("=")
        rows[entity_set.strip()] = int(n)
    shared = {k: v for k, v in knobs.items() if k in _CORE_FAULTS or k in ("forbidden_entities", "failing_entities")}
    emu = FinOpsEmulator(rows=rows, seed=args.seed, big=args.finops_entities, latency_ms=args.latency_ms,
                         token_lifetime=args.token_lifetime, port=args.port, latency_scope=args.latency_scope,
                         **shared).start()
    config = emu.tap_config()
    info = {"base_url": emu.env_url, "org_url": emu.env_url, "authority_host": emu.authority_host,
            "ca_bundle": emu.ca_path, "tenant_id": emu.tenant_id, "client_id": emu.client_id,
            "client_secret": emu.client_secret, "control_url": emu.env_url + "/_emulator/",
            "edition": config["edition"], "rows": rows}
    return _serve(emu, info)


def _serve_graph(args: argparse.Namespace, knobs: dict) -> int:
    """An Office 365 tenant: the Dataverse-only knobs are dropped, the generic ones kept."""
    counts = {}
    for spec in args.graph_objects:
        collection, _, n = spec.partition("=")
        counts[collection.strip()] = int(n)
    for name in ("page_size_limit", "forbidden_tables", "throttle_codes"):
        knobs.pop(name, None)
    emu = GraphEmulator(counts=counts, seed=args.seed, events_per_user=args.graph_events_per_user,
                        no_mailbox_every=args.graph_no_mailbox_every, latency_ms=args.latency_ms,
                        token_lifetime=args.token_lifetime, port=args.port,
                        latency_scope=args.latency_scope, **knobs).start()
    info = {"base_url": emu.server_url, "org_url": emu.graph_url, "graph_url": emu.graph_url,
            "authority_host": emu.authority_host, "ca_bundle": emu.ca_path, "tenant_id": emu.tenant_id,
            "client_id": emu.client_id, "client_secret": emu.client_secret,
            "control_url": emu.server_url + "/_emulator/", "counts": emu.counts}
    return _serve(emu, info)


def _serve(emu: Any, info: dict) -> int:
    """Print the connection details, serve until SIGTERM/SIGINT, then print the statistics."""
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
