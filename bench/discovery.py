"""Discovery benchmark: a 1,000-table x ~150-column emulated org with 100 ms per request.

    .venv/bin/python -m bench.discovery                # defaults: --tables 1000 --latency-ms 100
    .venv/bin/python -m bench.discovery --tables 200 --latency-ms 50

Starts the emulator in its own process in org-size mode, runs ``tap-dynamics --discover`` as a
real process (cold: no metadata cache), then once more with ``metadata_cache_path`` set twice
(cold fill, then warm), then a sync with the cold run's catalog as ``--catalog`` and only
``account`` selected (what a Meltano run of one table of a big org costs: the whole catalog is
read before the first record). Prints wall time and the tap's peak RSS for each (from ``wait4``,
so only the tap process is measured, not the emulator). Targets from issue 4: < 30 s, < 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.finops_metadata import SOURCES
from bench.finops_metadata import measure as measure_source
from tests.demo import EmulatorProcess

TAP = str(Path(sys.executable).parent / "tap-dynamics")


# Linux folds the RSS high-water mark of a process's image into its ru_maxrss at exec, and a
# child starts as a copy of its parent: a tap started straight from this process (which grows
# while it reads catalogs) would report this process's size. A small Python process starts each
# tap and reports the tap's own rusage instead.
_MEASURE = """
import json, os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"exit": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss,
               "cpu_s": usage.ru_utime + usage.ru_stime}, out)
"""


def run_tap_measured(config: dict, directory: Path, label: str, catalog_path: Path | None = None) -> dict:
    """Run one ``--discover`` (or, with ``catalog_path``, a sync with that catalog) as a real
    process and return wall seconds, its peak RSS (MB) and the catalog's stream and column counts."""
    config_path = directory / "config.json"
    config_path.write_text(json.dumps(config))
    out_path = directory / f"catalog-{label}.json" if catalog_path is None else directory / f"sync-{label}.jsonl"
    mode = ["--discover"] if catalog_path is None else ["--catalog", str(catalog_path)]
    result_path = directory / f"rusage-{label}.json"
    with out_path.open("wb") as out, (directory / f"stderr-{label}.log").open("wb") as err:
        started = time.perf_counter()
        subprocess.run(  # noqa: S603
            [sys.executable, "-c", _MEASURE, str(result_path), TAP, "--config", str(config_path), *mode],
            stdout=out, stderr=err, check=True,
        )
        wall = time.perf_counter() - started
    result = json.loads(result_path.read_text())
    if result["exit"] != 0:
        sys.stderr.write((directory / f"stderr-{label}.log").read_text()[-3000:])
        msg = f"tap-dynamics {mode[0]} failed with exit code {result['exit']}"
        raise SystemExit(msg)
    catalog = json.loads((out_path if catalog_path is None else catalog_path).read_text())
    columns = sum(len(s["schema"].get("properties", {})) for s in catalog["streams"])
    # ru_maxrss is in KiB on Linux
    return {"run": label, "wall_s": round(wall, 1), "cpu_s": round(result["cpu_s"], 1),
            "peak_rss_mb": round(result["maxrss_kib"] / 1024, 1),
            "streams": len(catalog["streams"]), "columns": columns}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.discovery", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=100)
    ap.add_argument("--finops-entities", type=int, default=0, metavar="N",
                    help="instead: an F&O environment whose $metadata has N extra entities (e.g. 2000)")
    args = ap.parse_args(argv)
    if args.finops_entities:
        return finops(args.finops_entities, args.latency_ms)
    print(f"Starting the emulator: {args.tables} synthetic tables of ~150 columns, "
          f"{args.latency_ms:g} ms per request ...", flush=True)
    with EmulatorProcess({}, ("--tables", str(args.tables), "--latency-ms", str(args.latency_ms))) as emu:
        config = {
            "url": emu.info["org_url"], "tenant_id": emu.info["tenant_id"],
            "client_id": emu.info["client_id"], "client_secret": emu.info["client_secret"],
            "authority_host": emu.info["authority_host"], "ca_bundle": emu.info["ca_bundle"],
        }
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            results.append(run_tap_measured(config, directory, "cold"))
            cached = {**config, "metadata_cache_path": str(directory / "metadata-cache.json")}
            results.append(run_tap_measured(cached, directory, "cache-fill"))
            results.append(run_tap_measured(cached, directory, "cache-warm"))
            catalog = json.loads((directory / "catalog-cold.json").read_text())
            for stream in catalog["streams"]:
                for entry in stream["metadata"]:
                    if entry["breadcrumb"] == []:
                        entry["metadata"]["selected"] = stream["tap_stream_id"] == "account"
            one_table = directory / "catalog-one-table.json"
            one_table.write_text(json.dumps(catalog))
            del catalog
            results.append(run_tap_measured(config, directory, "sync-1-table", one_table))
    print(f"\n{'run':<14}{'wall (s)':>10}{'tap CPU (s)':>13}{'peak RSS (MB)':>15}{'streams':>9}{'columns':>9}")
    for r in results:
        print(f"{r['run']:<14}{r['wall_s']:>10}{r['cpu_s']:>13}{r['peak_rss_mb']:>15}{r['streams']:>9}{r['columns']:>9}")
    cold = results[0]
    ok = cold["wall_s"] < 30 and cold["peak_rss_mb"] < 300
    print(f"\nTarget (cold): < 30 s and < 300 MB -> {'met' if ok else 'NOT met'}")
    return 0


def finops(entities: int, latency_ms: float) -> int:
    """``--discover`` of an F&O environment with ``entities`` ~40-property entities in one
    ``$metadata`` document (read incrementally), cold; target: peak RSS < 300 MB."""
    print(f"Starting an F&O environment: {entities} synthetic entities in $metadata, "
          f"{latency_ms:g} ms per request ...", flush=True)
    args = ("--finops", "--finops-entities", str(entities), "--latency-ms", str(latency_ms))
    with EmulatorProcess({}, args) as emu, tempfile.TemporaryDirectory() as tmp:
        info = emu.info
        config = {"url": info["org_url"], "edition": info["edition"], "tenant_id": info["tenant_id"],
                  "client_id": info["client_id"], "client_secret": info["client_secret"],
                  "authority_host": info["authority_host"], "ca_bundle": info["ca_bundle"]}
        result = run_tap_measured(config, Path(tmp), "finops-cold")
        config_path = Path(tmp) / "config.json"  # run_tap_measured wrote it
        sources = [measure_source(source, config_path, Path(tmp)) for source in SOURCES]
    print(f"\n{'run':<14}{'wall (s)':>10}{'tap CPU (s)':>13}{'peak RSS (MB)':>15}{'streams':>9}{'columns':>9}")
    r = result
    print(f"{r['run']:<14}{r['wall_s']:>10}{r['cpu_s']:>13}{r['peak_rss_mb']:>15}{r['streams']:>9}{r['columns']:>9}")
    print(f"\nTarget: peak RSS < 300 MB -> {'met' if r['peak_rss_mb'] < 300 else 'NOT met'}")
    print("\nThe metadata read and every entity set's schema, per source (bench/finops_metadata.py):")
    print(f"{'source':<14}{'wall (s)':>10}{'CPU (s)':>9}{'peak RSS (MB)':>15}{'entities':>10}{'columns':>9}"
          f"{'maxLength':>11}")
    for r in sources:
        print(f"{r['source']:<14}{r['wall_s']:>10}{r['cpu_s']:>9}{r['peak_rss_mb']:>15}{r['entities']:>10}"
              f"{r['columns']:>9}{r['maxLength']:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
