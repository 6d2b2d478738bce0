"""A sync stopped by SIGTERM (a scheduler ending the task) or SIGINT (Ctrl-C), through a real tap
process: the run ends at once with 128 + the signal's number — never 0, which would tell Airflow
or Meltano that an unfinished run succeeded — with one line on stderr, no line on stdout cut in
half while tables were being written in parallel, and a last STATE from which the next run
reads every row that the stopped one had not delivered."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.taprun import TAP, hermetic_env, run_tap, write_json

TABLES = ("account", "contact")
KEYS = {"account": "accountid", "contact": "contactid"}


def _keys(messages: list[dict], table: str) -> set[str]:
    return {m["record"][KEYS[table]] for m in messages if m["type"] == "RECORD" and m["stream"] == table}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_sync_exits_non_zero_and_resumes_without_loss(
    make_emulator, tmp_path: Path, signum: signal.Signals
) -> None:
    # Slow pages and two tables read in parallel: the signal lands while both write.
    emu = make_emulator(rows={"account": 1500, "contact": 1500, "systemuser": 3},
                        latency_ms=150, latency_scope="pages")
    config = {**emu.tap_config(), "entities": list(TABLES), "page_size": 100, "max_concurrency": 4}
    argv = [TAP, "--config", write_json(tmp_path, "config.json", config)]
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=hermetic_env())  # noqa: S603
        assert proc.stdout is not None
        messages: list[dict] = []
        sent = False
        for raw in proc.stdout:
            messages.append(json.loads(raw))  # every line whole, also the last one
            written = {t for t in TABLES if _keys(messages, t)}
            if not sent and written == set(TABLES) and messages[-1]["type"] == "STATE":
                proc.send_signal(signum)
                sent = True
        proc.wait(timeout=60)
    assert sent, "the run finished before the signal"
    assert proc.returncode == 128 + signum
    err = stderr_path.read_text()
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("tap-dynamics:")] == [
        f"tap-dynamics: interrupted ({signum.name}) — run it again to resume from the last STATE message"
    ]
    delivered = {t: _keys(messages, t) for t in TABLES}
    assert sum(map(len, delivered.values())) < 3000, "the signal did not stop the run"

    state = [m["value"] for m in messages if m["type"] == "STATE"][-1]
    resumed = run_tap(config, state=state)
    assert resumed.returncode == 0, resumed.stderr
    for table in TABLES:
        truth = {r[KEYS[table]] for r in emu.rows(table)}
        assert delivered[table] | _keys(resumed.messages, table) == truth
