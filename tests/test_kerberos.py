"""auth_scheme Kerberos (SPNEGO Negotiate) for real: a throw-away MIT Kerberos KDC (tests/kdc.py)
issues the tickets, the on-premises emulator verifies them with its service keytab, and the tap
runs as a process with its own krb5.conf and ticket cache location.

If the KDC cannot start on a machine, every test here fails (it never skips): ``make test-deps``
installs what is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import krb5
import pytest

from emulator.onprem import OnPremEmulator
from tap_dynamics.auth.kerberos import CLOCK_SKEW, KerberosSignIn, error_code
from tap_dynamics.config import load_settings
from tap_dynamics.config.windows import KerberosAuth
from tap_dynamics.errors import ConfigError
from tests.kdc import PASSWORD, REALM, UNREACHABLE_REALM, USER, KerberosRealm
from tests.taprun import (
    TAP,
    assert_no_secrets,
    assert_rows_equal,
    hermetic_env,
    one_error,
    run_command,
    run_tap,
)

TABLES = ("account", "contact", "systemuser")


# The fixtures kdc, realm, make_site and krb_env are tests/kerberos_fixtures.py's (one KDC per session).


def issued(realm: KerberosRealm) -> tuple[int, int]:
    """Tickets the KDC issued so far: (initial tickets for the user, service tickets)."""
    return (
        sum("ISSUE" in line and f"{USER}@{REALM} for krbtgt/" in line for line in realm.as_requests()),
        sum("ISSUE" in line and "for HTTP/localhost" in line for line in realm.tgs_requests()),
    )


# --- signing in ---------------------------------------------------------------------------------
def test_full_sync_with_a_password_signs_in_once_and_writes_no_ticket_cache(
    make_site, realm: KerberosRealm, krb_env: dict[str, str], tmp_path: Path
) -> None:
    emu = make_site()
    before = issued(realm)
    config = {**emu.tap_config(), "username": realm.principal, "password": PASSWORD,
              "entities": list(TABLES), "page_size": 100, "max_concurrency": 4}
    run = run_tap(config, env=krb_env)
    assert run.returncode == 0, run.stderr
    assert_rows_equal(run, emu, TABLES)
    # Every connection was signed in by a verified ticket of the user; none was refused.
    assert emu.kerberos_logons and set(emu.kerberos_logons) == {realm.principal}
    assert emu.refused_tickets == 0 and emu.windows.refused_ntlm == 0
    # One initial ticket (one password use at the KDC) and one service ticket for the whole run,
    # however many connections the threads opened.
    after = issued(realm)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    # The password sign-in lives in memory: neither KRB5CCNAME nor the default cache was written.
    assert not (tmp_path / "tap-ccache").exists() and not realm.default_ccache.exists()
    assert realm.failed_attempts() == 0


def test_keytab_sign_in(make_site, realm: KerberosRealm, krb_env: dict[str, str]) -> None:
    emu = make_site(rows={"account": 30, "contact": 2, "systemuser": 1})
    config = {**emu.tap_config(), "kerberos_keytab": str(realm.user_keytab), "entities": ["account"]}
    run = run_tap(config, env=krb_env)  # no username: the keytab's (first) principal
    assert run.returncode == 0, run.stderr
    assert len(run.records("account")) == 30
    assert set(emu.kerberos_logons) == {realm.principal}


@pytest.mark.parametrize("where", ["KRB5CCNAME", "kerberos_ticket_cache"])
def test_existing_ticket_cache_sign_in(make_site, realm: KerberosRealm, tmp_path: Path, where: str) -> None:
    emu = make_site(rows={"account": 30, "contact": 2, "systemuser": 1})
    ccache = tmp_path / "operator-ccache"
    realm.kinit_from_keytab(ccache)  # what an operator (or a sidecar) does before the run
    config = {**emu.tap_config(), "entities": ["account"]}
    env = realm.env()
    if where == "KRB5CCNAME":
        env["KRB5CCNAME"] = f"FILE:{ccache}"
    else:
        config["kerberos_ticket_cache"] = f"FILE:{ccache}"
    run = run_tap(config, env=env)
    assert run.returncode == 0, run.stderr
    assert len(run.records("account")) == 30
    assert set(emu.kerberos_logons) == {realm.principal}


def test_check_command_names_the_principal(make_site, realm: KerberosRealm, krb_env: dict[str, str]) -> None:
    emu = make_site()
    run = run_command(["check"], {**emu.tap_config(), "username": realm.principal, "password": PASSWORD},
                      env=krb_env)
    assert run.returncode == 0, run.stderr
    assert f"as Kerberos principal {realm.principal}" in run.stdout + run.stderr


def test_a_server_that_cannot_prove_its_identity_is_refused(make_site, realm: KerberosRealm,
                                                             krb_env: dict[str, str]) -> None:
    emu = make_site(rows={"account": 5, "contact": 1, "systemuser": 1})
    emu.kerberos.mutual = False  # the 200 carries no AP-REP: no proof it holds the service key
    run = run_tap({**emu.tap_config(), "username": realm.principal, "password": PASSWORD,
                   "entities": ["account"]}, env=krb_env)
    line = one_error(run)
    assert line == (
        f"tap-dynamics: error: {emu.server_url} accepted the Kerberos ticket but sent no "
        "mutual-authentication token (WWW-Authenticate: Negotiate …): it could not prove it is the "
        "service HTTP/localhost — refusing its answer (is a proxy between the tap and the Dynamics "
        "server answering in its place?)"
    )
    assert run.records("account") == []
    # The replay cache of the site is its own (in the emulator's directory), and it was used.
    assert Path(emu.kerberos.replay_cache).exists()


# --- NTLM falls back to Kerberos ------------------------------------------------------------------
@pytest.mark.parametrize("username", [f"{USER}@{REALM.lower()}", f"TAPDYN\\{USER}"])
def test_ntlm_falls_back_to_kerberos_when_the_server_offers_only_negotiate(
    make_site, realm: KerberosRealm, krb_env: dict[str, str], username: str
) -> None:
    emu = make_site()  # NTLM switched off: the only challenge is Negotiate
    config = {**emu.tap_config(), "auth_scheme": "NTLM", "username": username, "password": PASSWORD,
              "entities": list(TABLES)}
    run = run_tap(config, env=krb_env)
    assert run.returncode == 0, run.stderr
    assert_rows_equal(run, emu, TABLES)
    # user@domain is user@DOMAIN; DOMAIN\user is user in krb5.conf's default realm.
    assert set(emu.kerberos_logons) == {realm.principal}
    assert emu.windows.refused_ntlm == 0 and emu.failed_logons == 0


def test_ntlm_stays_ntlm_when_the_server_offers_it(make_site, krb_env: dict[str, str]) -> None:
    emu = make_site(auth="negotiate")  # Negotiate (Kerberos or NTLM) and NTLM, as IIS by default
    run = run_tap({**emu.tap_config(), "entities": ["account"]}, env=krb_env)
    assert run.returncode == 0, run.stderr
    assert set(emu.windows_logons) == {emu.username} and emu.kerberos_logons == []


def test_ntlm_fallback_without_a_reachable_kdc_is_one_line(make_site, krb_env: dict[str, str]) -> None:
    emu = make_site()
    config = {**emu.tap_config(), "auth_scheme": "NTLM", "username": f"{USER}@{UNREACHABLE_REALM.lower()}",
              "password": PASSWORD, "entities": ["account"]}
    run = run_tap(config, env=krb_env)
    line = one_error(run)
    assert line.startswith(
        f"tap-dynamics: error: {emu.server_url} offers only Negotiate (NTLM is switched off there) and "
        "refused NTLM inside it; Kerberos was not possible here: Kerberos: no KDC of "
        f"{UNREACHABLE_REALM} answered"
    ), line
    # Kerberos made no attempt; NTLM inside Negotiate was the one attempt, refused.
    assert emu.windows.refused_ntlm == 1 and emu.kerberos_logons == []


# --- one attempt, one line ------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["Kerberos", "NTLM"])
def test_wrong_password_is_one_line_exit_2_and_one_attempt_at_the_kdc(
    make_site, realm: KerberosRealm, krb_env: dict[str, str], scheme: str
) -> None:
    emu = make_site()  # NTLM: it falls back to Kerberos, so the KDC judges the password
    config = {**emu.tap_config(), "auth_scheme": scheme, "username": realm.principal,
              "password": "Wrong-Pa55word!guess", "entities": list(TABLES), "max_concurrency": 8}
    run = run_tap(config, env=krb_env)
    line = one_error(run)
    assert line == (
        f"tap-dynamics: error: Kerberos: the KDC rejected the password of {realm.principal} "
        "(KDC_ERR_PREAUTH_FAILED) — check password; the tap tried once and stops, so it does not "
        "lock the account out"
    )
    # The KDC's own lockout counter saw exactly one failed attempt; no ticket reached the site.
    assert realm.failed_attempts() == 1
    assert emu.kerberos_logons == [] and emu.refused_tickets == 0 and emu.windows.refused_ntlm == 0


@pytest.mark.parametrize(
    ("change", "env_change", "expected"),
    [
        ({"username": f"nobody@{REALM}"}, {},
         f"Kerberos: the KDC of {REALM} does not know the principal nobody@{REALM} "
         "(KDC_ERR_C_PRINCIPAL_UNKNOWN) — check username: user@REALM, the realm in capitals"),
        ({"username": f"{USER}@{UNREACHABLE_REALM}"}, {},
         f"Kerberos: no KDC of {UNREACHABLE_REALM} answered — check the KDC addresses for the realm in "
         "krb5.conf (KRB5_CONFIG) or its DNS SRV records, and that port 88 is reachable"),
        ({"username": f"{USER}@UNKNOWN.REALM"}, {},
         "Kerberos: no KDC is known for UNKNOWN.REALM — add the realm to krb5.conf [realms] "
         "(KRB5_CONFIG), or turn on dns_lookup_kdc, and check the realm in username"),
        ({"password": None}, {"KRB5CCNAME": "FILE:{tmp}/never-kinit"},
         "Kerberos: the ticket cache FILE:{tmp}/never-kinit (KRB5CCNAME) holds no ticket for "
         f"{USER}@{REALM} — run kinit for it, or set password or kerberos_keytab"),
        ({"password": None, "username": None}, {"KRB5CCNAME": "FILE:{tmp}/never-kinit"},
         "Kerberos: there is no Kerberos ticket in the ticket cache FILE:{tmp}/never-kinit "
         "(KRB5CCNAME) — run kinit for the principal first, or set password or kerberos_keytab"),
    ],
    ids=["unknown-principal", "no-kdc", "unknown-realm", "no-ticket", "no-ticket-no-username"],
)
def test_sign_in_errors_are_one_line(make_site, realm: KerberosRealm, tmp_path: Path, change: dict,
                                     env_change: dict, expected: str) -> None:
    emu = make_site(rows={"account": 5, "contact": 1, "systemuser": 1})
    config = {**emu.tap_config(), "username": realm.principal, "password": PASSWORD, "entities": ["account"]}
    config.update(change)
    config = {k: v for k, v in config.items() if v is not None}
    env = realm.env(KRB5CCNAME=f"FILE:{tmp_path / 'tap-ccache'}")
    env.update({k: v.format(tmp=tmp_path) for k, v in env_change.items()})
    run = run_tap(config, env=env)
    line = one_error(run)
    assert line == f"tap-dynamics: error: {expected.replace('{tmp}', str(tmp_path))}"
    assert emu.kerberos_logons == [] and realm.failed_attempts() == 0


def test_a_refused_ticket_is_one_line_after_one_handshake(make_emulator, realm: KerberosRealm,
                                                           krb_env: dict[str, str]) -> None:
    # A server that offers Negotiate but cannot use the ticket (here: one without Kerberos).
    emu = make_emulator({"account": 5, "contact": 1, "systemuser": 1}, kind=OnPremEmulator)
    url = emu.tap_config()["url"].replace("://127.0.0.1:", "://localhost:")
    config = {**emu.tap_config(), "auth_scheme": "Kerberos", "url": url, "username": realm.principal,
              "password": PASSWORD, "entities": ["account"], "max_concurrency": 8}
    run = run_tap(config, env=krb_env)
    line = one_error(run)
    origin = url.rsplit("/", 1)[0]
    assert line == (
        f"tap-dynamics: error: {origin} refused the Kerberos ticket of {realm.principal} (HTTP 401 "
        "after the Negotiate handshake) — check that the account is a user of the Dynamics "
        "organization and that HTTP/localhost is registered for the account the web site runs as"
    )
    assert emu.windows_logons == [] and emu.failed_logons == 0


def test_a_host_without_a_service_principal_is_one_line(make_site, realm: KerberosRealm,
                                                         krb_env: dict[str, str]) -> None:
    emu = make_site(rows={"account": 5, "contact": 1, "systemuser": 1})
    url = emu.tap_config()["url"].replace("://localhost:", "://127.0.0.1:")  # HTTP/127.0.0.1: none
    config = {**emu.tap_config(), "url": url, "username": realm.principal, "password": PASSWORD}
    run = run_tap(config, env=krb_env)
    line = one_error(run)
    assert line == (
        "tap-dynamics: error: Kerberos: the KDC has no service principal HTTP/127.0.0.1 "
        "(KDC_ERR_S_PRINCIPAL_UNKNOWN) — register it for the account the Dynamics web site runs "
        "as (setspn -S HTTP/127.0.0.1 DOMAIN\\account), or set url to the host name the SPN is "
        "registered for"
    )


def test_a_missing_gssapi_library_is_one_line(make_site, realm: KerberosRealm, krb_env: dict[str, str],
                                              tmp_path: Path) -> None:
    emu = make_site(rows={"account": 5, "contact": 1, "systemuser": 1})
    config = {**emu.tap_config(), "username": realm.principal, "password": PASSWORD}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    # The tap's own entry point, in a Python where the gssapi package cannot be imported.
    script = ("import sys; sys.modules['gssapi'] = None; sys.argv = ['tap-dynamics', '--config', sys.argv[1]]; "
              "from tap_dynamics.tap import cli; cli()")
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            timeout=300, env=hermetic_env(krb_env))
    assert_no_secrets(result.stdout + result.stderr, config)
    line = one_error(result)
    assert line.startswith(
        "tap-dynamics: error: auth_scheme Kerberos needs the GSSAPI library: the Python gssapi library "
        "is not installed — pip install 'tap-dynamics[kerberos]'"
    ), line
    assert emu.stats()["requests"] == 0 and Path(TAP).exists()


def test_clock_skew_is_explained() -> None:
    """KRB_AP_ERR_SKEW, as the krb5 library raises it (a skewed clock cannot be faked here)."""
    error = krb5.Krb5Error(krb5.init_context(), -1765328347)
    assert error_code(error) == CLOCK_SKEW
    message = str(KerberosSignIn(KerberosAuth(username=f"{USER}@{REALM}", password="x"), "crm").explain(error))
    assert message == (
        "Kerberos: the clocks of this machine and the KDC or the Dynamics server differ by more than "
        "Kerberos allows (KRB_AP_ERR_SKEW, 5 minutes by default) — synchronise this machine's clock (NTP)"
    )


# --- settings (no network) ------------------------------------------------------------------------
KERBEROS = {"url": "https://crm.contoso.com/Contoso", "auth_scheme": "Kerberos"}


def test_kerberos_settings_are_normalised(tmp_path: Path) -> None:
    keytab = tmp_path / "svc.keytab"
    keytab.write_bytes(b"\x05\x02")
    assert load_settings({**KERBEROS, "username": "svc@CONTOSO.COM", "password": "pw-1234"}).auth == KerberosAuth(
        username="svc@CONTOSO.COM", password="pw-1234")
    assert load_settings({**KERBEROS, "kerberos_keytab": str(keytab)}).auth == KerberosAuth(keytab=str(keytab))
    settings = load_settings(KERBEROS)  # the default ticket cache
    assert settings.auth == KerberosAuth() and settings.on_premises and settings.api_base.endswith("/v9.1")
    assert "pw-1234" not in repr(load_settings({**KERBEROS, "username": "svc@C.COM", "password": "pw-1234"}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"username": "CONTOSO\\svc", "password": "pw"},
         "setting 'username' is 'CONTOSO\\\\svc': Kerberos names the account as a principal, user@REALM "
         "(e.g. svc-tap@CONTOSO.COM, the realm in capitals), not DOMAIN\\user"),
        ({"password": "pw"}, "setting 'username' is missing — a Kerberos password belongs to a principal"),
        ({"username": "a@B.C", "password": "pw", "kerberos_keytab": "/etc/hostname"},
         "settings 'password' and 'kerberos_keytab' are both set"),
        ({"kerberos_ticket_cache": "FILE:/tmp/x", "kerberos_keytab": "/etc/hostname"},
         "setting 'kerberos_ticket_cache' is set together with a password or kerberos_keytab"),
        ({"kerberos_keytab": "/nonexistent/svc.keytab"},
         "setting 'kerberos_keytab' points to '/nonexistent/svc.keytab', which is not a readable file"),
        ({"crm_version": "CRMOnline"}, "setting 'auth_scheme' is Kerberos but crm_version is CRMOnline"),
        ({"auth_scheme": "NTLM", "username": "C\\u", "password": "pw", "kerberos_keytab": "/etc/hostname"},
         "setting 'kerberos_keytab' is set but auth_scheme is NTLM — it is only for auth_scheme Kerberos"),
    ],
)
def test_kerberos_settings_errors_are_one_line(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({**KERBEROS, **change})
    assert str(err.value).startswith(message), str(err.value)
