"""Token trouble in the middle of a run and at its start, for every way to sign in.

Two families, each a real tap process against the emulator over HTTPS:

- A token revoked mid-run (Dataverse answers 401 after the token served a few requests): every
  scheme gets one fresh token and resends, and no row is lost. (AzureAD and AzureMSI once crashed
  here: their eviction loops changed MSAL's cache while iterating it.) NTLM has no token; its
  equivalent, a connection whose Windows sign-in is forgotten, is cured by a new handshake.
- Token endpoint faults (429 + Retry-After, 503 + Retry-After with AADSTS90033 as Entra ID sends
  it, a proxy's 502 HTML page, a connection dropped mid-answer), injected into the first token
  request of a run and into a refresh in the middle of one. A transient token failure is retried
  like any other request, honouring Retry-After (seconds or HTTP-date), costs no row, and only
  when the retry budget is spent ends the run: exit 4 and one line. A wrong credential stays
  exit 2. MSAL caches 429/5xx answers for their Retry-After and misreads them (a 429 looks like
  a wrong credential, a 5xx is an ``MsalServiceError``); the tap sees them before MSAL does, so
  these runs also prove that a retry really reaches the server again (the emulator counts it).
"""

from __future__ import annotations

import re
from pathlib import Path

import msal
import pytest
import requests

from tests.emulator.onprem import OnPremEmulator
from tests.taprun import normalise, run_command, run_tap
from tests.test_auth import (
    CERT_APP,
    USER_APP,
    Interactive,
    free_port,
    login,
    make_cert,
    user_config,
)

ROWS = {"account": 300, "contact": 1, "systemuser": 1}
PAGE = {"page_size": 50, "max_concurrency": 2}  # seven pages of account: a refresh lands mid-table
USES = 3  # a token is revoked after serving this many Dataverse requests
SCHEMES = ("secret", "certificate_pem", "certificate_pfx", "delegated", "msi")


def scheme_run(emu, scheme: str, tmp_path: Path) -> tuple[dict, dict]:
    """(config, environment) of a run that signs in with ``scheme`` against ``emu``."""
    config = {"url": emu.org_url, "authority_host": emu.authority_host, "ca_bundle": emu.ca_path,
              "entities": ["account"], **PAGE}
    if scheme == "secret":
        return {**config, **emu.tap_config(), "entities": ["account"]}, {}
    if scheme.startswith("certificate"):
        cert = make_cert(tmp_path, scheme)
        emu.register_app(CERT_APP, secret="", certificate=cert["cert_pem"])
        path = cert["pfx"] if scheme.endswith("pfx") else cert["pem"]
        extra = {"certificate_password": "pfx-pass-Xy9!secret"} if scheme.endswith("pfx") else {}
        return {**config, "tenant_id": emu.tenant_id, "client_id": CERT_APP, "certificate_path": path,
                **extra}, {}
    if scheme == "delegated":
        app = emu.register_app(USER_APP, secret="")
        # What a finished `tap-dynamics login` leaves behind: a refresh token of the signed-in user.
        refresh = emu.entra.user_response(app, emu.org_url, None)["refresh_token"]
        return {**config, "auth_scheme": "AzureAD", "tenant_id": emu.tenant_id, "client_id": USER_APP,
                "initiate_oauth": "REFRESH", "refresh_token": refresh,
                "token_cache_path": str(tmp_path / "cache" / "tokens.json")}, {}
    assert scheme == "msi"
    env = {"IDENTITY_ENDPOINT": f"{emu.authority_host}/msi/token", "IDENTITY_HEADER": emu.entra.msi_header}
    return {**config, "auth_scheme": "AzureMSI"}, env


def assert_all_accounts_once(run, emu) -> None:
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    records = run.records("account")
    want = {r["accountid"]: normalise(r) for r in emu.rows("account")}
    assert len(records) == len(want), "a row was lost or emitted twice"
    assert {r["accountid"]: r for r in records} == want


def error_line(run) -> str:
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("tap-dynamics: error:")]
    assert len(lines) == 1, run.stderr[-3000:]
    return lines[0]


# --- a token revoked in the middle of a run ------------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
def test_revoked_token_mid_run_is_refreshed_for_every_scheme(make_emulator, tmp_path: Path, scheme: str) -> None:
    emu = make_emulator(rows=dict(ROWS))
    config, env = scheme_run(emu, scheme, tmp_path)
    emu.entra.revoke_after_uses = USES
    run = run_tap(config, env=env)
    assert_all_accounts_once(run, emu)
    assert emu.entra.revoked_uses >= 1, "no token was revoked: the run did not exercise a refresh"
    assert emu.stats()["token_requests"] >= 2 or scheme == "msi"  # MSI tokens come from /msi/token
    assert "Access token rejected (401)" not in run.stderr or "Traceback" not in run.stderr
    # The `check` command goes through the same refresh (it once printed a raw traceback).
    emu.entra.revoke_after_uses = 1
    check = run_command(["check"], config, env=env)
    assert check.returncode == 0, check.stderr[-3000:]
    assert "Traceback" not in check.stderr


def test_revoked_adfs_token_mid_run_is_refreshed(make_emulator) -> None:
    emu = make_emulator(rows=dict(ROWS), kind=OnPremEmulator, auth="adfs")
    emu.entra.revoke_after_uses = USES
    run = run_tap({**emu.tap_config(), "entities": ["account"], **PAGE})
    assert_all_accounts_once(run, emu)
    assert emu.entra.revoked_uses >= 1
    assert emu.adfs_token_requests >= 2


def test_ntlm_sign_in_forgotten_mid_run_is_renewed_by_a_new_handshake(make_emulator) -> None:
    emu = make_emulator(rows=dict(ROWS), kind=OnPremEmulator)
    emu.signin_max_requests = USES
    run = run_tap({**emu.tap_config(), "entities": ["account"], **PAGE})
    assert_all_accounts_once(run, emu)
    # More sign-ins than connections: the forgotten ones were renewed, with the same password.
    assert len(emu.windows_logons) > PAGE["max_concurrency"]
    assert emu.failed_logons == 0


# --- token endpoint faults --------------------------------------------------------------------
FAULTS = ("429", "503", "proxy_html", "drop")


@pytest.mark.parametrize("phase", ["start", "refresh"])
@pytest.mark.parametrize("kind", FAULTS)
@pytest.mark.parametrize("scheme", ["secret", "delegated", "msi"])
def test_transient_token_failure_is_retried_without_losing_rows(
    make_emulator, tmp_path: Path, scheme: str, kind: str, phase: str
) -> None:
    emu = make_emulator(rows=dict(ROWS))
    config, env = scheme_run(emu, scheme, tmp_path)
    if phase == "refresh":
        emu.entra.revoke_after_uses = USES  # the first token works, then a 401 asks for a new one
    # Twice in a row (as in the report that found this): the first token request of the run, or
    # the first refresh after it. The 429/503 say Retry-After: 1.
    emu.entra.fail_token_requests(kind, count=2, after=0 if phase == "start" else 1, retry_after=1)
    run = run_tap(config, env=env)
    assert_all_accounts_once(run, emu)
    assert emu.entra.token_fault_log == [kind, kind], "the retries did not reach the token endpoint"
    assert not emu.entra.token_faults
    assert "the token request to" in run.stderr  # each retry is a warning naming what failed


def test_msal_alone_would_answer_the_retry_from_its_cache(make_emulator) -> None:
    """Why the tap sees transient answers before MSAL does: MSAL itself caches a 429 for its
    Retry-After and answers the next identical request from that cache, without a request —
    and hands the 429 back as an error dict, which reads like a refused credential."""
    emu = make_emulator(rows=dict(ROWS))
    emu.entra.fail_token_requests("429", count=1, retry_after=60)
    session = requests.Session()
    session.trust_env = False  # no REQUESTS_CA_BUNDLE/proxy from the caller's environment
    session.verify = emu.ca_path
    app = msal.ConfidentialClientApplication(
        emu.client_id, client_credential=emu.client_secret, authority=f"{emu.authority_host}/{emu.tenant_id}",
        instance_discovery=False, http_client=session)
    scopes = [f"{emu.org_url}/.default"]
    first = app.acquire_token_for_client(scopes)
    second = app.acquire_token_for_client(scopes)
    assert first.get("error") == "temporarily_unavailable" and second.get("error") == "temporarily_unavailable"
    assert emu.stats()["token_requests"] == 1  # the second answer came from MSAL's cache
    assert emu.entra.token_fault_log == ["429"]


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_token_endpoint_retry_after_is_honoured(make_emulator, tmp_path: Path, form: str) -> None:
    emu = make_emulator(rows=dict(ROWS))
    config, env = scheme_run(emu, "secret", tmp_path)
    emu.entra.fail_token_requests("503", count=1, retry_after=2, retry_after_form=form)
    run = run_tap(config, env=env)
    assert_all_accounts_once(run, emu)
    # The tap says how long it waits; an HTTP-date two seconds ahead (rounded up) is 2-3 s.
    waits = [float(w) for w in re.findall(r"retrying in ([\d.]+) s", run.stderr)]
    assert waits and (waits[0] == 2.0 if form == "seconds" else 2.0 <= waits[0] <= 3.5), run.stderr


@pytest.mark.parametrize("scheme", ["secret", "delegated", "msi"])
def test_token_endpoint_down_for_good_is_exit_4_with_one_line(make_emulator, tmp_path: Path, scheme: str) -> None:
    emu = make_emulator(rows=dict(ROWS))
    config, env = scheme_run(emu, scheme, tmp_path)
    emu.entra.fail_token_requests("503", count=1000, retry_after=0)
    run = run_tap(config, env=env)
    assert run.returncode == 4, run.stderr[-3000:]
    line = error_line(run)
    assert line.startswith("tap-dynamics: error: giving up after 8 attempts"), line
    assert "the token request to" in line and "HTTP 503" in line
    if scheme != "msi":
        assert "AADSTS90033" in line  # Entra ID's own words
    assert run.records() == []
    assert len(emu.entra.token_fault_log) == 8  # the client's whole budget, each one a real request


def test_token_endpoint_down_mid_run_fails_with_exit_4_and_keeps_state(make_emulator, tmp_path: Path) -> None:
    emu = make_emulator(rows=dict(ROWS))
    config, env = scheme_run(emu, "secret", tmp_path)
    emu.entra.revoke_after_uses = USES
    emu.entra.fail_token_requests("429", count=1000, after=1, retry_after=0)
    run = run_tap(config, env=env)
    assert run.returncode == 4, run.stderr[-3000:]  # a table skipped because the service kept failing
    assert error_line(run) == (
        "tap-dynamics: error: 1 table(s) failed and were skipped: account (see the warnings above)")
    assert re.search(r"Table account failed and was skipped: table account: giving up after 8 attempts "
                     r"over \d+ s of retries: the token request to https://localhost:\d+ got HTTP 429 "
                     r"\(AADSTS90055: ", run.stderr), run.stderr[-3000:]
    # Whatever was emitted before the outage is real rows, each once; the bookmark claims no
    # finished read (no delta link) that would make the next run skip the rest.
    ids = [r["accountid"] for r in run.records("account")]
    assert len(ids) == len(set(ids))
    bookmark = (run.last_state or {}).get("bookmarks", {}).get("account", {})
    assert not [key for key in bookmark if "delta" in key.lower()], bookmark


def test_wrong_credential_after_a_transient_failure_stays_exit_2(make_emulator, tmp_path: Path) -> None:
    emu = make_emulator(rows=dict(ROWS))
    config, env = scheme_run(emu, "secret", tmp_path)
    emu.entra.fail_token_requests("503", count=1, retry_after=0)
    run = run_tap({**config, "client_secret": "wrong-secret-value-123"}, env=env)
    assert run.returncode == 2, run.stderr[-3000:]
    assert error_line(run).startswith("tap-dynamics: error: AADSTS7000215: the client secret is wrong")
    assert emu.entra.token_fault_log == ["503"]


def test_a_permanent_5xx_of_the_managed_identity_endpoint_is_not_retried(make_emulator, tmp_path: Path) -> None:
    """App Service answers a resource it has no token for with 500 + AADSTS500011: a setting to
    fix (exit 2 at once), not a busy service to retry for minutes."""
    emu = make_emulator(rows=dict(ROWS))
    config, env = scheme_run(emu, "msi", tmp_path)
    other_name = emu.org_url.replace("127.0.0.1", "localhost")  # the same server, another resource
    run = run_tap({**config, "url": other_name}, env=env)
    assert run.returncode == 2, run.stderr[-3000:]
    assert error_line(run).startswith(
        "tap-dynamics: error: the managed identity endpoint refused a token: 500, AADSTS500011: The "
        f"resource principal named {other_name} was not found"), run.stderr[-3000:]
    assert "retrying" not in run.stderr


def test_adfs_token_endpoint_fault_is_retried(make_emulator) -> None:
    emu = make_emulator(rows=dict(ROWS), kind=OnPremEmulator, auth="adfs")
    emu.entra.fail_token_requests("proxy_html", count=2)
    run = run_tap({**emu.tap_config(), "entities": ["account"], **PAGE})
    assert_all_accounts_once(run, emu)
    assert emu.entra.token_fault_log == ["proxy_html", "proxy_html"]


def test_check_retries_a_busy_token_endpoint_and_says_when_it_gave_up(make_emulator, tmp_path: Path) -> None:
    emu = make_emulator(rows=dict(ROWS))
    config, env = scheme_run(emu, "secret", tmp_path)
    emu.entra.fail_token_requests("503", count=1, retry_after=0)
    check = run_command(["check"], config, env=env)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("connection available:")
    emu.entra.fail_token_requests("drop", count=1000)
    check = run_command(["check"], config, env=env)
    assert check.returncode == 4, check.stderr  # the service kept failing, not a setting to fix
    assert "Traceback" not in check.stderr
    line = check.stderr.strip().splitlines()[-1]
    assert line.startswith("connection unavailable: giving up after") and "got a cut-off answer" in line, line


# --- interactive sign-in: a person is waiting, so the sign-in itself retries ----------------------
def device_code_login(emu, tmp_path: Path, kind: str, count: int, retry_after: float, *, approve: bool):
    """``tap-dynamics login --device-code`` while the token endpoint fails ``count`` times."""
    emu.register_app(USER_APP, secret="")
    emu.entra.device_interval = 1
    emu.entra.fail_token_requests(kind, count=count, retry_after=retry_after)
    config = user_config(emu, tmp_path, free_port())
    session = Interactive(["login", "--device-code"], config, tmp_path)
    code = session.wait_for(r"enter the code (\w+) to authenticate").group(1)
    if approve:
        emu.entra.approve_device(code)
    return session.finish(), config


def test_device_code_login_survives_a_busy_token_endpoint_while_polling(make_emulator, tmp_path: Path) -> None:
    emu = make_emulator(rows=dict(ROWS))
    run, config = device_code_login(emu, tmp_path, "503", 2, 1, approve=True)
    assert run.returncode == 0, run.stderr
    assert emu.entra.token_fault_log == ["503", "503"]
    assert_all_accounts_once(run_tap({**config, **PAGE, "initiate_oauth": "REFRESH"}), emu)


def test_browser_login_survives_a_dropped_code_redemption(make_emulator, tmp_path: Path) -> None:
    emu = make_emulator(rows=dict(ROWS))
    port = free_port()
    emu.register_app(USER_APP, secret="", redirect_uris=[f"http://localhost:{port}"])
    emu.entra.fail_token_requests("drop", count=1)
    login(emu, tmp_path, user_config(emu, tmp_path, port))  # asserts exit 0 and "signed in as …"
    assert emu.entra.token_fault_log == ["drop"]


def test_login_gives_up_with_exit_4_and_one_line(make_emulator, tmp_path: Path) -> None:
    emu = make_emulator(rows=dict(ROWS))
    run, _config = device_code_login(emu, tmp_path, "429", 1000, 0, approve=False)
    assert run.returncode == 4, run.stderr
    line = error_line(run)
    assert line.startswith("tap-dynamics: error: the token request to https://localhost:") and "HTTP 429" in line, line
    assert len(emu.entra.token_fault_log) == 8


def test_token_faults_through_the_control_api(make_emulator) -> None:
    """Out-of-process users (``python -m tests.emulator``) inject the same faults over HTTP."""
    emu = make_emulator(rows=dict(ROWS))
    session = requests.Session()
    session.trust_env = False
    session.verify = emu.ca_path
    answer = session.post(f"{emu.org_url}/_emulator/token_faults",
                          json={"kind": "503", "count": 1, "retry_after": 7, "retry_after_form": "date"}, timeout=30)
    assert answer.status_code == 200 and answer.json() == {"pending": 1}
    token_url = f"{emu.authority_host}/{emu.tenant_id}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": emu.client_id, "client_secret": emu.client_secret,
            "scope": f"{emu.org_url}/.default"}
    failed = session.post(token_url, data=form, timeout=30)
    assert failed.status_code == 503 and failed.json()["error_codes"] == [90033]
    assert failed.headers["Retry-After"].endswith(" GMT")  # an HTTP-date
    assert session.post(token_url, data=form, timeout=30).status_code == 200
    bad = session.post(f"{emu.org_url}/_emulator/token_faults", json={"kind": "teapot"}, timeout=30)
    assert bad.status_code == 400 and "unknown token fault" in bad.json()["message"]
