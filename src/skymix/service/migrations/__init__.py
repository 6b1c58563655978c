"""Alembic migrations of the service's database (applied by ``Database.migrate``)."""
