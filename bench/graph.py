"""Benchmark: tap-dynamics against an emulated Office 365 tenant (Microsoft Graph).

    python -m bench.graph [--users N] [--mailboxes N] [--runs N]      (make bench-graph)

* ``users-999``: the ``users`` stream read in full at 999 per page (``$top=999``, the most Graph
  allows) next to the floors measured in the same run, as for Dataverse: (a) a bare requests +
  orjson client following the same pages, (b) the same writing each row as a JSON line.
* ``events-300ms``: the ``events`` stream for N mailboxes at 300 ms per page: wall time against
  the bound pages x 300 ms / max_concurrency, and the caps measured by the emulator — requests in
  flight at once over everything (≤ max_concurrency) and per mailbox (≤ 4, Outlook's limit).

Each tap run and each floor is its own process (CPU and peak RSS belong to it); the emulator runs
in another (``python -m emulator --graph``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import requests

from bench.run import PY, TAP, Measure, print_table, summarize, timed

MAX_CONCURRENCY = 8


class Tenant:
    """``python -m emulator --graph`` in its own process, with its control API."""

    def __init__(self, users: int, events_per_user: int, latency_ms: float) -> None:
        argv = [PY, "-m", "emulator", "--graph", "--graph-objects", f"users={users}", "--graph-objects", "groups=10",
                "--graph-events-per-user", str(events_per_user), "--latency-ms", str(latency_ms),
                "--latency-scope", "pages"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # noqa: S603
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise SystemExit("the emulator did not start")
        self.info = json.loads(line)

    def get(self, path: str) -> dict:
        response = requests.get(self.info["control_url"] + path, verify=self.info["ca_bundle"], timeout=60)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict | None = None) -> dict:
        response = requests.post(self.info["control_url"] + path, json=body or {}, verify=self.info["ca_bundle"], timeout=60)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def config(self, workdir: Path, **more: object) -> Path:
        info = self.info
        config = {"edition": "Office365", "url": info["graph_url"], "tenant_id": info["tenant_id"],
                  "client_id": info["client_id"], "client_secret": info["client_secret"],
                  "authority_host": info["authority_host"], "ca_bundle": info["ca_bundle"], **more}
        path = workdir / f"config-{len(list(workdir.glob('config-*')))}.json"
        path.write_text(json.dumps(config))
        return path


def measured(tenant: Tenant, argv: list[str], workdir: Path, label: str) -> tuple[Measure, dict]:
    tenant.post("stats/reset")
    log = str(workdir / f"{label.split()[0]}.stderr")
    wall, cpu, rss, code = timed(argv, log)
    if code != 0:
        raise SystemExit(f"{label} failed with exit code {code}:\n{Path(log).read_text(errors='replace')[-3000:]}")
    stats = tenant.get("stats")
    span = stats.get("data_seconds") or 0.0
    in_flight = stats.get("in_flight_seconds", 0.0) / span if span else 0.0
    return Measure(wall, cpu, rss, stats["data_pages"], stats["rows_served"], in_flight), stats


def users_999(users: int, runs: int, workdir: Path) -> dict:
    print(f"\n== users-999: {users:,} users read in full at 999 per page (median of {runs} run(s))", flush=True)
    tenant = Tenant(users, 0, 0)
    try:
        config = tenant.config(workdir, entities=["users"], replication={"users": "full_table"}, page_size=999)
        tap = [*TAP, "--config", str(config)]
        discovered = subprocess.run([*tap, "--discover"], capture_output=True, check=True)  # noqa: S603
        catalog = json.loads(discovered.stdout)
        columns = ",".join(c for c in catalog["streams"][0]["schema"]["properties"] if not c.startswith("_sdc"))
        (workdir / "info.json").write_text(json.dumps(tenant.info))
        floor = [PY, "-m", "bench.graph", "floor", "--info", str(workdir / "info.json"), "--select", columns]
        results: dict[str, list[Measure]] = {}
        measured(tenant, floor, workdir, "warm-up")
        for _ in range(runs):
            for label, argv in (("tap", tap), ("floor (a) fetch+parse", floor), ("floor (b) + orjson lines", [*floor, "--write"])):
                results.setdefault(label, []).append(measured(tenant, argv, workdir, label)[0])
        table = [summarize(label, ms) for label, ms in results.items()]
        print_table(table)
        by = {r["label"]: r for r in table}
        ratios = {"tap / floor (b) rows/s": by["tap"]["rows_per_s"] / by["floor (b) + orjson lines"]["rows_per_s"],
                  "tap / floor (a) rows/s": by["tap"]["rows_per_s"] / by["floor (a) fetch+parse"]["rows_per_s"]}
        for key, value in ratios.items():
            print(f"  {key}: {value:.2f}")
        return {"scenario": "users-999", "results": table, "ratios": ratios}
    finally:
        tenant.stop()


def events_300ms(mailboxes: int, workdir: Path) -> dict:
    print(f"\n== events-300ms: {mailboxes:,} mailboxes, 300 ms per page, max_concurrency {MAX_CONCURRENCY}", flush=True)
    tenant = Tenant(mailboxes, 12, 300)
    try:
        config = tenant.config(workdir, entities=["events"], page_size=10, max_concurrency=MAX_CONCURRENCY)
        measure, stats = measured(tenant, [*TAP, "--config", str(config)], workdir, "tap events")
        graph = tenant.get("graph/stats")
        bound = measure.pages * 0.3 / MAX_CONCURRENCY
        row = {"mailboxes": mailboxes, "events": measure.rows, "pages": measure.pages, "wall_s": round(measure.wall, 1),
               "bound_s": round(bound, 1), "wall / bound": round(measure.wall / bound, 2),
               "cpu_s": round(measure.cpu, 2), "rss_mb": round(measure.rss_mb),
               "in_flight_mean": round(measure.in_flight, 1), "max_in_flight": stats["max_in_flight"],
               "max_per_mailbox": graph["max_per_mailbox"]}
        for key, value in row.items():
            print(f"  {key}: {value}")
        assert stats["max_in_flight"] <= MAX_CONCURRENCY and graph["max_per_mailbox"] <= 4, row
        return {"scenario": "events-300ms", "results": row}
    finally:
        tenant.stop()


def floor(argv: list[str]) -> int:
    """The floor client: ``/users?$select=…&$top=999`` following next links, parsed by orjson."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--info", required=True)
    ap.add_argument("--select", required=True)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    info = json.loads(Path(args.info).read_text())
    answer = requests.post(f"{info['authority_host']}/{info['tenant_id']}/oauth2/v2.0/token", timeout=60,
                           verify=info["ca_bundle"], data={"grant_type": "client_credentials", "client_id": info["client_id"],
                                                            "client_secret": info["client_secret"],
                                                            "scope": f"{info['graph_url']}/.default"})
    answer.raise_for_status()
    session = requests.Session()
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}", "Accept": "application/json"}
    url: str | None = f"{info['graph_url']}/v1.0/users?$select={args.select}&$top=999"
    out = sys.stdout.buffer
    while url:
        response = session.get(url, headers=headers, verify=info["ca_bundle"], timeout=600)
        response.raise_for_status()
        payload = orjson.loads(response.content)
        if args.write:
            for record in payload["value"]:
                out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        url = payload.get("@odata.nextLink")
    out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["floor"]:
        return floor(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench.graph", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--mailboxes", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenario", action="append", choices=("users-999", "events-300ms"))
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    names = args.scenario or ["users-999", "events-300ms"]
    report = []
    with tempfile.TemporaryDirectory(prefix="tap-dynamics-bench-graph-") as tmp:
        for name in names:
            workdir = Path(tmp) / name
            workdir.mkdir()
            report.append(users_999(args.users, args.runs, workdir) if name == "users-999" else events_300ms(args.mailboxes, workdir))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
