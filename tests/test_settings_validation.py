"""Up-front validation of the settings the resilience work relies on: one line, no secret, no request."""

from __future__ import annotations

import pytest

from tap_dynamics.config import load_settings

GOOD = {
    "url": "https://myorg.crm4.dynamics.com",
    "tenant_id": "11111111-2222-3333-4444-555555555555",
    "client_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "client_secret": "s3cr3t-value",
}


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("true", True), ("False", False), (None, False)])
def test_strict_accepts_booleans(value: object, expected: bool) -> None:
    assert load_settings({**GOOD, "strict": value}).strict is expected
    assert load_settings(GOOD).strict is False


def test_schema_errors_from_the_sdk_are_one_line_exit_2(emulator) -> None:
    from tests.taprun import run_tap

    emulator.reset_stats()
    run = run_tap({**emulator.tap_config(), "max_concurrency": "lots"})
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("tap-dynamics: error:")]
    assert len(errors) == 1 and "max_concurrency" in errors[0]
    assert "Traceback" not in run.stderr
    assert emulator.stats()["requests"] == 0


WINDOWS = {"auth_scheme": "NTLM", "username": "CONTOSO\\svc-etl", "password": "w1ndows-pass"}


@pytest.mark.parametrize(
    ("config", "name", "shown"),
    [
        ({**GOOD, "url": "https://admin:hunter2pw@myorg.crm4.dynamics.com"}, "url", "https://myorg.crm4.dynamics.com"),
        ({**GOOD, "url": "https://admin:hunter2pw@contoso.operations.dynamics.com"}, "url",
         "https://contoso.operations.dynamics.com"),
        ({**GOOD, "url": "https://admin:hunter2pw@graph.microsoft.com"}, "url", "https://graph.microsoft.com"),
        ({**GOOD, "url": "ftp://hunter2pw@myorg.crm4.dynamics.com"}, "url", "ftp://myorg.crm4.dynamics.com"),
        ({**GOOD, "authority_host": "https://admin:hunter2pw@login.microsoftonline.com"}, "authority_host",
         "https://login.microsoftonline.com"),
        ({**WINDOWS, "url": "http://admin:hunter2pw@crm.contoso.local/org"}, "url", "http://crm.contoso.local/org"),
        ({**WINDOWS, "url": "https://admin:hunter2pw@crm.contoso.local/org"}, "url", "https://crm.contoso.local/org"),
        ({"connection_string": "URL=https://admin:hunter2pw@myorg.crm4.dynamics.com;AuthScheme=AzureServicePrincipal;"
          "OAuthClientId=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee;OAuthClientSecret=x;AzureTenant=contoso.onmicrosoft.com"},
         "url", "https://myorg.crm4.dynamics.com"),
    ],
)
def test_a_url_with_a_user_name_or_password_is_refused_without_repeating_them(config: dict, name: str, shown: str) -> None:
    """``https://user:password@host`` would put the password into every URL the tap builds, its log
    lines and its errors: refused in one line that shows the address without it."""
    from tap_dynamics.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert message.startswith(f"setting '{name}' must not contain a user name or password (got {shown!r}")
    assert "hunter2pw" not in message and "admin" not in message and "\n" not in message


def test_a_url_with_a_password_is_one_line_that_does_not_repeat_it() -> None:
    from tests.taprun import run_tap

    run = run_tap({**GOOD, "url": "https://admin:hunter2pw@myorg.crm4.dynamics.com"}, "--discover")
    assert run.returncode == 2
    assert "hunter2pw" not in run.stderr + run.stdout and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("tap-dynamics: error:")]
    assert len(errors) == 1 and "must not contain a user name or password" in errors[0]


@pytest.mark.parametrize(
    ("config", "name"),
    [
        ({**GOOD, "url": "https://[myorg.crm4.dynamics.com"}, "url"),
        ({**GOOD, "url": "https://admin:hunter2pw@[myorg.crm4.dynamics.com"}, "url"),
        ({**GOOD, "authority_host": "https://[login.microsoftonline.com"}, "authority_host"),
        ({**WINDOWS, "url": "https://[crm.contoso.local/org"}, "url"),
    ],
)
def test_a_url_that_cannot_be_parsed_is_one_line_without_its_value(config: dict, name: str) -> None:
    """``urlsplit`` raises on an unclosed IPv6 bracket: a config error naming the setting, not an
    internal error, and the value (which may carry a password) is not repeated."""
    from tap_dynamics.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert str(caught.value) == f"setting '{name}' is not a valid URL (Invalid IPv6 URL) — check its host, brackets and port"
