"""Write UDP datagrams to a classic pcap file (Ethernet, IPv4, nanosecond timestamps)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

__all__ = ["PcapWriter"]

_MAGIC_NS = 0xA1B23C4D
_LINKTYPE_ETHERNET = 1


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class PcapWriter:
    """Appends datagrams as Ethernet/IPv4/UDP frames, the way `tcpdump -i lo` records them."""

    def __init__(self, path: str | Path) -> None:
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(struct.pack("<IHHiIII", _MAGIC_NS, 2, 4, 0, 0, 262144, _LINKTYPE_ETHERNET))
        self._ident = 0

    def write(
        self, arrival_ns: int, src: tuple[str, int], dst: tuple[str, int], payload: bytes
    ) -> None:
        """One UDP datagram from src to dst, captured at arrival_ns (ns since the epoch)."""
        udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
        self._ident = (self._ident + 1) & 0xFFFF
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            self._ident,
            0x4000,
            64,
            17,
            0,
            socket.inet_aton(src[0]),
            socket.inet_aton(dst[0]),
        )
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = bytes(12) + b"\x08\x00" + ip + udp
        seconds, nanos = divmod(arrival_ns, 1_000_000_000)
        self._file.write(struct.pack("<IIII", seconds, nanos, len(frame), len(frame)) + frame)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
