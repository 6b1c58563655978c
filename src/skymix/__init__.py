"""skymix: turn a media relay's RTP captures into one finished, composited recording."""

from importlib.metadata import PackageNotFoundError, version

from .compose import (
    CompositeState,
    Overlay,
    Rect,
    Tile,
    composite,
    draw_mask,
    mix_audio,
    rgb_to_yuv,
)
from .errors import CaptureError, ComposeError, DeliveryError, DescriptionError, SkymixError

try:
    __version__ = version("skymix")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CaptureError",
    "ComposeError",
    "CompositeState",
    "DeliveryError",
    "DescriptionError",
    "Overlay",
    "Rect",
    "SkymixError",
    "Tile",
    "__version__",
    "composite",
    "draw_mask",
    "mix_audio",
    "rgb_to_yuv",
]
