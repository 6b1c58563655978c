"""skymix: turn a media relay's RTP captures into one finished, composited recording."""

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
from .errors import (
    CancelledError,
    CaptureError,
    ComposeError,
    DamageError,
    DecodeError,
    DeliveryError,
    DescriptionError,
    InternalError,
    JobTooLargeError,
    NothingToMixError,
    OptionsError,
    OutputConflictError,
    OutputError,
    RecordingStateError,
    SkymixError,
)
from .events import JobControl, JobState, JobSubscriber, StateEvent
from .job import MixJob, mix
from .layout import CustomSpec, GridSpec, PipSpec, SpeakerSpec, load_custom_layout
from .options import MixOptions
from .progress import ProgressEvent, Stage
from .report import MixReport
from .session import load_description
from .streams.room import scan_room


def __getattr__(name: str) -> str:
    """`__version__`, looked up on first use: importing importlib.metadata costs ~20 ms, at
    every start of the command line otherwise."""
    if name != "__version__":
        raise AttributeError(f"module 'skymix' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("skymix")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


__all__ = [
    "CancelledError",
    "CaptureError",
    "ComposeError",
    "CompositeState",
    "CustomSpec",
    "DamageError",
    "DecodeError",
    "DeliveryError",
    "DescriptionError",
    "EncodeSettings",
    "GridSpec",
    "InternalError",
    "JobControl",
    "JobState",
    "JobSubscriber",
    "JobTooLargeError",
    "MixJob",
    "MixOptions",
    "MixReport",
    "NothingToMixError",
    "OptionsError",
    "OutputConflictError",
    "OutputError",
    "Overlay",
    "PipSpec",
    "ProgressEvent",
    "Rect",
    "RecordingStateError",
    "SkymixError",
    "SpeakerSpec",
    "Stage",
    "StateEvent",
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
