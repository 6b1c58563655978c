"""skymix: turn a media relay's RTP captures into one finished, composited recording."""

from typing import TYPE_CHECKING, Any

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
    RelayError,
    SecretKeyError,
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

if TYPE_CHECKING:
    from .deliver.chain import DeliveryOptions, DeliveryOutcome, deliver_recording
    from .deliver.chain import resume as resume_delivery
    from .deliver.settings import RecordingSettings

#: Names imported on first use (boto3 and pydantic's models cost ~180 ms at every start
#: otherwise): name -> (module, attribute).
_LAZY = {
    "DeliveryOptions": (".deliver.chain", "DeliveryOptions"),
    "DeliveryOutcome": (".deliver.chain", "DeliveryOutcome"),
    "deliver_recording": (".deliver.chain", "deliver_recording"),
    "resume_delivery": (".deliver.chain", "resume"),
    "RecordingSettings": (".deliver.settings", "RecordingSettings"),
}


def __getattr__(name: str) -> Any:
    """`__version__` and the delivery names, looked up on first use: importing
    importlib.metadata costs ~20 ms, the delivery modules more, at every start of the command
    line otherwise."""
    if name in _LAZY:
        from importlib import import_module

        module, attribute = _LAZY[name]
        return getattr(import_module(module, __name__), attribute)
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
    "DeliveryOptions",
    "DeliveryOutcome",
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
    "RecordingSettings",
    "RecordingStateError",
    "RelayError",
    "SecretKeyError",
    "Rect",
    "SkymixError",
    "SpeakerSpec",
    "Stage",
    "StateEvent",
    "Tile",
    "__version__",
    "composite",
    "deliver_recording",
    "draw_mask",
    "load_custom_layout",
    "load_description",
    "mix",
    "mix_audio",
    "resume_delivery",
    "rgb_to_yuv",
    "scan_room",
]
