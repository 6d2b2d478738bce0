"""Discovery benchmark: a 1,000-table x ~150-column emulated org with 100 ms per request.

    .venv/bin/python -m bench.discovery                # defaults: --tables 1000 --latency-ms 100
    .venv/bin/python -m bench.discovery --tables 200 --latency-ms 50

Starts the emulator in its own process in org-size mode, runs ``tap-dynamics --discover`` as a
real process (cold: no metadata cache), then once more with ``metadata_cache_path`` set twice
(cold fill, then warm), and prints wall time and the tap's peak RSS for each (from ``wait4``, so
only the tap process is measured, not the emulator). Targets from issue 4: < 30 s, < 300 MB.
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

from tests.demo import EmulatorProcess

TAP = str(Path(sys.executable).parent / "tap-dynamics")


def run_discovery(config: dict, directory: Path, label: str) -> dict:
    """Run one ``--discover`` and return wall seconds, peak RSS (MB) and stream count."""
    config_path = directory / "config.json"
    config_path.write_text(json.dumps(config))
    out_path = directory / f"catalog-{label}.json"
    with out_path.open("wb") as out, (directory / f"stderr-{label}.log").open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([TAP, "--config", str(config_path), "--discover"], stdout=out, stderr=err)  # noqa: S603
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write((directory / f"stderr-{label}.log").read_text()[-3000:])
        msg = f"tap-dynamics --discover failed with exit code {proc.returncode}"
        raise SystemExit(msg)
    catalog = json.loads(out_path.read_text())
    columns = sum(len(s["schema"].get("properties", {})) for s in catalog["streams"])
    # ru_maxrss is in KiB on Linux
    return {"run": label, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "streams": len(catalog["streams"]), "columns": columns}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.discovery", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=100)
    args = ap.parse_args(argv)
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
            results.append(run_discovery(config, directory, "cold"))
            cached = {**config, "metadata_cache_path": str(directory / "metadata-cache.json")}
            results.append(run_discovery(cached, directory, "cache-fill"))
            results.append(run_discovery(cached, directory, "cache-warm"))
    print(f"\n{'run':<12}{'wall (s)':>10}{'peak RSS (MB)':>15}{'streams':>9}{'columns':>9}")
    for r in results:
        print(f"{r['run']:<12}{r['wall_s']:>10}{r['peak_rss_mb']:>15}{r['streams']:>9}{r['columns']:>9}")
    cold = results[0]
    ok = cold["wall_s"] < 30 and cold["peak_rss_mb"] < 300
    print(f"\nTarget (cold): < 30 s and < 300 MB -> {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
