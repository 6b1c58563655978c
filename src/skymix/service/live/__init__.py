"""Live rooms (docs/live.md): Janus as the media relay, recordings started and stopped from the
browsers, each one handed at STOP to the service's mix-and-deliver job."""

from .rooms import JoinInfo, LiveError, LiveRooms, Send

__all__ = ["JoinInfo", "LiveError", "LiveRooms", "Send"]
