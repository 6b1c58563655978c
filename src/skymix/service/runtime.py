"""What runs beside the API for as long as the service does (the parts ``create_app`` starts
and stops): the job executor with its watcher (which also recovers the jobs a crash left), and
the notification outbox."""

from __future__ import annotations

from .api.app import Lifecycle
from .config import ServiceConfig
from .executor import JobWatcher, LocalExecutor
from .outbox import Outbox
from .state import ServiceState

__all__ = ["lifecycle"]


def lifecycle(config: ServiceConfig) -> list[Lifecycle]:
    """The parts to start, in order (stopped in reverse)."""
    parts: dict[str, JobWatcher | Outbox] = {}

    def start_jobs(state: ServiceState) -> None:
        state.executor = LocalExecutor(config)
        watcher = JobWatcher(state, state.executor)
        parts["jobs"] = watcher
        watcher.start()

    def stop_jobs(state: ServiceState) -> None:
        if "jobs" in parts:
            parts.pop("jobs").stop()
        if state.executor is not None:
            state.executor.close()
            state.executor = None

    def start_outbox(state: ServiceState) -> None:
        outbox = Outbox(state)
        parts["outbox"] = outbox
        outbox.start()

    def stop_outbox(state: ServiceState) -> None:
        if "outbox" in parts:
            parts.pop("outbox").stop()

    return [(start_jobs, stop_jobs), (start_outbox, stop_outbox)]
