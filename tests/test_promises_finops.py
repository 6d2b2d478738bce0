"""Promises of the Finance & Operations issue that no other test held: the sovereign-cloud hosts
select F&O, ``replication`` overrides an entity's method, and the Entra schemes other than a
client secret (managed identity, certificate) sign in to an environment. Real HTTP against
the F&O emulator."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from emulator.finops import COMPANIES, FinOpsEmulator
from emulator.identity import MSI_CLIENT
from tap_dynamics.config.system import inferred_edition
from tests.taprun import run_command, run_tap
from tests.test_auth import make_cert


@pytest.fixture
def emu() -> FinOpsEmulator:
    with FinOpsEmulator(rows={"CustomersV3": 30, "SalesOrderHeadersV2": 30}) as emu:
        yield emu


@pytest.mark.parametrize("url", ["https://contoso.operations.dynamics.cn", "https://contoso.operations.gov.dynamics.us/"])
def test_sovereign_cloud_environments_select_finops(url: str) -> None:
    """Issue: the host is inferred "(… and the sovereign-cloud equivalents → F&O)"."""
    assert inferred_edition(url) == "FinOpsOnline"


def _root(run, stream: str) -> dict:
    entry = next(s for s in run.catalog["streams"] if s["tap_stream_id"] == stream)
    return {tuple(m["breadcrumb"]): m["metadata"] for m in entry["metadata"]}[()]


def test_replication_overrides_an_entity_method(emu: FinOpsEmulator) -> None:
    """Issue: "`replication` overrides per entity" — a cursor entity read as a full table (so
    its deletes reach the target), and a full-table entity read on a DateTimeOffset cursor."""
    config = {**emu.tap_config(), "entities": ["CustomersV3", "SalesOrderHeadersV2"],
              "replication": {"SalesOrderHeadersV2": "full_table", "CustomersV3": "CreatedDateTime"}}
    discovered = run_tap(config, "--discover")
    assert discovered.returncode == 0, discovered.stderr[-2000:]
    assert _root(discovered, "SalesOrderHeadersV2")["forced-replication-method"] == "FULL_TABLE"
    customers = _root(discovered, "CustomersV3")
    assert (customers["forced-replication-method"], customers["valid-replication-keys"]) == (
        "INCREMENTAL", ["CreatedDateTime"])
    run = run_tap(config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert {m["stream"] for m in run.messages if m["type"] == "ACTIVATE_VERSION"} == {"SalesOrderHeadersV2"}
    assert len(run.records("SalesOrderHeadersV2")) == 30 and len(run.records("CustomersV3")) == 30
    bookmarks = run.last_state["bookmarks"]
    assert set(bookmarks["CustomersV3"]["chains"]) == set(COMPANIES)
    reads = [urllib.parse.unquote(q) for p, q, _ in emu.query_log() if p == "/data/CustomersV3"]
    assert reads and all("CreatedDateTime" in q for q in reads)


def test_managed_identity_and_certificate_sign_in_to_finops(emu: FinOpsEmulator, tmp_path: Path) -> None:
    """Issue: "Auth: every Entra scheme the tap has (secret, certificate, delegated, managed
    identity)" — tokens for the environment (scope <url>/.default) from each."""
    env = {"IDENTITY_ENDPOINT": f"{emu.authority_host}/msi/token", "IDENTITY_HEADER": emu.entra.msi_header}
    msi = {"url": emu.env_url, "edition": "FinOpsOnline", "ca_bundle": emu.ca_path, "auth_scheme": "AzureMSI",
           "authority_host": emu.authority_host}
    check = run_command(["check"], msi, env=env)
    assert check.returncode == 0, check.stderr[-2000:]
    assert f"as managed identity {MSI_CLIENT}" in check.stdout and "companies: demf, usmf, usrt" in check.stdout
    cert = make_cert(tmp_path, "finops")
    app = "55555555-5555-4555-8555-555555555555"
    emu.register_app(app, "", certificate=cert["cert_pem"])
    config = {**emu.tap_config(), "client_id": app, "certificate_path": cert["pem"], "entities": ["CustomersV3"]}
    config.pop("client_secret")
    run = run_tap(config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.records("CustomersV3")) == 30


def test_delegated_sign_in_to_finops(emu: FinOpsEmulator, tmp_path: Path) -> None:
    """Issue: "Auth: every Entra scheme the tap has (… delegated …)" — `login` as a user once, then
    scheduled syncs and `check` refresh silently with tokens for the environment."""
    from tests.test_auth import USER_APP, delegated, free_port, login

    port = free_port()
    emu.register_app(USER_APP, secret="", redirect_uris=[f"http://localhost:{port}"])
    config = {**delegated(emu.tap_config(), tmp_path, port), "entities": ["CustomersV3"]}
    login(emu, tmp_path, config)
    run = run_tap({**config, "initiate_oauth": "REFRESH"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.records("CustomersV3")) == 30
    check = run_command(["check"], {**config, "initiate_oauth": "REFRESH"})
    assert check.returncode == 0, check.stderr[-2000:]
    assert "as user alex@contoso.onmicrosoft.com" in check.stdout and "companies: demf, usmf, usrt" in check.stdout
