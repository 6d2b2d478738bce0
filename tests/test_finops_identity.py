"""Finance & Operations sign-in through real HTTP: consent for the Dynamics ERP API, and the
on-premises (local business data) deployment's AD FS.

Every run is the tap as a real process against the F&O emulator (emulator/finops): online its
Entra ID answers AADSTS65001 for an app that has no admin-consented Dynamics ERP permission;
on-premises it signs in with an AD FS on the same port, whose tokens the environment accepts
only when they were issued for its own URL (its relying party trust).
"""

from __future__ import annotations

import pytest
import requests

from emulator.finops import FinOpsEmulator
from tests.taprun import run_command, run_tap
from tests.test_finops import emitted, error_lines, expected

NO_ERP_APP = "55555555-5555-4555-8555-555555555555"
NO_ERP_SECRET = "no-erp-consent-secret-5"


def test_an_app_without_dynamics_erp_consent_is_one_line_naming_the_permission() -> None:
    """AADSTS65001 for the environment's audience: exit 2, one line that names the Dynamics ERP
    API permission to add and the admin consent to grant — for ``check`` and for a run."""
    with FinOpsEmulator(rows={"CustomersV3": 6, "SalesOrderHeadersV2": 0}) as emu:
        emu.register_app(NO_ERP_APP, NO_ERP_SECRET, unconsented=[emu.env_url])
        config = {**emu.tap_config(), "client_id": NO_ERP_APP, "client_secret": NO_ERP_SECRET}
        for run in (run_command(["check"], config), run_tap(config, "--discover")):
            assert run.returncode == 2
            lines = error_lines(run.stderr)
            assert len(lines) == 1, lines
            line = lines[0]
            assert "AADSTS65001" in line
            assert "Dynamics ERP" in line and "Connector.FullAccess" in line
            assert "Grant admin consent" in line
            assert NO_ERP_SECRET not in run.stderr
        # the default app (consented) still reads: the refusal is for that app and audience only
        ok = run_tap({**emu.tap_config(), "entities": ["CustomersV3"]})
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert len(ok.records("CustomersV3")) == 6


@pytest.fixture
def onprem() -> FinOpsEmulator:
    with FinOpsEmulator(rows={"CustomersV3": 30, "SalesOrderHeadersV2": 30}, identity="adfs") as emu:
        yield emu


def test_finops_on_premises_full_sync_with_adfs_tokens(onprem: FinOpsEmulator) -> None:
    """edition FinOpsOnPremise, auth_scheme ADFS, authority_host = the AD FS server: tokens for
    the environment's URL from AD FS, every company's rows exact, and ``check`` names them."""
    config = {**onprem.tap_config(), "entities": ["CustomersV3", "SalesOrderHeadersV2"]}
    assert config["edition"] == "FinOpsOnPremise" and config["auth_scheme"] == "ADFS"
    run = run_tap(config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert emitted(run, "CustomersV3", ["dataAreaId", "CustomerAccount"]) == expected(onprem, "CustomersV3")
    keys = ["dataAreaId", "SalesOrderNumber"]
    assert emitted(run, "SalesOrderHeadersV2", keys) == expected(onprem, "SalesOrderHeadersV2")
    assert onprem.adfs_token_requests >= 1  # the emulator serves no Entra ID in this mode
    check = run_command(["check"], config)
    assert check.returncode == 0, check.stderr[-1000:]
    assert "companies: demf, usmf, usrt; can read 2 of 2 tables" in check.stdout


def test_finops_on_premises_accepts_only_adfs_tokens_for_its_own_url(onprem: FinOpsEmulator) -> None:
    """The environment is a relying party trust: an AD FS token for another relying party is a
    401 with the AD FS challenge, so the audience the tap asks for is what makes it work."""
    config = onprem.tap_config()
    other = "https://ax.contoso.com"
    onprem.adfs.register_resource(other)

    def token(resource: str) -> str:
        answer = requests.post(f"{config['authority_host']}/adfs/oauth2/token/", data={
            "grant_type": "client_credentials", "client_id": config["client_id"],
            "client_secret": config["client_secret"], "resource": resource}, verify=onprem.ca_path, timeout=30)
        answer.raise_for_status()
        return answer.json()["access_token"]

    def read(bearer: str) -> requests.Response:
        return requests.get(f"{onprem.env_url}/data/Currencies", headers={"Authorization": f"Bearer {bearer}"},
                            verify=onprem.ca_path, timeout=30)

    refused = read(token(other))
    assert refused.status_code == 401
    assert "/adfs/oauth2/authorize" in refused.headers["WWW-Authenticate"]
    assert read(token(onprem.env_url)).status_code == 200
