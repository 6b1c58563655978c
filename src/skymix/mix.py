"""How a mix lays out, conceals and encodes: MixOptions.

The job driver that was here is skymix.job now (MixJob, and the second pass in ``_Mix``, whose
``run()`` writes the recording and the sidecars); the report is skymix.report; a participant's
decoders and concealment are skymix.sources; each output frame is skymix.scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .encode import Container, EncodeSettings
from .layout import GridSpec, LayoutSpec
from .sources import OnLoss

__all__ = ["MixOptions"]


@dataclass(frozen=True, slots=True)
class MixOptions:
    """How to lay out, conceal and encode.

    on_loss: after a video loss, hold the last good picture ("freeze") or show the placeholder
    ("placeholder") until the next keyframe. trim: leave out the stretches in which nobody is
    present. labels: draw each participant's display name on their tile. per_participant: a
    folder for a recording of each participant on their own; channels: a WAV with one channel
    per participant (both from the same decode as the mix).
    """

    layout: LayoutSpec = field(default_factory=GridSpec)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    container: Container = "mp4"
    on_loss: OnLoss = "freeze"
    trim: bool = False
    labels: bool = True
    per_participant: Path | None = None
    channels: Path | None = None
