"""The F&O benchmarks measure what they say, checked through real HTTP against the F&O emulator:
the floor of ``make bench`` reads exactly the pages the tap reads (one chain per company), and the
JSON metadata service read by ``bench.finops_metadata`` finds the entity sets ``$metadata`` has.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

from bench.finops_metadata import json_metadata
from bench.run import finops_floor_args
from emulator.finops import COMPANIES, FinOpsEmulator
from tap_dynamics.auth import build_token_provider
from tap_dynamics.config.settings import load_settings
from tap_dynamics.finops.client import FinOpsClient
from tap_dynamics.finops.discovery import read_metadata
from tap_dynamics.finops.metadata import schema_of
from tests.taprun import run_tap, select_streams


def data_reads(emu: FinOpsEmulator) -> list[str]:
    return sorted(urllib.parse.unquote(f"{path}?{query}") for path, query, _prefer in emu.query_log()
                  if path == "/data/CustomersV3")


def test_the_floor_reads_the_pages_the_tap_reads(tmp_path: Path) -> None:
    with FinOpsEmulator(rows={"CustomersV3": 60, "SalesOrderHeadersV2": 0}) as emu:
        config = {**emu.tap_config(), "entities": ["CustomersV3"]}
        catalog = run_tap(config, "--discover").catalog
        emu.reset_stats()
        run = run_tap(config, catalog=select_streams(catalog, ["CustomersV3"]))
        assert run.returncode == 0, run.stderr[-2000:]
        tap_reads = data_reads(emu)
        assert len(tap_reads) == len(COMPANIES)  # one chain (of one page) per company

        info = {"org_url": emu.env_url, "authority_host": emu.authority_host, "tenant_id": emu.tenant_id,
                "client_id": emu.client_id, "client_secret": emu.client_secret, "ca_bundle": emu.ca_path}
        (tmp_path / "info.json").write_text(json.dumps(info))
        emu.reset_stats()
        floor = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "bench.floor", "--info", str(tmp_path / "info.json"), "--write",
             *finops_floor_args(catalog, ["CustomersV3"], list(COMPANIES))],
            capture_output=True, check=True, timeout=300)
        assert data_reads(emu) == tap_reads
        assert len(floor.stdout.splitlines()) == len(run.records("CustomersV3")) == 60


def test_the_json_metadata_service_finds_the_entity_sets_of_metadata() -> None:
    """Same entity sets, properties and enum members; what the JSON service lacks (maxLength,
    the key's CSDL order) is why discovery reads $metadata."""
    with FinOpsEmulator(rows={"CustomersV3": 3, "SalesOrderHeadersV2": 3}, big=5) as emu:
        settings = load_settings(emu.tap_config())
        client = FinOpsClient(settings, build_token_provider(settings))
        csdl, service = read_metadata(client), json_metadata(client)
    assert set(service.entities) == set(csdl.entities)  # type: ignore[attr-defined]
    assert service.enums == csdl.enums  # type: ignore[attr-defined]
    for name, entity in csdl.entities.items():
        other = service.entities[name]  # type: ignore[attr-defined]
        columns = list(schema_of(entity, csdl.enums)["properties"])
        assert list(schema_of(other, service.enums)["properties"]) == columns  # type: ignore[attr-defined]
        assert set(other.keys) == set(entity.keys)
        assert all(p.max_length is None for p in other.properties)  # the JSON service has no MaxLength
    assert any(p.max_length for e in csdl.entities.values() for p in e.properties)
