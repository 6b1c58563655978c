"""Recording jobs on a Dask cluster (``skymix serve --dask tcp://HOST:PORT``).

Each job is one task, ``run_dask_job(config_json, recording_id, from_env)``, which calls
``jobs.run_job`` on the worker: plain arguments, no connection or file handle. Workers read the
captures and write the recordings on storage the service shares with them (the same data folder
at the same path). The service's secret keys and database URL never travel with a task: a
worker takes them from its own environment (``SKYMIX_SECRET_KEY`` or ``SKYMIX_SECRET_KEY_FILE``,
``SKYMIX_DATABASE_URL``), which must name the service's (``from_env`` says which the worker
needs; the defaults, a key file and SQLite in the data folder, are found on the shared folder).

A task's key is unique per submission. A worker that dies mid-task is noticed by the scheduler,
which runs the task again on another worker; ``retries`` reruns a task that raised (the
database briefly unreachable, say). A rerun claims the job's lease as any run does: when the
dead worker ran on the rerun's host, its process id is gone and the lease is taken at once;
from another host the lease is honoured until it expires (``jobs.LEASE_S``), the rerun returns
"skipped", and the service's watcher submits the job again once the lease is out.

Submitted tasks are handed to the scheduler with ``fire_and_forget``: ``close`` disconnects
without cancelling what the cluster runs, and a job still running finishes there (the next
start's watcher finds it leased, or done).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any

from ..errors import OptionsError, SecretKeyError
from .config import ServiceConfig
from .jobs import run_job

__all__ = ["RETRIES", "DaskExecutor", "run_dask_job"]

log = logging.getLogger(__name__)

#: Reruns of a task that raised (a worker's death is the scheduler's to rerun, not a retry).
RETRIES = 3
#: How long to wait for the scheduler at start.
CONNECT_TIMEOUT_S = 30
#: What a task's ``from_env`` may name: the worker must have it from its environment.
SECRET = "secret"
DATABASE = "database"


def run_dask_job(config_json: str, recording_id: str, from_env: list[str]) -> str:
    """The task a Dask worker runs: the service's configuration (without its secrets) completed
    with the worker's secret keys and database URL, then ``jobs.run_job``; its status."""
    env = os.environ
    variables: dict[str, str] = {}
    if SECRET in from_env:
        for name in ("SKYMIX_SECRET_KEY", "SKYMIX_SECRET_KEY_FILE"):
            if env.get(name):
                variables[name] = env[name]
        if not variables:
            raise SecretKeyError(
                "the Dask worker has no secret key: set SKYMIX_SECRET_KEY or "
                "SKYMIX_SECRET_KEY_FILE in its environment as the service's"
            )
    if DATABASE in from_env:
        if not env.get("SKYMIX_DATABASE_URL"):
            raise OptionsError(
                "the Dask worker needs the service's database URL in its environment",
                field="SKYMIX_DATABASE_URL",
            )
        variables["SKYMIX_DATABASE_URL"] = env["SKYMIX_DATABASE_URL"]
    shared = ServiceConfig.model_validate_json(config_json).model_dump(
        exclude={"secret_keys", "secret_key_file", "database_url"}
    )
    config = ServiceConfig.load(environ=variables, **shared)
    return run_job(config.model_dump_json(), recording_id)


class DaskExecutor:
    """Runs each job as one task on the Dask scheduler at ``config.dask``."""

    def __init__(self, config: ServiceConfig) -> None:
        from distributed import Client

        assert config.dask is not None
        self._address = config.dask
        self._config_json = config.model_dump_json(
            exclude={"secret_keys", "secret_key_file", "database_url"}
        )
        self._from_env = [
            name
            for name, used in (
                (SECRET, bool(config.secret_keys) or config.secret_key_file is not None),
                (DATABASE, config.database_url is not None),
            )
            if used
        ]
        self._lock = threading.Lock()
        self._futures: dict[str, Any] = {}
        try:
            self._client = Client(self._address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise OptionsError(
                f"cannot reach the Dask scheduler at {self._address}: {exc}", field="dask"
            ) from None
        log.info("jobs run on the Dask cluster at %s", self._address)

    def __repr__(self) -> str:
        return f"DaskExecutor({self._address!r})"

    def submit(self, recording_id: str) -> None:
        from distributed import fire_and_forget

        with self._lock:
            if recording_id in self._futures:
                return
            future = self._client.submit(
                run_dask_job,
                self._config_json,
                recording_id,
                self._from_env,
                key=f"skymix-job-{recording_id}-{uuid.uuid4().hex}",
                retries=RETRIES,
                pure=False,
            )
            fire_and_forget(future)
            self._futures[recording_id] = future
        future.add_done_callback(lambda done: self._done(recording_id, done))

    def _done(self, recording_id: str, future: Any) -> None:
        with self._lock:
            if self._futures.get(recording_id) is future:
                del self._futures[recording_id]
        if future.status == "error":
            log.warning(
                "recording %s: the job's Dask task failed: %s", recording_id, future.exception()
            )

    def in_flight(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._futures)

    def close(self) -> None:
        """Disconnect; the tasks handed to the cluster go on running there."""
        with self._lock:
            self._futures.clear()
        self._client.close()
