"""The reference mix job end to end: skymix.mix against the ffmpeg command line, and the floor.

The job (the product issue's): a synthesized capture of 4 participants, 60 s, VP8 + Opus, cameras
of 640x480, 1280x720, 320x240 (15 fps, joins at 1.5 s) and 480x640 portrait (leaves at 45 s),
mixed into 1280x720 30 fps H.264 (libx264 veryfast, CRF 23, High, yuv420p) + AAC 128 kb/s, a 2x2
grid. Inputs are made once and cached (benchmarks/mixjob.py; the first run spends one to three
minutes synthesizing). Peers in the same run, one pytest-benchmark group:

- test_ffmpeg_cli: the `ffmpeg` command line doing the same job (mixjob.ffmpeg_command: per
  participant a .webm holding the same VP8 and Opus frames, stream-copied from the capture;
  scale + pad + fps + tpad per tile, xstack, amix normalize=0, the same encoder settings);
- test_skymix_mix: the `skymix mix` command line on the pcap and SDPs, in a fresh interpreter
  (imports and interpreter start are counted, as ffmpeg's start is);
- test_paired: the two command lines again, one after the other PAIRS times (each first in every
  other pair): the speed-up of each pair, whose median is the figure to quote (this machine's
  speed drifts by several per cent over minutes, which separate groups of rounds take in full
  and a pair hardly sees);
- test_floor: decode-only (every VP8 picture and Opus packet through PyAV's decoders, frames
  already depayloaded) plus encode-only (skymix's RecordingWriter, libx264 + AAC, on the peer's
  own composite read back raw), run one after the other.

Both mixers run as child processes pinned to two CPUs (CORES); their wall time is the benchmark
time, and the child's own user + system CPU time (os.wait4) and peak RSS are in extra_info.

How to read it: the issue's target is skymix wall <= ffmpeg wall / 1.3 on 2 cores
(`speedup_vs_ffmpeg` >= 1.3 in test_skymix_mix's extra_info). The floor is what no mixer can
beat with these codecs on these cores: (decode-only CPU + encode-only CPU) / 2, i.e. the two
necessary stages perfectly spread over both cores with compositing and mixing free
(`floor_s`; `floor_cli_s` is the same with the ffmpeg command line's own decode-only and
encode-only runs, whose libx264 is Debian's build, not PyAV's). `wall_over_floor` says how far
each mixer is from it. Ratios across tests are filled in when the tests run in one session, in
file order (ffmpeg, floor, skymix). The synthetic cameras show flat colours with a moving bar: the
encoder and decoders have less to do than with real cameras, so per-frame overheads (compositing,
Python) weigh more here than in a real call.

Run: .venv/bin/python -m pytest benchmarks/bench_mix_job.py -o python_files='bench_*.py' \
--benchmark-enable   (SKYMIX_BENCH_ROUNDS=N changes the rounds, default 3).
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mixjob import (  # noqa: E402
    composite_media,
    decode_only,
    encode_only,
    encode_only_command,
    ffmpeg_command,
    ffmpeg_decode_command,
    peer_inputs,
    read_frames,
    reference_job,
    run_measured,
    skymix_command,
    verify_output,
)

CORES = 2  # the machine; children are pinned to this many CPUs
ROUNDS = int(os.environ.get("SKYMIX_BENCH_ROUNDS", "3"))
PAIRS = int(os.environ.get("SKYMIX_BENCH_PAIRS", "5"))
TARGET = 1.3
GROUP = "mix job: 4 participants, 60 s, 720p30 x264 veryfast"
RESULTS: dict[str, dict[str, float]] = {}  # by test, for the ratios of later tests


@pytest.fixture(scope="module")
def job():
    return reference_job()


@pytest.fixture(scope="module")
def inputs(job):
    return peer_inputs(job)


@pytest.fixture(scope="module")
def composite(job, inputs):
    """The peer's output as raw pictures and sound (made once per job, kept in the cache)."""
    folder = job.dir / "floor"
    mp4 = folder / "peer.mp4"
    if not (folder / "composite.json").exists():
        folder.mkdir(exist_ok=True)
        run_measured(ffmpeg_command(inputs, mp4, duration=job.seconds), cpus=CORES).check()
    return composite_media(mp4, folder)


def measured(benchmark, args, prefix):
    """Run args ROUNDS times in a child on CORES CPUs; extra_info gets the medians."""
    runs = []

    def once():
        runs.append(run_measured(args, cpus=CORES).check())

    benchmark.pedantic(once, rounds=ROUNDS, warmup_rounds=0)
    wall = statistics.median(r.wall for r in runs)
    cpu = statistics.median(r.cpu for r in runs)
    peak = max(r.maxrss_mb for r in runs)
    benchmark.extra_info.update(
        {
            f"{prefix}_wall_s": round(wall, 3),
            f"{prefix}_cpu_s": round(cpu, 3),
            f"{prefix}_cpu_over_wall": round(cpu / wall, 2),
            f"{prefix}_peak_rss_mb": round(peak, 1),
            "rounds_wall_s": [round(r.wall, 3) for r in runs],
            "rounds_cpu_s": [round(r.cpu, 3) for r in runs],
        }
    )
    return {"wall": wall, "cpu": cpu, "peak_rss_mb": peak}


def check(benchmark, output, job, *, exact):
    seen = verify_output(output, job)
    frames = round(job.seconds * 30)
    benchmark.extra_info.update(
        {
            "output_frames": seen["frames"],
            "tiles_seen": seen["tiles"],
            "audio_seconds": round(seen["audio_seconds"], 3),
        }
    )
    assert seen["size"] == (1280, 720)
    if exact:
        assert seen["frames"] == frames
    else:
        assert abs(seen["frames"] - frames) <= 2, seen["frames"]
    assert seen["tiles"] == len(job.colors), seen
    assert abs(seen["audio_seconds"] - job.seconds) < 0.5


def test_ffmpeg_cli(benchmark, job, inputs, tmp_path):
    benchmark.group = GROUP
    output = tmp_path / "ffmpeg.mp4"
    RESULTS["ffmpeg"] = measured(
        benchmark, ffmpeg_command(inputs, output, duration=job.seconds), "ffmpeg"
    )
    check(benchmark, output, job, exact=True)
    floor = RESULTS.get("floor", {}).get("floor")
    if floor:
        benchmark.extra_info["wall_over_floor"] = round(RESULTS["ffmpeg"]["wall"] / floor, 2)


def test_floor(benchmark, job, inputs, composite, tmp_path):
    """Decode-only then encode-only, back to back; the benchmark time is their sequential wall."""
    benchmark.group = GROUP
    frames, _ = read_frames(job)
    yuv, pcm, count = composite
    assert count == round(job.seconds * 30)
    rounds = []

    def once():
        rounds.append((decode_only(frames), encode_only(yuv, pcm, tmp_path / "encode.mp4")))

    benchmark.pedantic(once, rounds=ROUNDS, warmup_rounds=0)
    decode = statistics.median(d["cpu_s"] for d, _ in rounds)
    encode = statistics.median(e["cpu_s"] for _, e in rounds)
    cli_decode = run_measured(ffmpeg_decode_command(inputs), cpus=CORES).check()
    cli_encode = run_measured(
        encode_only_command(yuv, pcm, tmp_path / "encode-cli.mp4"), cpus=CORES
    ).check()
    floor = (decode + encode) / CORES
    RESULTS["floor"] = {"floor": floor}
    info = {
        "decode_only_cpu_s": round(decode, 3),
        "decode_only_wall_s": round(statistics.median(d["wall_s"] for d, _ in rounds), 3),
        "decoded_pictures": rounds[0][0]["pictures"],
        "decoded_audio_s": round(rounds[0][0]["audio_seconds"], 2),
        "encode_only_cpu_s": round(encode, 3),
        "encode_only_wall_s": round(statistics.median(e["wall_s"] for _, e in rounds), 3),
        "floor_s": round(floor, 3),
        "decode_only_cpu_cli_s": round(cli_decode.cpu, 3),
        "encode_only_cpu_cli_s": round(cli_encode.cpu, 3),
        "floor_cli_s": round((cli_decode.cpu + cli_encode.cpu) / CORES, 3),
    }
    if "ffmpeg" in RESULTS:
        info["ffmpeg_wall_over_floor"] = round(RESULTS["ffmpeg"]["wall"] / floor, 2)
    benchmark.extra_info.update(info)


def test_skymix_mix(benchmark, job, tmp_path):
    skymix = pytest.importorskip("skymix")
    if not (hasattr(skymix, "mix") and hasattr(skymix, "MixOptions")):
        pytest.skip("skymix.mix / skymix.MixOptions are not written yet")
    benchmark.group = GROUP
    output = tmp_path / "skymix.mp4"
    RESULTS["skymix"] = mine = measured(benchmark, skymix_command(job, output), "skymix")
    check(benchmark, output, job, exact=False)
    peer = RESULTS.get("ffmpeg")
    floor = RESULTS.get("floor", {}).get("floor")
    if peer:
        speedup = peer["wall"] / mine["wall"]
        benchmark.extra_info.update(
            {
                "ffmpeg_wall_s": round(peer["wall"], 3),
                "speedup_vs_ffmpeg": round(speedup, 2),
                "cpu_ratio_ffmpeg_over_skymix": round(peer["cpu"] / mine["cpu"], 2),
                "target_speedup": TARGET,
                "target_met": speedup >= TARGET,
            }
        )
    if floor:
        benchmark.extra_info.update(
            {"floor_s": round(floor, 3), "wall_over_floor": round(mine["wall"] / floor, 2)}
        )


def test_paired(benchmark, job, inputs, tmp_path):
    """ffmpeg and skymix one after the other, PAIRS times; the benchmark time is a pair's."""
    benchmark.group = GROUP + ", paired"
    pairs = []

    def peer():
        return run_measured(
            ffmpeg_command(inputs, tmp_path / "ffmpeg.mp4", duration=job.seconds), cpus=CORES
        ).check()

    def mine():
        return run_measured(skymix_command(job, tmp_path / "skymix.mp4"), cpus=CORES).check()

    def once():  # each goes first in every other pair: a run after another is a little slower
        if len(pairs) % 2:
            second = mine()
            pairs.append((peer(), second))
        else:
            first = peer()
            pairs.append((first, mine()))

    benchmark.pedantic(once, rounds=PAIRS, warmup_rounds=0)
    check(benchmark, tmp_path / "skymix.mp4", job, exact=False)
    ratios = [peer.wall / mine.wall for peer, mine in pairs]
    speedup = statistics.median(ratios)
    benchmark.extra_info.update(
        {
            "pairs_ffmpeg_wall_s": [round(p.wall, 3) for p, _ in pairs],
            "pairs_skymix_wall_s": [round(m.wall, 3) for _, m in pairs],
            "pairs_speedup": [round(r, 3) for r in ratios],
            "ffmpeg_wall_s": round(statistics.median(p.wall for p, _ in pairs), 3),
            "skymix_wall_s": round(statistics.median(m.wall for _, m in pairs), 3),
            "ffmpeg_cpu_s": round(statistics.median(p.cpu for p, _ in pairs), 3),
            "skymix_cpu_s": round(statistics.median(m.cpu for _, m in pairs), 3),
            "speedup_vs_ffmpeg": round(speedup, 3),
            "target_speedup": TARGET,
            "target_met": speedup >= TARGET,
        }
    )
