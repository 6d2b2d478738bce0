"""Office 365: a setting a Graph stream cannot take is one line that says what to use instead."""

from __future__ import annotations

from tests.taprun import run_tap
from tests.test_check import error_lines


def test_a_replication_method_graph_lacks_is_one_line_naming_the_fix(make_graph_emulator) -> None:
    emu = make_graph_emulator()
    run = run_tap({**emu.tap_config(), "entities": ["users"], "replication": {"users": "modifiedon"}})
    assert run.returncode == 2
    [line] = [x for x in error_lines(run.stderr) if x.startswith("tap-dynamics: error:")]
    assert "asks for 'modifiedon' on stream users" in line and "use one of them" in line
