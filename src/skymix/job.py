"""The main job: a room's captures in, one composited and mixed recording out.

This module keeps the orchestration only; each stage lives in its own module (see
docs/architecture.md). Two passes over the captures. The first (``scan_room``) learns who is
there when, every stream's clock and what was lost or damaged. The second reads them again a
batch at a time and walks the recording's clock (``timeline.OutputClock``) frame by frame: each
participant's encoded frames wait in their ``sources.Source`` until their session time comes,
are decoded then on a decode thread a few frames ahead (so decoded pictures never pile up:
memory does not grow with the session), audio is placed sample-exactly on the recording's sample
clock and mixed (``scene.mix_sources``), and each frame is composited straight into the encoder's
frame (``scene.Scene``). The report is built from the sources and the scan (``report``).

A job has an id, subscribers that hear its states and progress, and can be cancelled from any
thread (``events.JobControl``); cancellation, like any error, leaves no output half-written.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from collections.abc import Generator, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from .encode import EncodeSettings, RecordingWriter
from .errors import (
    CancelledError,
    DamageError,
    InternalError,
    NothingToMixError,
    OptionsError,
    SkymixError,
)
from .events import JobControl, JobState, JobSubscriber
from .layout import CustomSpec
from .options import MixOptions, cameras, check_memory
from .outputs import PendingOutputs, check_job
from .progress import ProgressCallback, ProgressEvent, Stage
from .report import (
    LayoutChange,
    MixReport,
    OutputFile,
)
from .scene import AudioBatch, Scene, mix_sources
from .session import SessionSpec
from .sidecars import ChannelsWav, ParticipantFiles, participant_paths, participant_settings
from .sources import Source, Timed
from .streams.room import RoomReader, RoomScan, RoomStep, scan_room
from .timeline import OutputClock, StreamTiming, plan_segments, plan_timing

__all__ = ["MixJob", "mix"]

logger = logging.getLogger(__name__)

NS = 1_000_000_000
#: The second pass reads this far (session ns) ahead of the frame being made: frames are final
#: once the assembler's reorder window has passed them.
LOOKAHEAD_NS = 3 * NS
#: Output frames (or audio blocks) are made in batches of this many: the decode thread decodes
#: a batch's frames in one job (each stream's frames back to back, while its decoder's pictures
#: are in the cache) and the batch's audio is placed, mixed and encoded at once, a quarter of the
#: per-call costs of frame by frame; the speaker tracker still sees every frame's levels.
BATCH_TICKS = 4
#: The decode thread starts on a batch when the compositor is this many frames before it (the
#: decoded pictures waiting are at most a batch and this many frames per participant, ~1 MB
#: each); audio is decoded up to AUDIO_AHEAD_NS beyond the frames it is mixed with, as a block
#: may start before their end.
DECODE_AHEAD = 4
AUDIO_AHEAD_NS = 40_000_000
#: Audio-only recordings advance in blocks of this many samples.
AUDIO_BLOCK = 960


class MixJob:
    """One mix: ``run()`` it on the calling thread, ``cancel()`` it from any other.

    ``job_id`` names it in events and the report (a random id when not given); subscribers
    hear its states (STARTED, READING, MIXING, then DONE, FAILED or CANCELLED) and progress.
    ``report``: where to write the report, committed with the recording (both new or both as
    they were). ``inputs``: other files the job's description was read from (SDP files, the
    manifest), by role ("SDP file 1"), so that no output replaces them. Before any work the
    outputs are checked against every input, the memory the job needs against what the machine
    has, and what dead runs left in the output folders is removed. ``strict``: any damage in
    the input (streams skipped or unclaimed, described participants that matched nothing,
    corrupt spans resynced, arrival times set aside) fails the job with DamageError before
    anything is written, for pipelines that prefer to stop; otherwise it is in the report's
    ``damage`` and costs only the damaged part.
    """

    def __init__(
        self,
        captures: Sequence[str | Path],
        output: str | Path,
        *,
        description: SessionSpec | None = None,
        options: MixOptions | None = None,
        job_id: str | None = None,
        subscribers: Iterable[JobSubscriber] = (),
        progress: ProgressCallback | None = None,
        report: str | Path | None = None,
        inputs: Mapping[str, str | Path] | None = None,
        strict: bool = False,
    ) -> None:
        self.captures = [Path(c) for c in captures]
        self.output = Path(output)
        self.report = None if report is None else Path(report)
        self.inputs = dict(inputs or {})
        self.strict = strict
        self.description = description
        suffix = self.output.suffix.lower().lstrip(".")
        if options is None:
            options = MixOptions(container="webm" if suffix == "webm" else "mp4")
        elif suffix in ("mp4", "webm") and options.container != suffix:
            raise OptionsError(
                f"the output {self.output.name} names {suffix}, the options {options.container}",
                field="container",
            )
        self.options = options
        self.control = JobControl(job_id, subscribers, progress)

    @property
    def id(self) -> str:
        return self.control.id

    def __repr__(self) -> str:
        return f"MixJob(id={self.id!r}, output={str(self.output)!r}, state={self.control.state})"

    def cancel(self) -> None:
        """Stop the job at its next check (within a batch of packets or a frame); it raises
        CancelledError and leaves no output behind."""
        self.control.cancel()

    def run(self) -> MixReport:
        """Mix; returns what was done. Raises a SkymixError subclass on failure."""
        control = self.control
        control.enter(JobState.STARTED)
        try:
            self.check(clean=True)  # before any work: nothing the caller has is ever replaced
            described = len(self.description.participants) if self.description else 0
            check_memory(self.options, described)
            control.check()
            control.enter(JobState.READING)
            logger.info("job %s: reading %d capture files", self.id, len(self.captures))
            scan = scan_room(self.captures, self.description, progress=control.progress)
            damage = scan.damage_summary()
            for line in damage:
                logger.info("damage: %s", line)
            if self.strict and damage:
                raise DamageError(
                    f"the input is damaged ({len(damage)} findings, first: "
                    f"{damage[0] if damage else 'see the scan'}); nothing was written"
                )
            check_memory(self.options, cameras(scan))  # with the pictures' real sizes
            plan = _Plan(scan, self.options, damage)
            control.enter(JobState.MIXING)
            logger.info(
                "job %s: %d participants, %.1f s: mixing %d %s",
                self.id,
                len(plan.sources),
                plan.clock.duration_ns / NS,
                plan.ticks,
                "frames" if plan.has_video else "audio blocks",
            )
            report = _Mix(self, plan).run()
        except CancelledError as exc:
            control.enter(JobState.CANCELLED, exc)
            raise
        except KeyboardInterrupt as exc:
            control.enter(JobState.CANCELLED, CancelledError("interrupted"))
            raise CancelledError(f"job {self.id} was interrupted") from exc
        except SkymixError as exc:
            control.enter(JobState.FAILED, exc)
            raise
        except Exception as exc:  # a dependency's failure or a bug: still one of ours, coded
            logger.exception("job %s failed unexpectedly", self.id)
            error = InternalError(f"job {self.id} failed: {type(exc).__name__}: {exc}")
            control.enter(JobState.FAILED, error)
            raise error from exc
        control.enter(JobState.DONE)
        logger.info("job %s: wrote %s", self.id, ", ".join(f.path for f in report.files))
        return report

    def check(self, participants: Sequence[str] = (), *, clean: bool = False) -> None:
        """Check every output against every input and each other (OutputConflictError); with
        the participants' ids known, their own files too."""
        options = self.options
        folder = options.per_participant
        layout = options.layout.file if isinstance(options.layout, CustomSpec) else None
        inputs: dict[str, str | Path] = dict(self.description.files if self.description else ())
        check_job(
            self.captures,
            self.output,
            report=self.report,
            channels=options.channels,
            per_participant=folder,
            participant_files=participant_paths(folder, participants, options.container)
            if folder and participants
            else None,
            layout=layout,
            other_inputs=inputs | self.inputs,
            clean=clean,
        )


class _Plan:
    """What the first pass decided: the sources, their clocks, the stretches recorded, which
    kinds the recording has, and the encoder's settings."""

    def __init__(self, scan: RoomScan, options: MixOptions, damage: list[str]) -> None:
        self.scan = scan
        self.damage = damage
        self.timing: dict[int, StreamTiming] = plan_timing(scan)
        segments = plan_segments(scan, options.trim)
        if not segments:
            raise NothingToMixError("nothing to mix: no participant is present in the captures")
        self.clock = OutputClock(segments)
        threads = options.thread_plan
        self.compose_threads = threads.compose
        self.sources = {p.id: Source(p, threads.decode) for p in scan.participants}
        self.has_video = options.encode.video and any(
            s.presence.has_video for s in self.sources.values()
        )
        self.has_audio = options.encode.audio and any(
            s.kind == "audio" for p in scan.participants for s in p.streams
        )
        if not (self.has_video or self.has_audio):
            raise NothingToMixError(
                "nothing to mix: the captures hold no decodable audio or video"
                + (
                    f" ({len(scan.problems)} problems, first: {scan.problems[0]})"
                    if scan.problems
                    else ""
                )
            )
        self.settings = EncodeSettings(
            **{**asdict(options.encode), "video": self.has_video, "audio": self.has_audio}
        )
        rate = self.settings.audio_rate
        if self.has_video:
            self.ticks = max(1, math.ceil(self.clock.duration_ns * self.settings.fps / NS))
            self.tick_ns = NS / self.settings.fps
        else:
            self.ticks = max(1, math.ceil(self.clock.duration_ns * rate / NS / AUDIO_BLOCK))
            self.tick_ns = AUDIO_BLOCK * NS / rate


class _Mix:
    """The second pass of one job."""

    def __init__(self, job: MixJob, plan: _Plan) -> None:
        self.job = job
        self.plan = plan
        self.options = job.options
        self.sources = list(plan.sources.values())
        # read lazily: the captures are opened by the first step of the second pass
        self.reader: Generator[RoomStep, None, None] = iter(
            RoomReader(job.captures, job.description, fit_clocks=False)
        )
        self.read_to = -math.inf
        self.samples_done = 0  # output audio samples mixed (on the decode thread)

    def run(self) -> MixReport:
        plan, options = self.plan, self.options
        output = self.job.output
        ids = list(plan.sources)
        folder = options.per_participant
        self.job.check(ids)  # the participants' files are named now that they are known
        channels = per_person = None
        # every file under a temporary name, all renamed once all are complete: the recording
        # and its sidecars are all new, or all as they were (after an error or a cancel)
        with PendingOutputs() as pending:
            recording = pending.add(output, "the recording")
            if options.channels is not None and plan.has_audio:
                channels = ChannelsWav(options.channels, ids, plan.settings.audio_rate, pending)
            if folder is not None:
                per_person = ParticipantFiles(
                    folder,
                    [(pid, plan.sources[pid].name) for pid in ids],
                    participant_settings(plan.settings),
                    options.container,
                    pending,
                )
            frames, samples, layouts = self.record(recording, channels, per_person)
            for sidecar in (channels, per_person):
                if sidecar is not None:
                    sidecar.finish()
            files = [OutputFile(role="recording", path=str(output))]
            if per_person is not None:
                files += [
                    OutputFile(role="participant", path=str(path), participant=pid)
                    for pid, path in per_person.paths.items()
                ]
            if channels is not None:
                files.append(
                    OutputFile(role="channels", path=str(channels.path), channel_order=channels.ids)
                )
            if self.job.report is not None:
                files.append(OutputFile(role="report", path=str(self.job.report)))
            report = self.report(frames, samples, layouts, files)
            if self.job.report is not None:
                try:
                    pending.add(self.job.report, "the report").write_bytes(report.to_bytes())
                except OSError as exc:
                    raise pending.error(exc, self.job.report) from exc
            pending.commit()
        return report

    # -- reading --------------------------------------------------------------------------------

    def read_until(self, session_ns: float) -> None:
        """Read batches of the second pass until every frame due by session_ns is queued."""
        while self.read_to < session_ns + LOOKAHEAD_NS:
            step = next(self.reader, None)
            if step is None:
                self.read_to = math.inf
                return
            self.route(step)
            self.read_to = math.inf if step.read_to_ns is None else step.read_to_ns

    def route(self, step: RoomStep) -> None:
        """Queue a batch's frames by source and kind, in session-time order: a batch may hold
        several SSRCs of one stream (a renegotiation), each in its own media order."""
        plan = self.plan
        timed: dict[tuple[str, str], list[list[Timed]]] = {}
        for pid, kind, frames in step.frames:
            if pid not in plan.sources or not (
                plan.has_video if kind == "video" else plan.has_audio
            ):
                continue  # a kind the recording leaves out is not kept
            run = [
                (timing.session_ns(frame.timestamp), frame)
                for frame in frames
                if (timing := plan.timing.get(frame.ssrc)) is not None
            ]
            timed.setdefault((pid, kind), []).append(run)
        for (pid, kind), runs in timed.items():
            source = plan.sources[pid]
            queue = source.video if kind == "video" else source.audio
            queue.extend(
                runs[0] if len(runs) == 1 else heapq.merge(*runs, key=lambda item: item[0])
            )

    # -- the decode thread ----------------------------------------------------------------------

    def decode_batch(self, k: int) -> AudioBatch | None:
        """The decode thread's job for the batch of output frames (or blocks) from tick k:
        decode its video, decode and mix its audio. Limits go through the output clock, so a
        trimmed gap does not hide what follows it."""
        plan = self.plan
        clock, tick_ns = plan.clock, plan.tick_ns
        start_out = k * tick_ns
        if plan.has_video:
            until = clock.session_ns(start_out + (BATCH_TICKS - 0.5) * tick_ns)
            for source in self.sources:
                source.decode_video(until)
        if not plan.has_audio:
            return None
        rate = plan.settings.audio_rate
        until = clock.session_ns(start_out + BATCH_TICKS * tick_ns + AUDIO_AHEAD_NS)
        for source in self.sources:
            source.decode_audio(until, clock, plan.timing, rate)
        ends = [
            round((j + 1) * tick_ns * rate / NS) for j in range(k, min(k + BATCH_TICKS, plan.ticks))
        ]
        batch = mix_sources(
            self.sources, self.samples_done, ends, rate, plan.settings.audio_channels
        )
        self.samples_done = ends[-1]
        return batch

    # -- the recording --------------------------------------------------------------------------

    def record(
        self, path: Path, channels: ChannelsWav | None, per_person: ParticipantFiles | None
    ) -> tuple[int, int, list[LayoutChange]]:
        """Every output frame (or audio block) in turn, decoded on a thread of its own a batch
        (BATCH_TICKS frames) at a time, DECODE_AHEAD frames ahead, so decoding overlaps
        compositing and the encoders (PyAV's decode and encode calls release the GIL)."""
        plan, options, control = self.plan, self.options, self.job.control
        ticks, tick_ns, clock = plan.ticks, plan.tick_ns, plan.clock
        scene = Scene(
            self.sources,
            (plan.settings.width, plan.settings.height),
            options.layout,
            tick_ns,
            on_loss=options.on_loss,
            labels=options.labels,
            threads=plan.compose_threads,
        )
        unit = "frames" if plan.has_video else "blocks"
        levels: list[dict[str, float]] = []
        decoded: deque[Future[AudioBatch | None]] = deque()
        with (
            RecordingWriter(path, plan.settings, options.container) as writer,
            ThreadPoolExecutor(1, thread_name_prefix="skymix-decode") as decoder,
        ):
            try:
                batch = 0  # the first frame of the next batch to decode
                for k in range(ticks):
                    while batch < min(ticks, k + DECODE_AHEAD + 1):
                        self.read_until(
                            clock.session_ns((batch + BATCH_TICKS) * tick_ns + AUDIO_AHEAD_NS)
                        )
                        decoded.append(decoder.submit(self.decode_batch, batch))
                        batch += BATCH_TICKS
                    s = clock.session_ns(k * tick_ns)
                    self.read_until(s)
                    if k % BATCH_TICKS == 0:
                        audio = decoded.popleft().result()
                        if audio is not None:
                            levels = audio.levels
                            self.write_audio(writer, audio, channels, per_person)
                    if plan.has_video:
                        scene.frame(writer, k, s, levels[k % BATCH_TICKS] if levels else {})
                        if per_person is not None:
                            for source in self.sources:
                                per_person.write_video(source.id, scene.picture_of(source, s))
                    control.progress(ProgressEvent(Stage.MIXING, k + 1, ticks, unit))
            finally:
                for pending in decoded:  # a cancelled or failed job does not wait for them
                    pending.cancel()
                self.reader.close()  # its capture files
            return writer.frames_written, writer.samples_written, scene.changes

    def write_audio(
        self,
        writer: RecordingWriter,
        batch: AudioBatch,
        channels: ChannelsWav | None,
        per_person: ParticipantFiles | None,
    ) -> None:
        """Encode the batch's mix and write the sidecars' audio."""
        writer.write_audio(batch.mixed)
        if channels is not None:
            channels.write(list(batch.blocks))
        if per_person is not None:
            for source, block in zip(self.sources, batch.blocks):
                per_person.write_audio(source.id, block)

    def report(
        self, frames: int, samples: int, layouts: list[LayoutChange], files: list[OutputFile]
    ) -> MixReport:
        """The report, each part from the stage that holds it."""
        plan = self.plan
        clock = plan.clock
        return MixReport(
            job_id=self.job.id,
            output=str(self.job.output),
            session_start_ns=clock.start_ns,
            duration_s=round(plan.ticks * plan.tick_ns / NS, 4),
            frames=frames,
            samples=samples,
            participants=[source.result(clock) for source in self.sources],
            streams=[timing.result(clock) for timing in plan.timing.values()],
            layouts=layouts,
            segments=clock.spans(),
            files=files,
            damage=plan.damage,
            scan=plan.scan.to_json(),
        )


def mix(
    captures: Sequence[str | Path],
    output: str | Path,
    *,
    description: SessionSpec | None = None,
    options: MixOptions | None = None,
    progress: ProgressCallback | None = None,
    job_id: str | None = None,
    subscribers: Iterable[JobSubscriber] = (),
    report: str | Path | None = None,
    inputs: Mapping[str, str | Path] | None = None,
    strict: bool = False,
) -> MixReport:
    """Mix a room's captures into one recording at ``output`` and say what was done.

    Raises NothingToMixError when the captures hold nothing to mix; damaged parts of the
    captures cost only those parts (see the report's ``damage``). ``MixJob`` is the same with a
    handle to cancel it. ``report``: where to write the report, committed with the recording;
    ``inputs``: the description's files by role; ``strict``: damage fails the job (see MixJob).
    """
    return MixJob(
        captures,
        output,
        description=description,
        options=options,
        job_id=job_id,
        subscribers=subscribers,
        progress=progress,
        report=report,
        inputs=inputs,
        strict=strict,
    ).run()
