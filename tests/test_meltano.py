"""End to end through Meltano: tap-dynamics -> target-duckdb, twice, equal to the emulator's truth."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.demo import ensure_plugins, meltano, warehouse_counts


def _env(emu, tmp_path: Path) -> dict[str, str]:
    config = emu.tap_config()
    return {
        "TAP_DYNAMICS_URL": config["url"],
        "TAP_DYNAMICS_TENANT_ID": config["tenant_id"],
        "TAP_DYNAMICS_CLIENT_ID": config["client_id"],
        "TAP_DYNAMICS_CLIENT_SECRET": config["client_secret"],
        "TAP_DYNAMICS_AUTHORITY_HOST": config["authority_host"],
        "TAP_DYNAMICS_CA_BUNDLE": config["ca_bundle"],
        "TARGET_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
    }


def _tables(counts: dict[str, int], truth: dict[str, int]) -> dict[str, int]:
    """The data tables' counts (metadata streams such as option_set_labels may land too)."""
    return {table: counts.get(table, 0) for table in truth}


def test_meltano_run_into_duckdb_matches_the_org(make_emulator, tmp_path: Path) -> None:
    emu = make_emulator(rows={"account": 4000, "contact": 1500, "systemuser": 20})
    env = _env(emu, tmp_path)
    ensure_plugins(env)
    meltano("run", "tap-dynamics", "target-duckdb", env=env)
    truth = {table: len(emu.rows(table)) for table in ("account", "contact", "systemuser")}
    assert _tables(warehouse_counts(tmp_path / "warehouse.duckdb"), truth) == truth

    # Activity in the org, then Meltano's stored state drives an incremental run.
    emu.advance_clock(120)
    new = emu.insert("account", {"name": "Fabrikam Pipeline Test"})
    changed = emu.rows("contact")[7]["contactid"]
    emu.update("contact", changed, {"jobtitle": "Head of Data"})
    meltano("run", "tap-dynamics", "target-duckdb", env=env)

    truth["account"] += 1
    assert _tables(warehouse_counts(tmp_path / "warehouse.duckdb"), truth) == truth
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute(
            "select name from dynamics.account where accountid = ?", [new["accountid"]]
        ).fetchone() == ("Fabrikam Pipeline Test",)
        assert con.execute(
            "select jobtitle from dynamics.contact where contactid = ?", [changed]
        ).fetchone() == ("Head of Data",)


def test_meltano_invokes_the_tap(tmp_path: Path) -> None:
    env = {"MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}"}
    ensure_plugins(env)
    result = meltano("invoke", "tap-dynamics", "--about", "--format=json", env=env)
    assert '"client_secret"' in result.stdout


def test_three_runs_with_deletes_end_equal_to_the_org(make_emulator, tmp_path: Path) -> None:
    """Change tracking through Meltano into DuckDB (hard deletes): the warehouse equals the org."""
    emu = make_emulator(rows={"account": 3000, "contact": 800, "systemuser": 10})
    env = {**_env(emu, tmp_path), "TARGET_DUCKDB_HARD_DELETE": "true"}
    ensure_plugins(env)
    warehouse = tmp_path / "warehouse.duckdb"
    meltano("run", "tap-dynamics", "target-duckdb", env=env)
    for round_ in range(2):
        emu.advance_clock(300)
        for i in range(5):
            emu.insert("account", {"name": f"Round {round_} new {i}"})
        for row in emu.rows("account")[round_ * 10 : round_ * 10 + 4]:
            emu.update("account", row["accountid"], {"name": f"Round {round_} renamed"})
        for row in emu.rows("account")[500 + round_ * 7 : 503 + round_ * 7]:
            emu.delete("account", row["accountid"])
        for row in emu.rows("contact")[:2]:
            emu.delete("contact", row["contactid"])
        meltano("run", "tap-dynamics", "target-duckdb", env=env)

    truth = {r["accountid"]: r["name"] for r in emu.rows("account")}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        got = dict(con.execute("select accountid, name from dynamics.account").fetchall())
        contacts = {r[0] for r in con.execute("select contactid from dynamics.contact").fetchall()}
    assert got == truth
    assert contacts == {r["contactid"] for r in emu.rows("contact")}
