"""Inputs and peers of the end-to-end mix benchmarks (bench_mix_job.py, bench_memory.py).

Everything here is made once and kept on disk under SKYMIX_BENCH_CACHE (default
.benchmarks/cache), keyed by the job's parameters, so a second run of a benchmark does not spend
minutes re-encoding its captures (the key does not follow skymix.synth's code: after a change
there that matters, empty the cache or bump JOB_VERSION):

- a job (``reference_job``, ``synth_job``): a synthesized capture (pcap, one SDP per participant,
  truth file) of N VP8 + Opus participants, from skymix.synth with real encoders and aiortc's
  packetizers; the reference job is the product issue's: 4 participants, 60 s, 640x480, 1280x720,
  320x240 (15 fps, joins at 1.5 s) and 480x640 portrait (leaves at 45 s);
- a long job (``repeated_job``): a short capture repeated with every stream's sequence numbers,
  RTP timestamps, arrival times and RTCP sender reports moved on by one repetition each time, so
  the repetitions join seamlessly (a 60-minute session from 20 s of synthesis);
- the peer's inputs (``peer_inputs``): per participant one .webm holding the very VP8 and Opus
  frames skymix reads from the capture (scan_room's EncodedFrames, stream-copied, no re-encode),
  timestamped from the RTP timestamps, each stream starting at its first arrival in the session;
- the peer (``ffmpeg_command``): the FFmpeg command line doing the mix job from those files.

``run_measured`` runs a command in a child process and returns its wall time, its CPU time and
its peak RSS: that program's own numbers (os.wait4 in a small spawner process, since Linux
would count a large parent's memory in a direct child's ru_maxrss). skymix is timed as people run
it, the ``skymix mix`` command line in a fresh process, interpreter start and imports included, as
the ffmpeg command line is.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from skymix.encode import EncodeSettings, RecordingWriter
from skymix.ingest import read_capture
from skymix.layout import GridSpec, compute_layout
from skymix.session import SessionSpec, load_description
from skymix.streams.assembler import EncodedFrame
from skymix.streams.room import scan_room
from skymix.synth import PcapWriter, SynthParticipant, preset, synthesize

__all__ = [
    "CACHE",
    "REFERENCE_SIZES",
    "FrameSets",
    "Job",
    "PeerInput",
    "Run",
    "composite_media",
    "decode_only",
    "encode_only",
    "encode_only_command",
    "ffmpeg_command",
    "ffmpeg_decode_command",
    "grid_rects",
    "job_participants",
    "output_info",
    "peer_inputs",
    "read_frames",
    "reference_job",
    "repeated_job",
    "run_measured",
    "skymix_command",
    "synth_job",
    "verify_output",
]

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SKYMIX_BENCH_CACHE", ROOT / ".benchmarks" / "cache"))
REFERENCE_SIZES = ((640, 480), (1280, 720), (320, 240), (480, 640))
CANVAS = (1280, 720)
FPS = 30
VIDEO_CLOCK, AUDIO_CLOCK = 90000, 48000
VIDEO_PT, AUDIO_PT, RTX_PT = 96, 111, 97  # what skymix.synth sends
JOB_VERSION = 1  # bump when what a job holds changes (or empty the cache after synth changes)


# --- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """A capture on disk: one pcap, one SDP per participant (in order), the synth truth file."""

    dir: Path
    pcap: Path
    sdps: tuple[tuple[str, Path], ...]
    seconds: float
    colors: tuple[tuple[int, int, int], ...]
    truth: Path

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.sdps]

    def sdp_args(self) -> list[str]:
        return [f"{name}={path}" for name, path in self.sdps]

    def description(self) -> SessionSpec:
        return load_description(self.sdp_args())

    def to_json(self) -> dict[str, object]:
        return {
            "pcap": self.pcap.name,
            "sdps": [[n, p.name] for n, p in self.sdps],
            "seconds": self.seconds,
            "colors": [list(c) for c in self.colors],
            "truth": self.truth.name,
        }

    @classmethod
    def load(cls, folder: Path) -> Job:
        data = json.loads((folder / "job.json").read_text())
        return cls(
            folder,
            folder / data["pcap"],
            tuple((n, folder / p) for n, p in data["sdps"]),
            float(data["seconds"]),
            tuple(tuple(c) for c in data["colors"]),
            folder / data["truth"],
        )


def job_participants(
    count: int,
    seconds: float,
    sizes: Sequence[tuple[int, int]] = REFERENCE_SIZES,
    *,
    steady: bool = False,
) -> list[SynthParticipant]:
    """skymix.synth's preset (names, colours, tones, clocks apart and drifting, a 15 fps sender,
    a late joiner, one who leaves at 3/4 of the call) with every camera VP8 and sizes taken from
    `sizes` in turn. steady: everyone present from start to end (for repeated captures, where a
    leaver would leave and come back every repetition)."""
    people = []
    for i, p in enumerate(preset(count, seconds)):
        changes: dict[str, object] = {"video_codec": "vp8", "size": tuple(sizes[i % len(sizes)])}
        if steady:
            changes.update(joins_at=0.0, leaves_at=None)
        people.append(dataclasses.replace(p, **changes))
    return people


def _cached(key: str, make: Callable[[Path], None]) -> Path:
    """CACHE/key, made by make(scratch folder) unless there already; renamed into place whole."""
    folder = CACHE / key
    if (folder / "job.json").exists():
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=CACHE))
    try:
        make(scratch)
        if folder.exists():  # made meanwhile by another run, or left half-made: replace it
            shutil.rmtree(folder)
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def synth_job(
    participants: int = 4,
    seconds: float = 60.0,
    sizes: Sequence[tuple[int, int]] = REFERENCE_SIZES,
    *,
    seed: int = 7,
    steady: bool = False,
) -> Job:
    """A synthesized VP8 + Opus call without network damage, made once and cached."""
    people = job_participants(participants, seconds, sizes, steady=steady)
    tag = "_".join(f"{w}x{h}" for w, h in sizes)
    key = f"job{JOB_VERSION}-n{participants}-{seconds:g}s-{tag}-seed{seed}" + (
        "-steady" if steady else ""
    )

    def make(folder: Path) -> None:
        made = synthesize(people, seconds, folder, seed=seed)
        job = Job(
            folder,
            made.pcap,
            tuple((p.name, sdp) for p, sdp in zip(people, made.sdps)),
            seconds,
            tuple(p.color for p in people),
            made.truth,
        )
        (folder / "job.json").write_text(json.dumps(job.to_json()))

    return Job.load(_cached(key, make))


def reference_job(
    participants: int = 4,
    seconds: float = 60.0,
    sizes: Sequence[tuple[int, int]] = REFERENCE_SIZES,
    *,
    seed: int = 7,
) -> Job:
    """The product issue's reference job (defaults): 4 participants, 60 s, mixed sizes, VP8 +
    Opus. Synthesizing it takes 67 s of one core (more on a busy machine); later calls find it
    in the cache."""
    return synth_job(participants, seconds, sizes, seed=seed)


def _rtp_clock(data: bytes | bytearray) -> int:
    return AUDIO_CLOCK if data[1] & 0x7F == AUDIO_PT else VIDEO_CLOCK


def _is_rtp(data: bytes | bytearray) -> bool:
    return len(data) >= 12 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223


def _is_sender_report(data: bytes | bytearray) -> bool:
    return len(data) >= 28 and 128 <= data[0] < 192 and data[1] == 200


def repeated_job(base: Job, repeats: int) -> Job:
    """`base` played `repeats` times in a row as one capture, made once and cached.

    Each stream's sequence numbers are advanced by its own span (max - min + 1, unwrapped) per
    repetition, so repetition k + 1 starts where k ended; RTP timestamps and the NTP and RTP
    times of RTCP sender reports by one repetition (base.seconds) of the sender's clock, which
    runs drift_ppm fast (from the synth truth file): the sender clocks stay straight lines over
    the whole capture, as a real sender's would. Arrival times move on by base.seconds.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    key = f"{base.dir.name}-x{repeats}"

    def make(folder: Path) -> None:
        truth = json.loads(base.truth.read_text())
        drift: dict[int, float] = {}
        for p in truth["participants"]:
            for kind in ("video", "audio"):
                stream = p.get(kind) or {}
                for ssrc in list(stream.get("ssrcs", [])) + list(stream.get("rtx_ssrcs", [])):
                    drift[ssrc] = p["drift_ppm"] * 1e-6
        records = list(read_capture(base.pcap))
        spans: dict[int, tuple[int, int]] = {}
        last: dict[int, int] = {}
        for d in records:
            if _is_rtp(d.data):
                seq = struct.unpack_from("!H", d.data, 2)[0]
                ssrc = struct.unpack_from("!I", d.data, 8)[0]
                prev = last.get(ssrc)
                seq = seq if prev is None else prev + ((seq - prev + 0x8000) & 0xFFFF) - 0x8000
                last[ssrc] = seq
                low, high = spans.get(ssrc, (seq, seq))
                spans[ssrc] = (min(low, seq), max(high, seq))
        step_ns = round(base.seconds * 1e9)

        def repetition(k: int) -> Iterator[tuple[int, int, object, object, bytes]]:
            for order, d in enumerate(records):
                data = bytearray(d.data)
                if _is_rtp(data):
                    seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
                    low, high = spans[ssrc]
                    sender_s = k * base.seconds * (1 + drift.get(ssrc, 0.0))
                    struct.pack_into(
                        "!HI",
                        data,
                        2,
                        (seq + (high - low + 1) * k) & 0xFFFF,
                        (ts + round(sender_s * _rtp_clock(data))) & 0xFFFFFFFF,
                    )
                elif _is_sender_report(data):
                    ssrc, ntp, rtp = struct.unpack_from("!IQI", data, 4)
                    sender_s = k * base.seconds * (1 + drift.get(ssrc, 0.0))
                    clock = AUDIO_CLOCK if _sender_is_audio(truth, ssrc) else VIDEO_CLOCK
                    struct.pack_into(
                        "!QI",
                        data,
                        8,
                        ntp + round(sender_s * (1 << 32)),
                        (rtp + round(sender_s * clock)) & 0xFFFFFFFF,
                    )
                yield (
                    d.arrival_ns + k * step_ns,
                    order,
                    (d.src.host, d.src.port),
                    (d.dst.host, d.dst.port),
                    bytes(data),
                )

        pcap = folder / "synth.pcap"
        with PcapWriter(pcap) as writer:
            # a repetition's last packets may arrive after the next one's first: merge by arrival
            for arrival, _, src, dst, data in heapq.merge(*(repetition(k) for k in range(repeats))):
                writer.write(arrival, src, dst, data)
        sdps = []
        for name, sdp in base.sdps:
            shutil.copy(sdp, folder / sdp.name)
            sdps.append((name, folder / sdp.name))
        shutil.copy(base.truth, folder / base.truth.name)
        job = Job(
            folder, pcap, tuple(sdps), base.seconds * repeats, base.colors, folder / base.truth.name
        )
        (folder / "job.json").write_text(json.dumps(job.to_json()))

    return Job.load(_cached(key, make))


def _sender_is_audio(truth: dict[str, Any], ssrc: int) -> bool:
    return any(ssrc in (p.get("audio") or {}).get("ssrcs", []) for p in truth["participants"])


# --- the peer's inputs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerInput:
    """One participant's media as a file FFmpeg reads, and where its streams start in the session
    (seconds from the capture's first packet). FFmpeg shifts each input file to start at 0 and
    xstack/amix ignore where inputs start, so the command line delays each stream itself."""

    name: str
    path: Path
    size: tuple[int, int]
    video_start: float | None
    audio_start: float | None
    video_frames: int
    audio_frames: int


FrameSets = dict[tuple[str, str], list[EncodedFrame]]


def read_frames(job: Job) -> tuple[FrameSets, int]:
    """Every depayloaded frame of the capture by (participant, kind), and the capture's start
    (relay clock, ns): one scan_room pass, as the mix makes it."""
    frames: FrameSets = {}
    scan = scan_room(
        [job.pcap],
        job.description(),
        on_frame=lambda pid, kind, f: frames.setdefault((pid, kind), []).append(f),
    )
    if scan.problems or scan.start_ns is None:
        raise RuntimeError(f"{job.pcap}: {scan.problems[:3]}")
    return frames, scan.start_ns


def peer_inputs(job: Job) -> list[PeerInput]:
    """Per participant <name>.webm: its VP8 and Opus frames stream-copied (no re-encode), pts
    from the unwrapped RTP timestamps (1/90000, 1/48000; the WebM muxer keeps milliseconds),
    each stream's first frame at its first arrival in the session. Made once, next to the job."""
    folder = job.dir / "peer"
    manifest = folder / "inputs.json"
    if manifest.exists():
        return [
            PeerInput(**{**entry, "path": folder / entry["path"], "size": tuple(entry["size"])})
            for entry in json.loads(manifest.read_text())
        ]
    frames, start_ns = read_frames(job)
    scratch = Path(tempfile.mkdtemp(prefix=".peer-", dir=job.dir))
    inputs = []
    for name in job.names:
        video, audio = frames.get((name, "video"), []), frames.get((name, "audio"), [])
        path = scratch / f"{name}.webm"
        starts = _write_webm(path, video, audio, start_ns)
        first = next((f for f in video if f.width), None)
        inputs.append(
            PeerInput(
                name,
                folder / path.name,
                (first.width, first.height) if first else (0, 0),
                starts[0],
                starts[1],
                len(video),
                len(audio),
            )
        )
    (scratch / "inputs.json").write_text(
        json.dumps([{**dataclasses.asdict(i), "path": i.path.name} for i in inputs])
    )
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
    return inputs


def _write_webm(
    path: Path, video: list[EncodedFrame], audio: list[EncodedFrame], start_ns: int
) -> tuple[float | None, float | None]:
    """Mux one participant's frames; returns where video and audio start (s into the session)."""
    out = av.open(str(path), "w", format="webm")
    items: list[tuple[float, int, EncodedFrame]] = []
    streams: list[object] = []
    starts: list[float | None] = []
    for kind, frames in ((0, video), (1, audio)):
        if not frames:
            streams.append(None)
            starts.append(None)
            continue
        clock = VIDEO_CLOCK if kind == 0 else AUDIO_CLOCK
        begin = (frames[0].first_arrival_ns - start_ns) / 1e9
        starts.append(begin)
        if kind == 0:
            first = next(f for f in frames if f.width)
            step = (
                float(np.median(np.diff([f.timestamp for f in frames])))
                if len(frames) > 1
                else VIDEO_CLOCK / FPS
            )
            stream = out.add_mux_stream(
                "vp8",
                rate=Fraction(round(VIDEO_CLOCK / step)),
                width=first.width,
                height=first.height,
            )
        else:
            stream = out.add_stream("libopus", rate=AUDIO_CLOCK)  # its OpusHead goes in the header
            stream.layout = "stereo"
        streams.append(stream)
        items += [(begin + (f.timestamp - frames[0].timestamp) / clock, kind, f) for f in frames]
    items.sort(key=lambda item: (item[0], item[1]))
    for seconds, kind, f in items:
        clock = VIDEO_CLOCK if kind == 0 else AUDIO_CLOCK
        packet = av.Packet(f.data)
        packet.stream = streams[kind]
        packet.time_base = Fraction(1, clock)
        packet.pts = packet.dts = round(seconds * clock)
        packet.is_keyframe = bool(f.keyframe)
        out.mux(packet)
    out.close()
    return starts[0], starts[1]


# --- the peer: the ffmpeg command line ---------------------------------------------------------


def grid_rects(count: int, canvas: tuple[int, int] = CANVAS) -> list[tuple[int, int, int, int]]:
    """skymix's grid (skymix.layout, GridSpec()) for `count` participants: (x, y, w, h) each."""
    layout = compute_layout(canvas, [(f"p{i}", True) for i in range(count)], None, GridSpec())
    return [(p.rect.x, p.rect.y, p.rect.w, p.rect.h) for p in layout.placements]


def ffmpeg_command(
    inputs: Sequence[PeerInput],
    output: str | Path,
    *,
    duration: float,
    canvas: tuple[int, int] = CANVAS,
    fps: int = FPS,
    crf: int = 23,
    preset: str = "veryfast",
    threads: int = 0,
    audio_bitrate: int = 128_000,
) -> list[str]:
    """The mix job as one ffmpeg command line: the peer.

    Tiles in join order at skymix's grid positions (grid_rects). Each video: timestamps from 0,
    scale into its tile keeping the aspect (area averaging, as the compositor's peer in
    bench_compose), pad to the tile, 30 fps, black before it starts and after it ends (tpad),
    then all into one picture with xstack (and pad to the canvas if the grid does not reach its
    edges). Each audio: delayed to its start, then amix without normalisation (normalize=0: the
    sum, as skymix mixes). libx264 (`preset`, CRF, High, yuv420p, `threads` as skymix's
    EncodeSettings.threads: 0 is x264's automatic count), AAC at `audio_bitrate`, faststart,
    `duration` seconds.
    """
    ordered = sorted(range(len(inputs)), key=lambda i: (inputs[i].video_start or 0.0, i))
    rects = grid_rects(len(inputs), canvas)
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    for item in inputs:
        args += ["-i", str(item.path)]
    chains, tiles, positions, sounds = [], [], [], []
    for slot, i in enumerate(ordered):
        item = inputs[i]
        x, y, w, h = rects[slot]
        if item.video_start is not None:
            chains.append(
                f"[{i}:v]setpts=PTS-STARTPTS,"
                f"scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2"
                f":flags=area,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:black,fps={fps},"
                f"tpad=start_duration={item.video_start:.3f}:stop=-1:color=black[v{slot}]"
            )
        else:
            chains.append(f"color=black:size={w}x{h}:rate={fps}[v{slot}]")
        tiles.append(f"[v{slot}]")
        positions.append(f"{x}_{y}")
        if item.audio_start is not None:
            delay = round(item.audio_start * 1000)
            chains.append(f"[{i}:a]asetpts=PTS-STARTPTS,adelay=delays={delay}:all=1[a{slot}]")
            sounds.append(f"[a{slot}]")
    width = max(x + w for x, _, w, _ in rects)
    height = max(y + h for _, y, _, h in rects)
    fill = "" if (width, height) == canvas else f",pad={canvas[0]}:{canvas[1]}:0:0:black"
    if len(tiles) == 1:
        x, y, _, _ = rects[0]
        chains.append(f"{tiles[0]}pad={canvas[0]}:{canvas[1]}:{x}:{y}:black[v]")
    else:
        chains.append(
            f"{''.join(tiles)}xstack=inputs={len(tiles)}:layout={'|'.join(positions)}"
            f":fill=black{fill}[v]"
        )
    if sounds:
        chains.append(
            f"{''.join(sounds)}amix=inputs={len(sounds)}:normalize=0:duration=longest"
            f":dropout_transition=0[a]"
        )
    args += ["-filter_complex", ";".join(chains), "-map", "[v]"]
    args += ["-map", "[a]"] if sounds else []
    args += [
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(crf),
        "-profile:v",
        "high",
        "-pix_fmt",
        "yuv420p",
        "-r",
        str(fps),
        "-threads",
        str(threads),
    ]
    if sounds:
        args += ["-c:a", "aac", "-b:a", str(audio_bitrate), "-ar", str(AUDIO_CLOCK), "-ac", "2"]
    args += ["-t", f"{duration:.3f}", "-movflags", "+faststart", str(output)]
    return args


def ffmpeg_decode_command(inputs: Sequence[PeerInput]) -> list[str]:
    """Decode every video and audio stream of the peer's inputs and nothing else (-f null)."""
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]
    for item in inputs:
        args += ["-i", str(item.path)]
    for i, item in enumerate(inputs):
        args += ["-map", f"{i}:v"] if item.video_start is not None else []
        args += ["-map", f"{i}:a"] if item.audio_start is not None else []
    return args + ["-f", "null", "-"]


# --- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """A child process's wall time, CPU time (user + system, all its threads) and peak RSS."""

    wall: float
    user: float
    system: float
    maxrss_mb: float
    returncode: int
    stderr: str

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def check(self) -> Run:
        if self.returncode:
            raise RuntimeError(f"exit status {self.returncode}: {self.stderr[-2000:]}")
        return self

    def info(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_wall_s": round(self.wall, 3),
            f"{prefix}_cpu_s": round(self.cpu, 3),
            f"{prefix}_peak_rss_mb": round(self.maxrss_mb, 1),
        }


# Linux counts the memory of the process that starts a program in the program's ru_maxrss (the
# address space it was forked from, and exec keeps the larger of the old and new peaks), so a
# child of this process (a pytest holding decoded video) would report this process's size. The
# program is started by a small interpreter instead, which waits for it and writes its rusage.
_SPAWNER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"wall": time.perf_counter() - start, "user": usage.ru_utime,
               "system": usage.ru_stime, "maxrss_kb": usage.ru_maxrss,
               "returncode": os.waitstatus_to_exitcode(status)}, out)
"""


def run_measured(
    args: Sequence[str], *, cpus: int | None = None, env: dict[str, str] | None = None
) -> Run:
    """Run args to the end: its wall time, and the rusage of that program alone (os.wait4 in a
    small spawner process, see _SPAWNER; the spawner's own ~10 MB peak is the least it can
    report). cpus: pin it to the first that many CPUs this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    if cpus is not None and cpus > len(allowed):
        raise RuntimeError(f"{cpus} CPUs asked for, {len(allowed)} available")
    with tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "rusage.json"
        if cpus:  # the child inherits the affinity of the thread that starts it
            os.sched_setaffinity(0, allowed[:cpus])
        try:
            subprocess.run(
                [sys.executable, "-I", "-S", "-c", _SPAWNER, str(result), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                check=True,
            )
        finally:
            if cpus:
                os.sched_setaffinity(0, allowed)
        err.seek(0)
        text = err.read().decode(errors="replace")
        usage = json.loads(result.read_text())
    return Run(
        usage["wall"],
        usage["user"],
        usage["system"],
        usage["maxrss_kb"] / 1024,
        usage["returncode"],
        text,
    )


def skymix_command(
    job: Job, output: str | Path, settings: EncodeSettings | None = None
) -> list[str]:
    """The `skymix mix` command line doing the job (grid layout, labels, the settings' video
    options; the audio options are the command line's, which are EncodeSettings' defaults)."""
    settings = settings or EncodeSettings()
    default = EncodeSettings()
    if (settings.audio_rate, settings.audio_channels, settings.audio_bitrate) != (
        default.audio_rate,
        default.audio_channels,
        default.audio_bitrate,
    ):
        raise ValueError("skymix mix has no audio options: keep EncodeSettings' audio defaults")
    args = [
        sys.executable,
        "-m",
        "skymix",
        "mix",
        str(job.pcap),
        "-o",
        str(output),
        "--size",
        f"{settings.width}x{settings.height}",
        "--fps",
        str(settings.fps),
        "--crf",
        str(settings.crf),
        "--preset",
        settings.preset,
        "--threads",
        str(settings.threads),
    ]
    for sdp in job.sdp_args():
        args += ["--sdp", sdp]
    return args


# --- the floor: decode only, encode only --------------------------------------------------------


def decode_only(frames: FrameSets) -> dict[str, float]:
    """Decode every frame of every stream with PyAV (FFmpeg's vp8 and opus decoders, as the
    command line picks them), nothing else. CPU and wall seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    pictures = samples = 0
    for (_, kind), stream in frames.items():
        codec = av.CodecContext.create("vp8" if kind == "video" else "opus", "r")
        if kind == "audio":
            codec.sample_rate, codec.layout = AUDIO_CLOCK, "stereo"
        for f in stream:
            for out in codec.decode(av.Packet(f.data)):
                if kind == "video":
                    pictures += 1
                else:
                    samples += out.samples
        for _ in codec.decode(None):
            pictures += kind == "video"
    return {
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "pictures": pictures,
        "audio_seconds": samples / AUDIO_CLOCK,
    }


def composite_media(mp4: Path, folder: Path) -> tuple[Path, Path, int]:
    """A finished mix's pictures as raw I420 (composite.yuv) and its sound as interleaved
    float32 stereo (mix.f32): the content the encode-only measurement encodes. Made once."""
    yuv, pcm, done = folder / "composite.yuv", folder / "mix.f32", folder / "composite.json"
    if done.exists():
        return yuv, pcm, json.loads(done.read_text())["frames"]
    folder.mkdir(parents=True, exist_ok=True)
    frames = 0
    with av.open(str(mp4)) as src, open(yuv, "wb") as vf, open(pcm, "wb") as af:
        resampler = av.AudioResampler(format="flt", layout="stereo", rate=AUDIO_CLOCK)
        for frame in src.decode(video=0, audio=0):
            if isinstance(frame, av.VideoFrame):
                vf.write(frame.to_ndarray(format="yuv420p").tobytes())
                frames += 1
            else:
                af.writelines(out.to_ndarray().tobytes() for out in resampler.resample(frame))
    done.write_text(json.dumps({"frames": frames}))
    return yuv, pcm, frames


def encode_only(
    yuv: Path, pcm: Path, output: Path, settings: EncodeSettings | None = None
) -> dict[str, float]:
    """Encode raw pictures and sound with skymix's own writer (skymix.encode.RecordingWriter:
    libx264 and AAC in PyAV), reading them from disk a frame at a time into one reused buffer
    and copying that into the writer's frame (the read and the copy, memcpys, are counted:
    about 0.3 s of 2.5 GB)."""
    s = settings or EncodeSettings()
    frame_bytes = s.width * s.height * 3 // 2
    block = AUDIO_CLOCK // s.fps
    picture = np.empty((s.height * 3 // 2, s.width), np.uint8)
    sound = np.empty((block, 2), np.float32)
    wall, cpu = time.perf_counter(), time.process_time()
    frames = 0
    with RecordingWriter(output, s) as writer, open(yuv, "rb") as vf, open(pcm, "rb") as af:
        while vf.readinto(memoryview(picture).cast("B")) == frame_bytes:
            # into a frame of the writer's: it encodes on its own thread, so the buffer read
            # into must not change until the frame is encoded (a copy, as compositing is)
            frame = writer.new_frame()
            for plane, rows in zip(frame.planes, _i420_rows(picture, s.height)):
                np.copyto(
                    np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[
                        : rows.shape[0], : rows.shape[1]
                    ],
                    rows,
                )
            writer.write_video(frame)
            frames += 1
            got = af.readinto(memoryview(sound).cast("B")) // 8
            if got:
                writer.write_audio(sound[:got])
    return {
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "frames": frames,
    }


def _i420_rows(picture: np.ndarray, height: int) -> list[np.ndarray]:
    """The Y, U and V planes of a packed I420 picture held as (height * 3 / 2, width) bytes."""
    width = picture.shape[1]
    flat = picture.reshape(-1)
    y = flat[: width * height].reshape(height, width)
    u = flat[width * height : width * height * 5 // 4].reshape(height // 2, width // 2)
    v = flat[width * height * 5 // 4 :].reshape(height // 2, width // 2)
    return [y, u, v]


def encode_only_command(
    yuv: Path,
    pcm: Path,
    output: Path,
    *,
    canvas: tuple[int, int] = CANVAS,
    fps: int = FPS,
    crf: int = 23,
    preset: str = "veryfast",
    threads: int = 0,
    audio_bitrate: int = 128_000,
) -> list[str]:
    """The same encode by the ffmpeg command line (Debian's libx264 and FFmpeg's AAC)."""
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-s",
        f"{canvas[0]}x{canvas[1]}",
        "-r",
        str(fps),
        "-i",
        str(yuv),
        "-f",
        "f32le",
        "-ar",
        str(AUDIO_CLOCK),
        "-ac",
        "2",
        "-i",
        str(pcm),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(crf),
        "-profile:v",
        "high",
        "-pix_fmt",
        "yuv420p",
        "-threads",
        str(threads),
        "-c:a",
        "aac",
        "-b:a",
        str(audio_bitrate),
        "-movflags",
        "+faststart",
        str(output),
    ]


# --- checking an output -----------------------------------------------------------------------


def _quiet_instant(job: Job, around: float, fps: int) -> float:
    """The output frame time in [around, around + 2 s) farthest from every flash (the synth
    truth): with few participants no tile flashes then; with many, flashes are 0.15 s apart and
    some tile may, which verify_output allows for."""
    events = np.array(
        [
            e
            for p in json.loads(job.truth.read_text())["participants"]
            for e in p.get("events_relay", [])
        ]
        or [-1e9]
    )
    times = (math.floor(around * fps) + np.arange(2 * fps)) / fps
    distance = np.abs(times[:, None] - events[None, :]).min(axis=1)
    return float(times[int(np.argmax(distance))])


def verify_output(
    path: str | Path,
    job: Job,
    *,
    canvas: tuple[int, int] = CANVAS,
    fps: int = FPS,
    at: float | None = None,
) -> dict[str, object]:
    """Decode a mix: its frame count and size, its audio length, and at one instant (default
    mid-call, when everyone is present) which participants' colours fill the grid's tiles.

    A tile counts as a participant's when the median colour down its centre column is within
    30 of that participant's camera colour (the moving bar covers a tenth of the height, so the
    median is the camera colour), or is white (a flash: the synthetic cameras flash every 2 s,
    one participant 0.15 s after another). Tiles are matched whatever their order."""
    at = _quiet_instant(job, job.seconds / 2 if at is None else at, fps)
    target = round(at * fps)
    rects = grid_rects(len(job.colors), canvas)
    found: list[tuple[int, int, int] | None] = []
    frames = 0
    size = (0, 0)
    with av.open(str(path)) as src:
        audio = src.streams.audio[0] if src.streams.audio else None
        for frame in src.decode(video=0):
            if frames == target:
                rgb = frame.to_ndarray(format="rgb24")
                size = (frame.width, frame.height)
                for x, y, w, h in rects:
                    column = rgb[y + h // 4 : y + 3 * h // 4, x + w // 2]
                    found.append(tuple(int(v) for v in np.median(column, axis=0)))
            frames += 1
        audio_seconds = float(audio.duration * audio.time_base) if audio and audio.duration else 0.0
    remaining = list(job.colors)
    matched = 0
    for colour in found:
        near = [c for c in remaining if max(abs(a - b) for a, b in zip(colour, c)) <= 30]
        if min(colour) >= 225:  # flashing
            matched += 1
        elif near:
            remaining.remove(near[0])
            matched += 1
    return {
        "frames": frames,
        "size": size,
        "tiles": matched,
        "audio_seconds": audio_seconds,
        "at": at,
        "colors": found,
    }


def output_info(path: str | Path) -> dict[str, float]:
    """A finished recording's video frame count and stream durations, from its header only."""
    with av.open(str(path)) as src:
        info: dict[str, float] = {}
        for stream in src.streams.video[:1] + src.streams.audio[:1]:
            kind = stream.type
            if kind == "video":
                info["frames"] = stream.frames
            if stream.duration is not None and stream.time_base is not None:
                info[f"{kind}_seconds"] = float(stream.duration * stream.time_base)
    return info
