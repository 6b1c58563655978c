"""Runs the migrations on the engine ``Database.migrate`` hands over (never from a URL in a
file: the service's configuration says where the database is)."""

from __future__ import annotations

from alembic import context

from skymix.service.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite changes tables by copying them
        compare_type=True,
    )
    context.run_migrations()
