"""`make demo` works: it loads the emulated org into DuckDB through Meltano and reports counts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.demo import meltano_dir
from tests.taprun import hermetic_env

ROOT = Path(__file__).resolve().parent.parent


def test_demo_prints_matching_row_counts() -> None:
    # The demo uses this session's throw-away Meltano directory, not the repository's .meltano/.
    env = hermetic_env({"DEMO_ROWS": "account=1500,contact=400,systemuser=7",
                        "FINOPS_DEMO_ROWS": "CustomersV3=3003,SalesOrderHeadersV2=90",
                        "MELTANO_SYS_DIR_ROOT": str(meltano_dir())})
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "tests.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^(\w+)\s+(\d+)\s+(\d+)$", result.stdout, re.M)}
    assert rows == {"account": (1500, 1500), "contact": (400, 400), "systemuser": (7, 7),
                    # the F&O environment, into the same DuckDB file (schema finops)
                    "CustomersV3": (3003, 3003), "SalesOrderHeadersV2": (90, 90), "Currencies": (3, 3)}, result.stdout
    assert "account rows in DuckDB: 1501" in result.stdout
    assert "contacts updated to 'Chief Demo Officer' in DuckDB: 2" in result.stdout
