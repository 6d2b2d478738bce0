"""Promises of the CRM 2011-2015 issue that no other test held: the v2 endpoint's discovery takes
the same logical-name globs as the Web API path, and Kerberos credentials keep to the org's
origin as NTLM's do. Real HTTP against the on-premises emulator; Kerberos against a real KDC."""

from __future__ import annotations

import json

from emulator.onprem import OnPremEmulator
from tests.kdc import PASSWORD, KerberosRealm
from tests.taprun import run_tap
from tests.test_check import error_lines


SV = "/XRMServices/2011/OrganizationData.svc"


def test_v2_discovery_takes_logical_name_globs(make_emulator) -> None:
    """Issue: "the entities/exclude_entities globs take logical names as everywhere else" — the
    v2 endpoint's entity sets are SchemaName-cased (AccountSet), the globs are not."""
    emu = make_emulator({"account": 5, "contact": 3, "systemuser": 1}, kind=OnPremEmulator, tls=False,
                        server_version="6.1")
    run = run_tap({**emu.tap_config(), "entities": ["acc*", "cont*", "systemuser"],
                   "exclude_entities": ["con*"]}, "--discover")
    assert run.returncode == 0, run.stderr
    assert "Reading the OData v2 endpoint" in run.stderr
    assert {s["tap_stream_id"] for s in run.catalog["streams"]} == {"account", "systemuser"}
    assert any(p.startswith(f"{SV}/$metadata") for _m, p, _s in emu.request_log())


def test_kerberos_credentials_never_go_to_a_foreign_next_link(
    make_site, make_emulator, realm: KerberosRealm, krb_env: dict[str, str]
) -> None:
    """Issue: Kerberos has "the same origin lock ... as NTLM": a next link to another server
    (same organization name, another host:port) is refused before anything is sent to it."""
    emu = make_site(tls=False)
    foreign = make_emulator({"account": 1}, kind=OnPremEmulator, tls=False, org=emu.org, auth="kerberos",
                            keytab=str(realm.service_keytab))
    elsewhere = f"{foreign.org_url}/api/data/v9.1/accounts?$skiptoken=x"
    emu.set(serve_body={"/api/data/v9.1/accounts": {"body": json.dumps({"value": [], "@odata.nextLink": elsewhere})}})
    foreign.reset_stats()
    config = {**emu.tap_config(), "username": realm.principal, "password": PASSWORD, "entities": ["account"]}
    run = run_tap(config, env=krb_env)
    assert run.returncode == 2, run.stderr
    [line] = error_lines(run.stderr)
    assert f"credentials to {foreign.server_url}" in line and "refusing to send" in line
    assert foreign.stats()["requests"] == 0 and foreign.kerberos_logons == []
