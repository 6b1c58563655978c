"""Where recording jobs run: out of the API's process, so a mix that crashes or runs out of
memory cannot take the API down.

``Executor`` is the small interface every place to run jobs implements: ``submit`` a recording
id, the ids ``in_flight``, ``close``. ``LocalExecutor`` runs each job in its own spawned process
on this machine, at most ``config.workers`` at once: a job whose process dies (out of memory, a
native crash) costs that job one attempt and no other job anything (a shared process pool breaks
as a whole when one of its workers dies). Each process dies with the service (it watches its
parent), so a killed service leaves no worker finishing a job the restarted one runs again. The
job itself is ``jobs.run_job(config_json, recording_id)``: plain, picklable arguments.

``JobWatcher`` is the service's thread that keeps the jobs moving: at start and every second it
submits the jobs that are queued, and those running under a lease that expired or whose worker
died, that its executor is not already running (crash recovery).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections import deque
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from .config import ServiceConfig
from .db import Database
from .jobs import claimable, run_job
from .models import Job, utcnow
from .state import ServiceState

__all__ = ["Executor", "JobWatcher", "LocalExecutor"]

log = logging.getLogger(__name__)

#: How often the watcher looks for jobs to run.
WATCH_S = 1.0
#: How long ``LocalExecutor.close`` waits for the workers it stopped to end.
STOP_WAIT_S = 5.0


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


def _worker(config_json: str, recording_id: str, parent: int, level: int) -> None:
    """A job's process: the job, its failure logged in a line (the job's own log says more).
    Ctrl-C in the service's terminal reaches the whole process group: the worker leaves it to
    the service, which stops it (``LocalExecutor.close``) knowing the run was cut short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_parent(parent, level)
    try:
        run_job(config_json, recording_id)
    except Exception as exc:  # noqa: BLE001 - the watcher runs the job again
        log.warning("recording %s: the job's worker failed: %s", recording_id, exc)
        raise SystemExit(1) from None


class LocalExecutor:
    """Each job in its own spawned process, ``config.workers`` at most at once; the others
    wait their turn in the order they came."""

    def __init__(self, config: ServiceConfig) -> None:
        self._config = config
        self._config_json = config.model_dump_json()
        self._workers = config.workers
        self._context = multiprocessing.get_context("spawn")
        self._level = logging.getLogger().getEffectiveLevel()
        self._lock = threading.Lock()
        self._waiting: deque[str] = deque()
        self._running: dict[str, BaseProcess] = {}
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._dispatch, name="skymix-workers", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self._workers})"

    def submit(self, recording_id: str) -> None:
        with self._lock:
            if self._closed or recording_id in self._running or recording_id in self._waiting:
                return
            self._waiting.append(recording_id)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # closed: the dispatcher is gone
            pass

    def _dispatch(self) -> None:
        """Start waiting jobs while there is room; reap the processes that end."""
        while True:
            with self._lock:
                if self._closed:
                    return
                while self._waiting and len(self._running) < self._workers:
                    recording_id = self._waiting.popleft()
                    try:
                        self._running[recording_id] = self._start(recording_id)
                    except OSError as exc:  # no process to be had: the watcher submits it again
                        log.warning(
                            "recording %s: no worker could be started: %s", recording_id, exc
                        )
                sentinels = {p.sentinel: rid for rid, p in self._running.items()}
            ready = wait([self._wake_r, *sentinels])
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for sentinel in ready:
                if sentinel in sentinels:
                    self._reap(sentinels[sentinel])

    def _start(self, recording_id: str) -> BaseProcess:
        process = self._context.Process(
            target=_worker,
            args=(self._config_json, recording_id, os.getpid(), self._level),
            name=f"skymix-job-{recording_id}",
            daemon=True,
        )
        process.start()
        return process

    def _reap(self, recording_id: str) -> None:
        with self._lock:
            if self._closed:
                return
            process = self._running.pop(recording_id)
        process.join()
        if process.exitcode not in (0, 1):  # 1: the job's failure, logged by the worker
            log.warning(
                "recording %s: the job's worker died (exit code %s)",
                recording_id,
                process.exitcode,
            )
        process.close()

    def in_flight(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._running) | frozenset(self._waiting)

    def close(self) -> None:
        """Stop the workers now (SIGTERM): a running job is run again at the next start, from
        what its event log says, rather than holding the service's exit for its whole length.
        A run this cut short does not count as one of the job's attempts."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._waiting.clear()
            running = dict(self._running)
            self._running.clear()
        self._wake()
        self._thread.join(STOP_WAIT_S)
        os.close(self._wake_w)
        os.close(self._wake_r)
        for process in running.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_WAIT_S
        stopped = {}
        for recording_id, process in running.items():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode == -signal.SIGTERM and process.pid is not None:
                stopped[recording_id] = process.pid
        if stopped:
            self._uncount(stopped)

    def _uncount(self, stopped: dict[str, int]) -> None:
        """Give back the attempt of each job whose worker the stop ended (its lease still held
        by that worker, running): the job is queued for the next start."""
        host = socket.gethostname()
        database = Database(self._config.database)
        try:
            for recording_id, pid in stopped.items():
                with database.session() as session:
                    session.execute(
                        update(Job)
                        .where(
                            Job.recording_id == recording_id,
                            Job.status == "running",
                            Job.lease_owner == f"{host}/{pid}",
                            Job.attempts > 0,
                        )
                        .values(
                            status="queued",
                            lease_owner=None,
                            lease_until=None,
                            attempts=Job.attempts - 1,
                            updated_at=utcnow(),
                        )
                    )
        except SQLAlchemyError:
            log.warning("the attempts of the jobs the stop cut short could not be given back")
        finally:
            database.close()


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
