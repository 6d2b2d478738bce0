"""The DAG's run-time layer (orchestrate/airflow/dags/dynamics_meltano.py) on real Meltano runs.

The Airflow test (test_airflow.py) covers exit codes 0, 2 and 4 through the scheduler; here the
same code that the group task calls runs ``meltano run`` for one group directly, for exit 3 and
for what the DAG's configuration file may and may not say.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from tests.demo import BIN, ROOT
from tests.pipeline_fixtures import tap_env
from tests.postgres import PostgresServer

_SPEC = importlib.util.spec_from_file_location(
    "dynamics_meltano", ROOT / "orchestrate" / "airflow" / "dags" / "dynamics_meltano.py"
)
assert _SPEC is not None and _SPEC.loader is not None
dm = importlib.util.module_from_spec(_SPEC)
sys.modules["dynamics_meltano"] = dm
_SPEC.loader.exec_module(dm)


def _config(tmp_path: Path, groups: list[dict], **more: object):
    path = tmp_path / "dag.yml"
    path.write_text(yaml.safe_dump({
        "target": "target-postgres", "project_root": str(ROOT), "meltano": str(BIN / "meltano"),
        "groups": groups, **more,
    }))
    return dm.load_config(path)


@pytest.mark.usefixtures("_target_postgres_installed")
def test_exit_3_fails_the_group_without_retry_naming_the_table(
    make_emulator, postgres: PostgresServer, pg_database, tmp_path, monkeypatch
) -> None:
    emu = make_emulator(rows={"account": 300, "contact": 80, "systemuser": 4}, forbidden_tables=["contact"])
    for key, value in {**tap_env(emu), **postgres.target_env(pg_database),
                       "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}"}.items():
        monkeypatch.setenv(key, value)
    config = _config(tmp_path, [{"name": "crm", "streams": ["account", "contact"]}])
    group = config.groups[0]
    lines: list[str] = []
    result = dm.run_meltano(dm.group_command(config, group), dm.group_env(config, group, str),
                            config.project_root, lines.append)

    assert (result.exit_code, result.tap_exit_code) == (1, 3)
    assert result.failed_tables == ["contact"]
    assert dm.outcome(result) == (
        "fail", "exit 3: these tables failed and were skipped (the others loaded): contact"
    )
    assert "Run summary" in result.summary
    assert any(line.startswith("tap-dynamics: ") for line in lines)  # the tap's log, readable
    # The group's other table loaded; only the group's streams were selected.
    assert postgres.query(pg_database, "select count(*) from dynamics.account") == [(300,)]
    tables = {r[0] for r in postgres.query(
        pg_database, "select table_name from information_schema.tables where table_schema = 'dynamics'"
    )}
    assert tables <= {"account", "contact"}  # contact's SCHEMA came before its 403
    if "contact" in tables:
        assert postgres.query(pg_database, "select count(*) from dynamics.contact") == [(0,)]
    # Its run directory is its own; the installed plugins are shared by links.
    own = dm.group_sys_dir(config, "crm")
    assert (own / "run").is_dir()
    assert (own / "extractors").is_symlink()


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([{"name": "a", "streams": ["account"]}, {"name": "b", "streams": ["account"]}],
         "stream account is in groups a and b"),
        ([{"name": "a b", "streams": ["account"]}], "needs a 'name' of letters"),
        ([{"name": "a", "streams": []}], "needs 'streams'"),
        ([{"name": "a", "streams": ["x"]}, {"name": "a", "streams": ["y"]}], "unique names"),
    ],
)
def test_a_wrong_dag_configuration_is_one_line_naming_the_fix(tmp_path, groups, message) -> None:
    with pytest.raises(dm.DagConfigError, match=message):
        _config(tmp_path, groups)


def test_group_variables_come_from_the_worker_or_variables(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SERVICE_APP_SECRET", "s3cret")
    config = _config(tmp_path, [{"name": "service", "streams": ["incident"], "env": {
        "TAP_DYNAMICS_CLIENT_SECRET": "env:SERVICE_APP_SECRET",
        "TAP_DYNAMICS_CLIENT_ID": "var:service_client_id",
        "TAP_DYNAMICS_MAX_CONCURRENCY": "4",
    }}])
    env = dm.resolve_env(config.groups[0].env, {"service_client_id": "app-2"}.__getitem__)
    assert env == {"TAP_DYNAMICS_CLIENT_SECRET": "s3cret", "TAP_DYNAMICS_CLIENT_ID": "app-2",
                   "TAP_DYNAMICS_MAX_CONCURRENCY": "4"}
    monkeypatch.delenv("SERVICE_APP_SECRET")
    with pytest.raises(dm.DagConfigError, match=r"\$SERVICE_APP_SECRET, which is not set"):
        dm.resolve_env(config.groups[0].env, str)
    assert dm.state_id(config, config.groups[0]) == "dev:tap-dynamics-to-target-postgres:service"
    assert dm.group_command(config, config.groups[0])[-5:] == [
        "run", "--state-id-suffix", "service", "tap-dynamics", "target-postgres"
    ]
