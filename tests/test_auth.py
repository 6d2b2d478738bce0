"""Every way to connect, end to end against the emulator over real HTTPS, and every failure's line.

Interactive sign-ins are driven by the test the way a browser would: it reads the sign-in URL the
tap prints, GETs the emulator's authorize endpoint, and follows the redirect to the tap's own
listener with plain HTTP. Every tap process's output goes through ``tests.taprun``'s secret check.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import re
import socket
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from tap_dynamics.errors import ConfigError
from tap_dynamics.config import load_settings
from emulator.identity import MSI_CLIENT
from tests.taprun import EXTRA_SECRETS, TAP, assert_no_secrets, run_command, run_tap, write_json

CERT_APP = "44444444-4444-4444-8444-444444444444"
USER_APP = "55555555-5555-4555-8555-555555555555"
PFX_PASSWORD = "pfx-pass-Xy9!secret"
EXTRA_SECRETS.add(PFX_PASSWORD)


# --- helpers -------------------------------------------------------------------------------------
def make_cert(tmp: Path, name: str, *, days: int = 30, expired: bool = False) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tap-dynamics {name}")])
    now = dt.datetime.now(dt.timezone.utc)
    start, end = (now - dt.timedelta(days=60), now - dt.timedelta(days=1)) if expired else (now - dt.timedelta(days=1), now + dt.timedelta(days=days))
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    pem = tmp / f"{name}.pem"
    pem.write_bytes(key_pem + cert_pem)
    pfx = tmp / f"{name}.pfx"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        b"tap", key, cert, None, serialization.BestAvailableEncryption(PFX_PASSWORD.encode())))
    return {"pem": str(pem), "pfx": str(pfx), "cert": cert, "cert_pem": cert_pem, "key": key}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base(emu) -> dict:
    return {"url": emu.org_url, "authority_host": emu.authority_host, "ca_bundle": emu.ca_path,
            "entities": ["account"]}


def one_line(run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines, run.stderr
    assert "Traceback" not in run.stderr
    return lines[-1]


def assert_synced_accounts(run, emu) -> None:
    assert run.returncode == 0, run.stderr[-2000:]
    ids = {r["accountid"] for r in run.records("account")}
    assert ids == {r["accountid"] for r in emu.rows("account")}


def user_config(emu, tmp: Path, port: int, **more) -> dict:
    return {**base(emu), "auth_scheme": "AzureAD", "tenant_id": emu.tenant_id, "client_id": USER_APP,
            "callback_url": f"http://localhost:{port}", "token_cache_path": str(tmp / "cache" / "tokens.json"),
            **more}


def delegated(config: dict, tmp: Path, port: int) -> dict:
    """A service's app-only tap config turned into a delegated one (AzureAD) for USER_APP."""
    out = {**config, "auth_scheme": "AzureAD", "client_id": USER_APP, "callback_url": f"http://localhost:{port}",
           "token_cache_path": str(tmp / "tokens.json")}
    out.pop("client_secret", None)
    return out


class Interactive:
    """A tap process that signs in interactively; the test plays the browser."""

    def __init__(self, argv: list[str], config: dict, tmp: Path) -> None:
        self.config = config
        path = write_json(tmp, f"config-{time.monotonic_ns()}.json", config)
        self.proc = subprocess.Popen(  # noqa: S603
            [TAP, *argv, "--config", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError("no sign-in prompt: " + "".join(self.lines)[-2000:])

    def browse(self, ca_path: str) -> None:
        """Open the sign-in URL and follow the redirect to the tap's listener (plain HTTP)."""
        url = self.wait_for(r"open this URL in a browser: (\S+)").group(1)
        answer = requests.get(url, verify=ca_path, allow_redirects=False, timeout=30)
        assert answer.status_code == 302, answer.text
        location = answer.headers["Location"]
        assert location.startswith("http://localhost:")
        page = requests.get(location, timeout=30)
        assert page.status_code == 200 and "signed in" in page.text

    def finish(self, timeout: float = 120):
        from tests.taprun import TapRun, parse_messages

        out, err = self.proc.communicate(timeout=timeout)
        err = "".join(self.lines) + err
        assert_no_secrets(out + err, self.config)
        run = TapRun(self.proc.returncode, out, err)
        if out.strip().startswith("{"):
            run.messages = parse_messages(out)
        return run


def login(emu, tmp: Path, config: dict) -> None:
    session = Interactive(["login"], config, tmp)
    session.browse(emu.ca_path)
    run = session.finish()
    assert run.returncode == 0, run.stderr
    assert "signed in as alex@contoso.onmicrosoft.com" in run.stderr


@pytest.fixture
def emu(make_emulator):
    emulator = make_emulator(rows={"account": 60, "contact": 1, "systemuser": 1})
    return emulator


# --- service principal with a certificate --------------------------------------------------------
def test_certificate_pem_syncs_accounts(emu, tmp_path: Path) -> None:
    cert = make_cert(tmp_path, "good")
    emu.register_app(CERT_APP, secret="", certificate=cert["cert_pem"])
    config = {**base(emu), "tenant_id": emu.tenant_id, "client_id": CERT_APP, "certificate_path": cert["pem"]}
    assert_synced_accounts(run_tap(config), emu)
    assert emu.entra.used_jti  # the emulator verified a real assertion


def test_certificate_pfx_with_password_syncs_accounts(emu, tmp_path: Path) -> None:
    cert = make_cert(tmp_path, "pfx")
    emu.register_app(CERT_APP, secret="", certificate=cert["cert_pem"])
    config = {**base(emu), "tenant_id": emu.tenant_id, "client_id": CERT_APP,
              "certificate_path": cert["pfx"], "certificate_password": PFX_PASSWORD}
    assert load_settings(config).auth.certificate.kind == "PFXFILE"  # inferred from the file
    assert_synced_accounts(run_tap(config), emu)


def test_pfx_signs_ps256_with_x5t_s256_and_pem_rs256_with_x5t(emu, tmp_path: Path) -> None:
    """README "Certificate": "PFX files are signed with PS256 and identified by their SHA-256
    thumbprint, PEM keys with RS256 and the SHA-1 thumbprint; Entra ID accepts both." The
    emulator verifies each signature with the uploaded certificate and records the JOSE header."""
    cert = make_cert(tmp_path, "both")
    emu.register_app(CERT_APP, secret="", certificate=cert["cert_pem"])
    common = {**base(emu), "tenant_id": emu.tenant_id, "client_id": CERT_APP}
    sha256 = jwt.utils.base64url_encode(cert["cert"].fingerprint(hashes.SHA256())).decode()
    sha1 = jwt.utils.base64url_encode(cert["cert"].fingerprint(hashes.SHA1())).decode()  # noqa: S303

    assert_synced_accounts(run_tap({**common, "certificate_path": cert["pfx"],
                                    "certificate_password": PFX_PASSWORD}), emu)
    pfx_headers = list(emu.entra.assertion_headers)
    assert pfx_headers and all(h["alg"] == "PS256" for h in pfx_headers), pfx_headers
    assert all(h["x5t#S256"].rstrip("=") == sha256 and "x5t" not in h for h in pfx_headers), pfx_headers

    emu.entra.assertion_headers.clear()
    assert_synced_accounts(run_tap({**common, "certificate_path": cert["pem"]}), emu)
    pem_headers = list(emu.entra.assertion_headers)
    assert pem_headers and all(h["alg"] == "RS256" for h in pem_headers), pem_headers
    assert all(h["x5t"].rstrip("=") == sha1 and "x5t#S256" not in h for h in pem_headers), pem_headers


def test_client_secret_is_marked_secret_in_about() -> None:
    """README "Security guarantees": "`client_secret` is marked secret in `--about` and Meltano"."""
    about = run_tap({}, "--about", "--format=json")
    assert about.returncode == 0, about.stderr
    settings = json.loads(about.stdout)["settings"]["properties"]
    for name in ("client_secret", "certificate_password", "refresh_token", "access_token",
                 "connection_string", "password"):
        assert settings[name].get("secret") is True, name
    assert settings["client_id"].get("secret") is not True  # only secrets are hidden


def test_certificate_not_uploaded_and_expired(emu, tmp_path: Path) -> None:
    uploaded, other, old = make_cert(tmp_path, "up"), make_cert(tmp_path, "other"), make_cert(tmp_path, "old", expired=True)
    emu.register_app(CERT_APP, secret="", certificate=[uploaded["cert_pem"], old["cert_pem"]])
    config = {**base(emu), "tenant_id": emu.tenant_id, "client_id": CERT_APP}
    run = run_tap({**config, "certificate_path": other["pem"]})
    assert run.returncode == 2
    assert one_line(run).startswith(
        "tap-dynamics: error: AADSTS700027: Entra ID does not know the certificate the tap signed with — "
        "upload the certificate in certificate_path (its public part, .cer/.pem) under App registrations > "
        "your app > Certificates & secrets > Certificates, or point certificate_path at the certificate that "
        "is uploaded there. (Entra ID said: AADSTS700027: Client assertion contains an invalid signature. "
        "[Reason - The key was not found., Thumbprint of key used by client: '")
    run = run_tap({**config, "certificate_path": old["pem"]})
    assert run.returncode == 2
    assert one_line(run).startswith(
        "tap-dynamics: error: AADSTS700027: the certificate uploaded for the app has expired — create a new "
        "certificate, upload it under App registrations > your app > Certificates & secrets > Certificates "
        "and set certificate_path to it. (Entra ID said: AADSTS700027: Client assertion contains an invalid "
        "signature. [Reason - The key used is expired.")


def test_certificate_file_problems_are_config_errors(emu, tmp_path: Path) -> None:
    cert = make_cert(tmp_path, "c")
    config = {**base(emu), "tenant_id": emu.tenant_id, "client_id": CERT_APP}
    run = run_tap({**config, "certificate_path": cert["pfx"], "certificate_password": "wrong-password-1"})
    assert run.returncode == 2
    assert one_line(run) == (f"tap-dynamics: error: cannot open the PFX file {cert['pfx']}: certificate_password "
                             "is wrong (or it is not a PKCS#12 file — set certificate_type PEMKEY_FILE for PEM)")
    only_cert = tmp_path / "only-cert.pem"
    only_cert.write_bytes(cert["cert_pem"])
    run = run_tap({**config, "certificate_path": str(only_cert)})
    assert one_line(run) == (f"tap-dynamics: error: the PEM file {only_cert} has no private key — certificate_path "
                             "needs the private key and the certificate in one file (PEMKEY_FILE), or use a PFX file")


def _assertion(emu, key, cert, **claims) -> dict:
    now = int(time.time())
    body = {"aud": f"{emu.authority_host}/{emu.tenant_id}/oauth2/v2.0/token", "iss": CERT_APP, "sub": CERT_APP,
            "iat": now, "exp": now + 600, "jti": os.urandom(8).hex(), **claims}
    thumb = jwt.utils.base64url_encode(cert.fingerprint(hashes.SHA1())).decode()  # noqa: S303
    token = jwt.encode(body, key, algorithm="RS256", headers={"x5t": thumb})
    return {"grant_type": "client_credentials", "client_id": CERT_APP, "scope": f"{emu.org_url}/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": token}


def test_emulator_checks_every_assertion_claim(emu, tmp_path: Path) -> None:
    cert = make_cert(tmp_path, "a")
    emu.register_app(CERT_APP, secret="", certificate=cert["cert_pem"])
    url = f"{emu.authority_host}/{emu.tenant_id}/oauth2/v2.0/token"

    def post(form):
        answer = requests.post(url, data=form, verify=emu.ca_path, timeout=30)
        return answer.status_code, answer.json()

    good = _assertion(emu, cert["key"], cert["cert"])
    assert post(good)[0] == 200
    assert post(good)[0] == 200  # the same assertion again: MSAL reuses one for 10 minutes
    jti = jwt.decode(good["client_assertion"], options={"verify_signature": False})["jti"]
    status, body = post(_assertion(emu, cert["key"], cert["cert"], jti=jti, iat=int(time.time()) - 5))
    assert status == 401 and "replay" in body["error_description"]  # another assertion, same jti
    assert post(_assertion(emu, cert["key"], cert["cert"], aud="https://elsewhere/token"))[1]["error_codes"] == [50027]
    assert post(_assertion(emu, cert["key"], cert["cert"], sub="someone-else"))[1]["error_codes"] == [700021]
    assert post(_assertion(emu, cert["key"], cert["cert"], exp=int(time.time()) - 3600))[1]["error_codes"] == [700024]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, body = post(_assertion(emu, other, cert["cert"]))  # right thumbprint, wrong key
    assert status == 401 and "Signature validation failed" in body["error_description"]


# --- delegated (AzureAD) -------------------------------------------------------------------------
def test_login_then_scheduled_syncs_refresh_silently(emu, tmp_path: Path) -> None:
    port = free_port()
    emu.register_app(USER_APP, secret="", redirect_uris=[f"http://localhost:{port}"])
    emu.set(token_lifetime=200)  # < MSAL's 5-minute margin: every run must refresh
    emu.entra.single_use_refresh_tokens = True  # a lost rotated refresh token would break run 2
    config = user_config(emu, tmp_path, port)
    login(emu, tmp_path, config)
    cache = Path(config["token_cache_path"])
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    before = cache.read_text()
    for _ in range(2):
        assert_synced_accounts(run_tap({**config, "initiate_oauth": "REFRESH"}), emu)
    assert cache.read_text() != before and stat.S_IMODE(cache.stat().st_mode) == 0o600

    check = run_command(["check"], {**config, "initiate_oauth": "REFRESH"})
    assert check.returncode == 0, check.stderr
    user_id = emu.entra.apps[USER_APP].user_id
    assert check.stdout.strip() == (
        f"connection available: Contoso Emulated ({emu.org_url}) as user alex@contoso.onmicrosoft.com, "
        f"user id {user_id}; can read 1 of 1 table")


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("expired", "tap-dynamics: error: AADSTS700082: the refresh token has expired — run `tap-dynamics login` "
                    "again to get a new one. (Entra ID said: AADSTS700082: The refresh token has expired due to "
                    "inactivity."),
        ("mfa", "tap-dynamics: error: AADSTS50076: multi-factor authentication is now required for this user — "
                "run `tap-dynamics login` again interactively and complete the MFA prompt. (Entra ID said: "
                "AADSTS50076: Due to a configuration change made by your administrator"),
        ("revoked", "tap-dynamics: error: AADSTS50173: the saved sign-in was revoked (password changed or sessions "
                    "revoked by an administrator) — run `tap-dynamics login` again. (Entra ID said: AADSTS50173:"),
    ],
)
def test_refresh_failures_say_login_again(emu, tmp_path: Path, state: str, expected: str) -> None:
    port = free_port()
    emu.register_app(USER_APP, secret="", redirect_uris=[f"http://localhost:{port}"])
    emu.set(token_lifetime=200)
    config = user_config(emu, tmp_path, port, initiate_oauth="REFRESH")
    login(emu, tmp_path, config)
    emu.entra.refresh_token_state = state
    run = run_tap(config)
    assert run.returncode == 2
    assert one_line(run).startswith(expected)
    check = run_command(["check"], config)
    assert check.returncode == 2
    assert one_line(check).startswith(expected.replace("tap-dynamics: error:", "connection unavailable:"))


def test_getandrefresh_signs_in_during_the_sync(emu, tmp_path: Path) -> None:
    port = free_port()
    emu.register_app(USER_APP, secret="", redirect_uris=[f"http://localhost:{port}"])
    config = user_config(emu, tmp_path, port)  # GETANDREFRESH is the default
    session = Interactive([], config, tmp_path)
    session.browse(emu.ca_path)
    assert_synced_accounts(session.finish(), emu)
    assert Path(config["token_cache_path"]).exists()


def test_refresh_only_without_a_sign_in_says_login(emu, tmp_path: Path) -> None:
    port = free_port()
    emu.register_app(USER_APP, secret="", redirect_uris=[f"http://localhost:{port}"])
    config = user_config(emu, tmp_path, port, initiate_oauth="REFRESH")
    run = run_tap(config)
    assert run.returncode == 2
    assert one_line(run) == (
        f"tap-dynamics: error: no signed-in user in the token cache {config['token_cache_path']} and no "
        "refresh_token set (initiate_oauth REFRESH never signs in) — run `tap-dynamics login --config …` "
        "again to sign in")


def test_refresh_token_setting_and_access_token_off(emu, tmp_path: Path) -> None:
    port = free_port()
    emu.register_app(USER_APP, secret="", redirect_uris=[f"http://localhost:{port}"])
    first = user_config(emu, tmp_path, port)
    login(emu, tmp_path, first)
    cache = json.loads(Path(first["token_cache_path"]).read_text())
    refresh = next(iter(cache["RefreshToken"].values()))["secret"]
    moved = {**first, "initiate_oauth": "REFRESH", "refresh_token": refresh,
             "token_cache_path": str(tmp_path / "other" / "cache.json")}
    assert_synced_accounts(run_tap(moved), emu)
    assert stat.S_IMODE(Path(moved["token_cache_path"]).stat().st_mode) == 0o600

    app = emu.entra.apps[USER_APP]
    off = {**first, "initiate_oauth": "OFF", "access_token": emu.entra.issue(app, 3600, user=True)}
    assert_synced_accounts(run_tap(off), emu)


def test_device_code_login(emu, tmp_path: Path) -> None:
    emu.register_app(USER_APP, secret="")
    emu.entra.device_interval = 1
    emu.entra.device_script = ["authorization_pending", "slow_down"]
    config = user_config(emu, tmp_path, free_port())
    session = Interactive(["login", "--device-code"], config, tmp_path)
    code = session.wait_for(r"enter the code (\w+) to authenticate").group(1)
    emu.entra.approve_device(code)
    run = session.finish()
    assert run.returncode == 0, run.stderr
    assert_synced_accounts(run_tap({**config, "initiate_oauth": "REFRESH"}), emu)


def test_device_code_expires(emu, tmp_path: Path) -> None:
    emu.register_app(USER_APP, secret="")
    emu.entra.device_interval = 1
    emu.entra.device_lifetime = 1
    config = user_config(emu, tmp_path, free_port())
    run = run_command(["login", "--device-code"], config)
    assert run.returncode == 2
    assert one_line(run) == (
        "tap-dynamics: error: the device code expired before the sign-in was finished — run `tap-dynamics "
        "login --device-code` again and complete the sign-in within 15 minutes")


def test_redirect_uri_not_registered(emu, tmp_path: Path) -> None:
    emu.register_app(USER_APP, secret="", redirect_uris=["http://localhost:33333"])
    config = user_config(emu, tmp_path, free_port())
    session = Interactive(["login"], config, tmp_path)
    url = session.wait_for(r"open this URL in a browser: (\S+)").group(1)
    answer = requests.get(url, verify=emu.ca_path, allow_redirects=False, timeout=30)
    assert answer.status_code == 400 and answer.json()["error_codes"] == [50011]
    session.proc.kill()
    session.finish()


def test_redirect_uri_removed_during_sign_in_prints_the_troubleshooting_line(emu, tmp_path: Path) -> None:
    """README "Troubleshooting": a message starting `AADSTS50011` means "redirect URI not
    registered" and the fix is "add `callback_url` as a Redirect URI (Mobile and desktop)". Entra
    ID shows this in the browser for an unregistered URI; the tap prints it when the URI is
    removed from the registration while a sign-in is under way (the code redemption fails)."""
    port = free_port()
    emu.register_app(USER_APP, secret="", redirect_uris=[f"http://localhost:{port}"])
    config = user_config(emu, tmp_path, port)
    session = Interactive(["login"], config, tmp_path)
    url = session.wait_for(r"open this URL in a browser: (\S+)").group(1)
    answer = requests.get(url, verify=emu.ca_path, allow_redirects=False, timeout=30)
    assert answer.status_code == 302
    emu.entra.apps[USER_APP].redirect_uris.clear()  # an administrator edits the app meanwhile
    requests.get(answer.headers["Location"], timeout=30)
    run = session.finish()
    assert run.returncode == 2
    assert one_line(run).startswith(
        "tap-dynamics: error: AADSTS50011: the redirect URI is not registered for the app — add "
        "callback_url (default http://localhost:33333) as a Redirect URI under App registrations > "
        "your app > Authentication (platform 'Mobile and desktop applications'), or set callback_url "
        "to the one registered there. (Entra ID said: AADSTS50011: The redirect URI "
        f"'http://localhost:{port}' specified in the request does not match"), run.stderr


# --- managed identity ------------------------------------------------------------------------------
def test_managed_identity_app_service_syncs_accounts(emu) -> None:
    env = {"IDENTITY_ENDPOINT": f"{emu.authority_host}/msi/token", "IDENTITY_HEADER": emu.entra.msi_header}
    config = {**base(emu), "auth_scheme": "AzureMSI"}
    assert_synced_accounts(run_tap(config, env=env), emu)
    check = run_command(["check"], config, env=env)
    assert check.returncode == 0, check.stderr
    assert f"as managed identity {MSI_CLIENT}" in check.stdout


def test_managed_identity_imds_user_assigned(emu) -> None:
    user_mi = "66666666-6666-4666-8666-666666666666"
    emu.register_app(user_mi, secret="", managed_identity=True)
    env = {"AZURE_POD_IDENTITY_AUTHORITY_HOST": emu.authority_host}
    config = {**base(emu), "auth_scheme": "AzureMSI", "managed_identity_client_id": user_mi}
    assert_synced_accounts(run_tap(config, env=env), emu)
    run = run_tap({**config, "managed_identity_client_id": "77777777-7777-4777-8777-777777777777"},
                  env={"IDENTITY_ENDPOINT": f"{emu.authority_host}/msi/token", "IDENTITY_HEADER": emu.entra.msi_header})
    assert run.returncode == 2
    assert one_line(run) == (
        "tap-dynamics: error: the managed identity endpoint refused a token: 400, No User Assigned or Delegated "
        "Managed Identity found for specified ClientId/ResourceId/PrincipalId. — check that the identity is "
        "assigned to this host and, for a user-assigned one, managed_identity_client_id")


def test_managed_identity_off_azure(emu) -> None:
    env = {"AZURE_POD_IDENTITY_AUTHORITY_HOST": f"http://127.0.0.1:{free_port()}"}
    run = run_tap({**base(emu), "auth_scheme": "AzureMSI"}, env=env)
    assert run.returncode == 2
    assert one_line(run) == (
        "tap-dynamics: error: cannot reach the managed identity endpoint (ConnectionError) — AzureMSI works only "
        "on an Azure host (VM, App Service, Functions, AKS) with a managed identity turned on; elsewhere use "
        "AzureServicePrincipal")


# --- connection test: every documented failure ----------------------------------------------------
def test_check_success_line(emulator) -> None:
    run = run_command(["check"], emulator.tap_config())
    assert run.returncode == 0, run.stderr
    user_id = emulator.entra.apps[emulator.client_id].user_id
    assert run.stdout.strip() == (
        f"connection available: Contoso Emulated ({emulator.org_url}) as application "
        f"{emulator.client_id}, user id {user_id}; can read 4 of 4 tables")


GOOD_APP = "88888888-8888-4888-8888-888888888888"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("500011", "connection unavailable: AADSTS500011: the resource {url} is not a Dynamics org in this tenant — "
                   "set url to your customer's org URL exactly as the browser shows it (e.g. "
                   "https://mycompany.crm4.dynamics.com) and check tenant_id. (Entra ID said: AADSTS500011:"),
        ("65001", "connection unavailable: AADSTS65001: admin consent is missing for the app — in Azure portal > App "
                  "registrations > your app > API permissions, click 'Grant admin consent for <tenant>' (needs an "
                  "administrator). (Entra ID said: AADSTS65001:"),
        ("7000215", "connection unavailable: AADSTS7000215: the client secret is wrong — set client_secret to the "
                    "secret's Value (not its Secret ID) from Azure portal > App registrations > your app > "
                    "Certificates & secrets. (Entra ID said: AADSTS7000215: Invalid client secret provided."),
        ("7000222", "connection unavailable: AADSTS7000222: the client secret has expired — create a new secret "
                    "under App registrations > your app > Certificates & secrets and update client_secret. (Entra "
                    "ID said: AADSTS7000222:"),
        ("700016", "connection unavailable: AADSTS700016: application 99999999-9999-4999-8999-999999999999 was not "
                   "found in tenant {tenant} — check client_id"),
        ("90002", "connection unavailable: AADSTS90002: tenant 12345678-1234-4234-8234-123456789012 was not found — "
                  "check tenant_id"),
        ("403", "connection unavailable: Dataverse refused application {app} (403, not a member of the organization "
                "{org}) — create an application user for the app: Power Platform admin center > Environments > "
                "your environment > Settings > Users + permissions > Application users > New app user, and give "
                "it a security role that can read the tables"),
        ("unreachable", "connection unavailable: cannot reach https://127.0.0.1:{port} (ConnectionError) — check url "
                        "(the org URL as the browser shows it, e.g. https://myorg.crm.dynamics.com) and the "
                        "network/proxy"),
        ("not-dynamics", "connection unavailable: https://127.0.0.1:{port} does not look like a Dynamics 365 / "
                         "Dataverse org (HTTP 200 without a Bearer challenge at /api/data/) — set url to the org URL "
                         "exactly as the browser shows it, e.g. https://myorg.crm4.dynamics.com"),
        ("tls", "connection unavailable: TLS verification failed for {org} — if a proxy inspects TLS, set ca_bundle "
                "to a PEM file with its CA certificate"),
    ],
)
def test_check_explains_each_failure(emu, tmp_path: Path, case: str, expected: str) -> None:
    config = dict(emu.tap_config())
    fmt = {"url": emu.org_url, "tenant": emu.tenant_id, "app": GOOD_APP, "org": emu.org_url, "port": ""}
    if case == "500011":
        config["url"] = fmt["url"] = emu.authority_host  # a host Entra ID has no resource for
    elif case == "65001":
        emu.register_app(GOOD_APP, secret="consent-missing-secret", consent=False)
        config.update(client_id=GOOD_APP, client_secret="consent-missing-secret")
    elif case == "7000215":
        config["client_secret"] = "wrong-secret-value"
    elif case == "7000222":
        emu.register_app(GOOD_APP, secret="expired-secret-value", secret_expired=True)
        config.update(client_id=GOOD_APP, client_secret="expired-secret-value")
    elif case == "700016":
        config["client_id"] = "99999999-9999-4999-8999-999999999999"
    elif case == "90002":
        config["tenant_id"] = "12345678-1234-4234-8234-123456789012"
    elif case == "403":
        emu.register_app(GOOD_APP, secret="no-app-user-secret", application_user=False)
        config.update(client_id=GOOD_APP, client_secret="no-app-user-secret")
    elif case == "unreachable":
        fmt["port"] = str(free_port())
        config["url"] = f"https://127.0.0.1:{fmt['port']}"
    elif case == "not-dynamics":
        server = _plain_https_site(emu)
        fmt["port"] = str(server.server_address[1])
        config["url"] = f"https://127.0.0.1:{fmt['port']}"
    elif case == "tls":
        other_ca = tmp_path / "other-ca.pem"
        other_ca.write_bytes(make_cert(tmp_path, "ca")["cert_pem"])
        config["ca_bundle"] = str(other_ca)
    run = run_command(["check"], config)
    assert run.returncode == 2, run.stderr
    line = one_line(run)
    assert line.startswith(expected.format(**fmt)), line
    assert run.stdout == ""


def _plain_https_site(emu) -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"<html>Welcome to our intranet</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(emu.tls.cert_path, emu.tls.key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_sdk_test_flag_runs_the_same_check(emu) -> None:
    run = run_command(["--test"], emu.tap_config())
    assert run.returncode == 0, run.stderr
    assert "connection available: " in run.stderr
    run = run_command(["--test"], {**emu.tap_config(), "client_secret": "wrong-secret-value"})
    assert run.returncode == 2
    assert one_line(run).startswith("tap-dynamics: error: AADSTS7000215: the client secret is wrong")


# --- settings: connection string, resource, crm_version, per-scheme requirements -----------------
def test_connection_string_alone_syncs(emu) -> None:
    cs = (f"URL={emu.org_url}/;AuthScheme=AzureServicePrincipal;AzureTenant={emu.tenant_id};"
          f"OAuthClientId={emu.client_id};OAuthClientSecret={emu.client_secret};CRMVersion=CRMOnline")
    config = {"connection_string": cs, "authority_host": emu.authority_host, "ca_bundle": emu.ca_path,
              "entities": ["account"]}
    assert_synced_accounts(run_tap(config), emu)
    about = run_tap(config, "--about", "--format=json")
    assert about.returncode == 0 and '"connection_string"' in about.stdout


GUID_T = "11111111-2222-4333-8444-555555555555"
GUID_C = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"


def test_connection_string_rules() -> None:
    cs = f"URL='https://a.crm.dynamics.com/';AzureTenant={GUID_T};OAuthClientId={GUID_C};OAuthClientSecret=from-string"
    settings = load_settings({"connection_string": cs, "client_secret": "explicit"})
    assert settings.url == "https://a.crm.dynamics.com" and settings.auth.client_secret == "explicit"
    with pytest.raises(ConfigError) as err:
        load_settings({"connection_string": cs + ";Pasword=x"})
    assert str(err.value).startswith("setting 'connection_string' has an unknown key 'Pasword' — valid keys: URL, Resource, AuthScheme, AzureTenant, OAuthClientId, OAuthClientSecret, OAuthJWTCert")
    settings = load_settings({"resource": "https://b.crm.dynamics.com/", "tenant_id": GUID_T, "client_id": GUID_C, "client_secret": "x"})
    assert settings.url == "https://b.crm.dynamics.com"
    with pytest.raises(ConfigError, match=r"'CRM2011\+' \(on-premises\) but auth_scheme is AzureServicePrincipal"):
        load_settings({"connection_string": cs + ";CRMVersion=CRM2011+"})
    cs_ad = f"URL=https://a.crm.dynamics.com;AuthScheme=AzureAD;AzureTenant={GUID_T};OAuthClientId={GUID_C};InitiateOAuth=REFRESH;CallbackURL=http://localhost:4444;OAuthSettingsLocation=/tmp/x.json"
    settings = load_settings({"connection_string": cs_ad})
    assert (settings.auth_scheme, settings.auth.initiate_oauth, settings.auth.callback_url, settings.auth.token_cache_path) == (
        "AzureAD", "REFRESH", "http://localhost:4444", "/tmp/x.json")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"auth_scheme": "AzureServicePrincipal", "tenant_id": GUID_T, "client_id": GUID_C},
         "setting 'client_secret' is missing — set it to the client secret's Value from Certificates & secrets, or set certificate_path to use a certificate"),
        ({"auth_scheme": "AzureAD", "tenant_id": GUID_T, "client_id": GUID_C, "initiate_oauth": "OFF"},
         "setting 'access_token' is missing — initiate_oauth OFF uses the given access token as is; set access_token, or use initiate_oauth GETANDREFRESH"),
        ({"auth_scheme": "AzureAD", "tenant_id": GUID_T, "client_id": GUID_C, "initiate_oauth": "SOMETIMES"},
         "setting 'initiate_oauth' is 'SOMETIMES'; valid values: GETANDREFRESH, REFRESH, OFF"),
        ({"auth_scheme": "AzureAD", "tenant_id": GUID_T, "client_id": GUID_C, "callback_url": "http://example.com:1"},
         "setting 'callback_url' is 'http://example.com:1': the tap can only listen on http://localhost (Entra ID allows plain http only for localhost) — e.g. http://localhost:33333"),
        ({"auth_scheme": "AzureMSI", "managed_identity_client_id": "me"},
         "setting 'managed_identity_client_id' is not a GUID (got 'me') — use the Application (client) ID from the app registration's Overview page"),
        ({"auth_scheme": "AzureServicePrincipal", "tenant_id": GUID_T, "client_id": GUID_C, "client_secret": "x", "certificate_path": __file__},
         "settings 'client_secret' and 'certificate_path' are both set — a service principal signs in with one credential; remove one of them"),
    ],
)
def test_scheme_requirements(config: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"url": "https://a.crm.dynamics.com", **config})
    assert str(err.value) == message


def test_secret_guard_catches_a_leak() -> None:
    with pytest.raises(AssertionError, match="a secret appeared"):
        assert_no_secrets("token: " + PFX_PASSWORD, {})
    with pytest.raises(AssertionError):
        assert_no_secrets("x OAuthClientSecret=abcdefgh12", {"connection_string": "URL=x;OAuthClientSecret=abcdefgh12"})


def test_meltano_config_test(emu, tmp_path: Path) -> None:
    from tests.demo import ensure_plugins, meltano
    from tests.taprun import known_secrets

    config = emu.tap_config()
    env = {
        "TAP_DYNAMICS_URL": config["url"], "TAP_DYNAMICS_TENANT_ID": config["tenant_id"],
        "TAP_DYNAMICS_CLIENT_ID": config["client_id"], "TAP_DYNAMICS_CLIENT_SECRET": config["client_secret"],
        "TAP_DYNAMICS_AUTHORITY_HOST": config["authority_host"], "TAP_DYNAMICS_CA_BUNDLE": config["ca_bundle"],
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
    }
    ensure_plugins(env)
    ok = meltano("config", "test", "tap-dynamics", env=env, check=False)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "Plugin configuration is valid" in ok.stdout + ok.stderr
    bad = meltano("config", "test", "tap-dynamics", env={**env, "TAP_DYNAMICS_CLIENT_SECRET": "wrong-secret-value"}, check=False)
    assert bad.returncode != 0
    assert "AADSTS7000215: the client secret is wrong" in bad.stdout + bad.stderr
    for output in (ok.stdout + ok.stderr, bad.stdout + bad.stderr):
        assert not [s for s in known_secrets({"client_secret": "wrong-secret-value"}) if s in output]


def test_azuread_confidential_client_login_and_sync(emu, tmp_path: Path) -> None:
    port = free_port()
    emu.register_app(USER_APP, secret="web-app-secret-1234", redirect_uris=[f"http://localhost:{port}"],
                     public_client=False)
    config = user_config(emu, tmp_path, port, client_secret="wrong-secret-value")
    session = Interactive(["login"], config, tmp_path)
    session.browse(emu.ca_path)
    run = session.finish()
    assert run.returncode == 2
    assert one_line(run).startswith("tap-dynamics: error: AADSTS7000215: the client secret is wrong")
    config["client_secret"] = "web-app-secret-1234"
    login(emu, tmp_path, config)
    assert_synced_accounts(run_tap({**config, "initiate_oauth": "REFRESH"}), emu)


def test_login_is_only_for_azuread(emulator) -> None:
    run = run_command(["login"], emulator.tap_config())
    assert run.returncode == 2
    assert one_line(run) == (
        "tap-dynamics: error: login is for auth_scheme AzureAD (signing in as a user); auth_scheme "
        "AzureServicePrincipal needs no sign-in — run `tap-dynamics check` instead")


class _Cloud(requests.adapters.BaseAdapter):
    """One Microsoft cloud's login host at the transport level: answers tenant discovery and the
    token endpoint for ``host`` only and records every request the tap's MSAL app sends."""

    def __init__(self, host: str, tenant: str) -> None:
        super().__init__()
        self.host, self.tenant = host, tenant
        self.sent: list[tuple[str, str, dict]] = []

    def send(self, request, **kwargs) -> requests.Response:  # noqa: ANN001 - requests' signature
        from urllib.parse import parse_qsl, urlsplit

        form = dict(parse_qsl(request.body if isinstance(request.body, str) else (request.body or b"").decode()))
        self.sent.append((request.method, request.url, form))
        base = f"https://{self.host}/{self.tenant}"
        parts = urlsplit(request.url)
        if parts.hostname != self.host:
            body, status = {"error": "invalid_instance", "error_description": "another cloud"}, 400
        elif parts.path == f"/{self.tenant}/v2.0/.well-known/openid-configuration":
            body, status = {"issuer": f"{base}/v2.0", "token_endpoint": f"{base}/oauth2/v2.0/token",
                            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize"}, 200
        elif parts.path == f"/{self.tenant}/oauth2/v2.0/token":
            body, status = {"token_type": "Bearer", "expires_in": 3599, "access_token": "sovereign-token"}, 200
        else:
            body, status = {"error": "not_found"}, 404
        response = requests.Response()
        response.status_code, response.url, response.request = status, request.url, request
        response.headers["Content-Type"] = "application/json; charset=utf-8"
        response._content = json.dumps(body).encode()  # noqa: SLF001 - a built response
        return response

    def close(self) -> None:
        """Nothing to release."""


# What each cloud's org domain and login host are (README "Sovereign clouds"; Microsoft's
# national-cloud docs): the tap must ask that cloud's login host, and only it, for a token whose
# scope is the org URL, whatever the cloud.
CLOUDS = [
    ("public", "https://contoso.crm4.dynamics.com", "login.microsoftonline.com"),
    ("US Government GCC High", "https://contoso.crm.microsoftdynamics.us", "login.microsoftonline.us"),
    ("US Government DoD", "https://contoso.crm.appsplatform.us", "login.microsoftonline.us"),
    ("China (21Vianet)", "https://contoso.crm.dynamics.cn", "login.chinacloudapi.cn"),
    ("China (21Vianet), current host", "https://contoso.crm.dynamics.cn", "login.partner.microsoftonline.cn"),
]


@pytest.mark.parametrize(("cloud", "org", "host"), CLOUDS, ids=[c[0] for c in CLOUDS])
def test_each_cloud_gets_its_token_from_its_own_login_host(cloud: str, org: str, host: str) -> None:
    from tap_dynamics.auth import build_token_provider

    settings = load_settings({"url": org + "/", "tenant_id": GUID_T, "client_id": GUID_C,
                              "client_secret": "cloud-secret-value", "authority_host": f"https://{host}/"})
    provider = build_token_provider(settings)
    fake = _Cloud(host, GUID_T)
    provider._http.mount("https://", fake)  # noqa: SLF001 - the transport under MSAL, not MSAL
    assert provider.token() == "sovereign-token"
    assert provider.identity() == f"application {GUID_C}"
    urls = [url for _method, url, _form in fake.sent]
    # Tenant discovery, then the token, both at the cloud's own host; no instance discovery at
    # login.microsoftonline.com from a sovereign cloud (MSAL knows these hosts).
    assert urls == [f"https://{host}/{GUID_T}/v2.0/.well-known/openid-configuration",
                    f"https://{host}/{GUID_T}/oauth2/v2.0/token"], urls
    method, _url, form = fake.sent[-1]
    assert method == "POST"
    assert form["grant_type"] == "client_credentials" and form["client_id"] == GUID_C
    assert form["scope"] == f"{org}/.default"  # the org URL without its trailing slash
    assert form["client_secret"] == "cloud-secret-value"
    assert provider.token() == "sovereign-token" and len(fake.sent) == 2  # MSAL's cache, no new request


def test_a_private_authority_host_skips_instance_discovery() -> None:
    """Any other host (a proxy, the emulator) gets no call to login.microsoftonline.com."""
    from tap_dynamics.auth import build_token_provider

    host = "login.proxy.contoso.example"
    settings = load_settings({"url": "https://contoso.crm.dynamics.com", "tenant_id": GUID_T,
                              "client_id": GUID_C, "client_secret": "cloud-secret-value",
                              "authority_host": f"https://{host}"})
    provider = build_token_provider(settings)
    fake = _Cloud(host, GUID_T)
    provider._http.mount("https://", fake)  # noqa: SLF001
    assert provider.token() == "sovereign-token"
    assert {url.split("/")[2] for _m, url, _f in fake.sent} == {host}
