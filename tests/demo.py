"""`make demo`: the bundled emulator -> tap-dynamics -> Meltano -> an embedded DuckDB warehouse.

Starts the Microsoft cloud emulator in its own process, points the tap at it through
``TAP_DYNAMICS_*`` environment variables (the same way a real deployment would), runs
``meltano run tap-dynamics target-duckdb``, prints the row count of every table next to the
emulator's, then changes some rows and runs again to show an incremental sync.
The functions here are also used by the end-to-end tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.taprun import hermetic_env

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEMO_ROWS = {"account": 20000, "contact": 5000, "systemuser": 50}
# The F&O environment: entity set -> rows (spread over three companies); Currencies (3 rows) comes
# with every environment. Not Companies: its columns are all text, and target-duckdb 0.8's CSV
# load then takes the first row for a header and drops it (the same as the issue pinned in
# meltano.yml, which DuckDB's sniffer still has when no column type tells header from data).
FINOPS_ROWS = {"CustomersV3": 30000, "SalesOrderHeadersV2": 9000}
FINOPS_FIXED = {"Currencies": 3}
if os.environ.get("FINOPS_DEMO_ROWS"):  # e.g. FINOPS_DEMO_ROWS=CustomersV3=300,SalesOrderHeadersV2=90 (tests)
    FINOPS_ROWS = {k: int(v) for k, v in (p.split("=") for p in os.environ["FINOPS_DEMO_ROWS"].split(","))}
if os.environ.get("DEMO_ROWS"):  # e.g. DEMO_ROWS=account=2000,contact=500,systemuser=5 (tests)
    DEMO_ROWS = {k: int(v) for k, v in (p.split("=") for p in os.environ["DEMO_ROWS"].split(","))}
# The Office 365 tenant (objects per Graph collection); DEMO_GRAPH=users=50,groups=5 in tests.
DEMO_GRAPH = {"users": 500, "groups": 40, "devices": 120, "applications": 20, "servicePrincipals": 30}
if os.environ.get("DEMO_GRAPH"):
    DEMO_GRAPH = {k: int(v) for k, v in (p.split("=") for p in os.environ["DEMO_GRAPH"].split(","))}
GRAPH_STREAMS = ("users", "groups", "group_members", "devices", "applications", "service_principals",
                 "directory_roles", "domains", "organization", "subscribed_skus", "events")


class EmulatorProcess:
    """The emulator as a child process (the CLI of :mod:`emulator`)."""

    def __init__(self, rows: dict[str, int], extra_args: tuple[str, ...] = ()) -> None:
        args = [sys.executable, "-m", "emulator", "--port", "0"]
        for table, count in rows.items():
            args += ["--rows", f"{table}={count}"]
        log_dir = ROOT / "output"
        log_dir.mkdir(exist_ok=True)
        self.log = (log_dir / "emulator.log").open("a")
        self.proc = subprocess.Popen(  # noqa: S603
            [*args, *extra_args], cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True, env=hermetic_env()
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            msg = "the emulator did not start (see its output above)"
            raise RuntimeError(msg)
        self.info: dict[str, str] = json.loads(line)

    def control(self, method: str, path: str, body: object | None = None) -> object:
        """Call the emulator's control API (``/_emulator/...``)."""
        import requests

        response = requests.request(
            method,
            f"{self.info['base_url']}/_emulator/{path.lstrip('/')}",
            json=body,
            verify=self.info["ca_bundle"],
            timeout=120,
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def tap_env(self, prefix: str = "TAP_DYNAMICS") -> dict[str, str]:
        """<prefix>_* variables (TAP_DYNAMICS_*, or an inheriting extractor's) that point the tap
        at this emulator."""
        env = {
            f"{prefix}_URL": self.info["org_url"],
            f"{prefix}_TENANT_ID": self.info["tenant_id"],
            f"{prefix}_CLIENT_ID": self.info["client_id"],
            f"{prefix}_CLIENT_SECRET": self.info["client_secret"],
            f"{prefix}_AUTHORITY_HOST": self.info["authority_host"],
            f"{prefix}_CA_BUNDLE": self.info["ca_bundle"],
        }
        if "edition" in self.info:
            env[f"{prefix}_EDITION"] = self.info["edition"]
        return env

    def stop(self) -> None:
        """Stop the emulator and wait for it."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def meltano_dir() -> Path:
    """Where Meltano keeps plugin installs, run directories and its state database.

    ``MELTANO_SYS_DIR_ROOT`` when set (the test suite sets a throw-away directory per session),
    else the repository's ``.meltano/`` (``make demo``).
    """
    return Path(os.environ.get("MELTANO_SYS_DIR_ROOT") or ROOT / ".meltano")


def meltano(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """Run meltano from this project's venv in the repo root, in a scrubbed environment
    (``tests.taprun.hermetic_env``): only ``env`` configures the tap and the target."""
    full_env = hermetic_env(
        {"MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false", "MELTANO_SYS_DIR_ROOT": str(meltano_dir()), **env}
    )
    result = subprocess.run(  # noqa: S603
        [str(BIN / "meltano"), *args], cwd=ROOT, env=full_env, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        sys.stderr.write(result.stdout[-5000:] + result.stderr[-10000:])
        msg = f"meltano {' '.join(args)} failed with exit code {result.returncode}"
        raise RuntimeError(msg)
    return result


def ensure_plugins(env: dict[str, str]) -> None:
    """Install the pipeline's plugins into :func:`meltano_dir` once (later runs reuse them)."""
    taps = [meltano_dir() / "extractors" / name / "venv" / "bin" / "tap-dynamics"
            for name in ("tap-dynamics", "tap-dynamics-finops")]
    target = target_duckdb()
    if not (all(tap.exists() for tap in taps) and target.exists()):
        print("Installing Meltano plugins (first run only)...", flush=True)  # noqa: T201
        meltano("install", env=env)


def target_duckdb() -> Path:
    """The Meltano-installed target-duckdb executable."""
    return meltano_dir() / "loaders" / "target-duckdb" / "venv" / "bin" / "target-duckdb"


def warehouse_counts(path: Path, schema: str = "dynamics") -> dict[str, int]:
    """Row count of every table in the DuckDB warehouse's schema."""
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        tables = [
            row[0]
            for row in con.execute(
                "select table_name from information_schema.tables where table_schema = ? order by 1",
                [schema],
            ).fetchall()
        ]
        return {t: con.execute(f'select count(*) from "{schema}"."{t}"').fetchone()[0] for t in tables}


def main() -> int:
    """Run the demo and print what landed in the warehouse."""
    output = ROOT / "output"
    output.mkdir(exist_ok=True)
    warehouse = output / "demo.duckdb"
    for leftover in (warehouse, Path(f"{warehouse}.wal")):
        leftover.unlink(missing_ok=True)
    print(f"Starting the Microsoft cloud emulator with {DEMO_ROWS} ...", flush=True)  # noqa: T201
    with EmulatorProcess(DEMO_ROWS) as emulator:
        env = {
            **emulator.tap_env(),
            "TARGET_DUCKDB_PATH": str(warehouse),
            "TARGET_DUCKDB_HARD_DELETE": "true",  # change-tracking deletes remove rows
            "MELTANO_DATABASE_URI": f"sqlite:///{output / 'demo-meltano.db'}",
        }
        (output / "demo-meltano.db").unlink(missing_ok=True)
        ensure_plugins(env)
        print(f"Emulated org: {emulator.info['org_url']}", flush=True)  # noqa: T201
        started = time.monotonic()
        meltano("run", "tap-dynamics", "target-duckdb", env=env)
        elapsed = time.monotonic() - started
        truth = {table: len(emulator.control("GET", f"tables/{table}/rows")["value"]) for table in DEMO_ROWS}
        counts = warehouse_counts(warehouse)
        print(f"\nFull load: meltano run tap-dynamics target-duckdb ({elapsed:.1f} s)")  # noqa: T201
        print(f"{'table':<14}{'rows in DuckDB':>16}{'rows in org':>14}")  # noqa: T201
        for table in sorted(truth):
            print(f"{table:<14}{counts.get(table, 0):>16}{truth[table]:>14}")  # noqa: T201

        # Some activity in the org, then an incremental run picks up only what changed.
        emulator.control("POST", "clock/advance", {"seconds": 3600})
        for _ in range(3):
            emulator.control("POST", "tables/account/rows", {})
        doomed = emulator.control("GET", "tables/account/rows")["value"][:2]
        for row in doomed:
            emulator.control("DELETE", f"tables/account/rows/{row['accountid']}")
        some = emulator.control("GET", "tables/contact/rows")["value"][:2]
        for row in some:
            emulator.control("PATCH", f"tables/contact/rows/{row['contactid']}", {"jobtitle": "Chief Demo Officer"})
        meltano("run", "tap-dynamics", "target-duckdb", env=env)
        counts = warehouse_counts(warehouse)
        import duckdb

        with duckdb.connect(str(warehouse), read_only=True) as con:
            officers = con.execute(
                "select count(*) from dynamics.contact where jobtitle = 'Chief Demo Officer'"
            ).fetchone()[0]
        print("\nIncremental run after inserting 3 accounts, deleting 2 and updating 2 contacts:")  # noqa: T201
        print(f"  account rows in DuckDB: {counts.get('account', 0)} (was {truth['account']}; +3 -2)")  # noqa: T201
        print(f"  contacts updated to 'Chief Demo Officer' in DuckDB: {officers}")  # noqa: T201
    finops_demo(warehouse, output)
    office365(warehouse, output)
    print(f"\nWarehouse: {warehouse.relative_to(ROOT)} (schemas 'dynamics', 'finops' and 'office365')")  # noqa: T201
    return 0


def finops_demo(warehouse: Path, output: Path) -> dict[str, tuple[int, int]]:
    """An F&O environment into the same DuckDB file, schema ``finops``: (rows loaded, rows served)
    per entity set."""
    print(f"\nStarting an emulated Finance & Operations environment with {FINOPS_ROWS} ...", flush=True)  # noqa: T201
    with EmulatorProcess(FINOPS_ROWS, ("--finops",)) as environment:
        env = {
            **environment.tap_env("TAP_DYNAMICS_FINOPS"),
            "TAP_DYNAMICS_FINOPS_ENTITIES": json.dumps([*FINOPS_ROWS, *FINOPS_FIXED]),
            "TARGET_DUCKDB_PATH": str(warehouse),
            "TARGET_DUCKDB_DEFAULT_TARGET_SCHEMA": "finops",
            "MELTANO_DATABASE_URI": f"sqlite:///{output / 'demo-meltano.db'}",
        }
        ensure_plugins(env)
        started = time.monotonic()
        meltano("run", "tap-dynamics-finops", "target-duckdb", env=env)
        elapsed = time.monotonic() - started
    counts = warehouse_counts(warehouse, "finops")
    truth = {**FINOPS_ROWS, **FINOPS_FIXED}
    print(f"\nF&O full load: meltano run tap-dynamics-finops target-duckdb ({elapsed:.1f} s)")  # noqa: T201
    print(f"{'entity set':<22}{'rows in DuckDB':>16}{'rows in F&O':>14}")  # noqa: T201
    for name in sorted(truth):
        print(f"{name:<22}{counts.get(name.lower(), counts.get(name, 0)):>16}{truth[name]:>14}")  # noqa: T201
    return {name: (counts.get(name.lower(), counts.get(name, 0)), truth[name]) for name in truth}


def office365(warehouse: Path, output: Path) -> None:
    """The Office 365 part: a tenant through ``tap-dynamics-office365`` (inheriting from tap-dynamics) into
    the same DuckDB file, schema ``office365``; then a change run with a deleted user and a
    removed group member (delta queries: tombstones, hard-deleted by the target)."""
    args = ["--graph", "--graph-no-mailbox-every", "10"]
    for collection, count in DEMO_GRAPH.items():
        args += ["--graph-objects", f"{collection}={count}"]
    print(f"\nStarting an emulated Office 365 tenant with {DEMO_GRAPH} ...", flush=True)  # noqa: T201
    with EmulatorProcess({}, tuple(args)) as tenant:
        env = {
            **{key.replace("TAP_DYNAMICS_", "TAP_DYNAMICS_OFFICE365_"): value for key, value in tenant.tap_env().items()},
            "TARGET_DUCKDB_PATH": str(warehouse),
            "TARGET_DUCKDB_DEFAULT_TARGET_SCHEMA": "office365",
            "TARGET_DUCKDB_HARD_DELETE": "true",  # tombstones (deleted users, removed members) remove rows
            "MELTANO_DATABASE_URI": f"sqlite:///{output / 'demo-meltano.db'}",
        }
        started = time.monotonic()
        meltano("run", "tap-dynamics-office365", "target-duckdb", env=env)
        elapsed = time.monotonic() - started
        truth = tenant.control("GET", "graph/truth")
        counts = warehouse_counts(warehouse, "office365")
        print(f"\nOffice 365: meltano run tap-dynamics-office365 target-duckdb ({elapsed:.1f} s)")  # noqa: T201
        print(f"{'stream':<20}{'rows in DuckDB':>16}{'in the tenant':>15}")  # noqa: T201
        for stream in GRAPH_STREAMS:
            print(f"{stream:<20}{counts.get(stream, 0):>16}{truth[stream]:>15}")  # noqa: T201

        user = truth["user_ids"][0]
        group, member = next((g, u) for g, u in truth["memberships"] if u != user)
        tenant.control("POST", "graph/change", {"op": "delete", "collection": "users", "object_id": user})
        tenant.control("POST", "graph/change", {"op": "remove_member", "group_id": group, "member_id": member})
        meltano("run", "tap-dynamics-office365", "target-duckdb", env=env)
        after = tenant.control("GET", "graph/truth")
        counts = warehouse_counts(warehouse, "office365")
        print("\nChange run (delta queries) after deleting a user and removing a group member:")  # noqa: T201
        for stream in ("users", "group_members"):
            print(f"  {stream} rows in DuckDB: {counts.get(stream, 0)} (tenant: {after[stream]}; was {truth[stream]})")  # noqa: T201


if __name__ == "__main__":
    sys.exit(main())
