"""F&O discovery sources compared: ``$metadata`` (CSDL, parsed incrementally) against the JSON
metadata service (``/Metadata/PublicEntities`` + ``/Metadata/PublicEnumerations``).

    .venv/bin/python -m bench.discovery --finops-entities 2000      (part of make bench-discovery)

Against the F&O environment of ``bench.discovery`` (``python -m emulator --finops
--finops-entities N``), each source, in its own process measured by ``wait4`` (wall, CPU, peak
RSS of that process only), reads the environment's metadata through the tap's own client (token,
retries, origin lock) and builds the JSON Schema of every entity set: the work discovery does
before it writes the catalog. The JSON reader here is the alternative measured, written as the tap would have to:
it maps the service's ``DataType`` names onto the CSDL types the tap's schemas are built from.

What the JSON service cannot say, whatever it costs: ``MaxLength`` (no ``maxLength`` in the
schemas), ``Edm.Decimal`` against ``Edm.Double`` (both ``Real``), and the key as an ordered list
(it flags properties ``IsKey``; the CSDL ``<Key>`` gives the order the tap's keys follow).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

NS = "Microsoft.Dynamics.DataEntities"
# PublicEntities' DataType -> the CSDL type the tap's schemas are built from
DATA_TYPES = {"String": "Edm.String", "Int32": "Edm.Int32", "Int64": "Edm.Int64", "Real": "Edm.Decimal",
              "Boolean": "Edm.Boolean", "UtcDateTime": "Edm.DateTimeOffset", "Date": "Edm.Date",
              "Guid": "Edm.Guid", "Time": "Edm.TimeOfDay", "Container": "Edm.Binary"}


def json_metadata(client: object) -> object:
    """The tap's :class:`Metadata` from the JSON metadata service (two documents)."""
    from tap_dynamics.finops.metadata import EntityInfo, Metadata, Property

    base = client.settings.url  # type: ignore[attr-defined]
    entities_doc, _ = client.get_json(f"{base}/Metadata/PublicEntities")  # type: ignore[attr-defined]
    enums_doc, _ = client.get_json(f"{base}/Metadata/PublicEnumerations")  # type: ignore[attr-defined]
    enums = {f"{NS}.{e['Name']}": tuple((m["Name"], int(m["Value"])) for m in e["Members"])
             for e in enums_doc["value"]}
    entities = {}
    for entity in entities_doc["value"]:
        properties = []
        for p in entity["Properties"]:
            kind = f"{NS}.{p['TypeName']}" if p["DataType"] == "Enum" else DATA_TYPES.get(p["DataType"], "Edm.String")
            properties.append(Property(p["Name"], kind, not p["IsMandatory"], None))
        keys = tuple(p["Name"] for p in entity["Properties"] if p["IsKey"])
        name = entity["EntitySetName"]
        entities[name] = EntityInfo(name, f"{NS}.{entity['Name']}", keys, tuple(properties))
    return Metadata(entities, enums)


def child(source: str, config_path: str) -> int:
    """Read the metadata with ``source`` and build every entity set's schema; print the counts."""
    from tap_dynamics.auth import build_token_provider
    from tap_dynamics.config.settings import load_settings
    from tap_dynamics.finops.client import FinOpsClient
    from tap_dynamics.finops.discovery import read_metadata
    from tap_dynamics.finops.metadata import schema_of

    settings = load_settings(json.loads(Path(config_path).read_text()))
    client = FinOpsClient(settings, build_token_provider(settings))
    metadata = read_metadata(client) if source == "$metadata" else json_metadata(client)
    schemas = [schema_of(e, metadata.enums) for e in metadata.entities.values()]  # type: ignore[attr-defined]
    columns = sum(len(s["properties"]) for s in schemas)
    with_length = sum(1 for s in schemas for c in s["properties"].values() if "maxLength" in c)
    print(json.dumps({"entities": len(schemas), "columns": columns, "maxLength": with_length}))
    return 0


SOURCES = ("$metadata", "json service")


def measure(source: str, config_path: Path, directory: Path) -> dict:
    """One source read and turned into schemas, in its own measured process."""
    # bench.discovery's measuring wrapper (imported here: bench.discovery imports this module)
    from bench.discovery import _MEASURE

    label = "json" if source != "$metadata" else "csdl"
    result_path, out_path = directory / f"rusage-{label}.json", directory / f"out-{label}.json"
    with out_path.open("wb") as out:
        started = time.perf_counter()
        subprocess.run(  # noqa: S603
            [sys.executable, "-c", _MEASURE, str(result_path), sys.executable, "-m", "bench.finops_metadata",
             source, str(config_path)], stdout=out, check=True)
        wall = time.perf_counter() - started
    usage = json.loads(result_path.read_text())
    if usage["exit"] != 0:
        raise SystemExit(f"reading {source} failed with exit code {usage['exit']}")
    counts = json.loads(out_path.read_text())
    return {"source": source, "wall_s": round(wall, 1), "cpu_s": round(usage["cpu_s"], 1),
            "peak_rss_mb": round(usage["maxrss_kib"] / 1024, 1), **counts}


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.finops_metadata SOURCE CONFIG``: one measured read (see bench.discovery)."""
    args = sys.argv[1:] if argv is None else argv
    return child(*args)


if __name__ == "__main__":
    sys.exit(main())
