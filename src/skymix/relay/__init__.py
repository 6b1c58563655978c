"""The media relay skymix drives: a private Janus gateway and its videoroom's HTTP API."""

from .janus import JanusProcess, VideoRoomClient, janus_available, write_config

__all__ = ["JanusProcess", "VideoRoomClient", "janus_available", "write_config"]
