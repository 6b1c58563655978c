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
from .encode import EncodeSettings
from .errors import CaptureError, ComposeError, DeliveryError, DescriptionError, SkymixError
from .layout import CustomSpec, GridSpec, PipSpec, SpeakerSpec, load_custom_layout
from .mix import MixOptions, MixReport, mix
from .progress import ProgressEvent
from .session import load_description
from .streams.room import scan_room

try:
    __version__ = version("skymix")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CaptureError",
    "ComposeError",
    "CompositeState",
    "CustomSpec",
    "DeliveryError",
    "DescriptionError",
    "EncodeSettings",
    "GridSpec",
    "MixOptions",
    "MixReport",
    "Overlay",
    "PipSpec",
    "ProgressEvent",
    "Rect",
    "SkymixError",
    "SpeakerSpec",
    "Tile",
    "__version__",
    "composite",
    "draw_mask",
    "load_custom_layout",
    "load_description",
    "mix",
    "mix_audio",
    "rgb_to_yuv",
    "scan_room",
]
