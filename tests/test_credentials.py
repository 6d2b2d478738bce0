"""Credentials for an explicit resource, the scheme registry, the shared delegated token cache,
and the settings' JSON Schema rules as the tap process reports them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import typing as t
from pathlib import Path

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_dynamics.auth import SCHEMES, TokenProvider, build_token_provider
from tap_dynamics.auth.base import unverified_claim
from tap_dynamics.auth.delegated import open_token_cache
from tap_dynamics.config import CONFIG_SCHEMA, load_settings
from tap_dynamics.config.auth import AUTH_SCHEMES
from tap_dynamics.config.resource import Resource
from tap_dynamics.errors import AuthError, ConfigError
from tests.taprun import run_tap

GUID_T = "11111111-2222-4333-8444-555555555555"
GUID_C = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tap-dynamics: error:")]


# --- explicit resource ------------------------------------------------------------------------


def test_a_credential_asks_for_the_resource_it_is_given(emulator) -> None:
    settings = load_settings(emulator.tap_config())
    assert build_token_provider(settings).token()  # the org: the resource of the Dataverse settings
    other = build_token_provider(settings, Resource("https://graph.microsoft.com"))
    with pytest.raises(AuthError) as err:
        other.token()
    # The emulator knows only the org as a resource: the request named the one given.
    assert err.value.code == "500011" and "https://graph.microsoft.com" in str(err.value)


def test_resource_scopes() -> None:
    graph = Resource("https://graph.microsoft.com")
    assert graph.app_scopes == graph.user_scopes == ["https://graph.microsoft.com/.default"]
    settings = load_settings({"url": "https://a.crm.dynamics.com", "tenant_id": GUID_T, "client_id": GUID_C,
                              "client_secret": "x"})
    assert settings.resource.user_scopes == ["https://a.crm.dynamics.com/user_impersonation"]


def test_every_auth_scheme_has_a_credential(tmp_path: Path) -> None:
    configs: dict[str, dict[str, t.Any]] = {
        "AzureServicePrincipal": {"tenant_id": GUID_T, "client_id": GUID_C, "client_secret": "x"},
        "AzureAD": {"tenant_id": GUID_T, "client_id": GUID_C, "token_cache_path": str(tmp_path / "c.json")},
        "AzureMSI": {},
        "NTLM": {"username": "CONTOSO\\svc", "password": "pw"},
        "Kerberos": {"username": "svc@CONTOSO.COM", "password": "pw"},
        "ADFS": {"authority_host": "https://adfs.contoso.com", "client_id": "tap", "client_secret": "x"},
    }
    assert set(SCHEMES) == set(AUTH_SCHEMES) == set(configs)
    assert CONFIG_SCHEMA["properties"]["auth_scheme"]["enum"] == list(AUTH_SCHEMES)
    for scheme, extra in configs.items():
        url = "https://crm.contoso.com" if scheme in ("NTLM", "Kerberos", "ADFS") else "https://a.crm.dynamics.com"
        settings = load_settings({"url": url, "auth_scheme": scheme, **extra})
        credential = build_token_provider(settings)  # no network call while building
        assert isinstance(credential, TokenProvider) and isinstance(credential, SCHEMES[scheme][1])
        assert settings.auth_scheme == scheme and credential.identity()


def test_unverified_claims_are_read_with_pyjwt() -> None:
    token = jwt.encode({"appid": GUID_C, "aud": "https://a.crm.dynamics.com"}, "k" * 32, algorithm="HS256")
    assert unverified_claim(token, "appid") == GUID_C
    assert unverified_claim(token, "upn") is None
    assert unverified_claim("not-a-jwt", "appid") is None


# --- the delegated token cache ------------------------------------------------------------------


def _add_token(cache: t.Any, client_id: str, n: int) -> None:
    cache.add({
        "client_id": client_id,
        "scope": ["https://a.crm.dynamics.com/user_impersonation"],
        "token_endpoint": f"https://login.microsoftonline.com/{GUID_T}/oauth2/v2.0/token",
        "response": {"access_token": f"at-{client_id}-{n}", "refresh_token": f"rt-{client_id}-{n}",
                     "expires_in": 3600, "token_type": "Bearer"},
    })


def test_token_cache_file_stays_private(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "cache.json"
    cache = open_token_cache(str(path))
    _add_token(cache, GUID_C, 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.chmod(0o644)  # a copy from elsewhere, or a careless chmod
    again = open_token_cache(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    _add_token(again, GUID_C, 2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "rt-" in path.read_text()
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"cannot read the token cache .* — delete it and run `tap-dynamics login"):
        open_token_cache(str(path))


def test_two_processes_sharing_a_token_cache_lose_no_refresh_token(tmp_path: Path) -> None:
    """Two scheduled runs (two Airflow tasks) write one cache file at the same time: every token
    either of them added is in the file afterwards (the lock, and a reload before each write).
    README (Delegated, as a user): "Runs may share one token_cache_path … no run loses the
    refresh token another one saved"."""
    path = tmp_path / "cache.json"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from tap_dynamics.auth.delegated import open_token_cache
        from tests.test_credentials import _add_token
        cache = open_token_cache({str(path)!r})
        open({str(path)!r} + "." + sys.argv[1], "w").close()  # ready
        while not os.path.exists({str(path)!r} + ".go"):  # both start writing together
            time.sleep(0.01)
        for n in range(100):
            _add_token(cache, sys.argv[1], n)
        """
    )
    clients = ["aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", script, c], env=env) for c in clients]
    while not all(Path(f"{path}.{c}").exists() for c in clients):
        assert all(p.poll() is None for p in procs), "a writer process ended early"
        time.sleep(0.01)
    Path(f"{path}.go").touch()
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    saved = json.loads(path.read_text())
    refresh = {entry["secret"] for entry in saved["RefreshToken"].values()}
    # One refresh token per client and account survives (each add replaces that client's own),
    # and it is the last one each process wrote: nobody's write was overwritten by a stale copy.
    assert refresh == {f"rt-{c}-99" for c in clients}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- JSON Schema rules, as a run reports them ---------------------------------------------------------


def test_discriminated_union_failure_is_one_line_exit_2(emulator) -> None:
    config = {k: v for k, v in emulator.tap_config().items() if k != "client_secret"}
    emulator.reset_stats()
    run = run_tap(config)
    assert run.returncode == 2
    assert _error_lines(run.stderr) == [
        "tap-dynamics: error: setting 'client_secret' is missing — set it to the client secret's Value "
        "from Certificates & secrets, or set certificate_path to use a certificate"
    ]
    assert "Traceback" not in run.stderr and emulator.stats()["requests"] == 0


def test_connection_string_values_are_not_shadowed_by_defaults(emulator) -> None:
    """The schema judges the config after the connection string is merged, and the defaults of
    settings (authority_host here) never hide a value the connection string gives."""
    config = emulator.tap_config()
    cs = (f"URL={config['url']};AuthScheme=AzureServicePrincipal;AzureTenant={config['tenant_id']};"
          f"OAuthClientId={config['client_id']};OAuthClientSecret={config['client_secret']};"
          f"AuthorityHost={config['authority_host']}")
    run = run_tap({"connection_string": cs, "ca_bundle": config["ca_bundle"], "entities": ["account"]},
                  "--discover")
    assert run.returncode == 0, run.stderr
    assert "account" in [entry["tap_stream_id"] for entry in json.loads(run.stdout)["streams"]]


# --- lenient spellings -----------------------------------------------------------------------------

_GOOD = {"url": "https://a.crm.dynamics.com", "tenant_id": GUID_T, "client_id": GUID_C, "client_secret": "x"}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(name=st.sampled_from(["page_size", "progress_interval", "strict", "label_languages", "entities",
                             "replication", "api_version", "auth_scheme", "crm_version"]),
       text=st.text(alphabet="+-0123456789.,vV eE²{}\":atrufl", max_size=10))
def test_string_spellings_never_crash(name: str, text: str) -> None:
    """Environment variables and connection strings give every setting as text: each spelling is
    read as the setting's type or refused with one line naming the setting."""
    try:
        load_settings({**_GOOD, name: text})
    except ConfigError as exc:
        assert "\n" not in str(exc) and f"'{name}'" in str(exc)
