"""Test helpers for the capture readers: real captures made at test time, and byte-exact writers.

Writers follow the byte layouts the readers document (pcap-savefile, pcapng draft, rtptools
``rtpdump.h``, Janus ``record.c``) so each field can be set on purpose; they are not readers'
code turned around, and the tests that use them also check against third-party files.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "FFMPEG_SEND",
    "LiveCapture",
    "Receiver",
    "Tcpdump",
    "encode_vp8",
    "eth",
    "ffmpeg_capture",
    "free_port_pair",
    "ipv4",
    "ipv6",
    "mjr_file",
    "pcap_file",
    "pcapng_block",
    "pcapng_epb",
    "pcapng_idb",
    "pcapng_shb",
    "rtp",
    "rtpdump_file",
    "sll",
    "sll2",
    "udp",
]


# --- real tools -----------------------------------------------------------------------------


class FakeClock:
    """A sender run under libfaketime: ``offset_s`` seconds off and running ``speed`` times real
    time (a dataclass mixing this in has those two fields)."""

    offset_s: float
    speed: float

    @property
    def faketime(self) -> str:
        """The ``faketime -m -f`` argument."""
        return f"{self.offset_s:+g} x{self.speed:g}"

    @property
    def ppm(self) -> float:
        return (self.speed - 1.0) * 1e6


def free_port_pair() -> int:
    """An even port P with P and P + 1 free for UDP on 127.0.0.1 (RTP and its RTCP)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1] & ~1
        if port < 1024 or port + 1 > 65535:
            continue
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free UDP port pair")


class Tcpdump:
    """tcpdump writing a pcap, started and stopped by PID; ready once it says "listening on"."""

    def __init__(
        self, path: Path, filter_: str, interface: str = "lo", extra: tuple[str, ...] = ()
    ) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            # immediate mode and a 16 MiB buffer: with libpcap's defaults a capture missed packets
            # of a burst now and then (seen: 32 and 33 of 34, three captures running at once)
            [
                "tcpdump",
                "-i",
                interface,
                "-U",
                "--immediate-mode",
                "-B",
                "16384",
                "-n",
                "-Z",
                "root",
                *extra,
                "-w",
                str(path),
                filter_,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.banner = ""
        while "listening on" not in self.banner:  # blocks until tcpdump listens (or dies)
            line = self.proc.stderr.readline()
            if not line:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise RuntimeError(f"tcpdump did not start: {self.banner}")
            self.banner += line

    def stop(self) -> str:
        """SIGINT, wait (bounded), return the rest of stderr (its packet counts)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err

    def captured(self, err: str) -> int:
        """The "N packets captured" count of tcpdump's exit report."""
        for line in err.splitlines():
            if line.endswith("packets captured"):
                return int(line.split()[0])
        raise AssertionError(f"no packet count in {err!r}")


@dataclass
class Receiver:
    """UDP sockets on 127.0.0.1 that keep what arrives on each port, in a thread.

    got holds (arrival ns by the wall clock, port, payload): what an rtpdump-like receiver sees.
    """

    ports: tuple[int, ...]
    counts: dict[int, int] = field(default_factory=dict)
    got: list[tuple[int, int, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.socks = []
        for port in self.ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind(("127.0.0.1", port))
            s.setblocking(False)
            self.socks.append(s)
            self.counts[port] = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            for port, s in zip(self.ports, self.socks):
                sel.register(s, selectors.EVENT_READ, port)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.05):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    self.got.append((time.time_ns(), key.data, data))
                    self.counts[key.data] += 1

    def stop(self) -> dict[int, int]:
        """Drain, stop the thread, close the sockets, return the counts per port."""
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(timeout=5)
        for s in self.socks:
            s.close()
        return self.counts


#: ffmpeg arguments that send a file's first video stream as RTP (the caller adds the URL).
FFMPEG_SEND = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]


def encode_vp8(path: Path, seconds: int = 2) -> None:
    """A VP8 WebM test pattern, encoded ahead so sending it with -c copy keeps real time."""
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=320x240:rate=15:duration={seconds}",
            "-c:v",
            "libvpx",
            "-b:v",
            "1M",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            str(path),
        ],
        check=True,
        timeout=120,
    )


# --- packet builders ------------------------------------------------------------------------


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 96) -> bytes:
    """A minimal RTP packet (RFC 3550): V=2, no CSRC or extension."""
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def udp(sport: int, dport: int, payload: bytes, length: int | None = None) -> bytes:
    """A UDP header (checksum 0) and payload; length overrides the header's length field."""
    return (
        struct.pack("!HHHH", sport, dport, len(payload) + 8 if length is None else length, 0)
        + payload
    )


def ipv4(
    src: str,
    dst: str,
    payload: bytes,
    proto: int = 17,
    options: bytes = b"",
    flags_frag: int = 0,
    total: int | None = None,
) -> bytes:
    """An IPv4 header (RFC 791) with optional options (padded to 4) and fragment field."""
    options += b"\x00" * (-len(options) % 4)
    ihl = 5 + len(options) // 4
    length = ihl * 4 + len(payload) if total is None else total
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            0,
            length,
            1,
            flags_frag,
            64,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + options
        + payload
    )


def ipv6(
    src: str, dst: str, payload: bytes, ext: tuple[tuple[int, bytes], ...] = (), proto: int = 17
) -> bytes:
    """An IPv6 header (RFC 8200) with extension headers given as (type, whole header bytes).

    Each header's first byte (next header) is filled in here; the caller sets its length byte.
    """
    chain = [t for t, _ in ext] + [proto]
    body = b"".join(bytes([chain[i + 1]]) + h[1:] for i, (_, h) in enumerate(ext)) + payload
    return (
        struct.pack("!IHBB", 6 << 28, len(body), chain[0], 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + body
    )


def eth(
    packet: bytes, ethertype: int = 0x0800, vlans: tuple[int, ...] = (), trailer: bytes = b""
) -> bytes:
    """An Ethernet II frame; vlans are the tag protocol ids, outermost first (0x8100, 0x88A8)."""
    header = b"\x00" * 12
    if vlans:
        header += struct.pack("!H", vlans[0])
        for i, _ in enumerate(vlans):
            nxt = vlans[i + 1] if i + 1 < len(vlans) else ethertype
            header += struct.pack("!HH", 100 + i, nxt)
    else:
        header += struct.pack("!H", ethertype)
    return header + packet + trailer


def sll(packet: bytes, protocol: int = 0x0800) -> bytes:
    """Linux cooked v1 header (16 bytes): pkttype, ARPHRD, halen, addr[8], protocol."""
    return struct.pack("!HHH8sH", 0, 772, 6, b"\x00" * 8, protocol) + packet


def sll2(packet: bytes, protocol: int = 0x0800) -> bytes:
    """Linux cooked v2 header (20 bytes): protocol, reserved, ifindex, ARPHRD, type, halen, addr."""
    return struct.pack("!HHIHBB8s", protocol, 0, 1, 772, 0, 6, b"\x00" * 8) + packet


# --- file writers ---------------------------------------------------------------------------


def pcap_file(
    path: Path,
    records: list[tuple[int, bytes]],
    linktype: int = 1,
    order: str = "<",
    nanos: bool = False,
) -> None:
    """A classic pcap of (arrival_ns, frame) records in one byte order and resolution."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for ns, frame in records:
        sec, frac = divmod(ns, 10**9)
        out.append(
            struct.pack(
                order + "IIII", sec, frac if nanos else frac // 1000, len(frame), len(frame)
            )
            + frame
        )
    path.write_bytes(b"".join(out))


def _options(order: str, options: list[tuple[int, bytes]]) -> bytes:
    """pcapng options (code, value), each padded to 4, then opt_endofopt."""
    out = b"".join(
        struct.pack(order + "HH", c, len(v)) + v + b"\x00" * (-len(v) % 4) for c, v in options
    )
    return out + struct.pack(order + "HH", 0, 0) if options else out


def pcapng_block(order: str, block_type: int, body: bytes) -> bytes:
    """Any pcapng block: type, total length, body padded to 4, total length."""
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def pcapng_shb(order: str) -> bytes:
    """A Section Header Block, version 1.0, section length unknown, with an shb_userappl."""
    return pcapng_block(
        order,
        0x0A0D0D0A,
        struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _options(order, [(4, b"skymix tests")]),
    )


def pcapng_idb(
    order: str, linktype: int, tsresol: int | None = None, tsoffset: int | None = None
) -> bytes:
    """An Interface Description Block with optional if_tsresol (9) and if_tsoffset (14)."""
    options = [(2, b"test0")]
    if tsresol is not None:
        options.append((9, bytes([tsresol])))
    if tsoffset is not None:
        options.append((14, struct.pack(order + "q", tsoffset)))
    return pcapng_block(
        order, 1, struct.pack(order + "HHI", linktype, 0, 0) + _options(order, options)
    )


def pcapng_epb(order: str, interface: int, units: int, frame: bytes, pb: bool = False) -> bytes:
    """An Enhanced Packet Block (or an obsolete Packet Block) at a timestamp in interface units."""
    high, low = units >> 32, units & 0xFFFFFFFF
    if pb:
        head = struct.pack(order + "HHIIII", interface, 0, high, low, len(frame), len(frame))
        return pcapng_block(order, 2, head + frame + b"\x00" * (-len(frame) % 4))
    head = struct.pack(order + "IIIII", interface, high, low, len(frame), len(frame))
    return pcapng_block(
        order, 6, head + frame + b"\x00" * (-len(frame) % 4) + _options(order, [(1, b"a comment")])
    )


def rtpdump_file(
    path: Path,
    start_ns: int,
    records: list[tuple[int, bytes, bool]],
    address: str = "127.0.0.1",
    port: int = 5004,
    source: tuple[str, int] | None = None,
) -> None:
    """An rtptools dump: records are (offset_ms, packet, is_rtcp); source defaults to address.

    rtptools writes the same address in the text line and the binary header; Wireshark writes
    the source in the binary header, which ``source`` reproduces.
    """
    sec, nsec = divmod(start_ns, 10**9)
    src_host, src_port = source or (address, port)
    out = [
        f"#!rtpplay1.0 {address}/{port}\n".encode(),
        struct.pack("!II4sHH", sec, nsec // 1000, socket.inet_aton(src_host), src_port, 0),
    ]
    for ms, packet, is_rtcp in records:
        out.append(struct.pack("!HHI", len(packet) + 8, 0 if is_rtcp else len(packet), ms) + packet)
    path.write_bytes(b"".join(out))


def mjr_file(
    path: Path,
    frames: list[tuple[int, bytes]],
    info: dict | None = None,
    version: int = 2,
    legacy_kind: bytes = b"video",
) -> None:
    """A Janus recording: MJR00002 (frames (ms, bytes)), MJR00001 or legacy (ms ignored)."""
    import json

    if version == 0:
        out = [b"MEETECHO" + struct.pack("!H", len(legacy_kind)) + legacy_kind]
    else:
        text = json.dumps(info).encode()
        out = [f"MJR0000{version}".encode() + struct.pack("!H", len(text)) + text]
    for ms, data in frames:
        if version == 2:
            out.append(b"MEET" + struct.pack("!IH", ms, len(data)) + data)
        else:
            out.append(b"MEETECHO" + struct.pack("!H", len(data)) + data)
    path.write_bytes(b"".join(out))


@dataclass
class LiveCapture:
    """What one FFmpeg RTP send produced: tcpdump files, their counts, what sockets received."""

    port: int
    files: dict[str, Path]
    tcpdump_counts: dict[str, int]
    receiver: Receiver
    start_ns: int
    end_ns: int


def ffmpeg_capture(directory: Path, dumps: dict[str, tuple[str, tuple[str, ...]]]) -> LiveCapture:
    """Send a VP8 test pattern with FFmpeg's RTP muxer to 127.0.0.1:P (RTCP on P + 1) while
    tcpdumps (name: (interface, extra args)) capture it and sockets receive it."""
    media = directory / "media.webm"
    encode_vp8(media)
    port = free_port_pair()
    receiver = Receiver((port, port + 1))
    running: dict[str, Tcpdump] = {}
    try:
        for name, (interface, extra) in dumps.items():
            running[name] = Tcpdump(
                directory / f"{name}.pcap", f"udp and portrange {port}-{port + 1}", interface, extra
            )
        start = time.time_ns()
        subprocess.run(
            FFMPEG_SEND
            + [
                "-i",
                str(media),
                "-c",
                "copy",
                "-f",
                "rtp",
                f"rtp://127.0.0.1:{port}?rtcpport={port + 1}",
            ],
            check=True,
            timeout=60,
            stdout=subprocess.DEVNULL,
        )
        end = time.time_ns()
    finally:
        receiver.stop()
        reports = {name: dump.stop() for name, dump in running.items()}
    counts = {name: running[name].captured(err) for name, err in reports.items()}
    return LiveCapture(
        port, {name: d.path for name, d in running.items()}, counts, receiver, start, end
    )


def wait_senders(procs: list[subprocess.Popen], names: list[str], timeout: float) -> None:
    """Wait for sender processes (each `faketime ... ffmpeg` in a session of its own) to end
    well; whatever still runs afterwards, on success or failure, is killed with its group."""
    try:
        for name, proc in zip(names, procs):
            _, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"ffmpeg for {name} failed: {err}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
