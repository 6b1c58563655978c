"""The `skymix demo` job: a generated four-party session composited, mixed and encoded to MP4.

The participants differ the way real ones do: 640x480, 1280x720, a 15 fps 320x240 webcam and a
480x640 phone in portrait who joins late. Each speaks in bursts (a tone of its own); a dot marks
who is speaking. Until the capture readers land, this stands in for a captured session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from .compose import CompositeState, Overlay, Rect, Tile, composite, frame_planes, mix_audio
from .encode import EncodeSettings, RecordingWriter
from .progress import ProgressCallback, ProgressEvent

__all__ = ["DemoResult", "run_demo"]

RATE = 48000


@dataclass(frozen=True, slots=True)
class _Speaker:
    name: str
    size: tuple[int, int]
    fps: int
    tone_hz: float
    color: tuple[int, int, int]
    joins_at: float


_SPEAKERS = (
    _Speaker("Ada", (640, 480), 30, 220.0, (200, 60, 60), 0.0),
    _Speaker("Grace", (1280, 720), 30, 330.0, (60, 160, 60), 0.0),
    _Speaker("Linus", (320, 240), 15, 440.0, (60, 80, 200), 0.0),
    _Speaker("Margaret", (480, 640), 30, 550.0, (190, 150, 40), 2.0),
)


@dataclass(slots=True)
class DemoResult:
    """What the demo wrote, for the summary it prints."""

    path: Path
    seconds: float
    frames: int
    tiles_drawn: int
    tiles_skipped: int
    wall_seconds: float
    participants: list[str] = field(default_factory=list)

    def summary(self) -> str:
        size = self.path.stat().st_size if self.path.exists() else 0
        return "\n".join(
            [
                f"skymix demo: {len(self.participants)} participants "
                f"({', '.join(self.participants)})",
                f"  {self.frames} frames ({self.seconds:.1f} s) at 1280x720 30 fps, "
                f"H.264 + AAC, {size / 1e6:.2f} MB",
                f"  tiles drawn {self.tiles_drawn}, skipped as unchanged {self.tiles_skipped}",
                f"  took {self.wall_seconds:.2f} s wall time",
                f"  written to {self.path.resolve()}",
            ]
        )


def _source_frame(s: _Speaker, index: int) -> av.VideoFrame:
    """A test picture of the speaker's colour with a bar that moves with time."""
    w, h = s.size
    frame = av.VideoFrame(w, h, "yuv420p")
    y, u, v = frame_planes(frame, s.name)
    ramp = np.linspace(60, 200, w, dtype=np.float32)
    y[:] = ramp.astype(np.uint8)[None, :]
    bar = (index * 7) % max(h - h // 8, 1)
    y[bar: bar + h // 8] = 235
    r, g, b = s.color
    u[:] = np.uint8(128 + (b - g) // 3)
    v[:] = np.uint8(128 + (r - g) // 3)
    return frame


def _speaking(s: _Speaker, t: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Bursts of 0.7 s every 2 s, each speaker at its own phase, after joining."""
    phase = (t + 0.5 * _SPEAKERS.index(s)) % 2.0
    return (phase < 0.7) & (t >= s.joins_at)


def _dot(radius: int) -> npt.NDArray[np.uint8]:
    yy, xx = np.mgrid[-radius: radius + 1, -radius: radius + 1]
    inside = np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0)
    return (inside * 255).astype(np.uint8)


def run_demo(output: str | Path, seconds: float = 6.0,
             progress: ProgressCallback | None = None) -> DemoResult:
    """Generate, composite, mix and encode the demo session into ``output``."""
    settings = EncodeSettings()
    total = max(1, round(seconds * settings.fps))
    per_frame = RATE // settings.fps
    grid = [Rect(640 * (i % 2), 360 * (i // 2), 640, 360) for i in range(4)]
    dot = Overlay(_dot(10), 16, 16, (80, 220, 120))
    started = time.perf_counter()
    drawn = skipped = 0
    sources: dict[str, tuple[av.VideoFrame, int]] = {}
    state: CompositeState | None = None
    with RecordingWriter(output, settings) as writer:
        out = writer.new_frame()
        for n in range(total):
            t = n / settings.fps
            times = (n * per_frame + np.arange(per_frame)) / RATE
            tiles = []
            blocks = []
            for s, rect in zip(_SPEAKERS, grid):
                on = _speaking(s, times)
                blocks.append((0.3 * np.sin(2 * np.pi * s.tone_hz * times) * on).astype(np.float32))
                if t < s.joins_at:
                    tiles.append(Tile(None, rect))
                    continue
                source_index = int(t * s.fps)
                if sources.get(s.name, (None, -1))[1] != source_index:
                    sources[s.name] = (_source_frame(s, source_index), source_index)
                overlays = (dot,) if on.any() else ()
                tiles.append(Tile(sources[s.name][0], rect, "contain", overlays=overlays))
            state = composite(tiles, out, background=(24, 24, 28), border=2,
                              border_color=(40, 40, 48), previous=state)
            drawn += state.drawn
            skipped += state.skipped
            mixed = np.zeros((per_frame, 2), np.float32)
            mix_audio(blocks, mixed)
            writer.write_video(out)
            writer.write_audio(mixed)
            if progress is not None:
                progress(ProgressEvent("mixing", n + 1, total))
    return DemoResult(
        path=Path(output),
        seconds=total / settings.fps,
        frames=total,
        tiles_drawn=drawn,
        tiles_skipped=skipped,
        wall_seconds=time.perf_counter() - started,
        participants=[s.name for s in _SPEAKERS],
    )
