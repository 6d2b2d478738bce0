"""Shared fixtures: the Microsoft cloud emulator and helpers to run the tap as a real process.

The suite is hermetic: whatever the caller's environment holds (a proxy, a managed-identity
endpoint, ``TAP_DYNAMICS_*``/``MELTANO_*`` settings, a CA bundle) is removed from this process
before any test runs — so in-process HTTP calls and every process the tests start see the same
clean environment — and Meltano keeps its plugins, runs and state in a throw-away directory of
this test session instead of the repository's ``.meltano/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from tests.taprun import scrubbed

pytest_plugins = ["emulator.pytest_plugin", "tests.pipeline_fixtures", "tests.kerberos_fixtures"]

for _name in [name for name in os.environ if scrubbed(name)]:
    del os.environ[_name]
_MELTANO_DIR = tempfile.mkdtemp(prefix="tap-dynamics-meltano-")
os.environ["MELTANO_SYS_DIR_ROOT"] = _MELTANO_DIR  # read by tests.demo.meltano_dir()


def pytest_unconfigure(config: object) -> None:
    """Remove the session's Meltano directory (plugin venvs, run logs, state)."""
    shutil.rmtree(_MELTANO_DIR, ignore_errors=True)
