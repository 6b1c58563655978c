"""Per-stream processing of captured RTP: payload formats (depayloading, keyframes, sizes)."""

from .codecs import (
    H264,
    Codec,
    FrameInfo,
    Opus,
    Pcma,
    Pcmu,
    Vp8,
    Vp9,
    Vp9Descriptor,
    Vp9ScalabilityStructure,
    codec_for,
    h264_sps_size,
    opus_packet_samples,
)

__all__ = [
    "H264",
    "Codec",
    "FrameInfo",
    "Opus",
    "Pcma",
    "Pcmu",
    "Vp8",
    "Vp9",
    "Vp9Descriptor",
    "Vp9ScalabilityStructure",
    "codec_for",
    "h264_sps_size",
    "opus_packet_samples",
]
