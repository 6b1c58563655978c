"""Encode composited video frames and mixed audio blocks into an MP4 (H.264 + AAC) or WebM.

PyAV's encoders do the work; this module fixes the settings a recording wants (yuv420p, High
profile, faststart so browsers start playing before the download ends) and keeps the timestamps
exact: video pts count frames, audio pts count samples. Video and audio are each encoded on a
thread of their own (PyAV releases the GIL while encoding): the caller draws the next picture while
x264 takes the last ones, and FFmpeg's AAC encoder (a fifth of x264 veryfast at 720p) overlaps
both. Packets are muxed in the caller's thread, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from .errors import OptionsError, SkymixError

__all__ = [
    "LIMITS",
    "MAX_HEIGHT",
    "MAX_WIDTH",
    "MIN_SIDE",
    "X264_PRESETS",
    "EncodeSettings",
    "RecordingWriter",
    "range_problem",
    "size_problem",
]

Container = Literal["mp4", "webm"]
#: Audio blocks queued for the encoding thread before the writer waits for it.
AUDIO_QUEUE = 16
#: Video frames queued for the encoding thread: the caller may draw this many pictures ahead of
#: x264 (which buffers its own lookahead besides), so a slow picture does not stall the encoder.
VIDEO_QUEUE = 3
#: Frames x264 buffers between its lookahead thread and its frame threads (its default is
#: bframes + 1 = 4). The lookahead decides frame types in bursts; with the default buffer the frame
#: threads run dry between bursts and a 2-core machine idles ~15% of an encode. The output is
#: the defaults' (only the hand-over buffer grows; bit for bit, as far as x264 repeats itself),
#: the cost ~1.7 MB per frame at 720p; 16 was no faster than 8.
SYNC_LOOKAHEAD = 8


#: x264's presets, fastest first; the VP9 encoder of WebM recordings ignores the preset.
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
#: The largest picture: 7680x4320 (8K UHD, 129,600 macroblocks), within H.264 level 6.2's largest
#: frame (139,264); each frame in flight is ~50 MB and x264 holds dozens (skymix.options).
MAX_WIDTH = 7680
MAX_HEIGHT = 4320
#: Each side of the picture at least this (x264's smallest useful picture is one macroblock).
MIN_SIDE = 16
#: name -> (lowest, highest, why) of the settings that are whole numbers in a range.
LIMITS: dict[str, tuple[int, int, str]] = {
    "fps": (1, 120, ""),
    # x264's 0 is lossless, which the High profile (what browsers play) cannot carry
    "crf": (1, 51, "lower is better; 0, lossless, needs a profile browsers do not play"),
    "threads": (0, 128, "0: automatic; x264 runs at most 128"),
    "audio_rate": (8000, 192_000, ""),
    "audio_channels": (1, 2, "mono or stereo"),
    "audio_bitrate": (16_000, 512_000, "bits per second"),
}


def range_problem(name: str, value: object) -> str | None:
    """What is wrong with ``value`` for the ranged setting ``name`` (LIMITS), or None.

    One wording for EncodeSettings and skymix.options: "crf must be 0-51, got 1000".
    """
    low, high, why = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{name} must be {low}-{high}{f' ({why})' if why else ''}, got {value!r}"
    return None


def size_problem(width: object, height: object) -> str | None:
    """What is wrong with a picture size (even sides, MIN_SIDE..MAX_WIDTH x MAX_HEIGHT), or None."""
    size = f"{width!r}x{height!r}"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
        return f"size must be two whole numbers of pixels, got {size}"
    assert isinstance(width, int) and isinstance(height, int)
    if width < MIN_SIDE or height < MIN_SIDE:
        return f"size must be at least {MIN_SIDE}x{MIN_SIDE}, got {size}"
    if width > MAX_WIDTH or height > MAX_HEIGHT:
        return (
            f"size must be at most {MAX_WIDTH}x{MAX_HEIGHT} (H.264 level 6.2's largest picture; "
            f"the memory x264 holds grows with it), got {size}"
        )
    if width % 2 or height % 2:
        return f"size must be even in both directions (yuv420p), got {size}"
    return None


@dataclass(frozen=True, slots=True)
class EncodeSettings:
    """Output size, rate and quality; the defaults are the product's reference job.

    Every value is checked when the settings are made (OptionsError naming the field): nothing
    out of range is passed on to the encoders or replaced by a value of their choosing.
    threads: the video encoder's threads (0: x264 decides, about 1.5 per core).
    """

    width: int = 1280
    height: int = 720
    fps: int = 30
    crf: int = 23
    preset: str = "veryfast"
    threads: int = 0
    audio_rate: int = 48000
    audio_channels: int = 2
    audio_bitrate: int = 128_000
    video: bool = True
    audio: bool = True

    def __post_init__(self) -> None:
        problem = size_problem(self.width, self.height)
        if problem is not None:
            raise OptionsError(problem, field="size")
        for name in LIMITS:
            problem = range_problem(name, getattr(self, name))
            if problem is not None:
                raise OptionsError(problem, field=name)
        if self.preset not in X264_PRESETS:
            raise OptionsError(
                f"preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}",
                field="preset",
            )
        for name in ("video", "audio"):
            if not isinstance(getattr(self, name), bool):
                raise OptionsError(f"{name} must be true or false", field=name)
        if not self.video and not self.audio:
            raise OptionsError("a recording needs video, audio or both", field="video")


class RecordingWriter:
    """Writes one recording; frames and audio blocks go in, in time order, then close()."""

    def __init__(
        self, path: str | Path, settings: EncodeSettings | None = None, container: Container = "mp4"
    ) -> None:
        self.path = Path(path)
        self.settings = s = settings or EncodeSettings()
        options = {"movflags": "+faststart"} if container == "mp4" else {}
        self._out = av.open(str(self.path), "w", format=container, options=options)
        self._video: VideoStream | None = None
        self._audio: AudioStream | None = None
        self._frames = 0
        self._samples = 0
        self._ours: dict[int, av.VideoFrame] = {}  # the frames new_frame() made, by id
        if s.video:
            codec = "libx264" if container == "mp4" else "libvpx-vp9"
            v = self._out.add_stream(codec, rate=s.fps)
            assert isinstance(v, VideoStream)
            v.width, v.height, v.pix_fmt = s.width, s.height, "yuv420p"
            v.thread_count = s.threads
            # PyAV asks for slice threads; libx264 then slices each picture, where the ffmpeg
            # command line's default (frame and slice) gives it frame threads: faster, and the
            # encode call returns while the picture is encoded, so compositing overlaps it
            v.codec_context.thread_type = "AUTO"
            if container == "mp4":
                v.options = {
                    "crf": str(s.crf),
                    "preset": s.preset,
                    "profile": "high",
                    "x264-params": f"sync-lookahead={SYNC_LOOKAHEAD}",
                }
            else:
                v.options = {"crf": str(s.crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
            # opened here, not lazily by the first encode on the encoding thread (see audio)
            v.codec_context.open()
            self._video = v
        if s.audio:
            a = self._out.add_stream("aac" if container == "mp4" else "libopus", rate=s.audio_rate)
            assert isinstance(a, AudioStream)
            a.layout = "stereo" if s.audio_channels == 2 else "mono"
            a.bit_rate = s.audio_bitrate
            # opened here, not lazily by the first encode on the audio thread, where it could
            # race the first mux's opening of every stream on this thread
            a.codec_context.open()
            self._audio = a
        self._video_queue = (
            _EncodeQueue(self._video.encode, "skymix-x264", VIDEO_QUEUE, self._out.mux)
            if self._video is not None
            else None
        )
        self._audio_queue = (
            _EncodeQueue(self._audio.encode, "skymix-aac", AUDIO_QUEUE, self._out.mux)
            if self._audio is not None
            else None
        )
        self._free: list[av.VideoFrame] = []  # frames of new_frame() the encoder is done with

    def new_frame(self) -> av.VideoFrame:
        """A frame of the output size for the compositor to draw into. The writer owns a frame
        given to write_video until it is encoded; this hands back one it is done with (waiting
        for the oldest queued frame when VIDEO_QUEUE + 1 are out), so a caller takes a new
        frame for every picture and finds in it the picture it drew there last."""
        queue = self._video_queue
        if queue is not None and not self._free and len(self._ours) > VIDEO_QUEUE and queue.jobs:
            self._recycle(queue.mux(keep=len(queue.jobs) - 1))
        if self._free:
            return self._free.pop()
        frame = av.VideoFrame(self.settings.width, self.settings.height, "yuv420p")
        self._ours[id(frame)] = frame
        return frame

    def write_video(self, frame: av.VideoFrame) -> None:
        """Queue the next video frame for encoding (its pts is set here: frames are evenly
        spaced). The frame must not change until new_frame() hands it back (or, for a frame
        not made by new_frame, until the writer is closed)."""
        if self._video_queue is None:
            raise SkymixError("this recording has no video stream")
        frame.pts = self._frames
        frame.time_base = Fraction(1, self.settings.fps)
        self._frames += 1
        self._video_queue.put(frame)
        self._recycle(self._video_queue.mux())

    def _recycle(self, done: list[av.VideoFrame | av.AudioFrame]) -> None:
        self._free.extend(f for f in done if isinstance(f, av.VideoFrame) and id(f) in self._ours)

    def write_audio(self, block: npt.NDArray[np.float32]) -> None:
        """Encode the next audio block: float32 (samples, channels) at the output rate."""
        if self._audio_queue is None or self._audio is None:
            raise SkymixError("this recording has no audio stream")
        data = np.ascontiguousarray(block, np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="flt", layout=self._audio.layout.name)
        frame.sample_rate = self.settings.audio_rate
        frame.pts = self._samples
        frame.time_base = Fraction(1, self.settings.audio_rate)
        self._samples += block.shape[0]
        self._audio_queue.put(frame)
        self._audio_queue.mux()

    @property
    def frames_written(self) -> int:
        return self._frames

    @property
    def samples_written(self) -> int:
        return self._samples

    def close(self) -> None:
        """Flush the encoders and finish the file (an encoder's error stops the threads and
        raises; the file is then for deleting)."""
        try:
            for queue in (self._video_queue, self._audio_queue):
                if queue is not None:
                    queue.finish()
            self._out.close()
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> RecordingWriter:
        return self

    def abort(self) -> None:
        """Stop without finishing: no flushing, no index; the file is for deleting."""
        for queue in (self._video_queue, self._audio_queue):
            if queue is not None:
                queue.stop()
        try:
            self._out.close()
        except (av.FFmpegError, OSError):
            pass  # the original error is the one to report

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _EncodeQueue:
    """One stream's encoder on a thread of its own: frames go in, their packets are muxed on the
    caller's thread in order (errors of the encoder raise there too)."""

    def __init__(
        self,
        encode: Callable[[Any], list[av.Packet]],
        name: str,
        limit: int,
        mux: Callable[[list[av.Packet]], object],
    ) -> None:
        self._encode = encode
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._limit = limit
        self._mux = mux
        self.jobs: deque[tuple[Future[list[av.Packet]], av.VideoFrame | av.AudioFrame]] = deque()

    def put(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        self.jobs.append((self._pool.submit(self._encode, frame), frame))

    def mux(self, keep: int | None = None) -> list[av.VideoFrame | av.AudioFrame]:
        """Mux the packets of the frames encoded so far, waiting while more than `keep`
        (default: the queue's limit) are queued. The frames done, in order."""
        keep = self._limit if keep is None else keep
        done = []
        while self.jobs and (len(self.jobs) > keep or self.jobs[0][0].done()):
            job, frame = self.jobs.popleft()
            self._mux(job.result())
            done.append(frame)
        return done

    def finish(self) -> None:
        """Encode what is queued, flush the encoder, mux everything."""
        self.mux(keep=0)
        self._pool.shutdown()
        self._mux(self._encode(None))

    def stop(self) -> None:
        """Drop what is queued and wait for the frame being encoded (the file is closed next)."""
        self._pool.shutdown(cancel_futures=True)
        self.jobs.clear()
