"""What runs beside the API for as long as the service does (the parts ``create_app`` starts
and stops): the job executor and the notification outbox."""

from __future__ import annotations

from .api.app import Lifecycle
from .config import ServiceConfig

__all__ = ["lifecycle"]


def lifecycle(config: ServiceConfig) -> list[Lifecycle]:
    """The parts to start, in order (stopped in reverse)."""
    return []
