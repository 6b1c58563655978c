"""The recording service, ``skymix serve``: the notification-settings and recordings REST API,
its database (SQLite by default, PostgreSQL by URL, Alembic migrations), application keys,
secrets encrypted at rest, and durable mix-and-deliver jobs on a process pool or a Dask cluster.

Modules: ``config`` (the service's settings), ``crypto`` (secrets at rest), ``db`` (engine and
migrations), ``models`` (the tables), ``auth`` (application keys), ``api`` (the HTTP routes),
``jobs`` (what a worker runs), ``executor`` (where it runs), ``outbox`` (notifications retried
across restarts).
"""
