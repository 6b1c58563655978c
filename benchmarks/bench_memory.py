"""skymix.mix's memory over long sessions, and its cost per participant against the ffmpeg CLI.

Peak RSS (the product issue: a 60-minute 9-participant session in at most 400 MB, not growing
with duration). The session: 9 participants (VP8 + Opus; cameras 640x480, 1280x720, 320x240 at
15 fps, 480x640 portrait, in turn), 20 s synthesized once, everyone present throughout, then
repeated with advancing sequence numbers, RTP timestamps, RTCP sender reports and arrival times
(benchmarks/mixjob.py repeated_job) to 10 and to 60 minutes. Each mix runs in a fresh interpreter
whose own peak RSS (ru_maxrss via os.wait4) is the result (extra_info `peak_rss_mb`); the
60-minute test also reports `growth_mb` over the 10-minute one, which should be about 0.
test_peak_rss_reference is the floor under those numbers: a fresh interpreter that only imports
skymix, numpy and PyAV (the asv peakmem_reference idea).

The memory runs use the reference job's encode settings (1280x720 30 fps, x264 veryfast CRF 23,
AAC 128k), so the 60-minute run encodes 108,000 frames: the 10-minute run took 154 s on the
2-core benchmark machine, the 60-minute one takes about six times that. To shorten
it, SKYMIX_BENCH_MEMORY_ENCODE='{"preset": "ultrafast"}' (any EncodeSettings fields, JSON) and
SKYMIX_BENCH_MEMORY_MINUTES=10,60 change what is run; the settings used are in extra_info. A
faster preset or smaller frame lowers the encoder's share of the peak, so the 400 MB target is
read from a run at the reference settings.

Cost per participant (docs/performance.md's table): the same job at 2, 4, 9, 16 and 25
participants, 20 s each (everyone present throughout), in skymix's grid (2 side by side, 2x2,
3x3, 4x4, 5x5 in 1280x720), once by skymix.mix and once by the ffmpeg command line with xstack in
the same grid (mixjob.ffmpeg_command), both children pinned to 2 CPUs. extra_info: wall, CPU,
wall per participant and, for skymix, ffmpeg's wall over skymix's.

Run: .venv/bin/python -m pytest benchmarks/bench_memory.py -o python_files='bench_*.py' \
--benchmark-enable   (the first run synthesizes the captures, 9 + 2 + 4 + 16 + 25 participants
of 20 s: 5 to 13 minutes depending on load, then cached; repeating to 10 and 60 minutes: 15 s).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from skymix.encode import EncodeSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mixjob import (  # noqa: E402
    ffmpeg_command,
    output_info,
    peer_inputs,
    repeated_job,
    run_measured,
    skymix_command,
    synth_job,
    verify_output,
)

CORES = 2
BASE_SECONDS = 20.0
MEMORY_PARTICIPANTS = 9
MINUTES = [int(m) for m in os.environ.get("SKYMIX_BENCH_MEMORY_MINUTES", "10,60").split(",")]
MEMORY_ENCODE = EncodeSettings(**json.loads(os.environ.get("SKYMIX_BENCH_MEMORY_ENCODE", "{}")))
TARGET_MB = 400
PARTICIPANTS = [2, 4, 9, 16, 25]
COST_SECONDS = 20.0
RESULTS: dict[object, dict[str, float]] = {}


def need_mix():
    skymix = pytest.importorskip("skymix")
    if not (hasattr(skymix, "mix") and hasattr(skymix, "MixOptions")):
        pytest.skip("skymix.mix / skymix.MixOptions are not written yet")


def steady(count: int, seconds: float):
    return synth_job(count, seconds, steady=True)


def test_peak_rss_reference(benchmark):
    """A fresh interpreter importing what the mix imports, and doing nothing."""
    benchmark.group = "peak RSS: 9 participants"
    code = "import numpy, av, skymix, skymix.encode, skymix.streams.room, skymix.layout"
    runs = []
    benchmark.pedantic(
        lambda: runs.append(run_measured([sys.executable, "-c", code]).check()), rounds=3
    )
    benchmark.extra_info["peak_rss_mb"] = round(max(r.maxrss_mb for r in runs), 1)


@pytest.mark.parametrize("minutes", MINUTES)
def test_peak_rss(benchmark, minutes, tmp_path):
    need_mix()
    benchmark.group = "peak RSS: 9 participants"
    base = steady(MEMORY_PARTICIPANTS, BASE_SECONDS)
    job = repeated_job(base, round(minutes * 60 / BASE_SECONDS))
    output = tmp_path / "long.mp4"
    runs = []
    benchmark.pedantic(
        lambda: runs.append(
            run_measured(skymix_command(job, output, MEMORY_ENCODE), cpus=CORES).check()
        ),
        rounds=1,
    )
    run = runs[0]
    info = output_info(output)
    frames = round(job.seconds * MEMORY_ENCODE.fps)
    RESULTS[("rss", minutes)] = {"peak_rss_mb": run.maxrss_mb}
    benchmark.extra_info.update(
        {
            "minutes": minutes,
            "participants": MEMORY_PARTICIPANTS,
            "peak_rss_mb": round(run.maxrss_mb, 1),
            "target_mb": TARGET_MB,
            "target_met": run.maxrss_mb <= TARGET_MB,
            **run.info("skymix"),
            "encode": dataclasses.asdict(MEMORY_ENCODE),
            "output_frames": info.get("frames"),
        }
    )
    shortest = min(MINUTES)
    if minutes != shortest and ("rss", shortest) in RESULTS:
        growth = run.maxrss_mb - RESULTS[("rss", shortest)]["peak_rss_mb"]
        benchmark.extra_info.update({"growth_mb": round(growth, 1), "growth_vs_minutes": shortest})
    assert abs(info.get("frames", 0) - frames) <= 2 * minutes, info


def cost_job(count: int):
    return steady(count, COST_SECONDS)


def record(benchmark, run, count, key):
    RESULTS[(key, count)] = {"wall": run.wall, "cpu": run.cpu}
    benchmark.extra_info.update(
        {
            "participants": count,
            **run.info(key),
            "wall_per_participant_s": round(run.wall / count, 3),
        }
    )


def check(output, job, *, exact):
    seen = verify_output(output, job)
    frames = round(job.seconds * 30)
    assert seen["size"] == (1280, 720)
    assert seen["frames"] == frames if exact else abs(seen["frames"] - frames) <= 2, seen
    assert seen["tiles"] == len(job.colors), seen


@pytest.mark.parametrize("count", PARTICIPANTS)
def test_participants_ffmpeg_cli(benchmark, count, tmp_path):
    benchmark.group = f"mix {count} participants, {COST_SECONDS:g} s"
    job = cost_job(count)
    inputs = peer_inputs(job)
    output = tmp_path / "ffmpeg.mp4"
    args = ffmpeg_command(inputs, output, duration=job.seconds)
    runs = []
    benchmark.pedantic(lambda: runs.append(run_measured(args, cpus=CORES).check()), rounds=1)
    record(benchmark, runs[0], count, "ffmpeg")
    check(output, job, exact=True)


@pytest.mark.parametrize("count", PARTICIPANTS)
def test_participants_skymix(benchmark, count, tmp_path):
    need_mix()
    benchmark.group = f"mix {count} participants, {COST_SECONDS:g} s"
    job = cost_job(count)
    output = tmp_path / "skymix.mp4"
    runs = []
    benchmark.pedantic(
        lambda: runs.append(run_measured(skymix_command(job, output), cpus=CORES).check()), rounds=1
    )
    record(benchmark, runs[0], count, "skymix")
    peer = RESULTS.get(("ffmpeg", count))
    if peer:
        benchmark.extra_info["speedup_vs_ffmpeg"] = round(peer["wall"] / runs[0].wall, 2)
    check(output, job, exact=False)
