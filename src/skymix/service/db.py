"""The database: an engine for SQLite (the embedded default) or PostgreSQL, sessions, and the
schema brought up to date by the Alembic migrations at every start.

SQLite runs in WAL mode with full synchronisation (a job acknowledged is on disk), foreign keys
enforced and a busy timeout, so the API and the job workers (other processes) share one file.
PostgreSQL URLs use the psycopg 3 driver. A database made by an older skymix is upgraded by
its pending migrations; nothing is ever dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "alembic_config", "current_revision", "head_revision", "make_engine"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def _driver_url(url: str) -> str:
    """The URL with the driver skymix ships: psycopg 3 for PostgreSQL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite's folder is made, and its connections set up (WAL, full
    sync, foreign keys, a 10 s busy timeout)."""
    parsed = make_url(_driver_url(url))
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 10})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

        return engine
    return create_engine(parsed, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    """Alembic's configuration for the migrations shipped in the package, on ``engine``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest migration this skymix ships."""
    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None: an empty database)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


class Database:
    """The engine and a session factory; ``migrate()`` brings the schema to the head."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string(hide_password=True)!r})"

    def migrate(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision`` (default: all of them)."""
        before = current_revision(self.engine)
        command.upgrade(alembic_config(self.engine), revision)
        after = current_revision(self.engine)
        if before != after:
            log.info("database migrated from %s to %s", before or "empty", after)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed at the end of the block, rolled back on an exception."""
        with self.sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
