"""What the recording shows and plays at each output frame: everyone's audio of a batch of
frames placed, measured and mixed (``mix_sources``, on the decode thread), and each frame's
picture: who is present and shows video, the layout (recomputed only when that or the speaker
changes), the tiles with their labels or placeholders, composited into the encoder's frame
(``Scene.frame``, on the compositor's thread).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np

from .compose import CompositeState, Overlay, Tile, composite, mix_audio
from .compose.labels import label_text, name_label, placeholder
from .encode import RecordingWriter
from .layout import Layout, LayoutSpec, Participant, compute_layout
from .placement import TRACK_CHANNELS
from .report import LayoutChange, LayoutTile
from .sources import OnLoss, Source
from .timeline import SpeakerTracker, dbov_from_rms

__all__ = ["AudioBatch", "Scene", "mix_sources"]

#: A tile on which any name with something to draw gets a label (whatever the recording's size).
ROOMY = (1920, 1080)


@dataclass(slots=True)
class AudioBatch:
    """A batch's audio: the mix, each source's block (in the sources' order) and each frame's
    levels (dBov) by participant id."""

    mixed: np.ndarray
    blocks: np.ndarray
    levels: list[dict[str, float]]


def mix_sources(
    sources: Sequence[Source], start: int, ends: list[int], rate: int, channels: int
) -> AudioBatch:
    """Place, read and mix everyone's audio from output sample `start` up to the last of `ends`
    (where the batch's frames end), with each frame's levels for the speaker tracker."""
    end = ends[-1]
    count = end - start
    # the tracks are stereo (every decoder gives stereo); the mix has the recording's channels
    blocks = np.empty((len(sources), count, TRACK_CHANNELS), np.float32)
    for source, block in zip(sources, blocks):
        source.place_audio(end + rate // 50)
        source.track.read(start, count, out=block)
    # each frame's mean power per source: sums of squares over the frame's samples (of both
    # channels: a reduction along the last axis of 2 would be slow)
    starts = [0] + [(e - start) * TRACK_CHANNELS for e in ends[:-1]]
    lengths = np.diff(starts + [count * TRACK_CHANNELS])
    power = (
        np.add.reduceat(np.square(blocks.reshape(len(sources), -1)), starts, axis=1) / lengths
        if count and len(sources)
        else np.zeros((len(sources), len(ends)))
    )
    levels = [
        {source.id: dbov_from_rms(math.sqrt(p)) for source, p in zip(sources, tick)}
        for tick in power.T.tolist()
    ]
    mixed = np.zeros((count, channels), np.float32)
    mix_audio(list(blocks), mixed)
    return AudioBatch(mixed, blocks, levels)


class Scene:
    """The picture of each output frame, from the sources' pictures and the audio levels."""

    def __init__(
        self,
        sources: Sequence[Source],
        size: tuple[int, int],
        layout: LayoutSpec,
        tick_ns: float,
        *,
        on_loss: OnLoss,
        labels: bool,
        threads: int = 1,
    ) -> None:
        self.sources = list(sources)
        self.by_id = {s.id: s for s in self.sources}
        self.size = size
        self.spec = layout
        self.tick_ns = tick_ns
        self.on_loss: OnLoss = on_loss
        self.labels = labels
        self.threads = threads
        self.tracker = SpeakerTracker()
        self.layout: Layout | None = None
        self.layout_key: object = None
        self.changes: list[LayoutChange] = []
        self._labels: dict[tuple[str, int, int], tuple[Overlay, ...]] = {}  # (id, w, h)
        self.states: dict[int, CompositeState] = {}  # by id of the writer's frame drawn into
        # a display name with nothing to draw (control characters only) is labelled by its id
        self.names = {s.id: s.name if label_text(s.name, *ROOMY) else s.id for s in sources}

    def shows_video(self, source: Source, s: float) -> bool:
        return source.shows_video(s, self.tick_ns, self.on_loss)

    def picture_of(self, source: Source, s: float) -> av.VideoFrame | None:
        """What a participant's own recording shows at s: their picture, or None for their
        placeholder (as their tile in the mix would)."""
        return source.picture if self.shows_video(source, s) else None

    def frame(self, writer: RecordingWriter, k: int, s: int, levels: dict[str, float]) -> None:
        """Composite output frame k (session instant s) into a frame of the writer's and
        write it."""
        for source in self.sources:
            source.take_picture(s + self.tick_ns / 2)
        present = [p for p in self.sources if p.presence.present(s)]
        speaker = self.tracker.update(s, levels)
        video = {p.id: self.shows_video(p, s) for p in present}
        key = (tuple((p.id, video[p.id]) for p in present), speaker)
        if key != self.layout_key:
            self.layout_key = key
            self.layout = compute_layout(
                self.size, [Participant(p.id, video[p.id]) for p in present], speaker, self.spec
            )
            self.changes.append(_change(k * self.tick_ns, self.layout))
        assert self.layout is not None
        out = writer.new_frame()
        self.states[id(out)] = composite(
            self.tiles(self.layout),
            out,
            background=self.layout.background,
            previous=self.states.get(id(out)),
            threads=self.threads,
        )
        writer.write_video(out)

    def tiles(self, layout: Layout) -> list[Tile]:
        tiles = []
        for placement in layout.placements:
            source = self.by_id[placement.id]
            rect = placement.rect
            overlays = self._labels.get((source.id, rect.w, rect.h))
            if overlays is None:
                overlays = self._labels[source.id, rect.w, rect.h] = (
                    tuple(name_label(self.names[source.id], rect.w, rect.h)) if self.labels else ()
                )
            if placement.has_video and source.picture is not None:
                tiles.append(Tile(source.picture, rect, placement.fit, overlays=overlays))
            else:
                source.video_counts.shown_placeholder += 1
                tiles.append(
                    Tile(
                        placeholder(self.names[source.id], rect.w, rect.h),
                        rect,
                        "cover",
                        overlays=overlays,
                    )
                )
        return tiles


def _change(t_out: float, layout: Layout) -> LayoutChange:
    return LayoutChange(
        at_s=round(t_out / 1e9, 4),
        tiles=[
            LayoutTile(
                id=p.id,
                x=p.rect.x,
                y=p.rect.y,
                w=p.rect.w,
                h=p.rect.h,
                video=p.has_video,
                speaker=p.speaker,
            )
            for p in layout.placements
        ],
        hidden=list(layout.hidden),
    )
