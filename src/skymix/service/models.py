"""The service's tables (SQLAlchemy 2, typed): applications and their keys, their recording
settings (secrets encrypted), recordings, their jobs, and the notification outbox.

Times are stored as UTC and read back timezone-aware on SQLite and PostgreSQL alike
(``UtcDateTime``). The schema is made and changed by the Alembic migrations in
``skymix/service/migrations`` only; ``tests/test_service_db.py`` checks the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "App",
    "AppSettings",
    "Base",
    "BrowserAccess",
    "Job",
    "OutboxItem",
    "RecordingRow",
    "utcnow",
]


def utcnow() -> datetime:
    """Now in UTC, to the microsecond (what both databases keep)."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a naive datetime cannot be stored: give it a timezone")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON()}


class App(Base):
    """An application: its id and its API key (the key's id in clear for lookup, the SHA-256
    of its secret part; the key itself is shown once, when made)."""

    __tablename__ = "apps"

    app_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    key_rotated_at: Mapped[datetime | None] = mapped_column(default=None)


class AppSettings(Base):
    """An application's RecordingSettings document, encrypted whole (secrets and all) under the
    service's key; the flags the service filters on are kept in clear beside it."""

    __tablename__ = "app_settings"

    app_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("apps.app_id", ondelete="CASCADE"), primary_key=True
    )
    document_enc: Mapped[str] = mapped_column(Text)
    recording_enabled: Mapped[bool] = mapped_column(Boolean)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __mapper_args__ = {"version_id_col": version}


class BrowserAccess(Base):
    """An application's browser access: its public key (``pk_...``, public by design, so kept in
    clear) and the page origins allowed to use it (``scheme://host[:port]``, a JSON list)."""

    __tablename__ = "browser_access"

    app_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("apps.app_id", ondelete="CASCADE"), primary_key=True
    )
    public_key: Mapped[str] = mapped_column(String(32), unique=True)
    origins: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecordingRow(Base):
    """A recording as the API shows it; its event log in ``work_dir`` is the record of what
    was done, this row the index the API answers from."""

    __tablename__ = "recordings"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    app_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("apps.app_id", ondelete="CASCADE"), index=True
    )
    room: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(8))
    url: Mapped[str | None] = mapped_column(Text, default=None)
    link_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    work_dir: Mapped[str] = mapped_column(Text)
    report_summary: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_recordings_app_room", "app_id", "room"),
        Index("ix_recordings_app_state", "app_id", "state"),
    )


class Job(Base):
    """The mix-and-deliver job of a recording: persisted before it is acknowledged, leased by
    the service that runs it, run again after a crash until done."""

    __tablename__ = "jobs"

    recording_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    duration_s: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxItem(Base):
    """One notification on one channel: the job's attempts at it (``job_attempts``), and when
    they failed, the outbox's retries on its schedule across restarts (``attempts``) until
    delivered or given up; the same webhook-id on every try."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("recordings.id", ondelete="CASCADE")
    )
    notification: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))
    webhook_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    job_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("recording_id", "notification", "channel"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
    )
