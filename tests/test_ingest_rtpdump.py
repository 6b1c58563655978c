"""rtpdump reader: byte-level fixtures of the rtptools layout; FFmpeg's stream as rtpdump saw it.

rtptools is not packaged for Debian 12 (``apt-cache policy rtptools`` finds nothing) and
tshark 4.0 cannot read rtpdump, so the third-party part is FFmpeg's real RTP and RTCP, received
on sockets and written by a writer following rtptools' ``rtpdump.h`` byte for byte.
"""

from __future__ import annotations

import struct
import subprocess

import pytest

from ingest_tools import (
    FFMPEG_SEND,
    Receiver,
    encode_vp8,
    free_port_pair,
    rtp,
    rtpdump_file,
)
from skymix import CaptureError
from skymix.ingest import Endpoint, ReadStats, read_capture, read_rtpdump
from skymix.ingest.rtpdump import read_rtpdump_header

# A file as rtptools writes it, by hand: start 1700000000.250000, 127.0.0.1/5004 in both headers.
FIXTURE = bytes.fromhex(
    "2321727470706c6179312e30203132372e302e302e312f353030340a"  # "#!rtpplay1.0 127.0.0.1/5004\n"
    "6553f100"
    "0003d090"
    "7f000001"
    "138c"
    "0000"  # start sec, usec, source, port, pad
    "0016"
    "000e"
    "00000000"
    "8060000100000001deadbeef"
    "6869"  # RTP 14 bytes at +0 ms
    "0024"
    "0000"
    "00000011"  # RTCP (plen 0) at +17 ms: an SR
    "80c80006deadbeef00000000000000000000000100000001"
    "00000000"
    "0010"
    "0064"
    "00000028"
    "8060000200000a00"  # RTP cut to 8 of 100 bytes, +40 ms
)
START = 1_700_000_000 * 10**9 + 250_000 * 1000


def test_fixture_fields(tmp_path):
    path = tmp_path / "f.rtpdump"
    path.write_bytes(FIXTURE)
    header = read_rtpdump_header(path)
    assert header == type(header)(START, Endpoint("127.0.0.1", 5004), None, 28 + 16)
    stats = ReadStats()
    got = list(read_capture(path, stats))
    assert [(d.arrival_ns - START, d.offset, d.src, d.dst) for d in got] == [
        (0, 44, None, Endpoint("127.0.0.1", 5004)),
        (17_000_000, 66, None, Endpoint("127.0.0.1", 5005)),  # RTCP: rtptools listens on port+1
        (40_000_000, 102, None, Endpoint("127.0.0.1", 5004)),
    ]
    assert got[0].data == bytes.fromhex("8060000100000001deadbeef6869")
    assert got[1].data[1] == 200 and len(got[1].data) == 28
    assert got[2].data == bytes.fromhex("8060000200000a00")  # length rules, plen is the original
    assert (stats.records, stats.datagrams, stats.problems) == (3, 3, [])


def test_wireshark_style_source_and_ipv6_text_line(tmp_path):
    path = tmp_path / "w.rtpdump"
    rtpdump_file(
        path,
        START,
        [(5, rtp(1, 0, 7, b"a"), False), (6, b"\x80\xc9\x00\x01" + b"\x00" * 4, True)],
        address="::1",
        port=6000,
        source=("10.0.0.9", 40000),
    )
    got = list(read_rtpdump(path))
    assert [(d.src, d.dst) for d in got] == [
        (Endpoint("10.0.0.9", 40000), Endpoint("::1", 6000)),
        (None, Endpoint("::1", 6001)),
    ]


def test_ffmpeg_stream_as_rtpdump_records_it(tmp_path):
    """FFmpeg's VP8 RTP and RTCP, received as rtpdump receives them (RTP on P, RTCP on P + 1)."""
    media = tmp_path / "m.webm"
    encode_vp8(media)
    port = free_port_pair()
    receiver = Receiver((port, port + 1))
    try:
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
    finally:
        receiver.stop()
    start = receiver.got[0][0] // 1000 * 1000  # rtptools' start is a timeval
    records = [((t - start) // 1_000_000, data, p == port + 1) for t, p, data in receiver.got]
    path = tmp_path / "ff.rtpdump"
    rtpdump_file(path, start, records, port=port)
    stats = ReadStats()
    got = list(read_capture(path, stats))
    assert [d.data for d in got] == [data for _, _, data in receiver.got]
    assert [d.dst.port for d in got] == [p for _, p, _ in receiver.got]
    assert [d.arrival_ns for d in got] == [start + ms * 1_000_000 for ms, _, _ in records]
    assert sum(d.dst.port == port + 1 for d in got) >= 1  # FFmpeg's first SR
    assert all(d.data[0] >> 6 == 2 for d in got) and stats.problems == []


def test_garbage_is_skipped_and_truncation_stops_with_a_problem(tmp_path):
    path = tmp_path / "g.rtpdump"
    # record 2's length says 4: shorter than its own header; reading resumes at record 3
    path.write_bytes(FIXTURE[:66] + b"\x00\x04" + FIXTURE[68:])
    stats = ReadStats()
    assert [d.offset for d in read_rtpdump(path, stats)] == [28 + 16, 102]
    assert str(stats.problems[0]) == (
        f"{path}, offset 66: skipped bytes 66-102: impossible record length 4 (packet length 0)"
    )
    # record 2's length says 300: it runs past the end, but record 3 is found after it
    path.write_bytes(FIXTURE[:66] + struct.pack("!H", 300) + FIXTURE[68:])
    stats = ReadStats()
    assert [d.offset for d in read_rtpdump(path, stats)] == [28 + 16, 102]
    assert [(s.start, s.end) for s in stats.spans] == [(66, 102)]
    path.write_bytes(FIXTURE[:-3])
    stats = ReadStats()
    assert len(list(read_rtpdump(path, stats))) == 2
    assert str(stats.problems[0]) == f"{path}, offset 102: truncated record (5 of 8 bytes)"
    path.write_bytes(FIXTURE[:102] + b"\x00\x10\x00\x04")  # data longer than the packet's plen
    stats = ReadStats()
    assert len(list(read_rtpdump(path, stats))) == 2 and stats.problems[0].offset == 102


@pytest.mark.parametrize(
    "content",
    [
        b"#!rtpplay1.0 127.0.0.1/5004\n" + b"\x00" * 15,  # binary header truncated
        b"#!rtpplay1.0 127.0.0.1\n" + b"\x00" * 16,  # no port
        b"#!rtpplay1.0 127.0.0.1/0\n" + b"\x00" * 16,  # port 0
        b"#!rtpplay1.0 127.0.0.1/5004" + b"\x00" * 300,  # no end of line
        b"#!rtpplay1.0 1\x0127.0.0.1/5004\n" + b"\x00" * 16,  # non-printable address
        b"#!rtpplay1.0 127.0.0.1/5004\n" + b"\x00" * 4 + b"\xff" * 12,  # usec >= 10^6
    ],
)
def test_damaged_header_raises_naming_the_file(tmp_path, content):
    path = tmp_path / "h.rtpdump"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as err:
        read_capture(path)
    assert (err.value.file, err.value.offset) == (str(path), 0)
