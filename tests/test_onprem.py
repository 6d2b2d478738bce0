"""On-premises Dynamics (crm_version CRM2011+, auth_scheme NTLM) through real HTTP and a real NTLM
handshake against the on-premises emulator, plus the allow_http opt-in and its refusals."""

from __future__ import annotations

import json
from collections.abc import Callable

import certifi
import pytest

from tap_dynamics.errors import ConfigError
from tap_dynamics.config import load_settings
from emulator.onprem import OnPremEmulator
from tests.taprun import assert_rows_equal, one_error, run_command, run_tap

SMALL = {"account": 1234, "contact": 40, "systemuser": 3}
TABLES = ("account", "contact", "systemuser")


@pytest.fixture
def make_onprem(make_emulator) -> Callable[..., OnPremEmulator]:
    def factory(rows: dict[str, int] | None = None, **kw) -> OnPremEmulator:
        return make_emulator(SMALL if rows is None else rows, kind=OnPremEmulator, **kw)

    return factory


# --- the allow_http opt-in ------------------------------------------------------------------------
def test_full_sync_over_http_with_the_opt_in_equals_the_org(make_onprem) -> None:
    emu = make_onprem(tls=False)
    run = run_tap({**emu.tap_config(), "page_size": 500, "entities": list(TABLES)})
    assert run.returncode == 0, run.stderr
    assert_rows_equal(run, emu, TABLES)
    warnings = [line for line in run.stderr.splitlines() if "plain http://" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "not encrypted" in warnings[0]
    # A real handshake happened (verified against the account's password by the emulator).
    assert emu.windows_logons and set(emu.windows_logons) == {emu.username}
    assert emu.failed_logons == 0
    # The default API version on-premises is v9.1 and every request carried the org path.
    assert {p.split("/")[3] for _m, p, s in emu.request_log() if p.startswith("/api/data/")} == {"v9.1"}


def test_http_without_the_opt_in_is_one_line_before_any_request(make_onprem) -> None:
    emu = make_onprem(tls=False)
    config = {**emu.tap_config()}
    del config["allow_http"]
    emu.reset_stats()
    run = run_tap(config)
    line = one_error(run)
    assert line == (
        f"tap-dynamics: error: setting 'url' is a plain http:// URL ({emu.org_url}): the sign-in "
        "and every row would cross the network unencrypted — use the server's https:// address, or, "
        "on a network you trust, set allow_http true to accept that risk"
    )
    assert emu.stats()["requests"] == 0


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_allow_http_is_refused_with_an_online_scheme(emulator, scheme: str) -> None:
    config = {**emulator.tap_config(), "allow_http": True}
    config["url"] = config["url"].replace("https://", f"{scheme}://")
    emulator.reset_stats()
    run = run_tap(config)
    line = one_error(run)
    assert line == (
        "tap-dynamics: error: setting 'allow_http' is true but auth_scheme is AzureServicePrincipal: "
        "access tokens for the Microsoft cloud must never travel unencrypted — remove allow_http (it "
        "is only for on-premises servers with auth_scheme NTLM, Kerberos or ADFS)"
    )
    assert emulator.stats()["requests"] == 0


# --- NTLM over https --------------------------------------------------------------------------------
def test_ntlm_over_https_with_ca_bundle_beats_requests_ca_bundle(make_onprem) -> None:
    emu = make_onprem(rows={"account": 300, "contact": 5, "systemuser": 2})
    config = {**emu.tap_config(), "entities": list(TABLES), "api_version": "8.2"}
    assert config["url"].startswith("https://") and config["ca_bundle"] == emu.ca_path
    # REQUESTS_CA_BUNDLE names a bundle that does not trust the emulator: the setting must win.
    run = run_tap(config, env={"REQUESTS_CA_BUNDLE": certifi.where()})
    assert run.returncode == 0, run.stderr
    assert_rows_equal(run, emu, TABLES)
    assert "plain http://" not in run.stderr
    assert {p.split("/")[3] for _m, p, s in emu.request_log() if p.startswith("/api/data/")} == {"v8.2"}
    # v8.2 has no RetrieveTotalRecordCount (404) and no x-ms-ratelimit-* headers: tolerated.
    assert any("RetrieveTotalRecordCount" in p and s == 404 for _m, p, s in emu.request_log())
    # Without the ca_bundle setting, the bundle of REQUESTS_CA_BUNDLE is used and fails TLS: one line.
    del config["ca_bundle"]
    run = run_tap(config, env={"REQUESTS_CA_BUNDLE": certifi.where()})
    line = one_error(run)
    assert "TLS verification failed" in line and "ca_bundle" in line


def test_wrong_password_is_one_line_exit_2_and_tried_once(make_onprem) -> None:
    emu = make_onprem()
    config = {**emu.tap_config(), "password": "Wrong-Pa55word!guess"}
    run = run_tap(config)
    line = one_error(run)
    assert line == (
        f"tap-dynamics: error: {emu.server_url} rejected the Windows sign-in of CONTOSO\\svc-tap (HTTP "
        "401 after the NTLM handshake) — check username (DOMAIN\\user or user@domain) and password, "
        "and that the account is enabled, not locked out, and a user of the Dynamics organization"
    )
    # One failed logon, not one per retry: Active Directory locks accounts out after a few.
    assert emu.failed_logons == 1 and emu.windows_logons == []


def test_ntlm_against_an_online_org_says_what_is_wrong(emulator) -> None:
    config = {"url": emulator.org_url, "auth_scheme": "NTLM", "username": "CONTOSO\\svc-tap",
              "password": "Not-used-Pa55word", "ca_bundle": emulator.ca_path, "entities": ["account"]}
    run = run_tap(config)
    line = one_error(run)
    assert "answered 401 with bearer sign-in, not Windows (NTLM/Negotiate) sign-in" in line


def test_check_command_over_ntlm(make_onprem) -> None:
    emu = make_onprem(tls=False)
    run = run_command(["check"], emu.tap_config())
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr
    assert "connection available: " in output and "as Windows account CONTOSO\\svc-tap" in output


def test_sync_stays_inside_max_concurrency(make_onprem) -> None:
    emu = make_onprem(rows={"account": 6000, "contact": 3000, "systemuser": 2})
    run = run_tap({**emu.tap_config(), "entities": list(TABLES), "page_size": 250, "max_concurrency": 2})
    assert run.returncode == 0, run.stderr
    assert_rows_equal(run, emu, TABLES)
    assert emu.stats()["max_in_flight"] <= 2
    # NTLM signs connections in: a handful of handshakes (one per connection), not one per page.
    assert 1 <= len(emu.windows_logons) < emu.stats()["data_pages"] / 2


# --- incremental -------------------------------------------------------------------------------------
def test_incremental_modifiedon_on_premises(make_onprem) -> None:
    emu = make_onprem(tls=False)
    config = {**emu.tap_config(), "entities": ["account"], "replication": {"account": "modifiedon"}}
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    assert len(first.records("account")) == SMALL["account"]
    state = first.last_state
    assert state["bookmarks"]["account"]["replication_key"] == "modifiedon"

    emu.advance_clock(60)
    inserted = emu.insert("account", {"name": "Added on-premises"})["accountid"]
    updated = emu.rows("account")[7]["accountid"]
    emu.update("account", updated, {"name": "Renamed on-premises"})
    second = run_tap(config, state=state)
    assert second.returncode == 0, second.stderr
    ids = [r["accountid"] for r in second.records("account")]
    assert set(ids) == {inserted, updated}
    renamed = next(r for r in second.records("account") if r["accountid"] == updated)
    assert renamed["name"] == "Renamed on-premises"


# --- secrets ----------------------------------------------------------------------------------------
def test_password_never_appears_in_output_state_or_about(make_onprem) -> None:
    emu = make_onprem(rows={"account": 20, "contact": 2, "systemuser": 1}, tls=False)
    config = {**emu.tap_config(), "entities": ["account"], "replication": {"account": "modifiedon"}}
    # run_tap checks stdout and stderr of every run for the password (taprun.SECRET_SETTINGS).
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    assert emu.password not in json.dumps(run.last_state)
    about = run_tap(config, "--about", "--format=json")
    assert about.returncode == 0
    schema = json.loads(about.stdout)["settings"]["properties"]
    assert schema["password"].get("secret") is True and schema["password"].get("writeOnly") is True
    assert emu.password not in about.stdout + about.stderr
    wrong = run_tap({**config, "password": "Another-Wrong-Pa55"}, "--discover")
    assert wrong.returncode == 2 and "Another-Wrong-Pa55" not in wrong.stdout + wrong.stderr


def test_credentials_never_go_to_a_foreign_next_link(make_onprem) -> None:
    emu = make_onprem(tls=False)
    foreign = make_onprem(tls=False, org="contoso")  # same org name, other host:port
    elsewhere = f"{foreign.org_url}/api/data/v9.1/accounts?$skiptoken=x"
    emu.set(serve_body={"/api/data/v9.1/accounts": {"body": json.dumps({"value": [], "@odata.nextLink": elsewhere})}})
    foreign.reset_stats()
    run = run_tap({**emu.tap_config(), "entities": ["account"]})
    line = one_error(run)
    assert f"refusing to send Windows (NTLM) credentials to {foreign.server_url}" in line
    assert foreign.stats()["requests"] == 0 and foreign.windows_logons == []


# --- settings (no network) -----------------------------------------------------------------------------
NTLM = {"url": "https://crm.contoso.com/Contoso/", "auth_scheme": "NTLM", "username": "CONTOSO\\svc-tap",
        "password": "Pa55word-settings"}


def test_on_premises_settings_are_normalised() -> None:
    settings = load_settings(NTLM)
    assert (settings.url, settings.org_path, settings.crm_version) == ("https://crm.contoso.com", "/Contoso", "CRM2011+")
    assert settings.api_base == "https://crm.contoso.com/Contoso/api/data/v9.1"
    assert "Pa55word" not in repr(settings)
    ifd = load_settings({**NTLM, "url": "https://contoso.crm.contoso.com", "api_version": "v8.2",
                         "username": "svc-tap@contoso.com"})
    assert ifd.api_base == "https://contoso.crm.contoso.com/api/data/v8.2"
    http = load_settings({**NTLM, "url": "http://crm:5555/Contoso", "allow_http": "true"})
    assert http.api_base == "http://crm:5555/Contoso/api/data/v9.1" and http.allow_http is True
    cs = ("URL=https://crm.contoso.com/Contoso;AuthScheme=NTLM;User=CONTOSO\\svc-tap;"
          "Password=Pa55word-settings;CRMVersion=CRM2011+")
    from_string = load_settings({"connection_string": cs})
    assert (from_string.auth.username, from_string.auth.password, from_string.org_path) == ("CONTOSO\\svc-tap", "Pa55word-settings", "/Contoso")
    # Online settings are unchanged: https only, 9.2 by default, no org path.
    online = load_settings({"url": "https://a.crm.dynamics.com/", "tenant_id": "11111111-2222-4333-8444-555555555555",
                            "client_id": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "client_secret": "x"})
    assert online.api_base == "https://a.crm.dynamics.com/api/data/v9.2" and not online.on_premises


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"crm_version": "CRMOnline"},
         "setting 'auth_scheme' is NTLM but crm_version is CRMOnline: Dynamics 365 online does not accept "
         "Windows (NTLM) sign-in — use auth_scheme AzureServicePrincipal for an online org, or crm_version "
         "CRM2011+ for an on-premises server"),
        ({"api_version": "9.2"},
         "setting 'api_version' is '9.2': on-premises servers top out at Web API v9.1 — set api_version 9.1 "
         "(Dynamics 365 CE on-premises 9.x) or 8.2 (CRM 2016)"),
        ({"api_version": "7.0"},
         "setting 'api_version' is '7.0': CRM 2011-2015 have no Web API, only the OData v2 endpoint "
         "(XRMServices/2011/OrganizationData.svc, on all three) — set api_version 2011 to read it, or leave "
         "api_version out and the tap picks the endpoint the server has"),
        ({"api_version": "2015"}, "setting 'api_version' is '2015': CRM 2011-2015 have no Web API"),
        ({"url": "https://crm.contoso.com/Contoso/api/data/v9.1"},
         "setting 'url' must be the organization's URL without /api/data/…"),
        ({"url": "http://crm.contoso.com/Contoso"}, "setting 'url' is a plain http:// URL"),
        ({"url": "ftp://crm.contoso.com/Contoso"}, "setting 'url' must be an https:// URL"),
        ({"username": "svc-tap"},
         "setting 'username' is 'svc-tap': give the Windows account with its domain, as CONTOSO\\user or "
         "user@contoso.com"),
        ({"username": None}, "setting 'username' is missing"),
        ({"password": ""}, "setting 'password' is missing — set it to the Windows password of username"),
        ({"crm_version": "CRM4.0"}, "setting 'crm_version' is 'CRM4.0': the CRM 4.0 (2007) endpoint is not supported"),
        ({"crm_version": "CRM2013"}, "setting 'crm_version' is 'CRM2013'; valid values: CRMOnline, CRM2011+"),
        ({"allow_http": "maybe"}, "setting 'allow_http' must be true or false"),
    ],
)
def test_on_premises_settings_errors_are_one_line(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({**NTLM, **change})
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text and "Pa55word" not in text


def test_crm2011_with_an_online_scheme_is_refused() -> None:
    online = {"url": "https://crm.contoso.com", "tenant_id": "11111111-2222-4333-8444-555555555555",
              "client_id": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "client_secret": "x", "crm_version": "CRM2011+"}
    with pytest.raises(ConfigError) as err:
        load_settings(online)
    assert str(err.value) == (
        "setting 'crm_version' is 'CRM2011+' (on-premises) but auth_scheme is AzureServicePrincipal, which "
        "signs in to the Microsoft cloud — for an on-premises server set auth_scheme NTLM (username and "
        "password), Kerberos or ADFS (an AD FS application); for Dynamics 365 online set crm_version CRMOnline"
    )


# --- AD FS (internet-facing deployments) ------------------------------------------------------------
def test_adfs_client_credentials_sync_equals_the_org(make_onprem) -> None:
    emu = make_onprem(rows={"account": 2100, "contact": 30, "systemuser": 2}, auth="adfs")
    config = {**emu.tap_config(), "entities": list(TABLES), "page_size": 700}
    assert config["authority_host"].startswith("https://localhost:")  # AD FS is another host name
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    assert_rows_equal(run, emu, TABLES)
    assert emu.adfs_token_requests == 1, "one token for the whole run (MSAL's cache)"
    assert emu.windows_logons == []
    # MSAL found the AD FS by its openid-configuration (no /v2.0, no Entra instance discovery).
    paths = [p for _m, p, _s in emu.request_log()]
    assert "/adfs/.well-known/openid-configuration" in paths
    assert not any("discovery/instance" in p or "/v2.0/" in p for p in paths)
    check = run_command(["check"], config)
    assert check.returncode == 0, check.stderr
    assert "as AD FS application " in check.stdout + check.stderr


def test_adfs_wrong_secret_is_one_line_exit_2(make_onprem) -> None:
    emu = make_onprem(rows={"account": 5, "contact": 1, "systemuser": 1}, auth="adfs")
    run = run_tap({**emu.tap_config(), "client_secret": "not-the-adfs-secret-42"})
    line = one_error(run)
    assert line == (
        "tap-dynamics: error: AD FS refused a token (invalid_client): MSIS9622: Client authentication "
        "failed. Please verify the credential provided for client authentication is valid. — check "
        "client_id and client_secret of the AD FS server application"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"authority_host": None},
         "setting 'authority_host' must be your AD FS server for auth_scheme ADFS (it is "
         "https://login.microsoftonline.com) — e.g. https://adfs.contoso.com"),
        ({"client_secret": None}, "setting 'client_secret' is missing — set it to the secret AD FS generated"),
        ({"client_id": ""}, "setting 'client_id' is missing — set it to the client identifier of the AD FS"),
        ({"crm_version": "CRMOnline"}, "setting 'auth_scheme' is ADFS but crm_version is CRMOnline: Dynamics "
         "365 online does not accept AD FS sign-in"),
        ({"url": "http://contoso.crm.contoso.com"}, "setting 'url' is a plain http:// URL"),
    ],
)
def test_adfs_settings_errors_are_one_line(change: dict, message: str) -> None:
    config = {"url": "https://contoso.crm.contoso.com", "auth_scheme": "ADFS", "authority_host": "https://adfs.contoso.com",
              "client_id": "tap-dynamics", "client_secret": "adfs-secret-value", **change}
    with pytest.raises(ConfigError) as err:
        load_settings({k: v for k, v in config.items() if v is not None})
    assert str(err.value).startswith(message) and "adfs-secret-value" not in str(err.value)
    good = load_settings({**config, **{k: v for k, v in {"url": "https://contoso.crm.contoso.com", "crm_version": "CRM2011+",
                          "authority_host": "https://adfs.contoso.com", "client_id": "tap-dynamics",
                          "client_secret": "adfs-secret-value"}.items()}})
    assert good.on_premises and good.api_base == "https://contoso.crm.contoso.com/api/data/v9.1"
    # allow_http is for the on-premises schemes, AD FS included (the AD FS itself stays https).
    http = load_settings({**config, "url": "http://contoso.crm.contoso.com", "allow_http": True, "crm_version": "CRM2011+",
                          "authority_host": "https://adfs.contoso.com", "client_id": "tap-dynamics",
                          "client_secret": "adfs-secret-value"})
    assert http.api_base == "http://contoso.crm.contoso.com/api/data/v9.1"


def test_plain_http_is_warned_once_per_run_for_both_on_premises_schemes(caplog) -> None:
    from tap_dynamics.auth import build_token_provider

    ntlm = load_settings({**NTLM, "url": "http://crm:5555/Contoso", "allow_http": True})
    adfs = load_settings({"url": "http://contoso.crm.contoso.com", "auth_scheme": "ADFS", "allow_http": True,
                          "authority_host": "https://adfs.contoso.com", "client_id": "tap-dynamics",
                          "client_secret": "adfs-secret-value"})
    for settings in (ntlm, adfs):
        caplog.clear()
        with caplog.at_level("WARNING", logger="tap-dynamics.auth"):
            build_token_provider(settings)  # once per run: the tap builds one provider
        [record] = [r for r in caplog.records if "plain http://" in r.getMessage()]
        assert record.levelname == "WARNING" and settings.url in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="tap-dynamics.auth"):
        build_token_provider(load_settings(NTLM))  # https: no warning
    assert not [r for r in caplog.records if "plain http://" in r.getMessage()]
