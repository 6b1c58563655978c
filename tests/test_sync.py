"""Clock fitting: a sender's media clock mapped onto the relay's, through jitter and bursts."""

from __future__ import annotations

import numpy as np
import pytest

from skymix import SkymixError
from skymix.sync import ClockEstimator, SenderClock


def simulate(drift_ppm, seconds, rate=48000, step=960, seed=0, burst_every=None):
    """Packets every `step` ticks of a sender clock running drift_ppm fast; arrivals on the
    relay clock with a 30 ms base delay, exponential jitter and occasional bursts."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate / step)
    rtp = 123456789 + np.arange(n, dtype=np.int64) * step
    true_send_ns = 5e9 + (rtp - rtp[0]) * (1e9 / rate) / (1 + drift_ppm * 1e-6)
    delay = 30e6 + rng.exponential(8e6, n)
    if burst_every:
        for start in range(0, n, burst_every):  # the network holds packets, then releases them
            hold = slice(start, start + 40)
            delay[hold] += np.linspace(400e6, 0, len(delay[hold]))
    return rtp, (true_send_ns + delay).astype(np.int64), true_send_ns + 30e6


@pytest.mark.parametrize("drift_ppm", [-300.0, 0.0, 120.0, 300.0])
def test_hour_long_stream_stays_within_a_millisecond(drift_ppm):
    rtp, arrival, ideal = simulate(drift_ppm, 3600, burst_every=5000, seed=int(drift_ppm) & 7)
    est = ClockEstimator(48000)
    for r, a in zip(rtp, arrival):
        est.add(int(r), int(a))
    fit = est.fit()
    assert abs(fit.drift_ppm - drift_ppm) < 2.0
    error = fit.arrival_ns(rtp) - ideal  # the fitted line vs the minimum-delay path
    assert np.abs(error).max() < 1e6
    assert est.points <= 3601  # one point per second, however long the stream


def test_video_frames_of_many_packets():
    rng = np.random.default_rng(3)
    frames = 30 * 120
    rtp = np.arange(frames, dtype=np.int64) * 3000
    send = 1e12 + rtp * (1e9 / 90000) / (1 + 250e-6)
    # a frame's packets leave in a burst: the first one is the fastest
    arrival = send + 20e6 + rng.exponential(5e6, frames) + rng.integers(0, 3, frames) * 4e6
    est = ClockEstimator(90000)
    for r, a in zip(rtp, arrival):
        est.add(int(r), int(a))
    fit = est.fit()
    assert abs(fit.drift_ppm - 250) < 5
    assert np.abs(fit.arrival_ns(rtp) - (send + 20e6)).max() < 2e6
    assert abs(fit.rtp_at(float(fit.arrival_ns(rtp[100]))) - rtp[100]) < 1


def test_no_packets_is_an_error():
    with pytest.raises(SkymixError, match="no packets"):
        ClockEstimator(48000).fit()
    with pytest.raises(SkymixError, match="clock rate must be positive"):
        ClockEstimator(0)


def test_sender_reports_tie_audio_and_video_of_one_sender():
    # one sender: NTP clock 7.5 s ahead, both media clocks from it; reports with ms rounding
    # and an RTP time up to a frame off (as FFmpeg writes them)
    rng = np.random.default_rng(9)
    ntp = 3.9e9 + 7.5 + np.arange(0, 60, 5.0)
    audio = [(round(t, 3), int((t - ntp[0]) * 48000 + 1000 + rng.integers(0, 960))) for t in ntp]
    video = [(round(t, 3), int((t - ntp[0]) * 90000 + 5000 + rng.integers(0, 3000))) for t in ntp]
    a, v = SenderClock.from_reports(audio), SenderClock.from_reports(video)
    # the same instant: 30 s after the first report
    t = ntp[0] + 30
    assert abs(a.ntp_of(int(a.rtp_of(t, 48000)), 48000) - t) < 1e-4
    lip = a.rtp_of(v.ntp_of(int(v.rtp_of(t, 90000)), 90000), 48000) - a.rtp_of(t, 48000)
    assert abs(lip) / 48000 < 0.02  # within a video frame, given reports a frame off
    single = SenderClock.from_reports([(100.0, 5000)])
    assert single.ntp_of(5000 + 48000, 48000) == pytest.approx(101.0)
