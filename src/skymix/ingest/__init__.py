"""Capture readers: rtpdump, pcap/pcapng and Janus .mjr files as one stream of UDP datagrams.

``read_capture`` picks the reader by the file's first bytes, so a caller never names a format.
Every reader streams (a capture of hours is never held whole), yields what it can read, and
records damage in a ReadStats instead of raising once the file header was accepted: damaged
records are skipped to the next plausible one (the span in ``ReadStats.spans``), and arrival times
out of line with their neighbours are set aside (see ``records``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..errors import CaptureError
from .mjr import (
    MJR_MAGICS,
    MjrInfo,
    MjrRecording,
    VideoroomName,
    parse_videoroom_name,
    read_mjr,
)
from .pcap import PCAP_MAGICS, PCAPNG_MAGIC, read_pcap, read_pcapng
from .records import Datagram, Endpoint, ReadStats, SkippedSpan
from .rtpdump import RTPDUMP_MAGIC, read_rtpdump

__all__ = [
    "Datagram",
    "Endpoint",
    "MjrInfo",
    "MjrRecording",
    "ReadStats",
    "SkippedSpan",
    "VideoroomName",
    "capture_format",
    "parse_videoroom_name",
    "read_capture",
    "read_mjr",
    "read_pcap",
    "read_pcapng",
    "read_rtpdump",
]


def capture_format(path: str | os.PathLike[str]) -> str:
    """ "pcap", "pcapng", "rtpdump" or "mjr", by magic bytes; CaptureError (offset 0) otherwise."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            head = f.read(len(RTPDUMP_MAGIC))
    except OSError as exc:
        raise CaptureError(f"cannot open: {exc.strerror}", file=name, offset=0) from exc
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    if head[:4] == PCAPNG_MAGIC:
        return "pcapng"
    if head == RTPDUMP_MAGIC:
        return "rtpdump"
    if head[:8] in MJR_MAGICS:
        return "mjr"
    raise CaptureError(
        "not a capture file: it starts with no pcap, pcapng, rtpdump or .mjr magic",
        file=name,
        offset=0,
    )


def read_capture(
    path: str | os.PathLike[str], stats: ReadStats | None = None
) -> Iterator[Datagram]:
    """Every datagram of a capture file of any supported format, in file order.

    Raises CaptureError naming the file (offset 0) at once when it is not a capture or its header
    is damaged; later damage is skipped and reported in ``stats.spans`` and ``stats.problems``
    (a truncated last record ends the iteration with a problem).
    """
    kind = capture_format(path)
    if kind == "pcap":
        return read_pcap(path, stats)
    if kind == "pcapng":
        return read_pcapng(path, stats)
    if kind == "rtpdump":
        return read_rtpdump(path, stats)
    return iter(read_mjr(path, stats))
