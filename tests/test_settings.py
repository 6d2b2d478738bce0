"""Config validation: every malformed setting gets one line naming it, before any network call."""

from __future__ import annotations

import pytest

from tap_dynamics.errors import ConfigError
from tap_dynamics.config import load_settings

GOOD = {
    "url": "https://myorg.crm4.dynamics.com/",
    "tenant_id": "11111111-2222-3333-4444-555555555555",
    "client_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "client_secret": "s3cr3t-value",
}


def test_good_config_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    settings = load_settings({**GOOD, "entities": ["Account", "new_*"], "start_date": "2024-01-02"})
    assert settings.url == "https://myorg.crm4.dynamics.com"
    assert settings.api_base == "https://myorg.crm4.dynamics.com/api/data/v9.2"
    assert settings.scope == "https://myorg.crm4.dynamics.com/.default"
    assert settings.entities == ("account", "new_*")
    assert settings.start_date is not None and settings.start_date.tzinfo is not None
    assert settings.verify is True
    assert settings.page_size == 5000
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"url": "http://myorg.crm.dynamics.com"}, "'url' must be an https:// URL"),
        ({"url": "myorg.crm.dynamics.com"}, "'url' must be an https:// URL"),
        ({"url": None}, "'url' is missing"),
        ({"tenant_id": "not a tenant"}, "'tenant_id' is not a GUID or domain"),
        ({"tenant_id": "common"}, "'tenant_id' is 'common'"),
        ({"client_id": "my-app"}, "'client_id' is not a GUID"),
        ({"client_secret": ""}, "'client_secret' is missing"),
        ({"page_size": 10000}, "'page_size' must be from 1 to 5000"),
        ({"page_size": "many"}, "'page_size' must be a whole number"),
        ({"auth_scheme": "Basic"}, "'auth_scheme' is 'Basic'"),
        ({"api_version": "8.2"}, "'api_version' is '8.2'"),
        ({"start_date": "yesterday"}, "'start_date' is not an ISO-8601"),
        ({"authority_host": "http://login.microsoftonline.com"}, "'authority_host' must be an https://"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "'ca_bundle' points to"),
        # resilience-related settings
        ({"auth_scheme": "ManagedIdentity"}, "'auth_scheme' is 'ManagedIdentity'; valid values: AzureServicePrincipal"),
        ({"strict": "yes"}, "'strict' must be true or false"),
        ({"strict": 1}, "'strict' must be true or false"),
        ({"max_concurrency": 0}, "'max_concurrency' must be from 1 to 32"),
        ({"max_concurrency": 60}, "'max_concurrency' must be from 1 to 32"),
        ({"max_concurrency": float("inf")}, "'max_concurrency' must be a whole number"),
        ({"request_timeout": 0}, "'request_timeout' must be from 1 to 3600"),
        ({"page_size": 0}, "'page_size' must be from 1 to 5000"),
        ({"page_size": 2.5}, "'page_size' must be a whole number"),
        ({"entities": {"account": True}}, "'entities' must be a list"),
        ({"tenant_id": None}, "'tenant_id' is missing"),
        ({"client_id": "  "}, "'client_id' is missing"),
        ({"client_id": 42}, "'client_id' must be a string"),
        ({"url": "https://"}, "'url' has no host name"),
        ({"url": "https://myorg.crm.dynamics.com/?x=1"}, "'url' must not contain a query string"),
    ],
)
def test_bad_settings_get_one_line(change: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**GOOD, **change})
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    assert "s3cr3t" not in message


def test_ca_bundle_setting_wins_over_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = tmp_path / "ours.pem"
    ours.write_text("-----BEGIN CERTIFICATE-----\n")
    env = tmp_path / "env.pem"
    env.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(env))
    assert load_settings({**GOOD, "ca_bundle": str(ours)}).verify == str(ours)
    assert load_settings(GOOD).verify == str(env)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="REQUESTS_CA_BUNDLE points to"):
        load_settings(GOOD)


@pytest.mark.parametrize(
    ("url", "edition"),
    [
        ("https://myorg.crm4.dynamics.com", "Sales"),
        ("https://contoso.operations.dynamics.com", "FinOpsOnline"),
        ("https://contoso-test.sandbox.operations.dynamics.com/", "FinOpsOnline"),
        ("https://usnconeboxax1aos.cloud.onebox.dynamics.com", "Sales"),
        ("https://contoso.cloudax.dynamics.com", "FinOpsOnline"),
        ("https://graph.microsoft.com", "Office365"),
        ("https://graph.microsoft.us", "Office365"),
        ("https://dod-graph.microsoft.us", "Office365"),
        ("https://microsoftgraph.chinacloudapi.cn", "Office365"),
        ("https://graph.microsoft.com.evil.example", "Sales"),
        ("not a url", "Sales"),
        (None, "Sales"),
    ],
)
def test_edition_is_inferred_from_the_url_host(url: str | None, edition: str) -> None:
    """A pasted environment address selects its system; a look-alike host does not."""
    from tap_dynamics.config.system import inferred_edition

    assert inferred_edition(url) == edition


def test_edition_selects_the_system_and_comes_from_the_connection_string() -> None:
    settings = load_settings({**GOOD, "url": None, "connection_string": f"URL={GOOD['url']};Edition=FieldService"})
    assert (settings.edition, settings.system) == ("FieldService", "dataverse")
    assert load_settings(GOOD).edition == "Sales"
    with pytest.raises(ConfigError, match="'edition' is 'Nope'; valid values: Sales, CustomerService"):
        load_settings({**GOOD, "edition": "Nope"})
