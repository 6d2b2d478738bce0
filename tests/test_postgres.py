"""End to end through Meltano into a real PostgreSQL: tap-dynamics -> target-postgres.

DuckDB (target-duckdb) stores every number as DOUBLE and date-only columns as text, so it cannot
show the tap's lossless types. target-postgres can: money and decimal columns land as ``numeric``
(exact), date-only as ``date``, multi-select choices as arrays. Everything here is checked in SQL
against the emulator's own rows, including the delete behaviour the README documents.
"""

from __future__ import annotations

import datetime
import json
from decimal import Decimal

from tests.demo import meltano
from tests.emulator.tables import INDUSTRY
from tests.postgres import PostgresServer

TABLES = ("account", "contact", "systemuser")


def _run(env: dict[str, str]) -> None:
    meltano("run", "tap-dynamics", "target-postgres", env=env)


def _counts(pg: PostgresServer, db: str, *, live_only: bool = False) -> dict[str, int]:
    where = " where _sdc_deleted_at is null" if live_only else ""
    return {t: pg.query(db, f"select count(*) from dynamics.{t}{where}")[0][0] for t in TABLES}


def _truth(emu) -> dict[str, int]:
    return {t: len(emu.rows(t)) for t in TABLES}


def _regions(value: str | None) -> list[int] | None:
    """Dataverse sends a multi-select as "100000000,100000002"; the warehouse has an array."""
    return [int(v) for v in value.split(",")] if value else None


def _accounts_in_sql(pg: PostgresServer, db: str) -> dict[str, tuple]:
    rows = pg.query(
        db,
        "select accountid::text, revenue, revenue_base, creditlimit, exchangerate, new_foundedon,"
        " new_regions, name from dynamics.account",
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def _accounts_in_org(emu) -> dict[str, tuple]:
    out = {}
    for r in emu.rows("account"):
        founded = r["new_foundedon"]
        out[r["accountid"]] = (
            r["revenue"], r["revenue_base"], r["creditlimit"], r["exchangerate"],
            datetime.date.fromisoformat(founded) if founded else None,
            _regions(r["new_regions"]), r["name"],
        )
    return out


def test_full_load_and_change_run_are_exact_in_sql(make_emulator, meltano_postgres, postgres, pg_database) -> None:
    emu = make_emulator(rows={"account": 2000, "contact": 500, "systemuser": 10})
    env = meltano_postgres(emu)
    _run(env)
    assert _counts(postgres, pg_database) == _truth(emu)

    # Column types: exact numeric for money/decimal, date for date-only, an array for multi-select.
    types = dict(postgres.query(
        pg_database,
        "select column_name, data_type from information_schema.columns"
        " where table_schema = 'dynamics' and table_name = 'account'",
    ))
    assert types["revenue"] == types["creditlimit"] == types["exchangerate"] == "numeric"
    assert types["new_foundedon"] == "date"
    assert types["new_regions"] == "ARRAY"
    assert _accounts_in_sql(postgres, pg_database) == _accounts_in_org(emu)
    # Beyond a double's 15-16 digits: only an exact path keeps the last cent.
    big = [r["revenue"] for r in emu.rows("account") if r["revenue"] and r["revenue"] > 2**53 / 10**4]
    assert big
    assert postgres.query(
        pg_database, "select count(*) from dynamics.account where revenue = any(%s)", (big,)
    )[0][0] == len(big)

    # Choice labels joined in SQL, as the README shows.
    labelled = dict(postgres.query(
        pg_database,
        "select a.accountid::text, l.label from dynamics.account a"
        " left join dynamics.option_set_labels l on l.entity = 'account'"
        " and l.attribute = 'industrycode' and l.value = a.industrycode and l.language_code = 1033",
    ))
    assert labelled == {r["accountid"]: INDUSTRY.label_of(r["industrycode"]) for r in emu.rows("account")}
    assert any(labelled.values())

    # Activity in the org; the change run (Meltano's stored state) applies it.
    emu.advance_clock(120)
    new = emu.insert("account", {"name": "Postgres Pipeline Test", "revenue": Decimal("123456789012.3456")})
    changed = emu.rows("account")[11]["accountid"]
    emu.update("account", changed, {"creditlimit": Decimal("0.0100"), "new_regions": "100000001,100000003"})
    contact = emu.rows("contact")[3]["contactid"]
    emu.update("contact", contact, {"jobtitle": "Head of Data"})
    _run(env)
    assert _counts(postgres, pg_database) == _truth(emu)
    assert _accounts_in_sql(postgres, pg_database) == _accounts_in_org(emu)
    assert _accounts_in_sql(postgres, pg_database)[new["accountid"]][0] == Decimal("123456789012.3456")
    assert _accounts_in_sql(postgres, pg_database)[changed][5] == [100000001, 100000003]
    assert postgres.query(
        pg_database, "select jobtitle from dynamics.contact where contactid = %s", (contact,)
    ) == [("Head of Data",)]


def test_deletes_soft_by_tombstone_hard_by_activate_version(
    make_emulator, meltano_postgres, postgres, pg_database
) -> None:
    """What the README says about deletes into target-postgres, for both hard_delete values.

    Change-tracking deletes arrive as tombstones (key + ``_sdc_deleted_at``): target-postgres
    upserts them, so the row stays with ``_sdc_deleted_at`` set, even with ``hard_delete``.
    The tombstone has no other columns, and the upsert sets them all, so they become NULL.
    A full-table read ends with ACTIVATE_VERSION: rows it no longer returned are deleted with
    ``hard_delete: true``, and get ``_sdc_deleted_at`` set with ``hard_delete: false``.
    """
    emu = make_emulator(rows={"account": 1500, "contact": 300, "systemuser": 12})
    replication = json.dumps({"systemuser": "full_table"})
    soft = meltano_postgres(emu, TAP_DYNAMICS_REPLICATION=replication)
    _run(soft)
    assert _counts(postgres, pg_database) == _truth(emu)

    def delete_some(round_: int) -> tuple[set[str], set[str]]:
        emu.advance_clock(300)
        accounts = {r["accountid"] for r in emu.rows("account")[100 + 5 * round_ : 104 + 5 * round_]}
        users = {emu.rows("systemuser")[round_]["systemuserid"]}
        for a in accounts:
            emu.delete("account", a)
        for u in users:
            emu.delete("systemuser", u)
        emu.insert("account", {"name": f"Round {round_} new"})
        return accounts, users

    # hard_delete false (the default): everything deleted stays, marked.
    accounts, users = delete_some(0)
    _run(soft)
    assert _counts(postgres, pg_database, live_only=True) == _truth(emu)
    assert {r[0] for r in postgres.query(
        pg_database, "select accountid::text from dynamics.account where _sdc_deleted_at is not null"
    )} == accounts
    assert {r[0] for r in postgres.query(
        pg_database, "select systemuserid::text from dynamics.systemuser where _sdc_deleted_at is not null"
    )} == users
    # A tombstone carries only the key, and the upsert writes every column: the rest is NULL.
    # A row soft-deleted by ACTIVATE_VERSION keeps its last values.
    assert postgres.query(
        pg_database, "select count(*) from dynamics.account where _sdc_deleted_at is not null and name is null"
    ) == [(len(accounts),)]
    assert postgres.query(
        pg_database,
        "select count(*) from dynamics.systemuser where _sdc_deleted_at is not null and fullname is not null",
    ) == [(len(users),)]
    live = {r[0] for r in postgres.query(
        pg_database, "select accountid::text from dynamics.account where _sdc_deleted_at is null"
    )}
    assert live == {r["accountid"] for r in emu.rows("account")}

    # hard_delete true: the full-table table's vanished row is gone; tombstones are still soft.
    hard = {**soft, "TARGET_POSTGRES_HARD_DELETE": "true"}
    more_accounts, _ = delete_some(1)
    _run(hard)
    assert _counts(postgres, pg_database, live_only=True) == _truth(emu)
    assert {r[0] for r in postgres.query(
        pg_database, "select systemuserid::text from dynamics.systemuser"
    )} == {r["systemuserid"] for r in emu.rows("systemuser")}
    assert {r[0] for r in postgres.query(
        pg_database, "select accountid::text from dynamics.account where _sdc_deleted_at is not null"
    )} == accounts | more_accounts
