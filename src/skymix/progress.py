"""Progress of long work: structured events for callers, a bar for people at a terminal."""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

__all__ = ["ProgressCallback", "ProgressEvent", "Stage", "TerminalProgress"]


class Stage(enum.StrEnum):
    """The stages a mix reports progress of: reading the captures (the first pass, in packets),
    mixing (the second, in output frames or audio blocks)."""

    READING = "reading"
    MIXING = "mixing"


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """`done` of `total` units of `stage` are finished (total 0: unknown)."""

    stage: Stage
    done: int
    total: int
    unit: str = "frames"


ProgressCallback = Callable[[ProgressEvent], None]


class TerminalProgress:
    """A one-line progress bar redrawn in place on a terminal; silent when not a terminal."""

    def __init__(
        self, stream: TextIO | None = None, width: int = 30, interval: float = 0.1
    ) -> None:
        self._stream = stream or sys.stderr
        self._width = width
        self._interval = interval
        self._last = 0.0
        self._enabled = self._stream.isatty()

    def __call__(self, event: ProgressEvent) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        finished = event.total > 0 and event.done >= event.total
        if not finished and now - self._last < self._interval:
            return
        self._last = now
        if event.total > 0:
            filled = self._width * event.done // event.total
            bar = "#" * filled + "-" * (self._width - filled)
            text = f"{event.stage:>10} [{bar}] {event.done}/{event.total} {event.unit}"
        else:
            text = f"{event.stage:>10} {event.done} {event.unit}"
        self._stream.write("\r" + text + ("\n" if finished else ""))
        self._stream.flush()
