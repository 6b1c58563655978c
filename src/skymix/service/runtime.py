"""What runs beside the API for as long as the service does (the parts ``create_app`` starts
and stops): the job executor with its watcher (which also recovers the jobs a crash left), the
live rooms (their relay; they hand stopped recordings to the executor, so they start after it
and stop before it), the notification outbox, and the end of the event streams when a stop
signal comes."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from .api import recordings_api
from .api.app import Lifecycle
from .config import ServiceConfig
from .executor import JobWatcher, LocalExecutor
from .live import ws as live_ws
from .outbox import Outbox
from .state import ServiceState

__all__ = ["lifecycle"]


def lifecycle(config: ServiceConfig) -> list[Lifecycle]:
    """The parts to start, in order (stopped in reverse)."""
    parts: dict[str, JobWatcher | Outbox] = {}

    def start_jobs(state: ServiceState) -> None:
        if config.dask is not None:
            from .dask_executor import DaskExecutor

            state.executor = DaskExecutor(config)
        else:
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

    def start_live(state: ServiceState) -> None:
        from .live import LiveRooms

        live = LiveRooms(state)
        state.live = live
        live.start()

    def stop_live(state: ServiceState) -> None:
        if state.live is not None:
            state.live.stop()
            state.live = None

    def start_outbox(state: ServiceState) -> None:
        outbox = Outbox(state)
        parts["outbox"] = outbox
        outbox.start()

    def stop_outbox(state: ServiceState) -> None:
        if "outbox" in parts:
            parts.pop("outbox").stop()

    undo: list[Callable[[], None]] = []

    def start_streams(state: ServiceState) -> None:
        recordings_api.STREAMS_END.clear()
        undo.append(_end_streams_on_stop_signals())

    def stop_streams(state: ServiceState) -> None:
        recordings_api.STREAMS_END.set()
        while undo:
            undo.pop()()

    return [
        (start_jobs, stop_jobs),
        (start_live, stop_live),
        (start_outbox, stop_outbox),
        (start_streams, stop_streams),
    ]


def _end_streams_on_stop_signals() -> Callable[[], None]:
    """SIGINT and SIGTERM end the open event streams, then go to the handler that was there
    (the server's, which stops it once no response is open); the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handler(signum: int, frame: FrameType | None) -> None:
        recordings_api.STREAMS_END.set()
        # the pages' sockets get 4409 first, then the server stops (it would close them: 1012)
        live_ws.end_sockets(then=lambda: pass_on(signum, frame))

    def pass_on(signum: int, frame: FrameType | None) -> None:
        before = previous[signal.Signals(signum)]
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in signals:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)

    return restore
