"""What every part of the running service shares: its configuration, the database, the box
that opens stored secrets, and (once started) the job executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import ServiceConfig
from .crypto import SecretBox, keys_of
from .db import Database

if TYPE_CHECKING:
    from .executor import Executor
    from .live.rooms import LiveRooms

__all__ = ["ServiceState"]


@dataclass
class ServiceState:
    """The service's shared parts; ``open`` makes them from a configuration (the database
    migrated to the head)."""

    config: ServiceConfig
    db: Database
    box: SecretBox
    executor: Executor | None = field(default=None)
    live: LiveRooms | None = field(default=None)

    @classmethod
    def open(cls, config: ServiceConfig, *, migrate: bool = True) -> ServiceState:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        box = SecretBox(keys_of(config))
        db = Database(config.database)
        if migrate:
            db.migrate()
        return cls(config=config, db=db, box=box)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
        self.db.close()
