"""Encode composited video frames and mixed audio blocks into an MP4 (H.264 + AAC) or WebM.

PyAV's encoders do the work; this module fixes the settings a recording wants (yuv420p, High
profile, faststart so browsers start playing before the download ends) and keeps the timestamps
exact: video pts count frames, audio pts count samples. Audio is encoded on a thread of its own
(FFmpeg's AAC encoder costs a fifth of x264 veryfast at 720p, and PyAV releases the GIL while
encoding), so it overlaps the video; packets are muxed in the caller's thread, in order.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from .errors import SkymixError

__all__ = ["EncodeSettings", "RecordingWriter"]

Container = Literal["mp4", "webm"]
#: Audio blocks queued for the encoding thread before the writer waits for it.
AUDIO_QUEUE = 16


@dataclass(frozen=True, slots=True)
class EncodeSettings:
    """Output size, rate and quality; the defaults are the product's reference job."""

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
        for name in ("width", "height", "fps", "audio_rate", "audio_channels", "audio_bitrate"):
            if getattr(self, name) <= 0:
                raise SkymixError(f"encode setting {name} must be positive")
        if self.width % 2 or self.height % 2:
            raise SkymixError(f"yuv420p needs an even size, got {self.width}x{self.height}")
        if not self.video and not self.audio:
            raise SkymixError("a recording needs video, audio or both")


class RecordingWriter:
    """Writes one recording; frames and audio blocks go in, in time order, then close()."""

    def __init__(self, path: str | Path, settings: EncodeSettings | None = None,
                 container: Container = "mp4") -> None:
        self.path = Path(path)
        self.settings = s = settings or EncodeSettings()
        options = {"movflags": "+faststart"} if container == "mp4" else {}
        self._out = av.open(str(self.path), "w", format=container, options=options)
        self._video: VideoStream | None = None
        self._audio: AudioStream | None = None
        self._frames = 0
        self._samples = 0
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
                v.options = {"crf": str(s.crf), "preset": s.preset, "profile": "high"}
            else:
                v.options = {"crf": str(s.crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
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
        self._audio_pool = ThreadPoolExecutor(1, thread_name_prefix="skymix-aac") \
            if self._audio is not None else None
        self._audio_jobs: deque[Future[list[av.Packet]]] = deque()

    def new_frame(self) -> av.VideoFrame:
        """A frame of the output size for the compositor to draw into."""
        return av.VideoFrame(self.settings.width, self.settings.height, "yuv420p")

    def write_video(self, frame: av.VideoFrame) -> None:
        """Encode the next video frame (its pts is set here: frames are evenly spaced)."""
        if self._video is None:
            raise SkymixError("this recording has no video stream")
        frame.pts = self._frames
        frame.time_base = Fraction(1, self.settings.fps)
        self._frames += 1
        self._out.mux(self._video.encode(frame))

    def write_audio(self, block: npt.NDArray[np.float32]) -> None:
        """Encode the next audio block: float32 (samples, channels) at the output rate."""
        if self._audio is None:
            raise SkymixError("this recording has no audio stream")
        data = np.ascontiguousarray(block, np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="flt", layout=self._audio.layout.name)
        frame.sample_rate = self.settings.audio_rate
        frame.pts = self._samples
        frame.time_base = Fraction(1, self.settings.audio_rate)
        self._samples += block.shape[0]
        assert self._audio_pool is not None
        self._audio_jobs.append(self._audio_pool.submit(self._audio.encode, frame))
        self._mux_audio(wait=len(self._audio_jobs) > AUDIO_QUEUE)

    def _mux_audio(self, wait: bool) -> None:
        """Mux the audio packets encoded so far (all of them, waiting, when wait)."""
        jobs = self._audio_jobs
        while jobs and (wait or jobs[0].done()):
            self._out.mux(jobs.popleft().result())
            wait = wait and len(jobs) > AUDIO_QUEUE // 2

    @property
    def frames_written(self) -> int:
        return self._frames

    @property
    def samples_written(self) -> int:
        return self._samples

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        if self._video is not None:
            self._out.mux(self._video.encode(None))
        if self._audio is not None:
            assert self._audio_pool is not None
            while self._audio_jobs:
                self._out.mux(self._audio_jobs.popleft().result())
            self._audio_pool.shutdown()
            self._out.mux(self._audio.encode(None))
        self._out.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def abort(self) -> None:
        """Stop without finishing: no flushing, no index; the file is for deleting."""
        if self._audio_pool is not None:
            self._audio_pool.shutdown(cancel_futures=True)
        try:
            self._out.close()
        except (av.FFmpegError, OSError):
            pass  # the original error is the one to report

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
