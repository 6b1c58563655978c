"""What every capture reader yields: datagrams with the relay's arrival time, and read statistics.

The arrival time is the one clock all streams of a room share (see DESIGN.md, sync); readers
give it in integer nanoseconds since the Unix epoch, exactly as the capture stored it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..errors import CaptureError

__all__ = ["Datagram", "Endpoint", "ReadStats"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A UDP address as the capture recorded it."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Datagram:
    """One UDP payload (an RTP or RTCP packet, or anything else the relay saw).

    arrival_ns: capture time in ns since the Unix epoch. src/dst: None where the format does not
    record addresses (Janus .mjr). file/offset: where the record starts, for error messages.
    """

    arrival_ns: int
    data: bytes
    src: Endpoint | None
    dst: Endpoint | None
    file: str
    offset: int


@dataclass(slots=True)
class ReadStats:
    """What a reader saw: records read, datagrams yielded, what it skipped and why.

    skipped counts records that were not UDP datagrams (or were damaged) by reason; problems
    holds the damage that ended reading early (a truncated or corrupt file): everything before it
    was yielded.
    """

    records: int = 0
    datagrams: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[CaptureError] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1
