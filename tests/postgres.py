"""A real PostgreSQL server (Debian ``postgresql``) for the tests: a cluster in a temporary
folder, listening on 127.0.0.1 at a free port and on a Unix socket in that folder, stopped and
removed afterwards. As root it runs as the ``postgres`` user (the server refuses root), as
anyone else as that user. ../shared/COMPONENTS.md has the commands."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "skymix"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.getuid() == 0 else cmd


@dataclass
class Postgres:
    """One cluster; ``url(database)`` for SQLAlchemy, ``create_database`` for a fresh one."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="skymix-pg-")))
    port: int = field(default_factory=_free_port)

    def start(self) -> None:
        if os.getuid() == 0:
            shutil.chown(self.root, "postgres")
        data = self.root / "data"
        subprocess.run(
            _as_server_user([str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", USER]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            _as_server_user(
                [
                    str(BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(self.root / "log"),
                    "-o",
                    f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off",
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            _as_server_user(
                [str(BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)
