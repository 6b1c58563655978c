"""Clock-fit ingest speed: ClockEstimator.add per packet against add_batch, on 100,000 packets.

The packets: a 20 ms audio stream (48 kHz, about 33 min) and a 30 fps video stream of 1-4
packets a frame (90 kHz), both paced on a 10 ms grid with queueing, bursts and congestion
(tests/test_sync.py paced_sender), drifting 300 ppm. Peers in one group per stream:
- add: one ClockEstimator.add call a packet, as scan_room feeds it (Python ints, made outside
  the timed call);
- add_batch (all): the whole array in one call;
- add_batch (2000): slices of 2000 packets, as a batch ingest path hands them over.
Each timed call starts from a fresh estimator; fit() is not timed (once per stream). Rates are
printed as extra_info (ns per packet). Run:
    pytest benchmarks/bench_sync.py -o python_files='bench_*.py' --benchmark-enable
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from skymix.sync import ClockEstimator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_sync import paced_sender

PACKETS = 100_000


@pytest.fixture(scope="module", params=["audio", "video"])
def stream(request):
    kind = request.param
    seconds = PACKETS / 50 + 5 if kind == "audio" else PACKETS / 75 + 5
    rtp, arrival, _, rate = paced_sender(kind, 300.0, seconds, seed=1)
    assert len(rtp) >= PACKETS
    return kind, rate, rtp[:PACKETS].copy(), arrival[:PACKETS].copy()


def per_packet(rate, rtp_list, arrival_list):
    est = ClockEstimator(rate)
    add = est.add
    for r, a in zip(rtp_list, arrival_list):
        add(r, a)
    return est


def batched(rate, rtp, arrival, size):
    est = ClockEstimator(rate)
    for lo in range(0, len(rtp), size):
        est.add_batch(rtp[lo : lo + size], arrival[lo : lo + size])
    return est


def report(benchmark):
    benchmark.extra_info["ns_per_packet"] = round(benchmark.stats.stats.min / PACKETS * 1e9, 1)


def test_add_per_packet(benchmark, stream):
    kind, rate, rtp, arrival = stream
    benchmark.group = f"clock ingest, {kind}"
    est = benchmark(per_packet, rate, rtp.tolist(), arrival.tolist())
    report(benchmark)
    assert est.fit() == batched(rate, rtp, arrival, PACKETS).fit()


@pytest.mark.parametrize("size", [PACKETS, 2000], ids=["all", "2000"])
def test_add_batch(benchmark, stream, size):
    kind, rate, rtp, arrival = stream
    benchmark.group = f"clock ingest, {kind}"
    est = benchmark(batched, rate, rtp, arrival, size)
    report(benchmark)
    assert est.points > 0
