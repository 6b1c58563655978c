"""Delivering recordings: the customer's storage (S3 by ARN, or a local folder), download links,
recording states, signed webhooks and e-mail (issue 10). Each module holds one of these jobs;
``chain`` runs them in order for one recording (``deliver_recording``, ``resume``).

The names below are imported on first use: boto3 costs ~180 ms to import, and the command line
reaches this package for ``s3-policy``, which needs none of it."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chain import (
        DeliveryOptions,
        DeliveryOutcome,
        deliver_recording,
        resume,
        s3_access,
        storage_of,
    )
    from .settings import RecordingSettings, SmtpSettings
    from .states import EVENT_LOG_NAME, Recording, RecordingState

__all__ = [
    "EVENT_LOG_NAME",
    "DeliveryOptions",
    "DeliveryOutcome",
    "Recording",
    "RecordingSettings",
    "RecordingState",
    "SmtpSettings",
    "deliver_recording",
    "resume",
    "s3_access",
    "storage_of",
]

_HOME = {
    "DeliveryOptions": ".chain",
    "DeliveryOutcome": ".chain",
    "deliver_recording": ".chain",
    "resume": ".chain",
    "s3_access": ".chain",
    "storage_of": ".chain",
    "RecordingSettings": ".settings",
    "SmtpSettings": ".settings",
    "EVENT_LOG_NAME": ".states",
    "Recording": ".states",
    "RecordingState": ".states",
}


def __getattr__(name: str) -> Any:
    """A delivery name, imported from its module on first use."""
    if name not in _HOME:
        raise AttributeError(f"module 'skymix.deliver' has no attribute {name!r}")
    return getattr(import_module(_HOME[name], __name__), name)
