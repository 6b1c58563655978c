"""What every capture reader yields: datagrams with the relay's arrival time, and read statistics.

The arrival time is the one clock all streams of a room share (see DESIGN.md, sync); readers
give it in integer nanoseconds since the Unix epoch, exactly as the capture stored it.

Arrival times out of line. One corrupt record timestamp (a day late, or decades off) would
otherwise stretch a session to its value. A relay captures packets milliseconds apart, so a time
further from the last kept one than ``OUT_OF_LINE_NS`` (or ``SPARSE_STEPS`` times the last step,
for a sparse stream) is only believed when the record after it confirms it (a capture may really
pause) or when it lies between its neighbours; anything else is set aside, counted in
``ReadStats.skipped`` and never yielded, so it defines no session start, end or presence. At the
end of a file nothing can confirm a jump: a last record far from the one before is set aside.
``ArrivalGuard`` decides each time from the last kept time and at most the two times after it,
so however a file is cut into batches, the same records are set aside.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import CaptureError

__all__ = [
    "OUT_OF_LINE_NS",
    "SKIP_OUT_OF_LINE",
    "SPARSE_STEPS",
    "ArrivalGuard",
    "Datagram",
    "Endpoint",
    "ReadStats",
    "SkippedSpan",
    "guard_times",
    "set_aside",
]

#: A time further than this from the last kept one needs confirmation (see the module doc).
OUT_OF_LINE_NS = 500_000_000
#: After a step of g between kept times, a step up to this many times g is in line too.
SPARSE_STEPS = 4
#: The skip reason of datagrams whose arrival time was set aside.
SKIP_OUT_OF_LINE = "arrival time out of line"


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


@dataclass(frozen=True, slots=True)
class SkippedSpan:
    """Bytes a reader skipped to find the next plausible record after damage: [start, end)."""

    start: int
    end: int
    reason: str

    def __str__(self) -> str:
        return f"skipped bytes {self.start}-{self.end}: {self.reason}"


@dataclass(slots=True)
class ReadStats:
    """What a reader saw: records read, datagrams yielded, what it skipped and why.

    skipped counts records that were not UDP datagrams (or were damaged, or whose arrival time
    was out of line) by reason; spans lists the damaged byte ranges a reader skipped before it
    found the next plausible record; problems holds each span as a located CaptureError and the
    damage that ended reading early (a truncated file): everything else was yielded.
    """

    records: int = 0
    datagrams: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[CaptureError] = field(default_factory=list)
    spans: list[SkippedSpan] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def skip_span(self, file: str, start: int, end: int, reason: str) -> None:
        """Record damage that was skipped: reading resumed at end."""
        span = SkippedSpan(start, end, reason)
        self.spans.append(span)
        self.problems.append(CaptureError(str(span), file=file, offset=start))


class ArrivalGuard:
    """The rule of the module doc over a file's arrival times, fed in file order in any pieces.

    last: the last kept time (None before the first); gap: the step to it from the kept time
    before, so a sparse stream (an RTCP packet a second) may step further than a dense one.
    """

    __slots__ = ("gap", "last")

    def __init__(self) -> None:
        self.last: int | None = None
        self.gap = 0

    def keep(self, t: int) -> None:
        """t was kept."""
        if self.last is not None:
            self.gap = abs(t - self.last)
        self.last = t

    def settle(self, times: Sequence[int], final: bool) -> tuple[list[int], int]:
        """(indices of the times set aside, how many times were decided). Without final, a time
        that needs the times after it to be decided stops the decision there."""
        aside: list[int] = []
        n = len(times)
        i = 0
        while i < n:
            t = times[i]
            last = self.last
            far = max(OUT_OF_LINE_NS, SPARSE_STEPS * self.gap)
            if last is not None and -far <= t - last <= far:
                self.keep(t)
                i += 1
                continue
            if i + 1 >= n:
                if not final:
                    break
                if last is None:  # a file of one time
                    self.keep(t)
                else:  # a jump nothing confirms
                    aside.append(i)
                i += 1
                continue
            nxt = times[i + 1]
            if -far <= nxt - t <= far:  # the next time confirms it
                self.keep(t)
            elif last is None:  # the first time: set aside when the two after it agree without it
                if i + 2 >= n and not final:
                    break
                if (
                    i + 2 < n
                    and -far <= times[i + 2] - nxt <= far
                    and not -far <= times[i + 2] - t <= far
                ):
                    aside.append(i)
                else:
                    self.keep(t)
            elif min(last, nxt) <= t <= max(last, nxt):  # between its neighbours
                self.keep(t)
            else:
                aside.append(i)
            i += 1
        return aside, i


def guard_times(datagrams: Iterable[Datagram], stats: ReadStats) -> Iterator[Datagram]:
    """The datagrams whose arrival times are in line (see ``ArrivalGuard``); the rest are
    counted in stats."""
    guard = ArrivalGuard()
    pending: list[Datagram] = []
    limit = OUT_OF_LINE_NS
    for d in datagrams:
        t = d.arrival_ns
        last = guard.last
        if not pending and last is not None and -limit <= t - last <= limit:
            guard.gap = abs(t - last)
            guard.last = t
            yield d
            continue
        pending.append(d)
        aside, decided = guard.settle([p.arrival_ns for p in pending], False)
        if decided:
            yield from _kept(pending[:decided], aside, stats)
            del pending[:decided]
    aside, _ = guard.settle([p.arrival_ns for p in pending], True)
    yield from _kept(pending, aside, stats)


def set_aside(stats: ReadStats, count: int) -> None:
    """Count datagrams that were yielded by a reader's loop but set aside as out of line."""
    if count:
        stats.skipped[SKIP_OUT_OF_LINE] += count
        stats.datagrams -= count


def _kept(items: list[Datagram], aside: list[int], stats: ReadStats) -> list[Datagram]:
    """items without those at the indices aside, which are counted as out of line."""
    if not aside:
        return items
    set_aside(stats, len(aside))
    drop = set(aside)
    return [d for i, d in enumerate(items) if i not in drop]
