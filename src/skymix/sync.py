"""One clock for the room: map each sender's media clock onto the relay's arrival clock.

Every participant's machine runs its own clock, seconds off and drifting by up to hundreds of ppm
against the relay. The relay's arrival times are the one clock all streams share, but each
packet arrives late by a network delay that varies (jitter, bursts, a video frame's packets
queued behind each other). The fastest packets are the ones that waited least, so the sender's
clock is fitted to the lower envelope of (RTP time, arrival time): per window of the stream the
packet with the smallest arrival - expected arrival is kept, and a straight line (offset and
drift) is fitted to those minima, discarding minima that lie far above the line (a window in
which every packet was delayed). The memory this needs is one point per window, whatever the
length of the stream.

Lip sync within one sender comes from its RTCP sender reports: each ties an NTP instant of the
sender's clock to an RTP time of one stream, so an audio and a video RTP time of the same
sender can be put on one sender clock. NTP times of different senders are never compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SkymixError

__all__ = ["ClockEstimator", "ClockFit", "SenderClock"]


@dataclass(frozen=True, slots=True)
class ClockFit:
    """arrival_ns = offset_ns + (rtp - rtp_origin) * ns_per_tick, for one stream.

    drift_ppm: how much faster (+) the sender's media clock runs than the relay's, against its
    nominal rate. jitter_ns: the spread of arrivals above the fitted line (median).
    """

    rtp_origin: int
    offset_ns: float
    ns_per_tick: float
    clock_rate: int
    drift_ppm: float
    points: int
    jitter_ns: float

    def arrival_ns(self, rtp: int | np.ndarray) -> float | np.ndarray:
        """The session-clock instant (ns) of an unwrapped RTP time on the fitted line."""
        return self.offset_ns + (np.asarray(rtp) - self.rtp_origin) * self.ns_per_tick

    def rtp_at(self, arrival_ns: float) -> float:
        """The RTP time the sender's clock showed at a session-clock instant."""
        return self.rtp_origin + (arrival_ns - self.offset_ns) / self.ns_per_tick


class ClockEstimator:
    """Collects (unwrapped RTP time, arrival) pairs of one stream and fits its clock.

    window_ticks: the length of a window in RTP ticks (default 1 s); only each window's
    minimum-delay point is kept.
    """

    def __init__(self, clock_rate: int, window_seconds: float = 1.0) -> None:
        if clock_rate <= 0:
            raise SkymixError(f"clock rate must be positive, got {clock_rate}")
        self.clock_rate = clock_rate
        self._nominal = 1e9 / clock_rate
        self._window = max(1, round(window_seconds * clock_rate))
        self._origin: int | None = None
        self._origin_arrival = 0
        self._minima: dict[int, tuple[float, int, int]] = {}

    def add(self, rtp: int, arrival_ns: int) -> None:
        """One observation: a packet (or frame) with unwrapped RTP time rtp arrived then."""
        if self._origin is None:
            self._origin, self._origin_arrival = rtp, arrival_ns
        ticks = rtp - self._origin
        excess = (arrival_ns - self._origin_arrival) - ticks * self._nominal
        key = ticks // self._window
        best = self._minima.get(key)
        if best is None or excess < best[0]:
            self._minima[key] = (excess, rtp, arrival_ns)

    @property
    def points(self) -> int:
        return len(self._minima)

    def fit(self) -> ClockFit:
        """The lower-envelope line through the windows' minima (offset and drift)."""
        if self._origin is None:
            raise SkymixError("no packets to fit a clock to")
        data = np.array([(r - self._origin, a - self._origin_arrival)
                         for _, r, a in self._minima.values()], np.float64)
        ticks, arrival = data[:, 0], data[:, 1]
        keep = np.ones(len(ticks), bool)
        slope, intercept = self._nominal, float(np.min(arrival - ticks * self._nominal))
        for _ in range(4):
            if keep.sum() >= 2 and np.ptp(ticks[keep]) > 0:
                slope, intercept = np.polyfit(ticks[keep], arrival[keep], 1)
            residual = arrival - (intercept + slope * ticks)
            spread = max(float(np.median(np.abs(residual[keep]))), 1e5)
            new_keep = residual < 3 * spread
            if new_keep.sum() < 2 or (new_keep == keep).all():
                break
            keep = new_keep
        residual = arrival - (intercept + slope * ticks)
        # the envelope: shift the line down onto the fastest kept window
        intercept += float(np.min(residual[keep]))
        return ClockFit(
            rtp_origin=self._origin,
            offset_ns=self._origin_arrival + float(intercept),
            ns_per_tick=float(slope),
            clock_rate=self.clock_rate,
            drift_ppm=(self._nominal / float(slope) - 1.0) * 1e6,
            points=int(keep.sum()),
            jitter_ns=float(np.median(residual[keep] - np.min(residual[keep]))),
        )


@dataclass(frozen=True, slots=True)
class SenderClock:
    """A sender's NTP <-> RTP mapping of one stream, from its RTCP sender reports.

    Fitted through all reports of the stream (least squares), so a report whose RTP time was
    extrapolated from a wall clock (FFmpeg does) or rounded to a millisecond averages out.
    """

    rtp_origin: int
    ntp_origin: float
    ticks_per_second: float
    reports: int

    @classmethod
    def from_reports(cls, reports: list[tuple[float, int]]) -> SenderClock:
        """reports: (sender NTP time in seconds, unwrapped RTP time) of one stream."""
        if not reports:
            raise SkymixError("no sender reports")
        ntp = np.array([n for n, _ in reports], np.float64)
        rtp = np.array([r for _, r in reports], np.float64)
        if len(reports) == 1 or np.ptp(ntp) <= 0:
            return cls(int(rtp[0]), float(ntp[0]), 0.0, len(reports))
        rate, _ = np.polyfit(ntp - ntp[0], rtp - rtp[0], 1)
        origin = int(rtp[0])
        ntp_at_origin = float(np.mean(ntp - (rtp - origin) / rate))
        return cls(origin, ntp_at_origin, float(rate), len(reports))

    def ntp_of(self, rtp: int, clock_rate: int) -> float:
        """Sender NTP seconds of an RTP time (nominal rate when one report only)."""
        rate = self.ticks_per_second or float(clock_rate)
        return self.ntp_origin + (rtp - self.rtp_origin) / rate

    def rtp_of(self, ntp: float, clock_rate: int) -> float:
        rate = self.ticks_per_second or float(clock_rate)
        return self.rtp_origin + (ntp - self.ntp_origin) * rate
