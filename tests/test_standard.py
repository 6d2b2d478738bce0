"""The Singer SDK's standard tap tests, run against the emulator over real HTTPS."""

from __future__ import annotations

import atexit

from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_dynamics.tap import TapDynamics
from emulator import Emulator

# get_tap_test_class needs the config when the module is collected, so this module owns an
# emulator of its own (stopped when the interpreter exits).
_EMULATOR = Emulator(rows={"account": 300, "contact": 120, "systemuser": 12}).start()
atexit.register(_EMULATOR.stop)

_CONFIG = {**_EMULATOR.tap_config(), "start_date": "2000-01-01T00:00:00Z"}


def _select_all(catalog: dict) -> dict:
    """Select every stream, including the opt-in metadata streams, so all are tested."""
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = True
    return catalog


TestTapDynamics = get_tap_test_class(
    tap_class=TapDynamics,
    config=_CONFIG,
    suite_config=SuiteConfig(max_records_limit=50),
    catalog=_select_all(TapDynamics(config=_CONFIG).catalog_dict),
)
