"""`make demo` works: it loads the emulated org into DuckDB through Meltano and reports counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_prints_matching_row_counts() -> None:
    env = {**os.environ, "DEMO_ROWS": "account=1500,contact=400,systemuser=7"}
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "tests.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^(\w+)\s+(\d+)\s+(\d+)$", result.stdout, re.M)}
    assert rows == {"account": (1500, 1500), "contact": (400, 400), "systemuser": (7, 7)}, result.stdout
    assert "account rows in DuckDB: 1501" in result.stdout
    assert "contacts updated to 'Chief Demo Officer' in DuckDB: 2" in result.stdout
