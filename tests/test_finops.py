"""Finance & Operations (the ``/data`` OData service): settings, reading and errors, through real HTTP.

Every sync runs the tap as a real process against the F&O emulator (emulator/finops), which
filters to the default company unless ``cross-company=true``, pages with ``$skip`` next links at
10,000 rows, renders enums as member names and stores empty dates as ``1900-01-01`` sentinels.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from decimal import Decimal

import pytest
import requests

from emulator import Emulator
from emulator.finops import COMPANIES, DEFAULT_COMPANY, FinOpsEmulator
from tap_dynamics.config.settings import load_settings
from tap_dynamics.errors import ConfigError
from tests.taprun import run_command, run_tap, select_streams

UNREGISTERED_APP = "44444444-4444-4444-8444-444444444444"
UNREGISTERED_SECRET = "unregistered-app-secret-4"
SENTINELS = {"1900-01-01T00:00:00Z", "1900-01-01T12:00:00Z", "1900-01-01"}


def expected(emu: FinOpsEmulator, entity_set: str, companies: tuple[str, ...] = COMPANIES) -> dict[tuple, dict]:
    """The rows as the tap must emit them: no etag, exact decimals, empty dates null."""
    keys = emu.store.entities[entity_set].keys
    out = {}
    for row in emu.rows(entity_set):
        if "dataAreaId" in row and row["dataAreaId"] not in companies:
            continue
        clean = {k: (None if v in SENTINELS else v) for k, v in row.items() if k != "@odata.etag"}
        clean = {k: Decimal(str(v)) if isinstance(v, (float, Decimal)) else v for k, v in clean.items()}
        out[tuple(row[k] for k in keys)] = clean
    return out


def emitted(run, entity_set: str, keys: list[str]) -> dict[tuple, dict]:
    records = run.records(entity_set)
    by_key = {tuple(r[k] for k in keys): r for r in records}
    assert len(by_key) == len(records), "a row was emitted twice"
    return by_key


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-2000:]
    return [line for line in stderr.splitlines() if line.strip() and " | " not in line]


@pytest.fixture(scope="module")
def big() -> FinOpsEmulator:
    """30,003 customers: 10,001 per company, so each company's chain is two 10,000-row pages."""
    with FinOpsEmulator(rows={"CustomersV3": 30_003, "SalesOrderHeadersV2": 90}) as emu:
        yield emu


@pytest.fixture
def emu() -> FinOpsEmulator:
    with FinOpsEmulator(rows={"CustomersV3": 60, "SalesOrderHeadersV2": 60}) as emu:
        yield emu


# ------------------------------------------------------------------ settings
GOOD = {"tenant_id": "contoso.onmicrosoft.com", "client_id": "00000000-0000-4000-8000-000000000001",
        "client_secret": "a-secret-value-1"}


@pytest.mark.parametrize("url", ["https://contoso.operations.dynamics.com", "https://x.sandbox.operations.dynamics.com/",
                                 "https://contoso.cloudax.dynamics.com/data"])
def test_the_environment_url_selects_finops_and_its_service_root(url: str) -> None:
    settings = load_settings({**GOOD, "url": url})
    host = urllib.parse.urlsplit(url).netloc
    assert (settings.system, settings.api_base, settings.scope) == ("finops", f"https://{host}/data", f"https://{host}/.default")
    assert settings.page_size == 10_000  # F&O's server-driven page size by default


@pytest.mark.parametrize(("extra", "message"), [
    ({"page_size": 10_001}, "setting 'page_size' must be from 1 to 10000 (got 10001)"),
    ({"companies": ["usmf"], "cross_company": False}, "setting 'companies' needs cross_company true"),
    ({"url": "https://contoso.operations.dynamics.com/data/CustomersV3"}, "must be the environment's root without a path"),
    ({"url": None, "edition": "FinOpsOnline"}, "setting 'url' is missing — set it to the environment's address"),
])
def test_finops_settings_are_checked_in_one_line(extra: dict, message: str) -> None:
    config = {**GOOD, "url": "https://contoso.operations.dynamics.com", **extra}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(config)


def test_dataverse_pages_stay_at_5000() -> None:
    with pytest.raises(ConfigError, match="from 1 to 5000"):
        load_settings({**GOOD, "url": "https://org.crm.dynamics.com", "page_size": 10_000})


# ------------------------------------------------------------------ discovery
def test_discovery_types_keys_and_methods(emu: FinOpsEmulator) -> None:
    run = run_tap(emu.tap_config(), "--discover")
    assert run.returncode == 0, run.stderr[-2000:]
    streams = {s["tap_stream_id"]: s for s in run.catalog["streams"]}
    assert {"Companies", "CustomersV3", "SalesOrderHeadersV2", "Currencies", "enum_labels", "entity_definitions"} <= set(streams)
    customers = streams["CustomersV3"]
    props = customers["schema"]["properties"]
    assert customers["key_properties"] == ["dataAreaId", "CustomerAccount"]  # the CSDL key, in order
    assert props["OrganizationName"] == {"type": ["string", "null"], "maxLength": 100}
    assert props["CustomerAccount"] == {"type": "string", "maxLength": 20}
    assert props["IsOneTimeCustomer"] == {"type": "string", "enum": ["No", "Yes"]}
    assert props["CreditLimit"]["type"] == "number" and props["PartyNumber"]["type"] == "integer"
    assert props["PartyGuid"] == {"type": ["string", "null"], "format": "uuid"}
    assert props["PaymentDayDate"]["format"] == "date" and props["CreatedDateTime"]["format"] == "date-time"
    assert "Image" not in props and "CustomerGroup" not in props  # binary and navigation left out
    root = {tuple(m["breadcrumb"]): m["metadata"] for m in customers["metadata"]}[()]
    assert root["forced-replication-method"] == "FULL_TABLE"
    orders = {tuple(m["breadcrumb"]): m["metadata"] for m in streams["SalesOrderHeadersV2"]["metadata"]}[()]
    assert (orders["forced-replication-method"], orders["valid-replication-keys"]) == ("INCREMENTAL", ["ModifiedDateTime1"])


def test_entities_globs_and_a_name_the_environment_lacks(emu: FinOpsEmulator) -> None:
    run = run_tap({**emu.tap_config(), "entities": ["Customers*"], "exclude_entities": ["companies"]}, "--discover")
    assert {s["tap_stream_id"] for s in run.catalog["streams"]} == {"CustomersV3", "enum_labels", "entity_definitions"}
    run = run_tap({**emu.tap_config(), "entities": ["CustomerV3"]}, "--discover")
    assert run.returncode == 2
    assert error_lines(run.stderr)[-1].startswith("tap-dynamics: error: setting 'entities' names 'customerv3'")


# ------------------------------------------------------------------ reading
def test_full_sync_of_a_multi_company_entity_beyond_one_page_is_exact(big: FinOpsEmulator) -> None:
    """Every company, 10,000-row pages followed by their $skip next links, one chain per company:
    rows exact (decimals to the last digit, enums as names, empty dates null), ACTIVATE_VERSION."""
    big.reset_stats()
    run = run_tap({**big.tap_config(), "entities": ["CustomersV3"]})
    assert run.returncode == 0, run.stderr[-2000:]
    got = emitted(run, "CustomersV3", ["dataAreaId", "CustomerAccount"])
    want = expected(big, "CustomersV3")
    assert len(got) == len(want) == 30_003
    assert got == want
    assert {r["IsOneTimeCustomer"] for r in got.values()} == {"Yes", "No"}
    assert any(r["LastInvoiceDateTime"] is None for r in got.values())
    assert [m["type"] for m in run.messages].count("ACTIVATE_VERSION") == 2  # first sync: at start and end
    reads = [(p, urllib.parse.unquote(q)) for p, q, _ in big.query_log() if p == "/data/CustomersV3"]
    assert len(reads) == 6  # two pages per company
    for company in COMPANIES:
        mine = [q for _p, q in reads if f"dataAreaId eq '{company}'" in q]
        assert len(mine) == 2 and all("cross-company=true" in q for q in mine)
        assert all("$orderby=dataAreaId asc,CustomerAccount asc" in q for q in mine)  # stable order
        assert any("$skip=10000" in q for q in mine)  # the server's link, followed verbatim


def test_cursor_sync_then_incremental_from_state(emu: FinOpsEmulator) -> None:
    config = {**emu.tap_config(), "entities": ["SalesOrderHeadersV2"]}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr[-2000:]
    keys = ["dataAreaId", "SalesOrderNumber"]
    assert emitted(first, "SalesOrderHeadersV2", keys) == expected(emu, "SalesOrderHeadersV2")
    state = first.last_state
    chains = state["bookmarks"]["SalesOrderHeadersV2"]["chains"]
    assert set(chains) == set(COMPANIES)  # each company keeps its own bookmark
    emu.upsert("SalesOrderHeadersV2", {"dataAreaId": "usrt", "SalesOrderNumber": "SO-0000003",
                                       "TotalDiscountPercentage": "12.345678"})
    second = run_tap(config, state=state)
    assert second.returncode == 0, second.stderr[-2000:]
    rows = second.records("SalesOrderHeadersV2")
    assert [(r["dataAreaId"], r["SalesOrderNumber"]) for r in rows] == [("usrt", "SO-0000003")]
    assert rows[0]["TotalDiscountPercentage"] == Decimal("12.345678")
    third = run_tap(config, state=second.last_state)  # the commit margin re-read drops what was emitted
    assert third.records("SalesOrderHeadersV2") == []


def test_a_killed_full_table_run_resumes_per_company(emu: FinOpsEmulator) -> None:
    """Resume from a STATE in the middle of the read: finished companies are not read again,
    the others continue from their own next link, and together the two runs hold every row once."""
    config = {**emu.tap_config(), "entities": ["CustomersV3"], "page_size": 4, "max_concurrency": 1}
    whole = run_tap(config)
    states = [m for m in whole.messages if m["type"] == "STATE"]
    midway = next(m["value"] for m in states
                  if (c := m["value"]["bookmarks"].get("CustomersV3", {}).get("chains"))
                  and any(v["done"] for v in c.values()) and not all(v["done"] for v in c.values())
                  and any(v["next_link"] for v in c.values()))
    chains = midway["bookmarks"]["CustomersV3"]["chains"]
    done = {company for company, chain in chains.items() if chain["done"]}
    index = whole.messages.index(next(m for m in whole.messages if m.get("value") == midway))
    before = [m["record"] for m in whole.messages[:index] if m["type"] == "RECORD"]
    emu.reset_stats()
    resumed = run_tap(config, state=midway)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = resumed.records("CustomersV3")
    assert not any(r["dataAreaId"] in done for r in after)
    assert not any(f"dataAreaId eq '{c}'" in urllib.parse.unquote(q) for c in done for _p, q, _ in emu.query_log())
    keys = [(r["dataAreaId"], r["CustomerAccount"]) for r in before + after]
    assert len(keys) == len(set(keys)) == 60
    versions = {m["version"] for m in resumed.messages if m["type"] == "RECORD"}
    assert versions == {midway["bookmarks"]["CustomersV3"]["table_version"]}  # the same table version
    assert any(m["type"] == "ACTIVATE_VERSION" for m in resumed.messages)


def test_cross_company_false_reads_the_default_company_and_companies_narrow(emu: FinOpsEmulator) -> None:
    run = run_tap({**emu.tap_config(), "entities": ["CustomersV3"], "cross_company": False})
    assert {r["dataAreaId"] for r in run.records("CustomersV3")} == {DEFAULT_COMPANY}
    assert not any("cross-company" in q for _p, q, _ in emu.query_log())
    run = run_tap({**emu.tap_config(), "entities": ["CustomersV3", "Currencies"], "companies": ["USRT", "demf"]})
    assert emitted(run, "CustomersV3", ["dataAreaId", "CustomerAccount"]) == expected(emu, "CustomersV3", ("usrt", "demf"))
    assert len(run.records("Currencies")) == 3  # shared entities ignore companies


def test_null_sentinel_dates_false_keeps_them(emu: FinOpsEmulator) -> None:
    run = run_tap({**emu.tap_config(), "entities": ["CustomersV3"], "null_sentinel_dates": False})
    assert "1900-01-01" in {r["PaymentDayDate"] for r in run.records("CustomersV3")}


def test_resource_throttling_is_waited_out_and_nothing_is_lost(emu: FinOpsEmulator) -> None:
    emu.set(throttle_rate=0.3, retry_after=1, fault_seed=3)
    run = run_tap({**emu.tap_config(), "entities": ["CustomersV3"], "page_size": 10})
    assert run.returncode == 0, run.stderr[-2000:]
    assert emitted(run, "CustomersV3", ["dataAreaId", "CustomerAccount"]) == expected(emu, "CustomersV3")
    assert emu.faults.counts().get("throttle", 0) > 0
    assert "high resource utilization" in run.stderr


def test_user_based_limits_are_waited_out_and_nothing_is_lost(emu: FinOpsEmulator) -> None:
    """The optional user-based limits: a 429 with Retry-After per user, waited out by the run."""
    emu.set(user_limits=True, limit_requests=4, limit_window_s=2)
    run = run_tap({**emu.tap_config(), "entities": ["CustomersV3"], "page_size": 10})
    assert run.returncode == 0, run.stderr[-2000:]
    assert emitted(run, "CustomersV3", ["dataAreaId", "CustomerAccount"]) == expected(emu, "CustomersV3")
    refused = emu.faults.protection.refusals
    assert refused and {r.code for r in refused} == {"requests"}
    assert "Number of requests exceeded the limit of 4 over time window of 2 seconds" in run.stderr
    assert not re.search(r"\b0\.0 s throttled", run.stderr)  # the waits are counted as throttling


def test_user_limit_budget_headers_slow_the_run_down_before_a_429(emu: FinOpsEmulator) -> None:
    """Where F&O reports the budget left (Dataverse's x-ms-ratelimit-* headers), the run paces
    itself near its end instead of being refused; without the headers it cannot, and does not."""
    emu.set(user_limits=True, user_limit_headers=True, limit_requests=190)
    run = run_tap({**emu.tap_config(), "entities": ["CustomersV3"], "page_size": 10})
    assert run.returncode == 0, run.stderr[-2000:]
    assert emitted(run, "CustomersV3", ["dataAreaId", "CustomerAccount"]) == expected(emu, "CustomersV3")
    assert emu.faults.protection.refusals == []
    assert "service-protection budget is low" in run.stderr
    paced = float(re.search(r"([\d.]+) s paced", run.stderr).group(1))  # type: ignore[union-attr]
    assert paced > 0
    emu.set(user_limit_headers=False)
    plain = run_tap({**emu.tap_config(), "entities": ["CustomersV3"], "page_size": 10})
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "0.0 s paced" in plain.stderr and "service-protection budget is low" not in plain.stderr


def test_a_forbidden_or_failing_entity_is_skipped_with_one_warning(emu: FinOpsEmulator) -> None:
    """403: skipped at once (exit 3); an entity that keeps erroring on the server: retried, then
    skipped too (exit 4, the service kept failing). The other entities are read in full."""
    emu.set(forbidden_entities=["Currencies"])
    run = run_tap({**emu.tap_config(), "entities": ["CustomersV3", "Currencies"]})
    assert run.returncode == 3
    assert len(run.records("CustomersV3")) == 60
    assert sum("Currencies" in line and "WARNING" in line for line in run.stderr.splitlines()) == 1
    assert "Currencies" in error_lines(run.stderr)[-1]
    emu.set(forbidden_entities=[], failing_entities=["SalesOrderHeadersV2"])
    run = run_tap({**emu.tap_config(), "entities": ["CustomersV3", "SalesOrderHeadersV2"]})
    assert run.returncode == 4
    assert len(run.records("CustomersV3")) == 60
    assert "SalesOrderHeadersV2" in error_lines(run.stderr)[-1]


# ------------------------------------------------------------------ errors and check
def test_an_app_not_registered_in_finops_is_one_line(emu: FinOpsEmulator) -> None:
    emu.register_app(UNREGISTERED_APP, UNREGISTERED_SECRET, registered_in_finops=False)
    config = {**emu.tap_config(), "client_id": UNREGISTERED_APP, "client_secret": UNREGISTERED_SECRET}
    for argv in (["check"], ["--discover"]):
        run = run_command(argv, config) if argv == ["check"] else run_tap(config, *argv)
        assert run.returncode == 2
        lines = error_lines(run.stderr)
        assert len(lines) == 1, lines  # one line, no traceback
        assert "System administration > Setup > Microsoft Entra applications" in lines[-1]
        assert UNREGISTERED_APP in lines[-1]


def test_check_names_the_companies_and_the_readable_entities(emu: FinOpsEmulator) -> None:
    emu.set(forbidden_entities=["Currencies"])
    run = run_command(["check"], emu.tap_config())
    assert run.returncode == 0, run.stderr[-1000:]
    line = run.stdout.strip() or error_lines(run.stderr)[-1]
    assert f"connection available: {emu.env_url} as application" in line
    assert "companies: demf, usmf, usrt; can read 3 of 4 tables — no read privilege on: Currencies" in line


def test_a_url_that_is_not_finops_is_one_line() -> None:
    with Emulator(rows={"account": 2}) as dataverse:
        run = run_tap({**dataverse.tap_config(), "edition": "FinOpsOnline"}, "--discover")
    assert run.returncode == 2
    assert "has no Finance & Operations OData service at /data" in error_lines(run.stderr)[-1]


# ------------------------------------------------------------------ metadata streams
def test_enum_labels_and_entity_definitions(emu: FinOpsEmulator) -> None:
    catalog = select_streams(run_tap(emu.tap_config(), "--discover").catalog, ["enum_labels", "entity_definitions"])
    emu.reset_stats()
    run = run_tap(emu.tap_config(), catalog=catalog)
    assert run.returncode == 0, run.stderr[-2000:]
    label_reads = [path for _m, path, status in emu.request_log() if "/Metadata/Labels(" in path and status in (200, 404)]
    assert label_reads and len(label_reads) == len(set(label_reads))  # no label asked for twice
    labels = {(r["enum"], r["member"], r["language"]): (r["value"], r["label"]) for r in run.records("enum_labels")}
    assert labels[("SalesStatus", "Backorder", "en-us")] == (1, "Open order")
    assert labels[("NoYes", "Yes", "de")] == (1, "Ja")
    assert {lang for _e, _m, lang in labels} == {"en-us", "de"}  # the installed languages
    definitions = {r["entity_set"]: r for r in run.records("entity_definitions")}
    assert definitions["CustomersV3"]["keys"] == ["dataAreaId", "CustomerAccount"]
    assert definitions["Currencies"]["company_specific"] is False
    assert definitions["SalesOrderHeadersV2"]["cursor"] == "ModifiedDateTime1"


# ------------------------------------------------------------------ the emulator is no kinder than F&O
def test_emulator_enum_literals_and_default_company(emu: FinOpsEmulator) -> None:
    token = emu.entra.issue(emu.entra.apps[emu.client_id], audience=emu.finops.audience)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def get(query: str) -> requests.Response:
        return session.get(f"{emu.env_url}/data/CustomersV3?{query}", verify=emu.ca_path)

    assert {r["dataAreaId"] for r in get("$select=dataAreaId").json()["value"]} == {DEFAULT_COMPANY}
    assert get("$filter=dataAreaId eq 'usrt'").json()["value"] == []  # needs cross-company=true
    ok = get("cross-company=true&$filter=IsOneTimeCustomer eq Microsoft.Dynamics.DataEntities.NoYes'Yes'")
    assert ok.status_code == 200 and {r["IsOneTimeCustomer"] for r in ok.json()["value"]} == {"Yes"}
    for bad in ("$filter=IsOneTimeCustomer eq 'Yes'",
                "$filter=IsOneTimeCustomer gt Microsoft.Dynamics.DataEntities.NoYes'No'",
                "$filter=dataAreaId in ('usmf','usrt')"):
        assert get(bad).status_code == 400, bad
    assert session.get(f"{emu.env_url}/data/CustomersV3", verify=emu.ca_path,
                       headers={"Authorization": "Bearer x"}).status_code == 401
    document = session.get(f"{emu.env_url}/data/$metadata", verify=emu.ca_path).text
    assert '<EnumType Name="NoYes">' in document and '<PropertyRef Name="dataAreaId" />' in document
    page = session.get(f"{emu.env_url}/data/CustomersV3?cross-company=true", verify=emu.ca_path,
                       headers={"Prefer": "odata.maxpagesize=7"}).json()
    assert len(page["value"]) == 7 and page["@odata.nextLink"].endswith("cross-company=true&$skip=7")
    assert json.loads(json.dumps(page["value"][0]))["CreditLimit"]


def _set_method(catalog: dict, stream: str, method: str) -> dict:
    """The catalog with ``stream``'s replication method changed, as a user edits a saved catalog."""
    for entry in catalog["streams"]:
        if entry["tap_stream_id"] == stream:
            entry["replication_method"] = method  # what the SDK reads first
            root = next(m["metadata"] for m in entry["metadata"] if m["breadcrumb"] == [])
            root["forced-replication-method"] = method
    return catalog


def test_a_catalogs_method_is_followed_and_the_replication_setting_wins_over_it(emu: FinOpsEmulator) -> None:
    """The engine's one method choice: discovery's cursor, a saved catalog's FULL_TABLE over it, and
    the ``replication`` setting over the catalog."""
    discovered = run_tap(emu.tap_config(), "--discover")
    assert discovered.returncode == 0, discovered.stderr[-2000:]
    catalog = _set_method(select_streams(discovered.catalog, ["SalesOrderHeadersV2"]), "SalesOrderHeadersV2",
                          "FULL_TABLE")
    full = run_tap(emu.tap_config(), catalog=catalog)
    assert full.returncode == 0, full.stderr[-2000:]
    assert len(full.records("SalesOrderHeadersV2")) == 60
    assert [m["type"] for m in full.messages].count("ACTIVATE_VERSION") == 2  # the catalog's full table
    assert "replication_key" not in json.dumps(full.last_state)
    setting = run_tap({**emu.tap_config(), "replication": {"SalesOrderHeadersV2": "ModifiedDateTime1"}}, catalog=catalog)
    assert setting.returncode == 0, setting.stderr[-2000:]
    assert len(setting.records("SalesOrderHeadersV2")) == 60
    assert [m["type"] for m in setting.messages].count("ACTIVATE_VERSION") == 0  # the setting's cursor
    bookmark = setting.last_state["bookmarks"]["SalesOrderHeadersV2"]
    assert bookmark["replication_key"] == "ModifiedDateTime1"
    assert set(bookmark["chains"]) == set(COMPANIES) and all(c["bookmark"] for c in bookmark["chains"].values())
