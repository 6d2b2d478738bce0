"""The Singer SDK's standard tap tests, run against the emulator over real HTTPS."""

from __future__ import annotations

import atexit

from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_dynamics.tap import TapDynamics
from tests.emulator import Emulator

# get_tap_test_class needs the config when the module is collected, so this module owns an
# emulator of its own (stopped when the interpreter exits).
_EMULATOR = Emulator(rows={"account": 300, "contact": 120, "systemuser": 12}).start()
atexit.register(_EMULATOR.stop)

TestTapDynamics = get_tap_test_class(
    tap_class=TapDynamics,
    config={**_EMULATOR.tap_config(), "start_date": "2000-01-01T00:00:00Z"},
    suite_config=SuiteConfig(max_records_limit=50),
)
