"""Microsoft Graph (edition Office365) through real HTTP against the emulator's Office 365 tenant:
full and delta runs exact against the emulator's truth, tombstones, membership removals,
replays, 410 / syncStateNotFound re-baselines, resumed runs, throttling and permissions."""

from __future__ import annotations

import typing as t

import pytest

from tap_dynamics.config import load_settings
from tap_dynamics.config.clouds import CLOUDS
from tap_dynamics.errors import ConfigError
from tests.taprun import run_command, run_killed, run_tap

APP = {
    "tenant_id": "11111111-2222-3333-4444-555555555555",
    "client_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "client_secret": "s3cr3t-value",
}


def _messages(run, kind: str, stream: str | None = None) -> list[dict]:
    return [m for m in run.messages if m["type"] == kind and (stream is None or m.get("stream") == stream)]


class Warehouse:
    """A target that upserts by key, drops rows whose record says deleted, honours ACTIVATE_VERSION."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[t.Any, tuple[int | None, dict]]] = {}
        self.keys: dict[str, list[str]] = {}

    def apply(self, messages: list[dict]) -> None:
        for message in messages:
            stream = message.get("stream")
            if message["type"] == "SCHEMA":
                self.keys[stream] = message["key_properties"]
            elif message["type"] == "RECORD":
                record = message["record"]
                key = tuple(record[k] for k in self.keys[stream])
                table = self.tables.setdefault(stream, {})
                if record.get("_sdc_deleted_at"):
                    table.pop(key, None)
                else:
                    table[key] = (message.get("version"), record)
            elif message["type"] == "ACTIVATE_VERSION":
                table = self.tables.setdefault(stream, {})
                for key in [k for k, (version, _) in table.items() if version != message["version"]]:
                    del table[key]

    def ids(self, stream: str) -> set:
        return {key[0] if len(key) == 1 else key for key in self.tables.get(stream, {})}


def _truth(emu, collection: str) -> set[str]:
    return set(emu.directory.objects[collection])


def _memberships(emu) -> set[tuple[str, str]]:
    return {(g, m) for g, members in emu.directory.members.items() for m in members}


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "url", "login"),
    [
        ({"edition": "Office365"}, "https://graph.microsoft.com", "https://login.microsoftonline.com"),
        ({"edition": "Office365", "azure_environment": "USGOVT"}, "https://graph.microsoft.us", "https://login.microsoftonline.us"),
        ({"edition": "Office365", "azure_environment": "USGOVTDOD"}, "https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
        ({"edition": "Office365", "azure_environment": "CHINA"}, "https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
        ({"url": "https://dod-graph.microsoft.us/"}, "https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
        ({"connection_string": "Edition=Office365;AzureEnvironment=USGOVT"}, "https://graph.microsoft.us", "https://login.microsoftonline.us"),
    ],
)
def test_office365_url_and_login_host_come_from_the_cloud(config: dict, url: str, login: str) -> None:
    settings = load_settings({**APP, **config})
    assert settings.system == "graph"
    assert (settings.url, settings.api_base, settings.scope) == (url, f"{url}/v1.0", f"{url}/.default")
    assert settings.auth.authority_host == login


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_every_clouds_graph_url_alone_selects_graph_in_that_cloud(cloud: str) -> None:
    settings = load_settings({**APP, "url": CLOUDS[cloud].graph})
    assert settings.system == "graph" and settings.url == CLOUDS[cloud].graph
    assert settings.auth.authority_host == CLOUDS[cloud].login


def test_azure_environment_sets_the_login_host_of_dataverse_too() -> None:
    settings = load_settings({**APP, "url": "https://org.crm9.dynamics.com", "azure_environment": "USGOVT"})
    assert settings.system == "dataverse" and settings.auth.authority_host == "https://login.microsoftonline.us"
    explicit = load_settings({**APP, "url": "https://org.crm9.dynamics.com", "authority_host": "https://localhost:9"})
    assert explicit.auth.authority_host == "https://localhost:9"


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"edition": "Office365", "azure_environment": "USGOVT", "url": "https://graph.microsoft.com"},
         "the Microsoft Graph host of the GLOBAL cloud, but azure_environment is USGOVT"),
        ({"edition": "Office365", "azure_environment": "CHINA", "authority_host": "https://login.microsoftonline.com"},
         "the login host of the GLOBAL cloud, but azure_environment is CHINA"),
        ({"url": "https://graph.microsoft.us", "authority_host": "https://login.chinacloudapi.cn"},
         "the login host of the CHINA cloud"),
        ({"edition": "Office365", "azure_environment": "MOON"}, "azure_environment"),
        ({"edition": "Office365", "auth_scheme": "NTLM", "username": "CONTOSO\\svc", "password": "x"},
         "an on-premises sign-in, but edition is Office365"),
        ({"edition": "Office365", "opt_in_properties": ["users.birthday"]}, "opt_in_properties"),
        ({"edition": "Office365", "events_window_days_forward": 0}, "events_window_days_forward"),
    ],
)
def test_office365_settings_are_refused_in_one_line(config: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({**APP, **config})
    assert needle in str(error.value) and "\n" not in str(error.value)


# --- full and delta runs ------------------------------------------------------------------------


def test_first_run_reads_every_stream_exactly(make_graph_emulator) -> None:
    emu = make_graph_emulator(counts={"users": 450, "groups": 30}, graph_delta_page_size=50)
    run = run_tap({**emu.tap_config(), "entities": ["users", "groups", "group_members", "domains", "organization",
                                                    "subscribed_skus", "directory_roles"]})
    assert run.returncode == 0, run.stderr
    warehouse = Warehouse()
    warehouse.apply(run.messages)
    assert warehouse.ids("users") == _truth(emu, "users")
    assert warehouse.ids("groups") == _truth(emu, "groups")
    assert warehouse.ids("group_members") == _memberships(emu)
    assert {row["member_type"] for _, row in warehouse.tables["group_members"].values()} == {"user"}
    assert warehouse.ids("directory_roles") == _truth(emu, "directoryRoles")
    assert [len(warehouse.ids(s)) for s in ("domains", "organization", "subscribed_skus")] == [1, 1, 1]
    # live rows of a delta read say _sdc_deleted_at null; a full-table read's rows have no tombstones
    assert all(m["record"]["_sdc_deleted_at"] is None for m in _messages(run, "RECORD", "users"))
    assert all("_sdc_deleted_at" not in m["record"] for m in _messages(run, "RECORD", "domains"))
    # replays (the same object on a later page) come again but are the same row in the target
    assert len(_messages(run, "RECORD", "users")) > 450
    # delta streams keep the whole deltaLink; full-table streams close a version
    bookmarks = run.last_state["bookmarks"]
    assert "/v1.0/users/delta?$deltatoken=" in bookmarks["users"]["delta_link"]
    assert {m["stream"] for m in _messages(run, "ACTIVATE_VERSION")} == {"domains", "organization", "subscribed_skus"}
    queries = emu.query_log()
    users_delta = [q for q in queries if q[0] == "/v1.0/users/delta"]
    first = users_delta[0]
    assert first[1].startswith("$select=id,") and "signInActivity" not in first[1]
    assert "odata.maxpagesize=999" in first[2]
    assert all("$select" not in q[1] for q in users_delta[1:])  # links followed verbatim (tokens only)
    schema = run.schemas()["users"]["schema"]["properties"]
    assert schema["assignedLicenses"]["type"] == ["array", "null"]
    assert schema["onPremisesExtensionAttributes"]["properties"]["extensionAttribute15"] == {"type": ["string", "null"]}
    assert schema["createdDateTime"]["format"] == "date-time"


def test_change_run_sees_deletions_and_membership_removals(make_graph_emulator) -> None:
    emu = make_graph_emulator()
    config = {**emu.tap_config(), "entities": ["users", "groups", "group_members", "devices"]}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    warehouse = Warehouse()
    warehouse.apply(first.messages)
    directory = emu.directory
    users = sorted(directory.objects["users"])
    group, members = next((g, sorted(ms)) for g, ms in directory.members.items() if len(ms) >= 2)
    directory.delete("users", users[0])  # soft delete: @removed "changed"
    directory.delete("devices", sorted(directory.objects["devices"])[0], permanent=True)  # "deleted"
    directory.remove_member(group, members[-1])
    directory.update("users", users[1], {"jobTitle": "Chief Delta Officer"})
    added = directory.put("users", {"id": "00000000-0000-4000-8000-0000000000aa", "displayName": "New Hire"})

    second = run_tap(config, state=first.last_state)
    assert second.returncode == 0, second.stderr
    warehouse.apply(second.messages)
    for stream, collection in (("users", "users"), ("groups", "groups"), ("devices", "devices")):
        assert warehouse.ids(stream) == _truth(emu, collection), stream
    assert warehouse.ids("group_members") == _memberships(emu)
    users_out = {r["id"]: r for r in (m["record"] for m in _messages(second, "RECORD", "users"))}
    # only the changes: the deleted user (tombstone), the updated one, the new one
    assert set(users_out) == {users[0], users[1], added["id"]}
    assert users_out[users[0]]["_sdc_deleted_at"] and set(users_out[users[0]]) == {"id", "_sdc_deleted_at"}
    assert users_out[users[1]]["jobTitle"] == "Chief Delta Officer" and users_out[users[1]]["_sdc_deleted_at"] is None
    removed = [m["record"] for m in _messages(second, "RECORD", "group_members") if m["record"]["_sdc_deleted_at"]]
    assert {(r["group_id"], r["member_id"]) for r in removed} >= {(group, members[-1]), }
    assert "deletes" in second.stderr and "1 " in second.stderr


@pytest.mark.parametrize(
    ("knob", "code"),
    [("graph_resync", "410"), ("graph_sync_state_not_found", "syncStateNotFound")],
)
def test_invalid_sync_state_rebaselines_as_a_new_version(make_graph_emulator, knob: str, code: str) -> None:
    emu = make_graph_emulator()
    config = {**emu.tap_config(), "entities": ["users"]}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    warehouse = Warehouse()
    warehouse.apply(first.messages)
    gone = sorted(emu.directory.objects["users"])[:3]
    for user in gone:  # deleted while the sync state was lost: no @removed will say so
        emu.directory.delete("users", user, permanent=True)
    emu.set(**{knob: {"users": 1}})
    second = run_tap(config, state=first.last_state)
    assert second.returncode == 0, second.stderr
    warehouse.apply(second.messages)
    activations = _messages(second, "ACTIVATE_VERSION", "users")
    assert len(activations) == 1
    assert {m.get("version") for m in _messages(second, "RECORD", "users")} == {activations[0]["version"]}
    assert warehouse.ids("users") == _truth(emu, "users") and not set(gone) & warehouse.ids("users")
    assert "re-baselined" in second.stderr
    final = second.last_state["bookmarks"]["users"]
    assert "$deltatoken=" in final["delta_link"] and "phase" not in final and "table_version" not in final


def test_expired_delta_token_is_rebaselined(make_graph_emulator) -> None:
    emu = make_graph_emulator()
    config = {**emu.tap_config(), "entities": ["groups"]}
    first = run_tap(config)
    emu.set(graph_delta_token_expiry_seconds=0)  # the 7 days have passed
    second = run_tap(config, state=first.last_state)
    assert second.returncode == 0, second.stderr
    assert len(_messages(second, "ACTIVATE_VERSION", "groups")) == 1
    assert {r["id"] for r in (m["record"] for m in _messages(second, "RECORD", "groups"))} == _truth(emu, "groups")


def test_killed_initial_read_resumes_from_its_next_link(make_graph_emulator) -> None:
    # Slow pages: the kill lands where the STATE that triggers it says, not pages later.
    emu = make_graph_emulator(counts={"users": 300}, graph_delta_page_size=40, latency_ms=150,
                              latency_scope="pages")
    config = {**emu.tap_config(), "entities": ["users"]}
    pages = iter(range(1, 100))
    messages, state = run_killed(config, lambda v: bool(v["bookmarks"].get("users", {}).get("next_link")) and next(pages) == 3)
    emitted = {m["record"]["id"] for m in messages if m["type"] == "RECORD"}
    assert state["bookmarks"]["users"]["phase"] == "initial" and "delta_link" not in state["bookmarks"]["users"]
    emu.reset_stats()
    resumed = run_tap(config, state=state)
    assert resumed.returncode == 0, resumed.stderr
    rest = {m["record"]["id"] for m in _messages(resumed, "RECORD", "users")}
    assert emitted | rest == _truth(emu, "users")
    assert len(rest) < 300  # it went on from the next link, not from the start
    first_request = emu.query_log()[0]
    assert first_request[0] == "/v1.0/users/delta" and first_request[1].startswith("$skiptoken=")
    assert "$deltatoken=" in resumed.last_state["bookmarks"]["users"]["delta_link"]


def test_deltatoken_latest_is_only_a_delta_link(make_graph_emulator) -> None:
    import requests

    emu = make_graph_emulator()
    token = emu.entra.issue(emu.entra.apps[emu.client_id], audience=emu.graph.audience)
    answer = requests.get(f"{emu.graph_url}/v1.0/users/delta?$deltatoken=latest",
                          headers={"Authorization": f"Bearer {token}"}, verify=emu.ca_path, timeout=30).json()
    assert answer["value"] == [] and "$deltatoken=" in answer["@odata.deltaLink"]
    emu.directory.update("users", sorted(emu.directory.objects["users"])[0], {"city": "Oslo"})
    later = requests.get(answer["@odata.deltaLink"], headers={"Authorization": f"Bearer {token}"},
                         verify=emu.ca_path, timeout=30).json()
    while "@odata.nextLink" in later and not later["value"]:
        later = requests.get(later["@odata.nextLink"], headers={"Authorization": f"Bearer {token}"},
                             verify=emu.ca_path, timeout=30).json()
    assert [row["city"] for row in later["value"]][:1] == ["Oslo"]


def test_throttling_waits_retry_after(make_graph_emulator) -> None:
    emu = make_graph_emulator(throttle_rate=0.4, retry_after=1, fault_seed=3)
    run = run_tap({**emu.tap_config(), "entities": ["users", "groups", "devices"]})
    assert run.returncode == 0, run.stderr
    gaps = emu.faults.retry_after_gaps()
    assert gaps and all(waited >= asked for asked, waited in gaps)
    assert {r["id"] for r in (m["record"] for m in _messages(run, "RECORD", "users"))} == _truth(emu, "users")


def test_unavailable_waits_retry_after(make_graph_emulator) -> None:
    emu = make_graph_emulator(error_5xx_rate=0.4, error_5xx_statuses=[503], error_5xx_retry_after=2, fault_seed=5)
    run = run_tap({**emu.tap_config(), "entities": ["users", "groups", "devices"]})
    assert run.returncode == 0, run.stderr
    unavailable = [e for e in emu.faults.events if e.status == 503]
    assert unavailable
    for event in unavailable:
        later = [a for a in emu.faults.arrivals[event.target] if a > event.at]
        assert later and later[0] - event.at >= 2.0
    assert {r["id"] for r in (m["record"] for m in _messages(run, "RECORD", "devices"))} == _truth(emu, "devices")


# --- permissions and errors --------------------------------------------------------------------


def test_a_missing_permission_fails_only_its_stream_naming_it(make_graph_emulator) -> None:
    emu = make_graph_emulator()
    emu.deny("Device.Read.All", "Directory.Read.All")
    run = run_tap({**emu.tap_config(), "entities": ["users", "devices", "domains"]})
    assert run.returncode == 2, run.stderr
    assert "missing Microsoft Graph application permission Device.Read.All" in run.stderr
    assert "Grant admin consent" in run.stderr and "Traceback" not in run.stderr
    assert {r["id"] for r in (m["record"] for m in _messages(run, "RECORD", "users"))} == _truth(emu, "users")
    assert _messages(run, "RECORD", "domains")
    summary = run.stderr[run.stderr.index("Run summary"):]
    assert "devices" in summary and "failed" in summary


def test_check_names_the_tenant_and_the_permissions_it_lacks(make_graph_emulator) -> None:
    emu = make_graph_emulator()
    ok = run_command(["check"], emu.tap_config())
    assert ok.returncode == 0, ok.stderr
    assert "connection available: Contoso Ltd (tenant" in ok.stdout and "cover 11 of 11 streams" in ok.stdout
    emu.deny("GroupMember.Read.All", "Group.Read.All", "Directory.Read.All", "Calendars.Read")
    partial = run_command(["check"], emu.tap_config())
    assert partial.returncode == 0, partial.stderr
    assert "cover 8 of 11 streams" in partial.stdout
    assert "groups (Group.Read.All), group_members (GroupMember.Read.All), events (Calendars.Read)" in partial.stdout


def test_check_reads_the_organization_once_for_the_name_and_the_stream(make_graph_emulator) -> None:
    emu = make_graph_emulator()
    emu.reset_stats()
    ok = run_command(["check"], emu.tap_config())
    assert ok.returncode == 0, ok.stderr
    assert "connection available: Contoso Ltd (tenant" in ok.stdout and "cover 11 of 11 streams" in ok.stdout
    reads = [path for _m, path, _s in emu.request_log() if path.split("?")[0].endswith("/v1.0/organization")]
    assert len(reads) == 1, reads
    emu.deny("Organization.Read.All", "Directory.Read.All")
    denied = run_command(["check"], emu.tap_config())
    assert denied.returncode == 0, denied.stderr
    assert "the tenant (its name needs Organization.Read.All)" in denied.stdout
    assert "cover 9 of 11 streams" in denied.stdout
    assert "organization (Organization.Read.All), subscribed_skus (Organization.Read.All)" in denied.stdout


def test_check_with_no_stream_readable_is_one_line_exit_2(make_graph_emulator) -> None:
    """Nothing granted: the check's line names every missing permission and the run exits 2
    (a person must grant them), as Dataverse's and F&O's checks do with no readable table."""
    emu = make_graph_emulator()
    emu.grant()
    check = run_command(["check"], {**emu.tap_config(), "entities": ["users", "devices"]})
    assert check.returncode == 2, check.stderr
    line = [row for row in check.stderr.splitlines() if row.startswith("connection unavailable:")]
    assert len(line) == 1 and "the permissions cover 0 of 2 streams" in line[0]
    assert "missing application permissions: users (User.Read.All), devices (Device.Read.All)" in line[0]
    assert "connection available" not in check.stdout and "Traceback" not in check.stderr


def test_missing_admin_consent_is_one_line(make_graph_emulator) -> None:
    emu = make_graph_emulator()
    emu.entra.register_app("44444444-4444-4444-8444-444444444444", "another~secret.0123456789", consent=False)
    config = {**emu.tap_config(), "client_id": "44444444-4444-4444-8444-444444444444",
              "client_secret": "another~secret.0123456789"}
    for argv in (["check"], None):
        result = run_command(argv, config) if argv else run_tap(config)
        assert result.returncode == 2
        assert "AADSTS65001: admin consent is missing" in result.stderr and "Traceback" not in result.stderr


def test_a_token_for_another_resource_is_refused_in_one_line(make_graph_emulator) -> None:
    emu = make_graph_emulator()
    token = emu.entra.issue(emu.entra.apps[emu.client_id], audience="https://contoso.crm.dynamics.com")
    config = {**emu.tap_config(), "auth_scheme": "AzureAD", "initiate_oauth": "OFF", "access_token": token}
    config.pop("client_secret")
    run = run_tap({**config, "entities": ["users"]})
    assert run.returncode == 2
    assert "Microsoft Graph rejected the access token (401): it is for https://contoso.crm.dynamics.com" in run.stderr
    assert "a token for the wrong resource" in run.stderr and "Traceback" not in run.stderr


def test_a_graph_host_of_another_cloud_names_the_fix(make_graph_emulator) -> None:
    emu = make_graph_emulator()
    config = {**emu.tap_config(), "url": f"https://localhost:{emu.port}"}  # not the tenant's Graph resource
    run = run_command(["check"], config)
    assert run.returncode == 2
    assert "AADSTS500011" in run.stderr and "azure_environment" in run.stderr


def test_sign_in_activity_is_opt_in_and_read_in_full_500_per_page(make_graph_emulator) -> None:
    emu = make_graph_emulator(counts={"users": 1200})
    config = {**emu.tap_config(), "entities": ["users"], "opt_in_properties": ["users.signInActivity"]}
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    records = [m["record"] for m in _messages(run, "RECORD", "users")]
    assert {r["id"] for r in records} == _truth(emu, "users") and len(records) == 1200
    assert all(r["signInActivity"]["lastSignInDateTime"] for r in records)
    assert len(_messages(run, "ACTIVATE_VERSION", "users")) == 2  # a full table read, as a version
    pages = [q for q in emu.query_log() if q[0] == "/v1.0/users"]
    assert len(pages) == 3 and "$top=500" in pages[0][1] and "signInActivity" in pages[0][1]
    emu.deny("AuditLog.Read.All")
    denied = run_tap(config)
    assert denied.returncode == 2
    assert "User.Read.All and AuditLog.Read.All (for the opt-in signInActivity)" in denied.stderr
    plain = run_tap({**emu.tap_config(), "entities": ["users"]})  # without the opt-in: no such column
    assert plain.returncode == 0 and "signInActivity" not in plain.schemas()["users"]["schema"]["properties"]


def test_settings_are_mirrored_in_meltano_and_the_readme() -> None:
    import re
    from pathlib import Path

    import yaml

    from tap_dynamics.config import CONFIG_SCHEMA

    root = Path(__file__).resolve().parent.parent
    plugins = yaml.safe_load((root / "meltano.yml").read_text())["plugins"]["extractors"]
    tap = next(p for p in plugins if p["name"] == "tap-dynamics")
    office = next(p for p in plugins if p["name"] == "tap-dynamics-office365")
    assert office["inherit_from"] == "tap-dynamics" and office["config"]["edition"] == "Office365"
    # The tap's own settings (the SDK adds its built-ins to the schema object in-process).
    builtins = {"stream_maps", "stream_map_config", "flattening_enabled", "flattening_max_depth",
                "flattening_max_key_length", "flattening_separator", "faker_config", "batch_config"}
    declared = set(CONFIG_SCHEMA["properties"]) - builtins
    assert declared <= {s["name"] for s in tap["settings"]}
    assert declared <= set(re.findall(r"^\| `(\w+)` \|", (root / "README.md").read_text(), re.M))


def test_discovery_and_catalog_selection(make_graph_emulator) -> None:
    from tests.taprun import select_streams

    emu = make_graph_emulator()
    discovered = run_tap(emu.tap_config(), "--discover")
    assert discovered.returncode == 0, discovered.stderr
    catalog = discovered.catalog
    streams = {s["tap_stream_id"]: s for s in catalog["streams"]}
    assert set(streams) == {"users", "groups", "group_members", "devices", "applications", "service_principals",
                            "directory_roles", "domains", "organization", "subscribed_skus", "events"}
    assert streams["group_members"]["key_properties"] == ["group_id", "member_id"]
    assert streams["events"]["key_properties"] == ["user_id", "id"]
    run = run_tap(emu.tap_config(), catalog=select_streams(catalog, ["groups", "domains"]))
    assert run.returncode == 0, run.stderr
    assert {m["stream"] for m in _messages(run, "RECORD")} == {"groups", "domains"}
    assert [q for q in emu.query_log() if "users" in q[0]] == []
    globbed = run_tap({**emu.tap_config(), "entities": ["group*"], "exclude_entities": ["groups"]})
    assert {m["stream"] for m in _messages(globbed, "RECORD")} == {"group_members"}
    typo = run_tap({**emu.tap_config(), "entities": ["user"]})
    assert typo.returncode == 2 and "no Microsoft Graph stream (similar: users)" in typo.stderr


def test_certificate_and_managed_identity_sign_in_to_graph(make_graph_emulator, tmp_path) -> None:
    from emulator.identity import MSI_CLIENT
    from tests.test_auth import make_cert

    emu = make_graph_emulator()
    cert = make_cert(tmp_path, "graph")
    app = "55555555-5555-4555-8555-555555555555"
    emu.entra.register_app(app, "", certificate=cert["cert_pem"])
    config = {**emu.tap_config(), "client_id": app, "certificate_path": cert["pem"], "entities": ["users"]}
    config.pop("client_secret")
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    assert {r["id"] for r in (m["record"] for m in _messages(run, "RECORD", "users"))} == _truth(emu, "users")
    env = {"IDENTITY_ENDPOINT": f"{emu.authority_host}/msi/token", "IDENTITY_HEADER": emu.entra.msi_header}
    msi = {"edition": "Office365", "url": emu.graph_url, "ca_bundle": emu.ca_path, "auth_scheme": "AzureMSI",
           "authority_host": emu.authority_host}
    check = run_command(["check"], msi, env=env)
    assert check.returncode == 0, check.stderr
    assert f"as managed identity {MSI_CLIENT}" in check.stdout and "cover 11 of 11 streams" in check.stdout


def test_a_catalogs_method_is_followed_and_the_replication_setting_wins_over_it(make_graph_emulator) -> None:
    """The engine's one method choice on Graph: a saved catalog's FULL_TABLE over discovery's delta
    query, and the ``replication`` setting over the catalog."""
    from tests.taprun import select_streams

    emu = make_graph_emulator(counts={"users": 40})
    discovered = run_tap(emu.tap_config(), "--discover")
    assert discovered.returncode == 0, discovered.stderr
    catalog = select_streams(discovered.catalog, ["users"])
    users = next(s for s in catalog["streams"] if s["tap_stream_id"] == "users")
    root = next(m["metadata"] for m in users["metadata"] if m["breadcrumb"] == [])
    assert root["forced-replication-method"] == "LOG_BASED"
    users["replication_method"] = root["forced-replication-method"] = "FULL_TABLE"
    full = run_tap(emu.tap_config(), catalog=catalog)
    assert full.returncode == 0, full.stderr
    assert {r["id"] for r in full.records("users")} == _truth(emu, "users")
    assert [m["stream"] for m in _messages(full, "ACTIVATE_VERSION")] == ["users", "users"]
    assert [q for q in emu.query_log() if q[0] == "/v1.0/users/delta"] == []
    assert "delta_link" not in str(full.last_state)
    delta = run_tap({**emu.tap_config(), "replication": {"users": "delta"}}, catalog=catalog)
    assert delta.returncode == 0, delta.stderr
    assert {r["id"] for r in delta.records("users")} == _truth(emu, "users")
    assert _messages(delta, "ACTIVATE_VERSION") == []
    assert "/v1.0/users/delta?$deltatoken=" in delta.last_state["bookmarks"]["users"]["delta_link"]
