"""Fixtures of the warehouse pipelines: a real PostgreSQL server and Meltano with target-postgres.

``postgres``: one throw-away server for the whole session (see :mod:`tests.postgres`); each test
takes its own database from ``pg_database``. ``meltano_postgres``: installs the project's plugins
(tap-dynamics, target-postgres) once per session and returns the environment that points
``meltano run`` at a test's emulator and database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.demo import ensure_plugins, meltano
from tests.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh database named after the test."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:60]
    return postgres.create_database(name)


@pytest.fixture(scope="session")
def _target_postgres_installed(tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"MELTANO_DATABASE_URI": f"sqlite:///{tmp_path_factory.mktemp('install') / 'meltano.db'}"}
    ensure_plugins(env)
    meltano("install", "--plugin-type", "loader", "target-postgres", env=env)


def tap_env(emu) -> dict[str, str]:
    """TAP_DYNAMICS_* variables that point the tap at an in-process emulator."""
    config = emu.tap_config()
    return {f"TAP_DYNAMICS_{key.upper()}": value for key, value in config.items()}


@pytest.fixture
def meltano_postgres(
    _target_postgres_installed: None, postgres: PostgresServer, pg_database: str, tmp_path: Path
) -> Callable[..., dict[str, str]]:
    """``env(emu)``: the environment of ``meltano run tap-dynamics target-postgres`` for a test."""

    def env(emu, **extra: str) -> dict[str, str]:
        return {
            **tap_env(emu),
            **postgres.target_env(pg_database),
            "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
            **extra,
        }

    return env
