"""Where recording jobs run: out of the API's process, so a mix that crashes or runs out of
memory cannot take the API down.

``Executor`` is the small interface every place to run jobs implements: ``submit`` a recording
id, the ids ``in_flight``, ``close``. ``LocalExecutor`` is a process pool on this machine (spawn
context, ``config.workers`` processes); each worker dies with the service (it watches its
parent), so a killed service leaves no worker finishing a job the restarted one runs again.
The job itself is ``jobs.run_job(config_json, recording_id)``: plain, picklable arguments.

``JobWatcher`` is the service's thread that keeps the jobs moving: at start and every second it
submits the jobs that are queued, and those running under a lease that expired or whose worker
died, that its executor is not already running (crash recovery).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from importlib import import_module
from typing import Protocol

from sqlalchemy import select

from .config import ServiceConfig
from .jobs import claimable, run_job
from .models import Job, utcnow
from .state import ServiceState

__all__ = ["Executor", "JobWatcher", "LocalExecutor"]

log = logging.getLogger(__name__)

#: How often the watcher looks for jobs to run.
WATCH_S = 1.0


class Executor(Protocol):
    """A place to run recording jobs."""

    def submit(self, recording_id: str) -> None:
        """Run the recording's job (returns at once)."""

    def in_flight(self) -> frozenset[str]:
        """The recordings whose jobs this executor was given and has not finished."""

    def close(self) -> None:
        """Stop taking jobs; running ones are abandoned to the next start's recovery."""


def _watch_parent(parent: int, level: int) -> None:
    """A worker's start: log like the service, and exit as soon as the service is gone."""
    logging.basicConfig(format="skymix: %(message)s", level=level)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.1)
        os._exit(1)

    threading.Thread(target=watch, name="skymix-parent-watch", daemon=True).start()


def _warm() -> None:
    """Import what a job needs, so that the first job does not wait for it."""
    import_module("skymix.job")


class LocalExecutor:
    """A process pool of ``config.workers`` spawned processes; remade if a worker dies."""

    def __init__(self, config: ServiceConfig) -> None:
        self._config_json = config.model_dump_json()
        self._workers = config.workers
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._pool = self._new_pool()
        self._pool.submit(_warm)

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self._workers})"

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_watch_parent,
            initargs=(os.getpid(), logging.getLogger().getEffectiveLevel()),
        )

    def submit(self, recording_id: str) -> None:
        with self._lock:
            if recording_id in self._running:
                return
            try:
                future = self._pool.submit(run_job, self._config_json, recording_id)
            except BrokenProcessPool:
                log.warning("a job worker died: starting a new pool")
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                future = self._pool.submit(run_job, self._config_json, recording_id)
            self._running.add(recording_id)
        future.add_done_callback(lambda done: self._done(recording_id, done))

    def _done(self, recording_id: str, future: Future[str]) -> None:
        with self._lock:
            self._running.discard(recording_id)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.warning("recording %s: the job's worker failed: %s", recording_id, error)

    def in_flight(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._running)

    def close(self) -> None:
        """Stop the workers now (SIGTERM): a running job is run again at the next start, from
        what its event log says, rather than holding the service's exit for its whole length."""
        workers = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            if worker.is_alive():
                worker.terminate()


class JobWatcher:
    """Submits the jobs that should be running and are not (see the module's docstring)."""

    def __init__(self, state: ServiceState, executor: Executor) -> None:
        self._state = state
        self._executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="skymix-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        while True:
            try:
                self.submit_runnable()
            except Exception:  # noqa: BLE001 - the watcher keeps going; the next tick retries
                log.exception("looking for jobs to run failed")
            if self._stop.wait(WATCH_S):
                return

    def submit_runnable(self) -> list[str]:
        """Submit the queued jobs and those a crash left; their recording ids."""
        now = utcnow()
        with self._state.db.session() as session:
            jobs = list(
                session.scalars(
                    select(Job)
                    .where(Job.status.in_(("queued", "running")))
                    .order_by(Job.created_at)
                    .limit(200)
                )
            )
        busy = self._executor.in_flight()
        submitted = []
        for job in jobs:
            if job.recording_id in busy or not claimable(job, now):
                continue
            if job.status == "running":
                log.warning(
                    "recording %s: its job was interrupted; running it again", job.recording_id
                )
            self._executor.submit(job.recording_id)
            submitted.append(job.recording_id)
        return submitted
