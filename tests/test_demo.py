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
    # 450 users: Graph's delta pages (200 objects) replay objects across pages, which the
    # upserting target must not duplicate.
    env = hermetic_env({"DEMO_ROWS": "account=1500,contact=400,systemuser=7",
                        "FINOPS_DEMO_ROWS": "CustomersV3=3003,SalesOrderHeadersV2=90",
                        "DEMO_GRAPH": "users=450,groups=12",
                        "MELTANO_SYS_DIR_ROOT": str(meltano_dir())})
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "tests.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    dataverse, _, rest = result.stdout.partition("Starting an emulated Finance & Operations environment")
    finops = rest.split("Starting an emulated Office 365 tenant")[0]
    rows = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^(\w+)\s+(\d+)\s+(\d+)$", dataverse, re.M)}
    assert rows == {"account": (1500, 1500), "contact": (400, 400), "systemuser": (7, 7)}, result.stdout
    # the F&O environment, into the same DuckDB file (schema finops)
    rows = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^(\w+)\s+(\d+)\s+(\d+)$", finops, re.M)}
    assert rows == {"CustomersV3": (3003, 3003), "SalesOrderHeadersV2": (90, 90), "Currencies": (3, 3)}, finops
    assert "account rows in DuckDB: 1501" in result.stdout
    assert "contacts updated to 'Chief Demo Officer' in DuckDB: 2" in result.stdout
    office = result.stdout[result.stdout.index("Office 365: meltano run"):]
    graph = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^(\w+)\s+(\d+)\s+(\d+)$", office, re.M)}
    assert graph["users"] == (450, 450) and graph["groups"] == (12, 12), office
    assert all(duckdb == tenant for duckdb, tenant in graph.values()), office
    assert "users rows in DuckDB: 449 (tenant: 449; was 450)" in office
    removed = re.search(r"group_members rows in DuckDB: (\d+) \(tenant: (\d+); was (\d+)\)", office)
    assert removed and removed.group(1) == removed.group(2) and int(removed.group(1)) < int(removed.group(3))
