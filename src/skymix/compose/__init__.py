"""Compositing video tiles and mixing audio blocks: the Python face of the native core."""

from .audio import mix_audio
from .color import Matrix, rgb_to_yuv
from .video import (
    CompositeState,
    Fit,
    Overlay,
    Planes,
    Rect,
    Tile,
    composite,
    draw_mask,
    frame_planes,
)

__all__ = [
    "CompositeState",
    "Fit",
    "Matrix",
    "Overlay",
    "Planes",
    "Rect",
    "Tile",
    "composite",
    "draw_mask",
    "frame_planes",
    "mix_audio",
    "rgb_to_yuv",
]
