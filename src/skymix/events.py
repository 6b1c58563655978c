"""A job's events and its control: an id, subscribers that hear its progress and state changes,
and cancellation from any thread.

Modelled on s3transfer's subscribers (``on_queued``/``on_progress``/``on_done``): a caller
subclasses ``JobSubscriber`` and overrides what it cares about, instead of one callable with
free-form stage names. Events are frozen dataclasses, so a service can queue them, log them or
turn them into recording states without knowing the mix. A subscriber that raises does not stop
the job: its exception is logged and it is not called again.

Cancellation is cooperative: the job checks ``JobControl.check()`` at every progress event (each
batch of the first pass, each output frame of the second), which raises
``skymix.errors.CancelledError``; the job then cleans up as after any error.
"""

from __future__ import annotations

import enum
import logging
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import CancelledError, SkymixError
from .progress import ProgressCallback, ProgressEvent

__all__ = ["JobControl", "JobState", "JobSubscriber", "StateEvent"]

logger = logging.getLogger(__name__)


class JobState(enum.StrEnum):
    """Where a job is. STARTED, then READING (first pass) and MIXING (second), then one of DONE,
    FAILED, CANCELLED."""

    STARTED = "started"
    READING = "reading"
    MIXING = "mixing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class StateEvent:
    """Job `job_id` entered `state`; on FAILED and CANCELLED, the error's stable code and its
    message (never a secret: messages name files and fields, not their contents)."""

    job_id: str
    state: JobState
    error_code: str | None = None
    message: str | None = None


class JobSubscriber:
    """Hears one job's events; override the methods wanted. Called on the job's thread."""

    def on_state(self, event: StateEvent) -> None:
        """The job changed state."""

    def on_progress(self, job_id: str, event: ProgressEvent) -> None:
        """`event.done` of `event.total` units of the current stage are finished."""


class _ProgressSubscriber(JobSubscriber):
    """A plain progress callable (such as TerminalProgress) as a subscriber."""

    def __init__(self, callback: ProgressCallback) -> None:
        self.callback = callback

    def on_progress(self, job_id: str, event: ProgressEvent) -> None:
        self.callback(event)


class JobControl:
    """A job's id, its subscribers and its cancel flag. Thread-safe: ``cancel()`` may be called
    from any thread (or a signal handler) while the job runs."""

    def __init__(
        self,
        job_id: str | None = None,
        subscribers: Iterable[JobSubscriber] = (),
        progress: ProgressCallback | None = None,
    ) -> None:
        self.id = job_id or uuid.uuid4().hex
        self._subscribers = list(subscribers)
        if progress is not None:
            self._subscribers.append(_ProgressSubscriber(progress))
        self._cancelled = threading.Event()
        self.state: JobState | None = None

    def __repr__(self) -> str:
        return f"JobControl(id={self.id!r}, state={self.state})"

    def cancel(self) -> None:
        """Ask the job to stop; it raises CancelledError at its next check and cleans up."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise CancelledError if the job was asked to stop."""
        if self._cancelled.is_set():
            raise CancelledError(f"job {self.id} was cancelled")

    def progress(self, event: ProgressEvent) -> None:
        """Tell the subscribers, then check for cancellation (a ProgressCallback)."""
        for subscriber in list(self._subscribers):
            try:
                subscriber.on_progress(self.id, event)
            except Exception:  # noqa: BLE001 - a listener never breaks the job
                logger.exception(
                    "job %s: subscriber %r failed; it hears no more", self.id, subscriber
                )
                self._subscribers.remove(subscriber)
        self.check()

    def enter(self, state: JobState, error: BaseException | None = None) -> None:
        """Move to `state` and tell the subscribers (with the error's code on failure)."""
        self.state = state
        code = message = None
        if error is not None:
            code = error.code if isinstance(error, SkymixError) else "internal_error"
            message = str(error) if isinstance(error, SkymixError) else type(error).__name__
        event = StateEvent(self.id, state, code, message)
        logger.debug("job %s: %s%s", self.id, state, f" ({code})" if code else "")
        for subscriber in list(self._subscribers):
            try:
                subscriber.on_state(event)
            except Exception:  # noqa: BLE001 - a listener never breaks the job
                logger.exception(
                    "job %s: subscriber %r failed; it hears no more", self.id, subscriber
                )
                self._subscribers.remove(subscriber)
