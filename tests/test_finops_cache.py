"""F&O's metadata cache through real HTTP: with ``metadata_cache_path`` a run after the first
reads the service document (``/data``) but no ``$metadata``, until an entity set is added or
removed or the entry expires.

Each run is the tap as a real process against the F&O emulator, whose request log says which
documents were read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.finops import FinOpsEmulator
from emulator.finops.model import synthetic
from tests.taprun import run_command, run_tap, select_streams
from tests.test_finops import emitted, expected

METADATA = "/data/$metadata"


def metadata_reads(emu: FinOpsEmulator) -> int:
    return sum(1 for _method, path, _status in emu.request_log() if path == METADATA)


def test_the_second_discovery_reads_no_metadata_and_a_new_entity_set_reads_it_again(tmp_path: Path) -> None:
    cache = tmp_path / "finops-metadata.json"
    with FinOpsEmulator(rows={"CustomersV3": 9, "SalesOrderHeadersV2": 9}) as emu:
        config = {**emu.tap_config(), "metadata_cache_path": str(cache), "exclude_entities": ["Synthetic*"]}
        emu.reset_stats()
        first = run_tap(config, "--discover")
        assert first.returncode == 0, first.stderr[-2000:]
        assert metadata_reads(emu) == 1 and cache.exists()

        emu.reset_stats()
        second = run_tap(config, "--discover")
        assert second.returncode == 0, second.stderr[-2000:]
        assert metadata_reads(emu) == 0  # the cache answered; only the service document was read
        assert ("GET", "/data/", 200) in emu.request_log()
        assert second.catalog == first.catalog  # the same streams, keys, schemas and methods
        assert "$metadata not read" in second.stderr

        # A sync with that catalog reads no $metadata either, and its rows are right.
        emu.reset_stats()
        catalog = select_streams(second.catalog, ["CustomersV3"])
        sync = run_tap(config, catalog=catalog)
        assert sync.returncode == 0, sync.stderr[-2000:]
        assert metadata_reads(emu) == 0
        assert emitted(sync, "CustomersV3", ["dataAreaId", "CustomerAccount"]) == expected(emu, "CustomersV3")

        # An entity set added to the environment changes the service document: read again.
        added = synthetic(7)
        emu.store.entities[added.entity_set] = added
        emu.finops._metadata = None  # the emulator serves the new $metadata
        emu.reset_stats()
        third = run_tap(config, "--discover")
        assert third.returncode == 0, third.stderr[-2000:]
        assert metadata_reads(emu) == 1

        # An expired entry (ttl 0) is read again too.
        emu.reset_stats()
        assert run_tap({**config, "metadata_cache_ttl": 0}, "--discover").returncode == 0
        assert metadata_reads(emu) == 1


def test_check_reads_the_metadata_through_the_cache_too(tmp_path: Path) -> None:
    cache = tmp_path / "finops-metadata.json"
    with FinOpsEmulator(rows={"CustomersV3": 3, "SalesOrderHeadersV2": 3}) as emu:
        config = {**emu.tap_config(), "metadata_cache_path": str(cache), "exclude_entities": ["Synthetic*"]}
        emu.reset_stats()
        first = run_command(["check"], config)
        assert first.returncode == 0, first.stderr[-2000:]
        assert metadata_reads(emu) == 1 and cache.exists()  # a check fills the cache, as discovery does
        emu.reset_stats()
        second = run_command(["check"], config)
        assert second.returncode == 0, second.stderr[-2000:]
        assert metadata_reads(emu) == 0  # the cache answered
        assert second.stdout == first.stdout and "connection available:" in second.stdout


def test_a_corrupt_cache_file_is_rediscovered_not_an_error(tmp_path: Path) -> None:
    cache = tmp_path / "finops-metadata.json"
    cache.write_text('{"format": 1, "org": ')
    with FinOpsEmulator(rows={"CustomersV3": 3, "SalesOrderHeadersV2": 3}) as emu:
        config = {**emu.tap_config(), "metadata_cache_path": str(cache)}
        run = run_tap(config, "--discover")
        assert run.returncode == 0, run.stderr[-2000:]
        assert {s["tap_stream_id"] for s in run.catalog["streams"]} >= {"CustomersV3", "SalesOrderHeadersV2"}
        emu.reset_stats()
        assert run_tap(config, "--discover").returncode == 0
        assert metadata_reads(emu) == 0  # rewritten by the first run


def test_a_metadata_document_declaring_a_dtd_or_entities_is_refused() -> None:
    """CSDL has no DTD: entity declarations are how an XML body makes a parser expand without bound."""
    from tap_dynamics.errors import ConnectionProblem
    from tap_dynamics.finops.metadata import parse_metadata

    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            b'<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">&b;</edmx:Edmx>')
    with pytest.raises(ConnectionProblem, match="declares a DTD or entities; refusing to read it"):
        parse_metadata(bomb)
