"""The shipped Airflow DAG, run by real Airflow (``airflow dags test``) against the emulator.

Airflow gets its own virtualenv (its dependencies must not mix with the tap's), installed from
the constraints file committed next to the DAG and cached under ``.airflow-venv/`` keyed by that
file's hash; its metadata database is a throw-away SQLite file. The DAG runs Meltano from the
tap's virtualenv into the session's PostgreSQL server, exactly as a deployment would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tap_dynamics.dataverse.client import DataverseClient
from tap_dynamics.engine.retry import CHECK_ATTEMPTS
from tests.demo import BIN, ROOT, meltano
from tests.pipeline_fixtures import tap_env
from tests.postgres import PostgresServer

AIRFLOW_DIR = ROOT / "orchestrate" / "airflow"
DAGS = AIRFLOW_DIR / "dags"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
CONSTRAINTS = AIRFLOW_DIR / f"constraints-{PY}.txt"
DAG_ID = "tap_dynamics_test"
# 503 with Retry-After 0 for the systemusers rows, as many times as the `check` task's probe of
# the table (CHECK_ATTEMPTS, then it reports the table) and a sync (MAX_ATTEMPTS, then exit 4)
# try: the first try of the group exits 4 at once, its retry succeeds.
FAILING_ATTEMPTS = CHECK_ATTEMPTS + DataverseClient.MAX_ATTEMPTS
# The first test also installs Airflow (minutes on a fresh machine): a longer timeout than the
# suite's default, which counts fixture setup.
pytestmark = pytest.mark.timeout(1800)


def _airflow_requirement() -> str:
    for line in CONSTRAINTS.read_text().splitlines():
        if line.startswith("apache-airflow=="):
            return line
    msg = f"{CONSTRAINTS.name} must pin apache-airflow"
    raise AssertionError(msg)


@pytest.fixture(scope="session")
def airflow_bin() -> Path:
    """bin/ of a virtualenv with Airflow, reused while the constraints file is unchanged."""
    assert CONSTRAINTS.exists(), f"no Airflow constraints for Python {PY}: add {CONSTRAINTS.name}"
    key = hashlib.sha256(CONSTRAINTS.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = ROOT / ".airflow-venv" / key
    done = venv / ".complete"
    if not done.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-c", str(CONSTRAINTS), _airflow_requirement()], check=True)
        done.touch()
        for old in venv.parent.iterdir():  # venvs of older constraints files
            if old != venv:
                shutil.rmtree(old, ignore_errors=True)
    return venv / "bin"


@pytest.fixture(scope="module")
def airflow_home(airflow_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throw-away AIRFLOW_HOME with a migrated SQLite metadata database and the DAG's pool."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    _airflow(airflow_bin, env, "db", "migrate")
    _airflow(airflow_bin, env, "pools", "set", "tap_dynamics", "2", "tap-dynamics groups")
    return env


def _airflow(airflow_bin: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    full = {**clean, "PATH": f"{airflow_bin}:{clean.get('PATH', '')}", **env}
    result = subprocess.run(
        [str(airflow_bin / "airflow"), *args], env=full, cwd=ROOT, capture_output=True, text=True,
        timeout=900, check=False,
    )
    if check and result.returncode != 0:
        sys.stderr.write(result.stdout[-10000:] + result.stderr[-10000:])
        msg = f"airflow {' '.join(args)} failed with exit code {result.returncode}"
        raise AssertionError(msg)
    return result


def _dag_config(tmp_path: Path, **overrides: object) -> Path:
    config = {
        "dag_id": DAG_ID,
        "schedule": None,
        "start_date": "2026-01-01",
        "target": "target-postgres",
        "project_root": str(ROOT),
        "meltano": str(BIN / "meltano"),
        "pool": "tap_dynamics",
        "retries": 2,
        "retry_delay_seconds": 1,  # production waits minutes; the backoff factor is the same
        "retry_backoff": 2.0,
        "max_retry_delay_seconds": 4,
        "groups": [
            {"name": "crm", "streams": ["account", "contact"]},
            {"name": "users", "streams": ["systemuser"]},
            {"name": "labels", "streams": ["option_set_labels"]},
        ],
        **overrides,
    }
    path = tmp_path / "dag.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _task_instances(home: dict[str, str]) -> dict[tuple[str, int], tuple[int, str]]:
    """(task_id, map_index) -> (try_number, state) of the latest run, from Airflow's database."""
    db = home["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select task_id, map_index, try_number, state from task_instance where dag_id = ?"
            " and run_id = (select run_id from dag_run where dag_id = ? order by id desc limit 1)",
            (DAG_ID, DAG_ID),
        ).fetchall()
    return {(task, index): (tries, state) for task, index, tries, state in rows}


def _task_logs(home: dict[str, str], task_id: str, output: str) -> str:
    """The task's log files, and what ``airflow dags test`` printed (it runs tasks in-process)."""
    logs = sorted(Path(home["AIRFLOW_HOME"], "logs").rglob("*.log"))
    found = [p.read_text(errors="replace") for p in logs if f"task_id={task_id}" in str(p)]
    return "\n".join([*found, output])


@pytest.mark.usefixtures("_target_postgres_installed")
def test_dag_loads_every_group_with_its_own_state_and_retries_exit_4(
    make_emulator, airflow_bin, airflow_home, postgres: PostgresServer, pg_database, tmp_path
) -> None:
    emu = make_emulator(rows={"account": 600, "contact": 250, "systemuser": 9})
    set_name = "/api/data/v9.2/systemusers"
    emu.set(serve_body={set_name: {
        "status": 503, "headers": {"Retry-After": "0"}, "times": FAILING_ATTEMPTS,
        "body": json.dumps({"error": {"code": "0x80040216", "message": "Service is busy"}}),
    }})
    env = {
        **airflow_home, **tap_env(emu), **postgres.target_env(pg_database),
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
        "TAP_DYNAMICS_DAG_CONFIG": str(_dag_config(tmp_path)),
    }
    result = _airflow(airflow_bin, env, "dags", "test", DAG_ID, "2026-01-02", check=False)
    output = result.stdout + result.stderr
    tis = _task_instances(airflow_home)
    assert tis[("check", -1)] == (1, "success"), output[-5000:]
    assert tis[("sync_group", 0)] == (1, "success"), output[-5000:]
    assert tis[("sync_group", 1)] == (2, "success"), output[-5000:]  # exit 4, then retried
    assert tis[("sync_group", 2)] == (1, "success"), output[-5000:]
    assert tis[("summary", -1)] == (1, "success"), output[-5000:]
    assert result.returncode == 0
    assert "exit 4: the service kept failing" in _task_logs(airflow_home, "sync_group", output)

    for table in ("account", "contact", "systemuser"):
        assert postgres.query(pg_database, f"select count(*) from dynamics.{table}") == [(len(emu.rows(table)),)]
    assert postgres.query(pg_database, "select count(*) from dynamics.option_set_labels")[0][0] > 0

    # Each group has its own state id, holding only its own streams' bookmarks.
    meltano_env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW")}
    ids = meltano("state", "list", env=meltano_env).stdout.split()
    expected = {f"dev:tap-dynamics-to-target-postgres:{g}" for g in ("crm", "users", "labels")}
    assert expected <= set(ids)
    crm = json.loads(meltano("state", "get", "dev:tap-dynamics-to-target-postgres:crm", env=meltano_env).stdout)
    users = json.loads(meltano("state", "get", "dev:tap-dynamics-to-target-postgres:users", env=meltano_env).stdout)
    assert {"account", "contact"} <= set(crm["singer_state"]["bookmarks"])
    assert "systemuser" not in crm["singer_state"]["bookmarks"]
    assert set(users["singer_state"]["bookmarks"]) >= {"systemuser"}
    assert not {"account", "contact"} & set(users["singer_state"]["bookmarks"])


def test_wrong_secret_fails_the_check_without_retries(
    make_emulator, airflow_bin, airflow_home, postgres: PostgresServer, pg_database, tmp_path
) -> None:
    emu = make_emulator(rows={"account": 20, "contact": 5, "systemuser": 2})
    env = {
        **airflow_home, **tap_env(emu), **postgres.target_env(pg_database),
        "TAP_DYNAMICS_CLIENT_SECRET": "not-the-secret",
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
        "TAP_DYNAMICS_DAG_CONFIG": str(_dag_config(tmp_path, retries=3)),
    }
    result = _airflow(airflow_bin, env, "dags", "test", DAG_ID, "2026-01-03", check=False)
    output = result.stdout + result.stderr
    tis = _task_instances(airflow_home)
    assert tis[("check", -1)] == (1, "failed"), output[-5000:]
    assert {state for (task, _), (_, state) in tis.items() if task == "sync_group"} <= {"upstream_failed"}
    log = _task_logs(airflow_home, "check", output)
    assert "AADSTS7000215" in log
    assert "exit 2 (settings or credentials" in log
    assert "not-the-secret" not in log
    assert postgres.query(
        pg_database, "select count(*) from information_schema.tables where table_schema = 'dynamics'"
    ) == [(0,)]
