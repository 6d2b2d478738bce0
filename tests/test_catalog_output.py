"""``--discover`` writes the catalog one stream at a time (issue 4: discovery memory).

The streamed output must be the SDK's output byte for byte: the same text ``Tap.run_discovery()``
builds in one piece (``dump_json(catalog_dict, indent=2)``), so saved catalogs, diffs and Meltano's
catalog cache are unaffected; and a streamed catalog must work as ``--catalog`` input.
"""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
from singer_sdk.helpers._util import dump_json

from tap_dynamics.catalog import write_catalog
from tap_dynamics.tap import TapDynamics
from tests.taprun import run_tap, select_streams

SDK_EQUIVALENT_ENTRIES = [
    {
        "tap_stream_id": "a",
        "schema": {
            "type": "object",
            "properties": {
                "x": {"type": ["string", "null"], "description": "line one\nline two \"quoted\" \\ tab\t"},
                "ü": {"type": ["number", "null"], "maximum": Decimal("922337203685477.5807")},
                "e": {"type": "object", "properties": {}},
                "l": {"type": "array", "items": {"type": "integer"}, "enum": []},
            },
        },
        "metadata": [{"breadcrumb": [], "metadata": {"selected": True, "inclusion": "available"}}],
        "key_properties": [],
    },
    {"tap_stream_id": "b", "nested": [[1, [2, {"k": None}]], {"deep": {"deeper": [True, False]}}]},
]


@pytest.mark.parametrize("entries", [SDK_EQUIVALENT_ENTRIES, SDK_EQUIVALENT_ENTRIES[:1], []])
def test_write_catalog_is_the_sdks_dump_json_byte_for_byte(entries: list) -> None:
    out = io.StringIO()
    write_catalog(iter(entries), out)
    assert out.getvalue() == dump_json({"streams": entries}, indent=2) + "\n"


@pytest.fixture(scope="module")
def big_org():
    """The default tables plus a few synthetic ~150-column tables (every column type)."""
    from emulator import Emulator

    emu = Emulator(rows={"account": 30, "contact": 20, "systemuser": 5}, org_tables=6).start()
    yield emu
    emu.stop()


def _sdk_catalog_text(config: dict, capsys: pytest.CaptureFixture[str]) -> str:
    """The catalog as the SDK prints it: ``Tap.run_discovery()`` builds the whole text, then prints."""
    tap = TapDynamics(config=config, setup_mapper=False)
    text = tap.run_discovery()
    assert capsys.readouterr().out == text + "\n"
    return text + "\n"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        # annotation columns, a replication override, a table list with a special table
        {"annotations": True, "replication": {"account": "createdon", "systemuser": "full_table"},
         "entities": ["account", "contact", "systemuser", "new_bulk*", "new_sensorreading"]},
    ],
    ids=["defaults", "annotations-replication"],
)
def test_discover_output_equals_the_sdks_catalog_text(big_org, capsys, extra: dict) -> None:
    config = {**big_org.tap_config(), **extra}
    expected = _sdk_catalog_text(config, capsys)
    run = run_tap(config, "--discover")
    assert run.returncode == 0, run.stderr
    assert run.stdout == expected
    streams = {s["tap_stream_id"] for s in run.catalog["streams"]}
    assert {"account", "new_bulk0000", "option_set_labels"} <= streams
    bulk = next(s for s in run.catalog["streams"] if s["tap_stream_id"] == "new_bulk0000")
    assert len(bulk["schema"]["properties"]) > 100


def test_discover_output_from_the_metadata_cache_is_unchanged(big_org, capsys, tmp_path: Path) -> None:
    expected = _sdk_catalog_text(big_org.tap_config(), capsys)
    config = {**big_org.tap_config(), "metadata_cache_path": str(tmp_path / "metadata.json")}
    cold = run_tap(config, "--discover")
    assert cold.returncode == 0, cold.stderr
    big_org.reset_stats()
    warm = run_tap(config, "--discover")
    assert warm.returncode == 0, warm.stderr
    assert not [p for _, p, _ in big_org.request_log() if "/Attributes" in p and "payroll" not in p]
    assert cold.stdout == expected
    assert warm.stdout == expected


def test_streamed_catalog_drives_selection_and_replication_still_wins(big_org) -> None:
    discovered = run_tap(big_org.tap_config(), "--discover")
    assert discovered.returncode == 0, discovered.stderr
    catalog = select_streams(discovered.catalog, ["account", "systemuser"])
    account = next(s for s in catalog["streams"] if s["tap_stream_id"] == "account")
    root = next(m["metadata"] for m in account["metadata"] if m["breadcrumb"] == [])
    assert root["forced-replication-method"] == "LOG_BASED"
    for entry in account["metadata"]:
        if entry["breadcrumb"] == ["properties", "name"]:
            entry["metadata"]["selected"] = False
    # the saved catalog says change tracking; the setting asks for a cursor, and must win
    config = {**big_org.tap_config(), "replication": {"account": "modifiedon"}}
    run = run_tap(config, catalog=catalog)
    assert run.returncode == 0, run.stderr
    records = run.records("account")
    assert len(records) == len(big_org.rows("account"))
    assert all("name" not in r and "accountid" in r for r in records)
    assert len(run.records("systemuser")) == len(big_org.rows("systemuser"))
    assert run.records("contact") == []
    assert run.last_state["bookmarks"]["account"]["replication_key"] == "modifiedon"


# ------------------------------------------------------------------------ reading --catalog

def _sdk_catalog(text: str):
    """What the SDK's ``invoke`` builds from a ``--catalog`` file."""
    from singer_sdk.helpers._util import load_json
    from singer_sdk.singerlib import Catalog

    return Catalog.from_dict(load_json(text))


def _same_catalog(got, expected) -> None:
    assert list(got) == list(expected)
    assert got.to_dict() == expected.to_dict()
    for name, entry in expected.items():  # the objects, not only their dict form
        assert got[name].metadata == entry.metadata
        assert got[name].schema == entry.schema


def test_read_catalog_builds_the_sdks_catalog_one_entry_at_a_time(big_org) -> None:
    import json

    from tap_dynamics.catalog import _read_entries, read_catalog

    discovered = run_tap({**big_org.tap_config(), "annotations": True}, "--discover")
    assert discovered.returncode == 0, discovered.stderr
    catalog = select_streams(discovered.catalog, ["account", "new_bulk0002"])
    catalog["streams"][0]["schema"]["properties"]["x"] = {"type": "number", "multipleOf": 0.0001}
    for text in (
        discovered.stdout,  # as --discover wrote it
        json.dumps(catalog),  # compact, as Meltano writes it
        json.dumps({"version": 1, **catalog, "extra": [{"streams": []}]}, indent=4),
    ):
        expected = _sdk_catalog(text)
        _same_catalog(_read_entries(text), expected)  # the streaming reader took it, no fallback
        _same_catalog(read_catalog(text), expected)
    assert read_catalog(json.dumps(catalog)).to_dict()["streams"][0]["schema"]["properties"]["x"][
        "multipleOf"] == Decimal("0.0001")  # numbers stay exact, as with the SDK's load_json


@pytest.mark.parametrize(
    "text",
    [
        '{"streams": []}',
        "{}",
        ' \n{ "streams" : [ {"tap_stream_id": "a"} , {"tap_stream_id": "b", "metadata": []} ] }\n ',
        '{"streams": [{"tap_stream_id": "a"}], "streams": [{"tap_stream_id": "b"}]}',  # last wins
        '{"streams": [{"tap_stream_id": "a", "schema": {"type": "object", "properties": {"p": {"type": ["string", "null"]}}}}],'
        ' "streams": [{"tap_stream_id": "b"}, {"tap_stream_id": "b"}]}',
    ],
)
def test_read_catalog_matches_the_sdk_on_unusual_layouts(text: str) -> None:
    from tap_dynamics.catalog import read_catalog

    _same_catalog(read_catalog(text), _sdk_catalog(text))


@pytest.mark.parametrize(
    "text",
    ['{"streams": [', "[]", '{"streams": null}', '{"streams": [{"stream": "x"}]}', '{"streams": [1]}',
     '{"streams": []} trailing', ""],
)
def test_read_catalog_fails_exactly_like_the_sdk(text: str) -> None:
    from tap_dynamics.catalog import read_catalog

    with pytest.raises(Exception) as sdk_error:  # noqa: B017, PT011 - whatever the SDK raises
        _sdk_catalog(text)
    with pytest.raises(type(sdk_error.value)) as ours:
        read_catalog(text)
    assert str(ours.value) == str(sdk_error.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [('{"streams": [', "not valid JSON"), ("[]", "not a Singer catalog"),
     ('{"streams": [{"stream": "x"}]}', "tap_stream_id")],
)
def test_a_broken_catalog_file_is_one_line_and_exit_2(emulator, tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(text)
    run = run_tap(emulator.tap_config(), "--catalog", str(path))
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("tap-dynamics: error:")]
    assert len(errors) == 1 and says in errors[0] and "--catalog" in errors[0], run.stderr
    assert "Traceback" not in run.stderr


# ------------------------------------------------- metadata cache strings, collector during discovery

def test_cache_rows_share_repeated_strings_and_odd_rows_survive(tmp_path: Path) -> None:
    import gc
    import json

    from tap_dynamics.dataverse.metadata import ColumnInfo
    from tap_dynamics.dataverse.metadata_cache import MetadataCache
    from tap_dynamics.engine.collector import few_collections as _few_collections

    path = tmp_path / "m.json"
    cache = MetadataCache(str(path), "https://org", 3600, "f")
    cache.put("t", [ColumnInfo("name", "name", "String", "String", "Name"),
                    ColumnInfo("_o_value", "o", "Lookup", "Lookup", None)])
    cache.save(["t"])
    raw = json.loads(path.read_text())
    raw["tables"]["odd"] = {"at": raw["tables"]["t"]["at"], "columns": [1, ["a"], None, ["x", "x", 3, "String"]]}
    path.write_text(json.dumps(raw))
    loaded = MetadataCache(str(path), "https://org", 3600, "f")
    rows = loaded.tables["t"]["columns"]
    assert rows == raw["tables"]["t"]["columns"]  # same content
    assert rows[0][1] is rows[0][0]  # logical name shares the column name's string
    assert rows[0][2] is rows[0][3]  # type names are shared (interned)
    assert [c.name for c in loaded.get("t")] == ["name", "_o_value"]
    assert loaded.get("odd") is None  # a row of the wrong shape: the table is rediscovered
    # what save() writes back is what was read
    loaded.save(["t"])
    assert json.loads(path.read_text())["tables"]["t"] == raw["tables"]["t"]

    before = gc.get_threshold()
    with _few_collections():
        assert gc.get_threshold()[0] >= 100_000
        with _few_collections():  # nested (a sync's tables on several threads): the outer one restores
            pass
        assert gc.get_threshold()[0] >= 100_000
    assert gc.get_threshold() == before
    gc.disable()
    try:
        with _few_collections():
            assert not gc.isenabled()
    finally:
        gc.enable()
    assert gc.get_threshold() == before


def test_discover_never_builds_the_whole_catalog(big_org, capsys, monkeypatch, tmp_path: Path) -> None:
    """Regression guard for the memory fix: the CLI's --discover must not go through the SDK's
    whole-catalog path (``Catalog.to_dict`` / ``Tap.catalog_dict``), which is what cost ~270 MB."""
    import json

    from singer_sdk.singerlib import Catalog

    expected = _sdk_catalog_text(big_org.tap_config(), capsys)

    def whole_catalog(*_args: object) -> None:
        raise AssertionError("--discover built the whole catalog")

    monkeypatch.setattr(Catalog, "to_dict", whole_catalog)
    monkeypatch.setattr(TapDynamics, "catalog_dict", property(whole_catalog))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(big_org.tap_config()))
    code = TapDynamics.cli.main(["--config", str(config), "--discover"], standalone_mode=False)
    assert code in (0, None)
    assert capsys.readouterr().out == expected
