"""One clock for the room: map each sender's media clock onto the relay's arrival clock.

Every participant's machine runs its own clock, seconds off and drifting by up to hundreds of ppm
against the relay. The relay's arrival times are the one clock all streams share, but each
packet arrives late by a network delay that varies (jitter, bursts, a video frame's packets
queued behind each other). The fastest packets are the ones that waited least, so the sender's
clock is fitted to the lower envelope of (RTP time, arrival time): per window of the stream (1 s)
the packet with the smallest arrival - expected arrival is kept, and a straight line (offset and
drift) is fitted to those minima.

Two things make the bare per-window minimum a noisy envelope, and the fit handles both:

- the sender's drift tilts a window: at 300 ppm its end is 0.3 ms later than its start, so the
  minimum against the nominal rate favours one end of the window rather than the fastest packet.
  Each window is kept as the minima of its eighths, and once a slope is fitted each window's
  point is picked again among its eighths against that slope (then the line is fitted again);
- whole windows lie off the envelope, in both directions: a window in which every packet was
  delayed (congestion) lies above it, and a sender's start-up (FFmpeg ``-re`` sends its first
  packets straight away, later ones on its 10 ms sleep grid) puts the first window below it. The
  slope is a Theil-Sen estimate (median of the pairwise slopes), windows more than 3 robust
  standard deviations (1.4826 * median absolute deviation) off the line are dropped, and the
  Theil-Sen slope of the remaining windows is the drift, held within MAX_DRIFT_PPM (no real
  clock drifts more; a short stream of bursty arrivals can seem to). The line is then shifted
  down onto the fastest remaining window (the envelope).

The memory this needs is at most eight points per window, whatever the length of the stream;
``ClockEstimator.add_batch`` is the vectorised ``add`` for arrays of packets (same result).

A per-window low quantile (5-10 %) instead of the minimum was measured and rejected: on real
FFmpeg ``-re`` captures (two senders under libfaketime, +300 and -250 ppm) the 10 % quantile of
a window scattered about 2-3 times more than its minimum, and on simulated pacing-grid senders
the minimum was at least as steady. The envelope is sharp (queueing delay only adds), so the
extreme is the efficient statistic; robustness comes from the line fit instead.

Lip sync within one sender comes from its RTCP sender reports: each ties an NTP instant of the
sender's clock to an RTP time of one stream, so an audio and a video RTP time of the same
sender can be put on one sender clock. NTP times of different senders are never compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SkymixError

__all__ = ["MAX_DRIFT_PPM", "ClockEstimator", "ClockFit", "SenderClock"]

# a window is kept as the minima of this many equal parts (see the module docstring)
_PARTS = 8
# windows further than this many robust standard deviations off the fitted line are dropped
_REJECT_SIGMAS = 3.0
# A sender's clock drifts by tens to a few hundred ppm against the relay's; a fitted drift beyond
# this is arrival noise, not a clock (a Chromium on two busy cores skipping capture ticks gave
# thousands of ppm over 8 s and moved its video 40 ms against its own audio), so the slope is
# held within it.
MAX_DRIFT_PPM = 1000.0
# the smallest spread (ns) assumed of window minima around the line, so that an almost noiseless
# stream does not reject windows for a few microseconds
_MIN_SPREAD_NS = 1e5
# up to this many windows the slope is the median of all pairwise slopes; above, of the slopes
# between windows half the stream apart (as robust, linear cost)
_ALL_PAIRS = 256
# Window parts more than this many windows behind the newest are sealed into arrays (24 bytes a
# part instead of a dict entry of ~250): an hour of 18 streams is 12 MB, not 130.
_KEEP_WINDOWS = 64
_SEAL_EVERY = 1024  # parts in the dict that trigger sealing


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

    def arrival_ns(self, rtp: float | np.ndarray) -> float | np.ndarray:
        """The session-clock instant (ns) of an unwrapped RTP time on the fitted line."""
        return self.offset_ns + (np.asarray(rtp) - self.rtp_origin) * self.ns_per_tick

    def rtp_at(self, arrival_ns: float) -> float:
        """The RTP time the sender's clock showed at a session-clock instant."""
        return self.rtp_origin + (arrival_ns - self.offset_ns) / self.ns_per_tick


class ClockEstimator:
    """Collects (unwrapped RTP time, arrival) pairs of one stream and fits its clock.

    window_seconds: the length of a window in seconds of the stream's RTP clock (1 s by
    default, rounded to a multiple of eight ticks); each eighth of a window keeps only its
    minimum-delay packet, so memory grows by at most eight points per window.
    """

    def __init__(self, clock_rate: int, window_seconds: float = 1.0) -> None:
        if clock_rate <= 0:
            raise SkymixError(f"clock rate must be positive, got {clock_rate}")
        self.clock_rate = clock_rate
        self._nominal = 1e9 / clock_rate
        window = max(1, round(window_seconds * clock_rate))
        self._parts = min(_PARTS, window)
        self._part = window // self._parts  # ticks of one part of a window
        self._origin: int | None = None
        self._origin_arrival = 0
        # per part of a window (ticks // part): its packet of least excess (arrival - expected
        # arrival at the nominal rate), earliest first on ties: (excess, rtp, arrival)
        self._minima: dict[int, tuple[float, int, int]] = {}
        self._windows: set[int] = set()  # the windows (part // parts) that saw a packet
        self._last_part: int | None = None  # the largest part key seen
        # parts below _sealed_below are in _sealed (key, rtp, arrival arrays, in key order); a
        # packet of such a part, over a minute late in RTP time, is not counted
        self._sealed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._sealed_below: int | None = None
        self._sealed_windows = 0

    def add(self, rtp: int, arrival_ns: int) -> None:
        """One observation: a packet (or frame) with unwrapped RTP time rtp arrived then."""
        if self._origin is None:
            self._origin, self._origin_arrival = rtp, arrival_ns
        ticks = rtp - self._origin
        excess = (arrival_ns - self._origin_arrival) - ticks * self._nominal
        key = ticks // self._part
        if self._sealed_below is not None and key < self._sealed_below:
            return
        best = self._minima.get(key)
        if best is None:
            self._minima[key] = (excess, rtp, arrival_ns)
            self._windows.add(key // self._parts)
            if self._last_part is None or key > self._last_part:
                self._last_part = key
        elif excess < best[0]:
            self._minima[key] = (excess, rtp, arrival_ns)
        if len(self._minima) > _SEAL_EVERY:
            self._seal()

    def _seal(self) -> None:
        """Move the parts far behind the newest out of the dict into compact arrays."""
        assert self._last_part is not None
        below = (self._last_part // self._parts - _KEEP_WINDOWS) * self._parts
        old = sorted(k for k in self._minima if k < below)
        if not old:
            return
        rows = [self._minima.pop(k) for k in old]
        self._sealed.append(
            (
                np.array(old, np.int64),
                np.array([r[1] for r in rows], np.int64),
                np.array([r[2] for r in rows], np.int64),
            )
        )
        windows = {w for w in self._windows if w * self._parts < below}
        self._windows -= windows
        self._sealed_windows += len(windows)
        self._sealed_below = below

    def add_batch(self, rtp: np.ndarray, arrival_ns: np.ndarray) -> None:
        """add() for each (rtp[i], arrival_ns[i]) in order, vectorised: the same state and fit.

        rtp: unwrapped RTP times, arrival_ns: arrivals, both one-dimensional int64 arrays of one
        length (other integer arrays are converted). Costs a few numpy passes over the batch and
        a little Python per window part it touches, none per packet.
        """
        rtps = np.asarray(rtp, dtype=np.int64)
        arrivals = np.asarray(arrival_ns, dtype=np.int64)
        if rtps.ndim != 1 or rtps.shape != arrivals.shape:
            raise SkymixError(
                f"add_batch needs two 1-d arrays of one length, got shapes "
                f"{rtps.shape} and {arrivals.shape}"
            )
        n = len(rtps)
        if n == 0:
            return
        if self._origin is None:
            self._origin, self._origin_arrival = int(rtps[0]), int(arrivals[0])
        ticks = rtps - self._origin
        # the same float operations as add(): int -> float64, then multiply, then subtract
        excess = (arrivals - self._origin_arrival).astype(np.float64) - ticks * self._nominal
        keys = ticks // self._part
        if self._sealed_below is not None and bool(np.any(keys < self._sealed_below)):
            live = keys >= self._sealed_below
            rtps, arrivals, excess, keys = rtps[live], arrivals[live], excess[live], keys[live]
            n = len(rtps)
            if n == 0:
                return
        order: np.ndarray | None = None
        if n > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
            order = np.argsort(keys, kind="stable")  # stable: ties stay in arrival order
            keys, excess = keys[order], excess[order]
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        least = np.minimum.reduceat(excess, starts)
        # each part's earliest packet of least excess (add() keeps the first of equals)
        index = np.arange(n)
        hit = np.where(excess == np.repeat(least, np.diff(np.append(starts, n))), index, n)
        first = np.minimum.reduceat(hit, starts)
        if order is not None:
            first = order[first]
        part_keys: list[int] = keys[starts].tolist()
        entries = list(zip(least.tolist(), rtps[first].tolist(), arrivals[first].tolist()))
        minima = self._minima
        # parts after every part seen so far are new (the usual case: RTP time goes forward)
        new_from = (
            0
            if self._last_part is None
            else int(np.searchsorted(keys[starts], self._last_part, side="right"))
        )
        for key, entry in zip(part_keys[:new_from], entries[:new_from]):
            best = minima.get(key)
            if best is None:
                minima[key] = entry
                self._windows.add(key // self._parts)
            elif entry[0] < best[0]:
                minima[key] = entry
        if new_from < len(part_keys):
            fresh = part_keys[new_from:]
            minima.update(zip(fresh, entries[new_from:]))
            self._windows.update((keys[starts[new_from:]] // self._parts).tolist())
            self._last_part = fresh[-1]
        if len(minima) > _SEAL_EVERY:
            self._seal()

    @property
    def points(self) -> int:
        """The number of windows that saw a packet (the most a fit can use)."""
        return self._sealed_windows + len(self._windows)

    def fit(self) -> ClockFit:
        """The lower-envelope line through the windows' minima (offset and drift)."""
        if self._origin is None:
            raise SkymixError("no packets to fit a clock to")
        recent = sorted(self._minima)  # canonical order, whatever order packets were added in
        rows = [self._minima[k] for k in recent]
        keys = np.concatenate([k for k, _, _ in self._sealed] + [np.array(recent, np.int64)])
        rtps = np.concatenate(
            [r for _, r, _ in self._sealed] + [np.array([r for _, r, _ in rows], np.int64)]
        )
        arrivals = np.concatenate(
            [a for _, _, a in self._sealed] + [np.array([a for _, _, a in rows], np.int64)]
        )
        parts = keys
        ticks = rtps - self._origin
        arrival = arrivals - self._origin_arrival
        x_all, y_all = ticks.astype(np.float64), arrival.astype(np.float64)
        window = keys // self._parts
        starts = np.flatnonzero(np.concatenate(([True], window[1:] != window[:-1])))
        index = np.arange(len(parts))
        slope = self._nominal
        picked: np.ndarray | None = None
        for _ in range(4):  # pick, fit, pick again against the fitted slope (settles in 2-3)
            # each window's point: its part of least arrival - line (first of equals)
            residual = y_all - slope * x_all
            least = np.minimum.reduceat(residual, starts)
            hit = np.where(
                residual == np.repeat(least, np.diff(np.append(starts, len(parts)))),
                index,
                len(parts),
            )
            pick = np.minimum.reduceat(hit, starts)
            if picked is not None and np.array_equal(pick, picked):
                break
            picked = pick
            slope, keep = _envelope_slope(x_all[pick], y_all[pick], self._nominal)
        assert picked is not None
        x, y = x_all[picked], y_all[picked]
        residual = y - slope * x
        # the envelope: the line through the fastest kept window
        intercept = float(np.min(residual[keep]))
        return ClockFit(
            rtp_origin=self._origin,
            offset_ns=self._origin_arrival + intercept,
            ns_per_tick=float(slope),
            clock_rate=self.clock_rate,
            drift_ppm=(self._nominal / float(slope) - 1.0) * 1e6,
            points=int(keep.sum()),
            jitter_ns=float(np.median(residual[keep] - intercept)),
        )


def _theil_sen(x: np.ndarray, y: np.ndarray) -> float:
    """The median of pairwise slopes (x strictly increasing, at least two points)."""
    n = len(x)
    if n <= _ALL_PAIRS:
        i, j = np.triu_indices(n, 1)
    else:
        i = np.arange(n - n // 2)
        j = i + n // 2
    return float(np.median((y[j] - y[i]) / (x[j] - x[i])))


def _envelope_slope(x: np.ndarray, y: np.ndarray, nominal: float) -> tuple[float, np.ndarray]:
    """The slope through the windows' points, and which windows it kept (not outliers)."""
    keep = np.ones(len(x), bool)
    if len(x) < 2:
        return nominal, keep
    slope = _theil_sen(x, y)
    for _ in range(10):
        residual = y - slope * x
        residual -= np.median(residual[keep])
        spread = max(1.4826 * float(np.median(np.abs(residual[keep]))), _MIN_SPREAD_NS)
        new_keep = np.abs(residual) <= _REJECT_SIGMAS * spread
        if new_keep.sum() < 2 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        slope = _theil_sen(x[keep], y[keep])
    if not slope > 0:  # arrivals going back as RTP time goes on: no clock to fit, keep nominal
        return nominal, keep
    bound = MAX_DRIFT_PPM * 1e-6  # drift_ppm = (nominal / slope - 1) * 1e6, held in +-bound
    return min(max(slope, nominal / (1.0 + bound)), nominal / (1.0 - bound)), keep


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
