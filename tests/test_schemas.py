"""Issue 4: faithful schemas type by type, lossless numbers, labels, metadata streams, discovery.

Everything runs the tap as a real process against the emulator; "lands in DuckDB" means the tap's
stdout is piped into the project's Meltano-installed target-duckdb, exactly as ``meltano run``
does, and the warehouse is inspected with SQL.
"""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from jsonschema import Draft7Validator, FormatChecker

from tap_dynamics.dataverse.metadata import EntityInfo, MetadataCache, column_from_attribute
from tests.demo import ensure_plugins, target_duckdb
from tests.emulator import Emulator
from tests.emulator import tables as T
from tests.taprun import hermetic_env, run_tap, select_streams

# column -> (Dataverse type, JSON Schema type/format, DuckDB column type). DuckDB types are what
# target-duckdb 0.8 makes of the declared schema: number -> DOUBLE, format date -> VARCHAR
# (it has no DATE mapping), integer with Int32/Int64 bounds -> INTEGER/BIGINT, array -> JSON.
ACCOUNT_TYPES = {
    "name": ("String", "string", None, "VARCHAR"),
    "description": ("Memo", "string", None, "VARCHAR"),
    "new_sourcetable": ("EntityName", "string", None, "VARCHAR"),
    "accountid": ("Uniqueidentifier", "string", "uuid", "VARCHAR"),
    "numberofemployees": ("Integer", "integer", None, "INTEGER"),
    "versionnumber": ("BigInt", "integer", None, "BIGINT"),
    "exchangerate": ("Decimal", "number", None, "DOUBLE"),
    "revenue": ("Money", "number", None, "DOUBLE"),
    "address1_latitude": ("Double", "number", None, "DOUBLE"),
    "donotemail": ("Boolean", "boolean", None, "BOOLEAN"),
    "modifiedon": ("DateTime UserLocal", "string", "date-time", "TIMESTAMP"),
    "new_localopening": ("DateTime TimeZoneIndependent", "string", "date-time", "TIMESTAMP"),
    "new_foundedon": ("DateTime DateOnly", "string", "date", "VARCHAR"),
    "industrycode": ("Picklist", "integer", None, "INTEGER"),
    "statecode": ("State", "integer", None, "INTEGER"),
    "statuscode": ("Status", "integer", None, "INTEGER"),
    "new_regions": ("MultiSelectPicklist", "array", None, "JSON"),
    "_primarycontactid_value": ("Lookup", "string", "uuid", "VARCHAR"),
    "_ownerid_value": ("Owner", "string", "uuid", "VARCHAR"),
}
CONTACT_TYPES = {"_parentcustomerid_value": ("Customer", "string", "uuid", "VARCHAR")}


@pytest.fixture(scope="module")
def org():
    emu = Emulator(rows={"account": 300, "contact": 120, "systemuser": 10}).start()
    big = emu.insert("account", {"name": "Lossless Ltd", "exchangerate": Decimal("0.1"),
                                 "revenue": Decimal("922337203685477.5807")})
    emu.big_id = big["accountid"]
    yield emu
    emu.stop()


def _load(stdout: str, path: Path) -> None:
    """Pipe Singer messages into target-duckdb, as `meltano run` would."""
    ensure_plugins({"MELTANO_DATABASE_URI": f"sqlite:///{path.parent / 'meltano.db'}"})
    config = path.parent / "target.json"
    config.write_text(json.dumps({"path": str(path), "default_target_schema": "dynamics"}))
    result = subprocess.run([str(target_duckdb()), "--config", str(config)], input=stdout,  # noqa: S603
                            capture_output=True, text=True, timeout=300, env=hermetic_env())
    assert result.returncode == 0, result.stderr[-3000:]


def _column_types(path: Path, table: str) -> dict[str, str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return dict(con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'dynamics' and table_name = ?", [table]).fetchall())


def _validator(schema: dict) -> Draft7Validator:
    return Draft7Validator(schema, format_checker=FormatChecker())


def test_every_type_from_metadata_to_schema_to_value_to_duckdb(org, tmp_path: Path) -> None:
    run = run_tap({**org.tap_config(), "entities": ["account", "contact"]})
    assert run.returncode == 0, run.stderr
    schemas = run.schemas()
    for table, types in (("account", ACCOUNT_TYPES), ("contact", CONTACT_TYPES)):
        schema = schemas[table]["schema"]
        props = schema["properties"]
        records = run.records(table)
        assert len(records) == len(org.rows(table))
        validator = _validator(schema)
        for record in records:  # every value the server returned validates against the schema
            errors = list(validator.iter_errors(record))
            assert not errors, (table, errors[0].message)
        for column, (kind, json_type, fmt, _) in types.items():
            declared = props[column]
            types_ = declared["type"] if isinstance(declared["type"], list) else [declared["type"]]
            assert json_type in types_, (column, kind, declared)
            assert declared.get("format") == fmt, (column, kind, declared)
            assert declared.get("description"), f"{column}: the Description label is missing"
            assert any(r.get(column) is not None for r in records), f"{column}: no real value to test"
    # left out: companions, file and image columns (listed once in the log)
    account_props = schemas["account"]["schema"]["properties"]
    for gone in ("primarycontactidname", "owneridtype", "entityimage", "new_contractfile", "primarycontactid"):
        assert gone not in account_props
    assert run.stderr.count("file/image columns are not extracted: entityimage, new_contractfile") == 1
    # DateOnly values are the server's strings, untouched; multi-select is an int array
    truth = {r["accountid"]: r for r in org.rows("account")}
    for record in run.records("account"):
        assert record["new_foundedon"] == truth[record["accountid"]]["new_foundedon"]
        raw = truth[record["accountid"]]["new_regions"]
        assert record["new_regions"] == ([int(x) for x in raw.split(",")] if raw else None)

    warehouse = tmp_path / "types.duckdb"
    _load(run.stdout, warehouse)
    for table, types in (("account", ACCOUNT_TYPES), ("contact", CONTACT_TYPES)):
        landed = _column_types(warehouse, table)
        for column, (kind, _, _, duck) in types.items():
            assert landed[column] == duck, (table, column, kind, landed[column])
    with duckdb.connect(str(warehouse), read_only=True) as con:
        some = next(r for r in run.records("account") if r["new_foundedon"] and r["new_regions"])
        founded, regions = con.execute(
            "select new_foundedon, new_regions from dynamics.account where accountid = ?",
            [some["accountid"]]).fetchone()
    assert founded == some["new_foundedon"]
    assert json.loads(regions) == some["new_regions"]


def test_decimal_and_money_are_byte_exact_on_stdout_and_land_in_duckdb(org, tmp_path: Path) -> None:
    run = run_tap({**org.tap_config(), "entities": ["account"]})
    assert run.returncode == 0, run.stderr
    line = next(x for x in run.stdout.splitlines() if org.big_id in x and '"RECORD"' in x)
    # Exactly the digits the server sent (Money: 4 places, Decimal: its precision of 10):
    # 0.1 is not rounded to 0.1000000000000000055511151231257827, and the money value whose
    # scaled integer 9223372036854775807 is far above 2**53 keeps every digit.
    assert '"exchangerate":0.1000000000' in line
    assert '"revenue":922337203685477.5807' in line
    record = json.loads(line, parse_float=Decimal)["record"]
    assert record["revenue"] * 10000 == 9223372036854775807  # the Money column's full scaled range
    assert Decimal(float(record["revenue"])) != record["revenue"], "a double could not have carried it"
    warehouse = tmp_path / "numbers.duckdb"
    _load(run.stdout, warehouse)
    assert _column_types(warehouse, "account")["revenue"] == "DOUBLE"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rate, revenue = con.execute(
            "select exchangerate, revenue from dynamics.account where accountid = ?", [org.big_id]).fetchone()
    assert rate == 0.1  # the closest double, as target-duckdb stores every JSON number as DOUBLE
    assert revenue == pytest.approx(922337203685477.5807, rel=1e-15)


def test_label_streams_land_in_duckdb_and_join_industrycode(org, tmp_path: Path) -> None:
    config = {**org.tap_config(), "entities": ["account", "contact", "systemuser"]}
    catalog = run_tap(config, "--discover").catalog
    names = {s["tap_stream_id"] for s in catalog["streams"]}
    assert {"option_set_labels", "entity_definitions", "attribute_definitions", "relationships"} <= names
    wanted = ["account", "option_set_labels", "entity_definitions", "attribute_definitions", "relationships"]
    run = run_tap(config, catalog=select_streams(catalog, wanted))
    assert run.returncode == 0, run.stderr
    labels = run.records("option_set_labels")
    kinds = {r["attribute_type"] for r in labels}
    assert kinds == {"Picklist", "MultiSelectPicklist", "State", "Status", "Boolean"}
    assert {r["language_code"] for r in labels} == {1033, 1031}
    by_key = {(r["entity"], r["attribute"], r["value"], r["language_code"]): r for r in labels}
    assert by_key[("account", "industrycode", 1, 1031)]["label"] == "Buchhaltung"
    assert by_key[("account", "donotemail", 1, 1033)]["label"] == "Do Not Allow"
    assert by_key[("account", "statuscode", 2, 1033)]["state"] == 1
    regions = by_key[("account", "new_regions", 100000002, 1033)]
    assert regions["label"] == "Europe" and regions["is_global"] is True
    rels = {r["schema_name"]: r for r in run.records("relationships")}
    one = rels["contact_account_primarycontactid"]
    assert (one["referenced_entity"], one["referencing_entity"], one["referencing_column"]) == (
        "contact", "account", "_primarycontactid_value")
    many = rels["new_account_contact"]
    assert (many["relationship_type"], many["entity1"], many["entity2"]) == ("ManyToMany", "account", "contact")
    attrs = {(r["entity"], r["logical_name"]): r for r in run.records("attribute_definitions")}
    assert attrs[("account", "ownerid")]["column_name"] == "_ownerid_value"
    assert attrs[("account", "new_foundedon")]["date_time_behavior"] == "DateOnly"
    assert attrs[("account", "entityimage")]["column_name"] is None
    tables = {r["logical_name"]: r for r in run.records("entity_definitions")}
    assert tables["new_externalorder"]["table_type"] == "Virtual"

    warehouse = tmp_path / "labels.duckdb"
    _load(run.stdout, warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        joined = dict(con.execute(
            "select a.accountid, l.label from dynamics.account a "
            "left join dynamics.option_set_labels l on l.entity = 'account' "
            "and l.attribute = 'industrycode' and l.value = a.industrycode and l.language_code = 1033"
        ).fetchall())
        for table in ("entity_definitions", "attribute_definitions", "relationships"):
            assert con.execute(f"select count(*) from dynamics.{table}").fetchone()[0] > 0
    truth = {r["accountid"]: T.INDUSTRY.label_of(r["industrycode"]) for r in org.rows("account")}
    assert joined == truth
    assert any(label is not None for label in joined.values())


def test_label_languages_limits_the_languages(org) -> None:
    config = {**org.tap_config(), "entities": ["account"], "label_languages": [1031]}
    catalog = select_streams(run_tap(config, "--discover").catalog, ["option_set_labels"])
    run = run_tap(config, catalog=catalog)
    assert run.returncode == 0, run.stderr
    assert {r["language_code"] for r in run.records("option_set_labels")} == {1031}


def test_annotations_become_declared_warehouse_safe_columns(org) -> None:
    org.reset_stats()
    run = run_tap({**org.tap_config(), "entities": ["account", "contact"], "annotations": True})
    assert run.returncode == 0, run.stderr
    schema = run.schemas()["account"]["schema"]
    props = schema["properties"]
    for name in ("industrycode__formatted", "_ownerid_value__formatted",
                 "_ownerid_value__lookuplogicalname", "new_regions__formatted", "revenue__formatted"):
        assert props[name]["type"] == ["string", "null"], name
    assert "name__formatted" not in props and "accountid__formatted" not in props
    validator = _validator(schema)
    truth = {r["accountid"]: r for r in org.rows("account")}
    for record in run.records("account"):
        assert not [k for k in record if "@" in k]
        assert not list(validator.iter_errors(record))
        assert set(record) <= set(props)
        code = truth[record["accountid"]]["industrycode"]
        assert record.get("industrycode__formatted") == T.INDUSTRY.label_of(code)
        if record["_ownerid_value"]:
            assert record["_ownerid_value__lookuplogicalname"] == "systemuser"
    parents = {r.get("_parentcustomerid_value__lookuplogicalname") for r in run.records("contact")}
    assert {"account", "contact"} <= parents
    # annotation columns are never put into $select
    data_requests = [p for _, p, _ in org.request_log() if p.endswith("/accounts")]
    assert data_requests


def test_special_tables_excludes_and_failing_tables(org) -> None:
    run = run_tap(org.tap_config(), "--discover")
    assert run.returncode == 0, run.stderr
    tables = {s["tap_stream_id"] for s in run.catalog["streams"]}
    # private, virtual, elastic and intersect tables only when named; 403 table skipped, one warning
    assert {"account", "contact", "systemuser"} <= tables
    assert not tables & {"new_internalqueueitem", "new_externalorder", "new_sensorreading",
                         "new_account_contact", "new_payrollentry"}
    assert run.stderr.count("Skipping table new_payrollentry") == 1
    assert "prvReadnew_payrollentry" in run.stderr

    excluded = run_tap({**org.tap_config(), "entities": ["*"], "exclude_entities": ["sys*", "contact"]}, "--discover")
    assert {s["tap_stream_id"] for s in excluded.catalog["streams"]} - {
        "option_set_labels", "entity_definitions", "attribute_definitions", "relationships"} == {"account"}

    named = {**org.tap_config(), "entities": ["account", "new_externalorder", "new_sensorreading", "new_account_contact"]}
    run = run_tap(named)
    assert run.returncode == 3, run.stderr[-2000:]  # README: 3 — some tables failed, the rest synced
    assert "new_externalorder" in run.stderr and "ISV code aborted the operation" in run.stderr
    assert len(run.records("account")) == len(org.rows("account"))
    assert run.schemas()["new_sensorreading"]["schema"]["properties"]["partitionid"]
    assert not [line for line in run.stderr.splitlines() if "Traceback" in line]


def test_bad_schema_settings_are_one_line_errors(org) -> None:
    for bad, setting in (({"exclude_entities": [1]}, "exclude_entities"),
                         ({"label_languages": ["english"]}, "label_languages"),
                         ({"annotations": "maybe"}, "annotations"),
                         ({"metadata_cache_ttl": -1}, "metadata_cache_ttl")):
        run = run_tap({**org.tap_config(), **bad}, "--discover")
        assert run.returncode == 2, run.stderr  # EXIT_CONFIG
        # the SDK's JSON-schema check or load_settings: either way one line naming the setting
        assert [line for line in run.stderr.splitlines() if setting in line and "rror" in line], run.stderr
        assert "Traceback" not in run.stderr


def test_metadata_cache_skips_rediscovery(org, tmp_path: Path) -> None:
    config = {**org.tap_config(), "metadata_cache_path": str(tmp_path / "cache" / "metadata.json")}
    org.reset_stats()
    first = run_tap(config, "--discover")
    assert first.returncode == 0, first.stderr
    cold = [p for _, p, _ in org.request_log() if "/Attributes" in p]
    assert len(cold) >= 3
    org.reset_stats()
    second = run_tap(config, "--discover")
    assert second.returncode == 0, second.stderr
    assert not [p for _, p, _ in org.request_log() if "/Attributes" in p and "payroll" not in p]
    assert second.catalog == first.catalog
    org.reset_stats()
    expired = run_tap({**config, "metadata_cache_ttl": 0}, "--discover")
    assert expired.returncode == 0
    assert len([p for _, p, _ in org.request_log() if "/Attributes" in p]) == len(cold)


def test_cache_is_dropped_when_the_table_list_changes(tmp_path: Path) -> None:
    path = str(tmp_path / "m.json")
    column = column_from_attribute({"LogicalName": "name", "AttributeType": "String"}, {})
    cache = MetadataCache(path, "https://org", 3600, "fingerprint-1")
    cache.put("account", [column])
    cache.save(["account"])
    assert MetadataCache(path, "https://org", 3600, "fingerprint-1").get("account")[0].name == "name"
    assert MetadataCache(path, "https://org", 3600, "fingerprint-2").get("account") is None
    assert MetadataCache(path, "https://other", 3600, "fingerprint-1").get("account") is None
    Path(path).write_text("{not json")
    assert MetadataCache(path, "https://org", 3600, "fingerprint-1").get("account") is None
    assert EntityInfo("a", "as", "aid") != EntityInfo("a", "as", "aid", change_tracking=True)
