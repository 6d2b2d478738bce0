"""Benchmark: tap-dynamics full syncs against the emulator, next to the floors measured in the same run.

    python -m bench.run [--scenario NAME ...] [--runs N]        (make bench)

Each scenario starts the emulator in its own process (``python -m emulator``), discovers
the tables once, then for each of ``--runs`` rounds runs, as separate processes:

* the tap, full sync to /dev/null (``tap-dynamics --config … --catalog …``);
* floor (a): a bare requests + orjson client fetching and parsing the same pages, no output;
* floor (b): floor (a) plus writing each row as an orjson JSON line to /dev/null.

It prints the median of rows/s, wall s, CPU s (user + system of that process), peak RSS, pages
and "in flight" (the mean number of requests the emulator was serving while it served pages: the
concurrency a variant really achieved) per variant, and the ratios the targets are stated in. Wall/CPU/RSS come from ``os.wait4`` on the
child, pages from the emulator's own counters. Why separate processes: peak RSS and CPU time must
belong to the thing measured, and the emulator's CPU must not be counted as the tap's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import requests

from emulator.finops.model import COMPANIES as FINOPS_COMPANIES

PY = sys.executable
TAP = [PY, "-m", "tap_dynamics"]


@dataclass
class Scenario:
    """One benchmark setup."""

    name: str
    description: str
    rows: dict[str, int]
    entities: list[str]
    latency_ms: float = 0
    clones: dict[str, int] = field(default_factory=dict)
    floors: bool = True
    # extra tap variants: (label, config overrides, emulator latency_ms or None = scenario's)
    variants: list[tuple[str, dict, float | None]] = field(default_factory=list)
    runs: int = 3
    # an on-premises server of this version (plain http, NTLM) instead of Dataverse online
    onprem_version: str | None = None
    # a Finance & Operations environment (``python -m emulator --finops``) instead of Dataverse
    finops: bool = False


SCENARIOS = {
    "account-0ms": Scenario(
        "account-0ms", "34-column account, 200k rows, no latency (CPU-bound)",
        {"account": 200_000}, ["account"], 0),
    "account-300ms": Scenario(
        "account-300ms", "account, 200k rows, 300 ms per page",
        {"account": 200_000}, ["account"], 300,
        # account has change tracking, whose first read is one serial page chain (Dataverse
        # forbids $filter with tracking); with a modifiedon cursor the first load is split into
        # time windows read concurrently.
        variants=[("tap, modifiedon windows", {"replication": {"account": "modifiedon"}}, None)]),
    "tables-1s": Scenario(
        "tables-1s", "10 tables x 50k rows, 1 s per page",
        {"account": 50_000}, [f"account_{i}" for i in range(1, 11)], 1000, clones={"account": 10},
        floors=False,
        variants=[("tap, no latency", {}, 0.0), ("tap, max_concurrency=1", {"max_concurrency": 1}, None)],
        runs=1),
    "odata2-100ms": Scenario(
        "odata2-100ms", "CRM 2015 OData v2 endpoint (50-row pages), account 20k rows, 100 ms per page",
        {"account": 20_000}, ["account"], 100, floors=False, onprem_version="7.1",
        # 50-row pages make one chain latency-bound (500 rows/s at 100 ms): the first load's
        # time windows are read concurrently; the variant is the one chain.
        variants=[("tap, one chain", {"first_load_windows": 1}, None)]),
    # F&O: CustomersV3 (13 columns, 3 companies); the tap reads one page chain per company.
    "finops-0ms": Scenario(
        "finops-0ms", "F&O CustomersV3, 3 companies, 300k rows, 10,000-row pages, no latency (CPU-bound)",
        {"CustomersV3": 300_000}, ["CustomersV3"], 0, finops=True),
    "finops-300ms": Scenario(
        # 20 pages per company, so the run's fixed start (process, token, the Companies page) does
        # not dominate what is measured: the three chains' overlap
        "finops-300ms", "F&O CustomersV3, 3 companies, 600k rows, 10,000-row pages, 300 ms per page",
        {"CustomersV3": 600_000}, ["CustomersV3"], 300, finops=True, floors=False,
        # the bound is one chain's: rows / (pages x 300 ms); the variant reads the companies one at a time
        variants=[("tap, max_concurrency=1", {"max_concurrency": 1}, None)]),
    "memory-10k": Scenario(
        "memory-10k", "account, 10k rows (peak RSS)", {"account": 10_000}, ["account"], 0, runs=1),
    "memory-1m": Scenario(
        "memory-1m", "account, 1M rows (peak RSS)", {"account": 1_000_000}, ["account"], 0, runs=1),
}


@dataclass
class Measure:
    """One process run."""

    wall: float
    cpu: float
    rss_mb: float
    pages: int
    rows: int
    in_flight: float = 0.0  # mean requests in flight while pages were served (emulator's view)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall if self.wall else 0.0


class EmulatorProcess:
    """``python -m emulator`` in its own process, with its control API."""

    def __init__(self, scenario: Scenario) -> None:
        argv = [PY, "-m", "emulator", "--latency-ms", str(scenario.latency_ms),
                "--latency-scope", "pages"]
        rows = {"contact": 0, "systemuser": 10, **scenario.rows}
        if scenario.finops:  # its own entity sets; SalesOrderHeadersV2 is not read
            argv.append("--finops")
            rows = {"SalesOrderHeadersV2": 0, **scenario.rows}
        for table, n in rows.items():
            argv += ["--rows", f"{table}={n}"]
        for table, n in scenario.clones.items():
            argv += ["--clone", f"{table}={n}"]
        if scenario.onprem_version:
            argv += ["--onprem", "--onprem-http", "--onprem-version", scenario.onprem_version]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # noqa: S603
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the emulator did not start")
        self.info = json.loads(line)
        self.control = self.info["control_url"]

    def call(self, path: str, body: dict | None = None) -> dict:
        response = requests.post(self.control + path, json=body or {}, verify=self.info.get("ca_bundle", True), timeout=30)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        response = requests.get(self.control + "stats", verify=self.info.get("ca_bundle", True), timeout=30)
        return response.json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def timed(argv: list[str], stderr_path: str) -> tuple[float, float, float, int]:
    """Run ``argv`` with stdout to /dev/null; (wall s, CPU s, peak RSS MB, exit code)."""
    with open(os.devnull, "wb") as devnull, open(stderr_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=devnull, stderr=err)  # noqa: S603
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


def run_measured(emu: EmulatorProcess, argv: list[str], workdir: Path, label: str) -> Measure:
    emu.call("stats/reset")
    log = str(workdir / f"{label.replace(' ', '_').replace(',', '').replace('=', '')}.stderr")
    wall, cpu, rss, code = timed(argv, log)
    if code != 0:
        tail = Path(log).read_text(errors="replace")[-3000:]
        raise SystemExit(f"{label} failed with exit code {code}:\n{tail}")
    stats = emu.stats()
    span = stats.get("data_seconds") or 0.0
    in_flight = stats.get("in_flight_seconds", 0.0) / span if span else 0.0
    return Measure(wall, cpu, rss, stats["data_pages"], stats["rows_served"], in_flight)


def write_config(info: dict, entities: list[str], workdir: Path) -> Path:
    """The tap's config for the emulator described by ``info``, written to ``workdir``."""
    if "tap_config" in info:  # an on-premises server
        path = workdir / "config.json"
        path.write_text(json.dumps({**info["tap_config"], "entities": entities}))
        return path
    config = {
        "url": info["org_url"], "tenant_id": info["tenant_id"], "client_id": info["client_id"],
        "client_secret": info["client_secret"], "authority_host": info["authority_host"],
        "ca_bundle": info["ca_bundle"], "entities": entities,
    }
    if "edition" in info:  # an F&O environment on loopback: the URL does not say so
        config["edition"] = info["edition"]
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    return path


def discover(config_path: str, workdir: Path) -> dict:
    result = subprocess.run([*TAP, "--config", config_path, "--discover"], capture_output=True, check=True)  # noqa: S603
    catalog = json.loads(result.stdout)
    (workdir / "catalog.json").write_text(json.dumps(catalog))
    return catalog


def floor_specs(catalog: dict, tables: list[str]) -> list[str]:
    """``SET:COLS:ORDERBY`` per data table, matching the tap's own query (same pages)."""
    specs = []
    for stream in catalog["streams"]:
        name = stream["tap_stream_id"]
        if name not in tables:  # metadata streams (option_set_labels, …) are not part of it
            continue
        # the emulator's sets: account -> accounts, clone account_3 -> accounts_3
        base, _, copy = name.partition("_")
        entity_set = f"{base}s_{copy}" if copy else f"{base}s"
        # Columns the tap selects: not the ones it adds itself (deletion markers, annotations).
        cols = ",".join(c for c in stream["schema"]["properties"] if c != "_sdc_deleted_at" and "__" not in c)
        pk = stream["key_properties"][0]
        orderby = f"modifiedon asc,{pk} asc" if "modifiedon" in stream["schema"]["properties"] else f"{pk} asc"
        specs += ["--table", f"{entity_set}:{cols}:{orderby}"]
    return specs


def finops_floor_args(catalog: dict, tables: list[str], companies: list[str]) -> list[str]:
    """The F&O reads the tap makes: per company-specific entity one chain per company
    (``dataAreaId`` filter, ``cross-company=true``, ordered by the key), 10,000-row pages."""
    args = ["--service-root", "/data", "--page-size", "10000"]
    for stream in catalog["streams"]:
        name = stream["tap_stream_id"]
        if name not in tables:
            continue
        columns = list(stream["schema"]["properties"])
        keys = stream["key_properties"]
        orderby = ",".join(f"{k} asc" for k in keys)
        chains = [{"$filter": f"dataAreaId eq '{c}'"} for c in companies] if "dataAreaId" in columns else [{}]
        for chain in chains:  # the options in the tap's order: the same URL, the same pages
            options = {"$select": ",".join(columns), **chain, "$orderby": orderby, "cross-company": "true"}
            query = urllib.parse.urlencode(options, safe="$,'", quote_via=urllib.parse.quote)
            args += ["--query", f"{name}?{query}"]
    return args


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarize(label: str, runs: list[Measure]) -> dict:
    return {
        "label": label,
        "rows": runs[0].rows,
        "pages": runs[0].pages,
        "wall_s": median([r.wall for r in runs]),
        "cpu_s": median([r.cpu for r in runs]),
        "rss_mb": max(r.rss_mb for r in runs),
        "rows_per_s": median([r.rows_per_s for r in runs]),
        "in_flight": median([r.in_flight for r in runs]),
        "runs": len(runs),
    }


def print_table(rows: list[dict]) -> None:
    header = (f"{'variant':<28} {'rows':>9} {'pages':>6} {'rows/s':>9} {'wall s':>8} {'CPU s':>7} "
              f"{'peak RSS MB':>12} {'in flight':>9}")
    print(header)
    for r in rows:
        print(f"{r['label']:<28} {r['rows']:>9} {r['pages']:>6} {r['rows_per_s']:>9.0f} {r['wall_s']:>8.2f} "
              f"{r['cpu_s']:>7.2f} {r['rss_mb']:>12.0f} {r['in_flight']:>9.1f}")


def run_scenario(scenario: Scenario, runs: int | None, workdir: Path) -> dict:
    runs = runs or scenario.runs
    print(f"\n== {scenario.name}: {scenario.description} (median of {runs} run(s))", flush=True)
    emu = EmulatorProcess(scenario)
    try:
        info = emu.info
        (workdir / "info.json").write_text(json.dumps(info))
        config_path = write_config(info, scenario.entities, workdir)
        catalog = discover(str(config_path), workdir)
        tap_argv = [*TAP, "--config", str(config_path), "--catalog", str(workdir / "catalog.json")]
        if scenario.finops:
            reads = finops_floor_args(catalog, scenario.entities, FINOPS_COMPANIES)
        else:
            reads = floor_specs(catalog, scenario.entities)
        floor_argv = [PY, "-m", "bench.floor", "--info", str(workdir / "info.json"), *reads]
        results: dict[str, list[Measure]] = {}
        # Warm-up (not counted): the emulator caches each table's served shape on first read, and
        # the tap's first read (change tracking) differs from the floor's. A first measured run
        # would otherwise pay the emulator's own cold start (1-3 s on tables-1s).
        if scenario.onprem_version is None:  # the floors read the online Web API (or F&O's /data)
            run_measured(emu, floor_argv, workdir, "warm-up")
        emu.call("set", {"latency_ms": 0})
        run_measured(emu, tap_argv, workdir, "warm-up tap")
        emu.call("set", {"latency_ms": scenario.latency_ms})

        def measure(label: str, argv: list[str], latency: float | None = None) -> None:
            if latency is not None:
                emu.call("set", {"latency_ms": latency})
            try:
                results.setdefault(label, []).append(run_measured(emu, argv, workdir, label))
            finally:
                if latency is not None:
                    emu.call("set", {"latency_ms": scenario.latency_ms})

        for _ in range(runs):
            measure("tap", tap_argv)
            if scenario.floors:
                measure("floor (a) fetch+parse", floor_argv)
                measure("floor (b) + orjson lines", [*floor_argv, "--write"])
        for label, overrides, latency in scenario.variants:
            variant_config = workdir / f"config-{len(results)}.json"
            variant_config.write_text(json.dumps({**json.loads(config_path.read_text()), **overrides}))
            argv = [*TAP, "--config", str(variant_config), "--catalog", str(workdir / "catalog.json")]
            for _ in range(runs):
                measure(label, argv, latency)
        table = [summarize(label, ms) for label, ms in results.items()]
        print_table(table)
        by = {r["label"]: r for r in table}
        ratios: dict[str, float] = {}
        tap = by["tap"]
        if "floor (b) + orjson lines" in by:
            ratios["tap / floor (b) rows/s"] = tap["rows_per_s"] / by["floor (b) + orjson lines"]["rows_per_s"]
            ratios["tap / floor (a) rows/s"] = tap["rows_per_s"] / by["floor (a) fetch+parse"]["rows_per_s"]
            ratios["floor (b) CPU s / tap CPU s"] = by["floor (b) + orjson lines"]["cpu_s"] / tap["cpu_s"]
        if "tap, max_concurrency=1" in by:
            ratios["speed-up vs max_concurrency=1"] = by["tap, max_concurrency=1"]["wall_s"] / tap["wall_s"]
        if "tap, no latency" in by:
            max_concurrency = 8
            bound = max(by["tap, no latency"]["cpu_s"], tap["pages"] * scenario.latency_ms / 1000 / max_concurrency)
            ratios["bound max(CPU@0ms, pages*latency/8) s"] = bound
            ratios["wall / bound"] = tap["wall_s"] / bound
        if scenario.latency_ms and tap["pages"]:
            bound_rows_s = tap["rows"] / (tap["pages"] * scenario.latency_ms / 1000)
            ratios["one-request-at-a-time bound rows/s"] = bound_rows_s
            if "tap, modifiedon windows" in by:
                windows = by["tap, modifiedon windows"]["rows_per_s"]
                ratios["modifiedon windows rows/s / one-request bound"] = windows / bound_rows_s
            if scenario.finops:  # one chain per company, concurrently
                ratios["tap rows/s / one-chain bound"] = tap["rows_per_s"] / bound_rows_s
            if "tap, one chain" in by:  # the tap reads windows by default (OData v2)
                ratios["tap rows/s / one-chain bound"] = tap["rows_per_s"] / bound_rows_s
                ratios["one chain rows/s / one-chain bound"] = by["tap, one chain"]["rows_per_s"] / bound_rows_s
        for key, value in ratios.items():
            print(f"  {key}: {value:.2f}")
        return {"scenario": scenario.name, "description": scenario.description, "results": table, "ratios": ratios}
    finally:
        emu.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                    help="scenario(s) to run (repeatable); default: all")
    ap.add_argument("--runs", type=int, help="rounds per scenario (default: per scenario, 3 or 1)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    report = []
    with tempfile.TemporaryDirectory(prefix="tap-dynamics-bench-") as tmp:
        for name in names:
            workdir = Path(tmp) / name
            workdir.mkdir()
            report.append(run_scenario(SCENARIOS[name], args.runs, workdir))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
