"""Dynamics 365 / Dataverse -> warehouse with Meltano: one Airflow task per stream group.

Shape: ``check`` (``tap-dynamics check``: exit 2 fails at once, without retries) -> ``sync_group``
mapped over the groups of ``dynamics_to_warehouse.yml`` (each ``meltano run tap-dynamics
<target>`` with only its streams selected and ``--state-id-suffix <group>``, so groups never
overwrite each other's bookmarks; in the pool that caps how many run at once) -> ``summary``
(every group's run summary; fails the DAG run when a group failed).

Parsing this file reads one small YAML file and never calls Meltano (the scheduler re-parses
DAG files every few seconds and gives up after 30 s). Written for Airflow 3 (``airflow.sdk``);
the imports fall back to Airflow 2.9+'s (``map_index_template`` needs 2.9).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

try:  # Airflow 3
    from airflow.sdk import Variable, dag, get_current_context, task
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task
    from airflow.exceptions import AirflowException, AirflowFailException
    from airflow.models import Variable
    from airflow.operators.python import get_current_context

import dynamics_meltano as dm

log = logging.getLogger(__name__)
CONFIG = dm.load_config()


def _retry_args(config: dm.Config) -> dict[str, Any]:
    return {
        "retries": config.retries,
        "retry_delay": timedelta(seconds=config.retry_delay_seconds),
        "retry_exponential_backoff": config.retry_backoff,  # a multiplier (Airflow 3), truthy (2)
        "max_retry_delay": timedelta(seconds=config.max_retry_delay_seconds),
    }


def _start_date(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


@dag(
    dag_id=CONFIG.dag_id,
    schedule=CONFIG.schedule,
    start_date=_start_date(CONFIG.start_date),
    catchup=False,
    max_active_runs=1,  # two runs of one group at once would race on its state
    tags=CONFIG.tags,
    default_args={"execution_timeout": timedelta(minutes=CONFIG.timeout_minutes)},
    doc_md=__doc__,
)
def dynamics_to_warehouse() -> None:
    config = CONFIG

    @task(retries=0)
    def check() -> str:
        """Token, WhoAmI, organisation: a wrong secret fails here once, not in every group."""
        result = dm.run_meltano(dm.check_command(config), dm.base_env(config),
                                config.project_root, log.info)
        decision, message = dm.outcome(result)
        if decision == "ok":
            return result.error or "connection available"
        if decision == "fail":
            raise AirflowFailException(f"tap-dynamics check: {message}")
        raise AirflowException(f"tap-dynamics check: {message}")

    @task(pool=config.pool or "default_pool", map_index_template="{{ group_name }}",
          **_retry_args(config))
    def sync_group(group: dict[str, Any]) -> dict[str, Any]:
        """One ``meltano run`` for one group; the tap's exit code decides retry or not."""
        grp = dm.Group(**group)
        context = get_current_context()
        context["group_name"] = grp.name  # shown as the mapped task's name
        ti = context["ti"]
        env = dm.group_env(config, grp, Variable.get)
        log.info("group %s: streams %s, state id %s", grp.name, ", ".join(grp.streams),
                 dm.state_id(config, grp))
        result = dm.run_meltano(dm.group_command(config, grp), env, config.project_root, log.info)
        decision, message = dm.outcome(result)
        report = {"group": grp.name, "streams": grp.streams, "state_id": dm.state_id(config, grp),
                  "try_number": ti.try_number, "decision": decision, "message": message,
                  **result.as_dict()}
        ti.xcom_push(key="group_result", value=report)  # kept for the summary even on failure
        if decision == "fail":
            raise AirflowFailException(f"group {grp.name}: {message}")
        if decision == "retry":
            raise AirflowException(f"group {grp.name}: {message}")
        return report

    @task(trigger_rule="all_done", retries=0)
    def summary(count: int) -> list[dict[str, Any]]:
        """Every group's outcome and run summary in one log; fails if any group failed."""
        ti = get_current_context()["ti"]
        reports = ti.xcom_pull(task_ids="sync_group", key="group_result", map_indexes=list(range(count)))
        failed = []
        for group, report in zip(config.groups, reports or [None] * count, strict=False):
            if not report:
                log.info("group %s: did not run (upstream failed)", group.name)
                failed.append(group.name)
                continue
            log.info("group %s (try %s): %s", group.name, report["try_number"], report["message"])
            for line in (report.get("summary") or "").splitlines():
                log.info("  %s", line)
            if report["decision"] != "ok":
                failed.append(group.name)
        if failed:
            raise AirflowFailException(f"groups that did not finish: {', '.join(failed)}")
        return reports

    groups = [g.as_dict() for g in config.groups]
    synced = sync_group.expand(group=groups)
    check() >> synced >> summary(len(groups))


dynamics_to_warehouse()
