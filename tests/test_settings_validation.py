"""Up-front validation of the settings the resilience work relies on: one line, no secret, no request."""

from __future__ import annotations

import pytest

from tap_dynamics.errors import ConfigError
from tap_dynamics.settings import load_settings

GOOD = {
    "url": "https://myorg.crm4.dynamics.com",
    "tenant_id": "11111111-2222-3333-4444-555555555555",
    "client_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "client_secret": "s3cr3t-value",
}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
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
