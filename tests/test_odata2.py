"""CRM 2011-2015's OData v2 endpoint (OrganizationData.svc) through real HTTP and a real NTLM
handshake against the on-premises emulator: the same columns as the Web API path, incremental
from state, a killed run resumes, the endpoint choice, and the engine's v2 page format."""

from __future__ import annotations

import urllib.parse
from decimal import Decimal
from pathlib import Path

import pytest

from emulator.onprem import OnPremEmulator
from tap_dynamics.config import load_settings
from tap_dynamics.engine.formats import ODataV2Verbose, v2_datetime
from tap_dynamics.errors import ConfigError, ServiceError
from tests.taprun import normalise, run_command, run_tap, write_json
from tests.test_check import FIX, error_lines, free_port
from tests.test_incremental import _run_until

TABLES = ("account", "contact", "systemuser")
SV = "/XRMServices/2011/OrganizationData.svc"
# What the v2 endpoint has not (9.x features), and date-only values, which it serves as
# date-times at midnight UTC.
WEB_API_ONLY = {"new_regions"}


@pytest.fixture
def make_onprem(make_emulator):
    def factory(rows: dict[str, int], **kw) -> OnPremEmulator:
        return make_emulator(rows, kind=OnPremEmulator, **kw)

    return factory


def by_key(records: list[dict], key: str) -> dict[str, dict]:
    return {r[key]: r for r in records}


def as_v2(column: str, value: object, schema: dict) -> object:
    """A Web API value as the v2 endpoint serves it (date-only values become midnight UTC)."""
    if value is not None and schema.get("format") == "date":
        return f"{value}T00:00:00Z"
    return value


def test_full_sync_from_v2_equals_the_web_api_sync_with_the_same_columns(make_onprem) -> None:
    """The same organization read through both endpoints: same streams, columns and values."""
    emu = make_onprem({"account": 430, "contact": 60, "systemuser": 4}, tls=False, server_version="9.1")
    # modifiedon on both (change tracking, a Web API method, would add _sdc_deleted_at).
    base = {**emu.tap_config(), "entities": list(TABLES), "replication": {"*": "modifiedon"}}
    web = run_tap({**base, "api_version": "9.1"})
    v2 = run_tap({**base, "api_version": "2011"})
    assert web.returncode == 0, web.stderr
    assert v2.returncode == 0, v2.stderr
    assert "Reading the OData v2 endpoint" in v2.stderr and "api_version is 2011" in v2.stderr
    web_schemas, v2_schemas = web.schemas(), v2.schemas()
    for table in TABLES:
        key = f"{table}id"
        web_props = web_schemas[table]["schema"]["properties"]
        v2_props = v2_schemas[table]["schema"]["properties"]
        assert set(v2_props) == set(web_props) - WEB_API_ONLY, table
        want = by_key(web.records(table), key)
        got = by_key(v2.records(table), key)
        truth = {r[key] for r in emu.rows(table)}
        assert got.keys() == want.keys() == truth, table
        for row_id, row in want.items():
            expected = {c: as_v2(c, v, web_props[c]) for c, v in row.items() if c not in WEB_API_ONLY}
            assert got[row_id] == expected, (table, row_id)
    # Only the v2 endpoint was read, in pages of 50, with v2 query syntax.
    paths = [p for _m, p, _s in emu.request_log()]
    v2_paths = [p for p in paths if p.startswith(SV)]
    assert f"{SV}/$metadata" in v2_paths and f"{SV}/AccountSet" in v2_paths
    queries = [q for p, q, _h in emu.query_log() if p == f"{SV}/AccountSet"]
    assert any("datetime'" in q for q in queries)  # the first-load windows' bounds
    # 50 rows a page: at least ceil(430 / 50) pages for account alone.
    assert len(queries) >= 9


def test_a_server_without_web_api_is_read_through_v2_automatically(make_onprem) -> None:
    emu = make_onprem({"account": 120, "contact": 10, "systemuser": 2}, tls=False, server_version="6.1")
    run = run_tap({**emu.tap_config(), "entities": list(TABLES)})
    assert run.returncode == 0, run.stderr
    [line] = [x for x in run.stderr.splitlines() if "Reading the OData v2 endpoint" in x]
    assert "the server has no Web API (api/data answered 404)" in line
    for table in TABLES:
        key = f"{table}id"
        assert {r[key] for r in run.records(table)} == {r[key] for r in emu.rows(table)}
    # A 9.1 server without api_version: the Web API, said in one line.
    web = make_onprem({"account": 5, "contact": 1, "systemuser": 1}, tls=False, server_version="9.1")
    run = run_tap({**web.tap_config(), "entities": ["account"]})
    assert run.returncode == 0, run.stderr
    assert "Reading the Web API v9.1" in run.stderr and "Reading the OData v2" not in run.stderr


def test_url_naming_the_endpoint_and_adfs(make_onprem) -> None:
    emu = make_onprem({"account": 75, "contact": 3, "systemuser": 1}, server_version="7.0", auth="adfs")
    config = {**emu.tap_config(), "url": emu.org_url + SV + "/", "entities": ["account"],
              "replication": {"account": "full_table"}}
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    assert "url names it" in run.stderr
    assert len(run.records("account")) == 75
    assert emu.adfs_token_requests == 1
    assert [m for m in run.messages if m["type"] == "ACTIVATE_VERSION"]


def test_incremental_from_state(make_onprem) -> None:
    emu = make_onprem({"account": 300, "contact": 2, "systemuser": 1}, tls=False, server_version="7.1")
    config = {**emu.tap_config(), "entities": ["account"], "commit_margin_seconds": 0}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    assert len(first.records("account")) == 300
    state = first.last_state
    assert state["bookmarks"]["account"]["replication_key"] == "modifiedon"
    # Nothing changed: the rows at the bookmark second are not emitted again.
    again = run_tap(config, state=state)
    assert again.returncode == 0 and again.records("account") == []
    emu.advance_clock(60)
    inserted = emu.insert("account", {"name": "Added on CRM 2015"})["accountid"]
    updated = emu.rows("account")[7]["accountid"]
    emu.update("account", updated, {"name": "Renamed on CRM 2015"})
    second = run_tap(config, state=again.last_state)
    assert second.returncode == 0, second.stderr
    assert {r["accountid"] for r in second.records("account")} == {inserted, updated}
    renamed = next(r for r in second.records("account") if r["accountid"] == updated)
    assert renamed["name"] == "Renamed on CRM 2015"
    queries = [q for p, q, _h in emu.query_log() if p == f"{SV}/AccountSet"]
    assert any("ModifiedOn%20ge%20datetime'" in q for q in queries)


@pytest.mark.parametrize("method", ["modifiedon", "full_table"])
def test_a_killed_run_resumes_and_loses_nothing(make_onprem, tmp_path: Path, method: str) -> None:
    emu = make_onprem({"account": 900, "contact": 2, "systemuser": 1}, tls=False, server_version="7.1")
    config = {**emu.tap_config(), "entities": ["account"], "replication": {"account": method}}
    config_path = write_json(tmp_path, "config.json", config)
    seen: dict[str, dict] = {}
    state = None
    kills = 0
    for kill_after in (130, 260, 410):
        messages, killed = _run_until(config_path, state, tmp_path, kill_after)
        kills += killed
        seen.update(by_key([m["record"] for m in messages if m["type"] == "RECORD"], "accountid"))
        after_state = 0
        for message in reversed(messages):
            if message["type"] == "STATE":
                break
            after_state += message["type"] == "RECORD"
        assert after_state <= 50 * 4, "more than a page per window would be re-read"
        state = [m["value"] for m in messages if m["type"] == "STATE"][-1]
    assert kills == 3
    messages, killed = _run_until(config_path, state, tmp_path, None)
    assert not killed
    seen.update(by_key([m["record"] for m in messages if m["type"] == "RECORD"], "accountid"))
    truth = by_key([normalise(r) for r in emu.rows("account")], "accountid")
    assert seen.keys() == truth.keys()
    for key, row in truth.items():
        assert seen[key]["versionnumber"] == row["versionnumber"]
        assert seen[key]["name"] == row["name"]
    if method == "full_table":
        assert any(m["type"] == "ACTIVATE_VERSION" for m in messages)


@pytest.mark.parametrize(("settings", "windows"), [({"first_load_windows": 4, "max_concurrency": 4}, 4),
                                                   ({"first_load_windows": 2}, 8),
                                                   ({"first_load_windows": 10}, 10)])
def test_first_load_reads_windows_concurrently(make_onprem, settings: dict, windows: int) -> None:
    """50-row pages make one chain latency-bound: a first load reads its time windows at once,
    at least ``max_concurrency`` of them (``first_load_windows: 1`` still turns them off)."""
    emu = make_onprem({"account": 1000, "contact": 2, "systemuser": 1}, tls=False, server_version="7.1")
    # The window reads, not the one-row probes that plan them (those come one at a time).
    gate = emu.gate(r"OrganizationData\.svc/AccountSet\?(?!.*\$top=1\b).*ModifiedOn.*(ge|lt)", open_at=4)
    run = run_tap({**emu.tap_config(), "entities": ["account"], **settings})
    assert run.returncode == 0, run.stderr
    assert gate.met, "four window reads were in flight together"
    assert f"reading {windows} time windows concurrently" in run.stderr
    assert len({r["accountid"] for r in run.records("account")}) == 1000


# --- check and --test ------------------------------------------------------------------------------
def test_check_reads_the_v2_endpoint_of_a_server_without_web_api(make_onprem) -> None:
    """No WhoAmI on v2: the user from SystemUserSet by DomainName, the organization from
    OrganizationSet, one `$select=<Key>&$top=1` per table; the line names the endpoint."""
    emu = make_onprem({"account": 7, "contact": 3, "systemuser": 2}, tls=False, server_version="6.1")
    emu.read_denied = {"contact"}
    [user] = [r for r in emu.rows("systemuser") if r["domainname"] == emu.username]
    emu.reset_stats()
    run = run_command(["check"], {**emu.tap_config(), "entities": list(TABLES)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        f"connection available: Contoso Emulated ({emu.server_url}, OData v2 endpoint) as Windows account "
        f"{emu.username}, user id {user['systemuserid']}; can read 2 of 3 tables — no read privilege on: "
        f"contact {FIX}")
    assert not any("WhoAmI" in p for _m, p, _s in emu.request_log())
    queries = [(p.removeprefix(SV + "/"), urllib.parse.unquote(q)) for p, q, _h in emu.query_log() if p.startswith(SV)]
    assert ("AccountSet", "$select=AccountId&$top=1") in queries, queries
    assert ("SystemUserSet", f"$select=SystemUserId&$filter=DomainName eq '{emu.username}'&$top=1") in queries
    assert ("OrganizationSet", "$select=Name&$top=1") in queries
    # The organization not readable either: named after the URL, still a working connection.
    emu.read_denied = {"contact", "organization", "systemuser"}
    run = run_command(["check"], {**emu.tap_config(), "entities": ["account"]})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        f"connection available: organization contoso ({emu.server_url}, OData v2 endpoint) as Windows "
        f"account {emu.username}; can read 1 of 1 table")
    # Nothing readable: exit 2, one line.
    emu.read_denied = {"account", "contact"}
    run = run_command(["check"], {**emu.tap_config(), "entities": ["account", "contact"]})
    assert run.returncode == 2
    assert error_lines(run.stderr)[-1:] == [
        f"connection unavailable: Contoso Emulated ({emu.server_url}, OData v2 endpoint) as Windows account "
        f"{emu.username}, user id {user['systemuserid']}; can read 0 of 2 tables — no read privilege on: "
        f"account, contact {FIX}"]


def test_check_names_the_endpoint_it_chose_and_test_flag(make_onprem) -> None:
    web = make_onprem({"account": 3, "contact": 1, "systemuser": 1}, tls=False, server_version="9.1")
    web.read_denied = {"contact"}  # the same role on both endpoints
    [user] = [r for r in web.rows("systemuser") if r["domainname"] == web.username]
    run = run_command(["check"], {**web.tap_config(), "entities": ["account", "contact"]})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        f"connection available: Contoso Emulated ({web.server_url}, Web API v9.1) as Windows account "
        f"{web.username}, user id {user['systemuserid']}; can read 1 of 2 tables — no read privilege on: "
        f"contact {FIX}")  # WhoAmI's UserId is the account's systemuser row
    explicit = run_command(["check"], {**web.tap_config(), "entities": ["account"], "api_version": "2011"})
    assert explicit.returncode == 0, explicit.stderr
    assert f"({web.server_url}, OData v2 endpoint) as Windows account" in explicit.stdout
    legacy = make_onprem({"account": 3, "contact": 1, "systemuser": 1}, tls=False, server_version="7.1")
    run = run_command(["--test"], {**legacy.tap_config(), "entities": ["account"]})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "connection available: Contoso Emulated" in run.stderr and "OData v2 endpoint)" in run.stderr
    assert not any("WhoAmI" in p for _m, p, _s in legacy.request_log())


def test_check_wrong_password_and_unreachable_server_are_one_line(make_onprem) -> None:
    emu = make_onprem({"account": 3, "contact": 1, "systemuser": 1}, tls=False, server_version="5.0")
    run = run_command(["check"], {**emu.tap_config(), "password": "Wrong-Pa55word!guess"})
    assert run.returncode == 2
    assert [x for x in error_lines(run.stderr) if not x.startswith("Connecting to ")] == [
        f"connection unavailable: {emu.server_url} rejected the Windows sign-in of {emu.username} (HTTP 401 "
        "after the NTLM handshake) — check username (DOMAIN\\user or user@domain) and password, and that the "
        "account is enabled, not locked out, and a user of the Dynamics organization"]
    assert emu.failed_logons == 1 and emu.windows_logons == []
    gone = {**emu.tap_config(), "url": f"http://127.0.0.1:{free_port()}/contoso", "api_version": "2011"}
    run = run_command(["check"], gone)
    assert run.returncode == 2
    [line] = [x for x in error_lines(run.stderr) if not x.startswith("Connecting to ")]
    assert line.startswith(f"connection unavailable: cannot reach {gone['url'].removesuffix('/contoso')} (")


# --- the emulator's service ---------------------------------------------------------------------------
def test_emulator_serves_verbose_json_atom_and_v2_literals(make_onprem) -> None:
    import requests
    from requests_ntlm import HttpNtlmAuth

    emu = make_onprem({"account": 120, "contact": 5, "systemuser": 1}, tls=False, server_version="5.0")
    session = requests.Session()
    session.auth = HttpNtlmAuth(emu.username, emu.password)
    url = emu.org_url + SV + "/AccountSet"
    page = session.get(url, headers={"Accept": "application/json"})
    body = page.json()["d"]
    assert len(body["results"]) == 50 and body["__next"].startswith(emu.org_url + SV + "/AccountSet?")
    row = body["results"][0]
    assert row["__metadata"]["type"] == "Microsoft.Crm.Sdk.Data.Services.Account"
    assert row["OwnerId"]["__metadata"]["type"] == "Microsoft.Crm.Sdk.Data.Services.EntityReference"
    assert row["StateCode"]["__metadata"]["type"] == "Microsoft.Crm.Sdk.Data.Services.OptionSetValue"
    assert row["StateCode"]["Value"] in (0, 1) and isinstance(row["Revenue"]["Value"], (str, type(None)))
    assert b"\\/Date(" in page.content and isinstance(row["VersionNumber"], str)
    atom = session.get(url, params={"$top": "2"})
    assert atom.headers["Content-Type"].startswith("application/atom+xml") and b"<feed" in atom.content
    bad = session.get(url, params={"$filter": "ModifiedOn ge 2024-01-01T00:00:00Z"}, headers={"Accept": "application/json"})
    assert bad.status_code == 400 and "value" in bad.json()["error"]["message"]
    good = session.get(url, params={"$filter": "ModifiedOn ge datetime'2024-01-01T00:00:00' and StateCode/Value eq 0",
                                    "$top": "3"}, headers={"Accept": "application/json"})
    assert good.status_code == 200 and len(good.json()["d"]["results"]) == 3 and "__next" not in good.json()["d"]
    assert session.get(emu.org_url + "/api/data/v9.1/").status_code == 404  # no Web API before 2016
    # $skip is read without a paging cookie: skip + top within 5,000 records, or 400.
    json_accept = {"Accept": "application/json"}
    assert session.get(url, params={"$skip": "4950", "$top": "50"}, headers=json_accept).status_code == 200
    assert session.get(url, params={"$skip": "4951", "$top": "50"}, headers=json_accept).status_code == 400
    assert session.get(url, params={"$skip": "4951"}, headers=json_accept).status_code == 400


def test_the_size_probe_stays_within_the_skip_cap_at_the_largest_settings() -> None:
    """The first-load size probe ``$skip``s past the windows' pages: at the settings' maxima it
    must still be a query every v2 server answers (skip + top within 5,000)."""
    from emulator.onprem.odata2 import MAX_SKIP_TOP
    from tap_dynamics.onprem.v2streams import PAGE_SIZE
    from tap_dynamics.tap import TapDynamics

    properties = TapDynamics.config_jsonschema["properties"]
    most = max(properties["first_load_windows"]["maximum"], properties["max_concurrency"]["maximum"])
    assert max(2, most) * PAGE_SIZE + 1 <= MAX_SKIP_TOP


# --- the engine's page format (no network) -----------------------------------------------------------
def test_v2_page_format_converts_and_checks_rows() -> None:
    fmt = ODataV2Verbose(lambda row: {"id": row["Id"], "modifiedon": v2_datetime(row["ModifiedOn"])})
    body = b'{"d":{"results":[{"Id":"a","ModifiedOn":"\\/Date(1325376000000)\\/"}],"__next":"https://x/next"}}'
    page = fmt.page(fmt.decoder.decode(body), table="t", request_id=None, seen=set(), required=("id",),
                    cursor=("modifiedon", str))
    assert page.next_link == "https://x/next" and list(page.records) == [{"id": "a", "modifiedon": "2012-01-01T00:00:00Z"}]
    with pytest.raises(ServiceError, match="no 'd.results' list"):
        fmt.page({"value": []}, table="t", request_id="r", seen=set())
    broken = fmt.page(fmt.decoder.decode(b'{"d":{"results":[{"Id":"a","ModifiedOn":"2012"}]}}'),
                      table="t", request_id="r", seen=set())
    with pytest.raises(ServiceError, match="cannot be read"):
        list(broken.records)
    assert v2_datetime(None) is None
    money = ODataV2Verbose(lambda row: {"id": row["Id"], "revenue": Decimal(row["Revenue"]["Value"])})
    page = money.page(money.decoder.decode(b'{"d":{"results":[{"Id":"a","Revenue":{"Value":"0.1000"}}]}}'),
                      table="t", request_id=None, seen=set())
    assert list(page.records) == [{"id": "a", "revenue": Decimal("0.1000")}]


def test_v2_date_times_have_one_width_and_sort_as_text_in_time_order() -> None:
    """Whole seconds, as the Web API writes the same value: a fraction would sort before the
    whole second as text ('.' < 'Z') and break the cursor's sort check and bookmark."""
    served = [1325376000000, 1325376000500, 1325376000999, 1325376001000, 1325376001001, -1500]
    values = [v2_datetime(f"/Date({ms})/") for ms in served]
    assert values[:5] == ["2012-01-01T00:00:00Z"] * 3 + ["2012-01-01T00:00:01Z"] * 2
    assert values[5] == "1969-12-31T23:59:58Z"  # cut towards the past: a `ge` bookmark still takes it
    assert {len(v) for v in values} == {20} and sorted(values[:5]) == values[:5]


def test_sub_second_date_time_reads_the_same_through_both_endpoints(make_onprem) -> None:
    emu = make_onprem({"account": 4, "contact": 1, "systemuser": 1}, tls=False, server_version="9.1")
    row_id = emu.rows("account")[0]["accountid"]
    emu.update("account", row_id, {"lastusedincampaign": "2024-01-01T00:00:00.5Z"})
    base = {**emu.tap_config(), "entities": ["account"], "replication": {"*": "modifiedon"}}
    values = []
    for version in ("9.1", "2011"):
        run = run_tap({**base, "api_version": version})
        assert run.returncode == 0, run.stderr
        values += [r["lastusedincampaign"] for r in run.records("account") if r["accountid"] == row_id]
    assert values == ["2024-01-01T00:00:00Z"] * 2  # CRM keeps date-times to the second


# --- settings (no network) -----------------------------------------------------------------------------
NTLM = {"url": "https://crm.contoso.com/Contoso", "auth_scheme": "NTLM", "username": "CONTOSO\\svc-tap",
        "password": "Pa55word-settings"}


def test_v2_settings() -> None:
    auto = load_settings(NTLM)
    assert auto.dataverse.endpoint == "auto" and auto.api_base == "https://crm.contoso.com/Contoso/api/data/v9.1"
    explicit = load_settings({**NTLM, "api_version": "2011"})
    assert explicit.dataverse.endpoint == "odata2"
    assert explicit.api_base == "https://crm.contoso.com/Contoso/XRMServices/2011/OrganizationData.svc"
    by_url = load_settings({**NTLM, "url": "https://crm.contoso.com/Contoso/XRMServices/2011/OrganizationData.svc/"})
    assert (by_url.dataverse.endpoint, by_url.org_path) == ("odata2", "/Contoso")
    ifd = load_settings({**NTLM, "url": "https://contoso.crm.contoso.com/XRMServices/2011/OrganizationData.svc"})
    assert ifd.api_base == "https://contoso.crm.contoso.com/XRMServices/2011/OrganizationData.svc"
    assert load_settings({**NTLM, "api_version": "8.2"}).dataverse.endpoint == "webapi"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "https://crm.contoso.com/Contoso/XRMServices/2011/OrganizationData.svc", "api_version": "9.1"},
         "setting 'url' names the OData v2 endpoint (OrganizationData.svc) but api_version is '9.1'"),
        ({"url": "https://crm.contoso.com/Contoso/XRMServices/2011/Organization.svc"},
         "setting 'url' is not an OData v2 endpoint URL"),
        ({"api_version": "2013"}, "setting 'api_version' is '2013': CRM 2011-2015 have no Web API, only the OData v2 "
         "endpoint (XRMServices/2011/OrganizationData.svc, on all three) — set api_version 2011"),
        ({"api_version": "7.0"}, "setting 'api_version' is '7.0': CRM 2011-2015 have no Web API"),
    ],
)
def test_v2_settings_errors_are_one_line(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({**NTLM, **change})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_online_refuses_the_v2_endpoint() -> None:
    online = {"url": "https://a.crm.dynamics.com", "tenant_id": "11111111-2222-4333-8444-555555555555",
              "client_id": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "client_secret": "x", "api_version": "2011"}
    with pytest.raises(ConfigError, match="api_version"):
        load_settings(online)
