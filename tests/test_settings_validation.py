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
