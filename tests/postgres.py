"""A real, throw-away PostgreSQL server for the end-to-end tests (and the `postgres` fixture).

The server is Debian's ``postgresql`` package (``make test-deps`` installs it when missing):
``initdb`` into a fresh temporary directory, ``postgres`` on a free loopback port with no Unix
socket, stopped and deleted at the end. PostgreSQL refuses to run as root, so when the tests run
as root (CI does) the server runs as the ``postgres`` system user the package creates (or
``nobody``). Nothing is mocked: the tap's rows reach it through Meltano and target-postgres.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

INSTALL_HINT = "run `make test-deps` (it installs Debian's postgresql package)"


def server_bindir() -> Path:
    """The directory of ``initdb``/``postgres``: newest /usr/lib/postgresql/N/bin, else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    msg = f"no PostgreSQL server binaries (initdb) found; {INSTALL_HINT}"
    raise RuntimeError(msg)


def _version_key(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    msg = "running as root and there is no 'postgres' or 'nobody' user to run PostgreSQL as"
    raise RuntimeError(msg)


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; ``dsn(db)`` connects as superuser."""

    superuser = "postgres"

    def __init__(self) -> None:
        self.bindir = server_bindir()
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="tap-dynamics-pg-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def _run_as(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def start(self) -> PostgresServer:
        """initdb, then start on a free port (a port taken meanwhile is retried on another)."""
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.superuser,
             "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
            check=True, capture_output=True, text=True, cwd=self.root, **self._run_as(),
        )
        for _ in range(5):
            self.port = _free_port()
            if self._start_on(self.port):
                return self
        msg = f"PostgreSQL did not start; its log:\n{self.logfile.read_text()[-3000:]}"
        raise RuntimeError(msg)

    def _start_on(self, port: int) -> bool:
        log = self.logfile.open("a")
        if self.user is not None:
            os.chown(self.logfile, self.user.pw_uid, self.user.pw_gid)
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=50"],
            stdout=log, stderr=log, cwd=self.root, **self._run_as(),
        )
        log.close()
        ready = self.bindir / "pg_isready"
        while self.proc.poll() is None:
            probe = subprocess.run(
                [str(ready), "-h", "127.0.0.1", "-p", str(port), "-U", self.superuser, "-t", "5"],
                capture_output=True, check=False,
            )
            if probe.returncode == 0:
                return True
            time.sleep(0.2)
        return False  # exited: most likely the port was taken between probe and bind

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then delete the cluster."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.superuser} dbname={database}"

    def create_database(self, name: str) -> str:
        """A fresh database (dropped first if a previous test left it); returns its name."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as con:
            con.execute(f'drop database if exists "{name}"')
            con.execute(f'create database "{name}"')
        return name

    def query(self, database: str, sql: str, params: tuple | list | None = None) -> list[tuple]:
        """Rows of one SQL statement (psycopg adapts numeric to Decimal, date to date, arrays to list)."""
        import psycopg

        with psycopg.connect(self.dsn(database)) as con:
            return con.execute(sql, params).fetchall()

    def target_env(self, database: str, schema: str = "dynamics") -> dict[str, str]:
        """TARGET_POSTGRES_* variables that point target-postgres at ``database``."""
        return {
            "TARGET_POSTGRES_HOST": "127.0.0.1",
            "TARGET_POSTGRES_PORT": str(self.port),
            "TARGET_POSTGRES_USER": self.superuser,
            "TARGET_POSTGRES_PASSWORD": "unused-trust-auth",
            "TARGET_POSTGRES_DATABASE": database,
            "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
        }
