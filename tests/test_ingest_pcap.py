"""pcap/pcapng reader: tcpdump captures of FFmpeg's RTP muxer, and pcapng/link layers built here."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import RtcpPacket, RtcpSrPacket

from ingest_tools import (
    eth,
    ffmpeg_capture,
    ipv4,
    ipv6,
    pcap_file,
    pcapng_block,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
    rtp,
    sll,
    sll2,
    udp,
)
from skymix import CaptureError
from skymix.ingest import Endpoint, ReadStats, read_capture, read_pcap, read_pcapng
from skymix.ingest.batch import read_batches

LOCAL = "127.0.0.1"
SEC = 1_000_000_000


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One FFmpeg VP8 send captured at once by tcpdump on lo (µs, ns) and on any (SLL2)."""
    return ffmpeg_capture(
        tmp_path_factory.mktemp("live"),
        {
            "lo": ("lo", ()),
            "nano": ("lo", ("--time-stamp-precision=nano",)),
            "any": ("any", ()),
        },
    )


@pytest.mark.parametrize(
    "name, magic, linktype",
    [("lo", "d4c3b2a1", 1), ("nano", "4d3cb2a1", 1), ("any", "d4c3b2a1", 276)],
)
def test_tcpdump_capture_of_ffmpeg_rtp(live, name, magic, linktype):
    path = live.files[name]
    head = path.read_bytes()[:24]
    assert (head[:4].hex(), struct.unpack("<I", head[20:])[0]) == (magic, linktype)
    stats = ReadStats()
    got = list(read_capture(path, stats))
    port = live.port
    # Every packet tcpdump captured and every packet the sockets received, nothing else.
    assert len(got) == live.tcpdump_counts[name] == sum(live.receiver.counts.values())
    assert (stats.records, stats.datagrams, stats.skipped, stats.problems) == (
        len(got),
        len(got),
        {},
        [],
    )
    assert {p: sum(d.dst.port == p for d in got) for p in (port, port + 1)} == live.receiver.counts
    assert all(d.dst == Endpoint(LOCAL, d.dst.port) and d.src.host == LOCAL for d in got)
    assert [d.data for d in got] == [data for _, _, data in live.receiver.got]
    media = [d.data for d in got if d.dst.port == port]
    assert len(media) > 20 and all(p[0] >> 6 == 2 and p[1] & 0x7F == 96 for p in media)
    assert len({p[8:12] for p in media}) == 1  # one SSRC
    reports = [pkt for d in got if d.dst.port == port + 1 for pkt in RtcpPacket.parse(d.data)]
    assert reports and all(isinstance(r, RtcpSrPacket) for r in reports)
    assert reports[0].ssrc == int.from_bytes(media[0][8:12], "big")
    arrivals = [d.arrival_ns for d in got]
    assert arrivals == sorted(arrivals)
    assert live.start_ns - SEC < arrivals[0] and arrivals[-1] < live.end_ns + SEC
    if name == "nano":
        assert any(a % 1000 for a in arrivals)  # ns digits kept, no float rounding
    else:
        assert all(a % 1000 == 0 for a in arrivals)
    offset = 24
    for d, (caplen,) in zip(got, _caplens(path)):
        assert d.offset == offset
        offset += 16 + caplen


def _caplens(path):
    """The captured length of every record of a little-endian pcap, walked independently."""
    data = path.read_bytes()
    pos = 24
    while pos < len(data):
        (caplen,) = struct.unpack_from("<I", data, pos + 8)
        yield (caplen,)
        pos += 16 + caplen


def test_pcapng_with_every_link_layer_from_real_datagrams(live, tmp_path):
    """The lo capture's datagrams rewritten as pcapng: 3 sections (LE, BE, LE), 5 interfaces,
    ns / 2^-20 / default µs resolutions, if_tsoffset, EPB/PB/SPB, VLAN stacks, SLL, SLL2, BSD NULL
    in both byte orders, IPv4 options, IPv6 extension headers, unknown blocks and non-UDP frames.
    """
    source = list(read_pcap(live.files["nano"]))
    first, second = len(source) // 2, 3 * len(source) // 4
    offset_s = 1_700_000_000
    blocks: list[bytes] = []
    expected = []
    skipped: dict[str, int] = {}

    def skip(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    def v4(d, options=b""):
        return ipv4(d.src.host, d.dst.host, udp(d.src.port, d.dst.port, d.data), options=options)

    def v6(d):
        hop = (0, bytes([0, 0, 1, 4, 0, 0, 0, 0]))  # Hop-by-Hop, PadN, 8 bytes
        dest = (60, bytes([0, 1, 1, 12]) + b"\x00" * 12)  # Destination Options, 16 bytes
        frag = (44, bytes([0, 0, 0, 0, 0, 0, 0, 9]))  # atomic fragment (offset 0, M 0)
        return ipv6("::1", "fe80::2", udp(d.src.port, d.dst.port, d.data), (hop, dest, frag))

    def v6_endpoints(d):
        return Endpoint("::1", d.src.port), Endpoint("fe80::2", d.dst.port)

    # Section 1, little-endian: ns Ethernet, 2^-20 SLL with an offset, NULL (LE host).
    blocks += [
        pcapng_shb("<"),
        pcapng_idb("<", 1, tsresol=9),
        pcapng_idb("<", 113, tsresol=0x80 | 20, tsoffset=offset_s),
        pcapng_idb("<", 0, tsresol=6),
        pcapng_block("<", 0x40000BAD, b"\x00\x00\x00\x01custom"),
        pcapng_block("<", 4, b"\x00" * 8),
    ]  # a Name Resolution Block
    for i, d in enumerate(source[:first]):
        ns = d.arrival_ns
        kind = i % 4
        if kind == 0:
            frame = eth(v4(d), vlans=(0x88A8, 0x8100))
            blocks.append(pcapng_epb("<", 0, ns, frame))
            expected.append((ns, d.data, d.src, d.dst))
        elif kind == 1:
            units = ((ns - offset_s * SEC) << 20) // SEC
            blocks.append(pcapng_epb("<", 1, units, sll(v4(d, options=b"\x94\x04\x00\x00"))))
            got_ns = ((units * SEC) >> 20) + offset_s * SEC
            # Less than one 2^-20 s unit (953.7 ns) is lost, plus the nanosecond the way back
            # rounds off.
            assert 0 <= ns - got_ns <= SEC // 2**20 + 1
            expected.append((got_ns, d.data, d.src, d.dst))
        elif kind == 2:
            frame = struct.pack("<I", 2) + v4(d)
            blocks.append(pcapng_epb("<", 2, ns // 1000, frame))
            expected.append((ns // 1000 * 1000, d.data, d.src, d.dst))
        else:
            blocks.append(pcapng_epb("<", 0, ns, eth(v6(d), 0x86DD), pb=True))
            expected.append((ns, d.data, *v6_endpoints(d)))
    # Traffic that is not for us, each counted by reason.
    last = source[0]
    blocks.append(pcapng_epb("<", 0, 1, eth(b"\x00" * 28, 0x0806)))
    skip("not IP")
    blocks.append(pcapng_epb("<", 0, 1, eth(ipv4(LOCAL, LOCAL, b"\x00" * 20, proto=6))))
    skip("not UDP")
    blocks.append(pcapng_epb("<", 0, 1, eth(ipv4(LOCAL, LOCAL, b"\x00" * 64, flags_frag=0x2000))))
    skip("ip fragment")
    blocks.append(pcapng_epb("<", 0, 1, eth(ipv4(LOCAL, LOCAL, b"\x00" * 64, flags_frag=8))))
    skip("ip fragment")
    blocks.append(pcapng_epb("<", 0, 1, eth(ipv4(LOCAL, LOCAL, udp(1, 2, b"xx", length=99)))))
    skip("UDP length disagrees with IP length")
    blocks.append(pcapng_epb("<", 7, 1, eth(v4(last))))
    skip("unknown pcapng interface")
    blocks.append(pcapng_block("<", 5, b"\x00" * 12))  # an Interface Statistics Block

    # Section 2, big-endian: SLL2 at the default µs, NULL from a big-endian host (AF 30, IPv6).
    blocks += [pcapng_shb(">"), pcapng_idb(">", 276), pcapng_idb(">", 0)]
    for i, d in enumerate(source[first:second]):
        if i % 2:
            blocks.append(pcapng_epb(">", 0, d.arrival_ns // 1000, sll2(v4(d))))
            expected.append((d.arrival_ns // 1000 * 1000, d.data, d.src, d.dst))
        else:
            frame = struct.pack(">I", 30) + v6(d)
            blocks.append(pcapng_epb(">", 1, d.arrival_ns // 1000, frame))
            expected.append((d.arrival_ns // 1000 * 1000, d.data, *v6_endpoints(d)))

    # Section 3: raw IP, then Simple Packet Blocks (no time: the previous packet's).
    blocks += [pcapng_shb("<"), pcapng_idb("<", 101, tsresol=9)]
    for i, d in enumerate(source[second:]):
        if i == 0:
            blocks.append(pcapng_epb("<", 0, d.arrival_ns, v4(d)))
            expected.append((d.arrival_ns, d.data, d.src, d.dst))
        else:
            frame = v4(d)
            blocks.append(pcapng_block("<", 3, struct.pack("<I", len(frame)) + frame))
            expected.append((expected[-1][0], d.data, d.src, d.dst))

    path = tmp_path / "all.pcapng"
    path.write_bytes(b"".join(blocks))
    stats = ReadStats()
    got = [(d.arrival_ns, d.data, d.src, d.dst) for d in read_capture(path, stats)]
    assert got == expected
    assert len(source) > 20 and stats.datagrams == len(expected)
    assert stats.skipped == skipped and stats.problems == []


def test_pcapng_timestamp_resolutions_exactly(tmp_path):
    """if_tsresol 10^-n (above and below ns) and 2^-n, and if_tsoffset, in integer ns."""
    frame = ipv4(LOCAL, LOCAL, udp(1, 2, b"x"))
    cases = [
        (None, None, 1_700_000_000_123_456, 1_700_000_000_123_456_000),
        (3, 5, 7, 5_007_000_000),
        (12, None, 1_700_000_123_456_789_999, 1_700_000_123_456_789),
        (0x80 | 1, 1, 3, 2_500_000_000),
        (0x80 | 30, 0, (1 << 30) + 1, 1_000_000_000),
    ]  # 1 + 2^-30 s floors to 1 s
    for i, (resol, offset, units, ns) in enumerate(cases):
        path = tmp_path / f"{i}.pcapng"
        path.write_bytes(
            pcapng_shb(">") + pcapng_idb(">", 101, resol, offset) + pcapng_epb(">", 0, units, frame)
        )
        assert [d.arrival_ns for d in read_pcapng(path)] == [ns]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
@pytest.mark.parametrize(
    "linktype, wrap",
    [
        (1, lambda p: eth(p, trailer=b"\x00" * 30)),  # Ethernet with trailer padding
        (1, lambda p: eth(p, vlans=(0x9100, 0x8100, 0x8100))),  # three stacked tags
        (113, sll),
        (276, sll2),
        (101, lambda p: p),
        (12, lambda p: p),
        (14, lambda p: p),
        (0, lambda p: struct.pack("<I", 2) + p),
        (0, lambda p: struct.pack(">I", 2) + p),
        (108, lambda p: struct.pack(">I", 2) + p),
    ],
)
def test_classic_pcap_byte_orders_resolutions_link_types(tmp_path, order, nanos, linktype, wrap):
    packets = [rtp(i, 90 * i, 0x1234, bytes([i]) * 10) for i in range(5)]
    times = [1_700_000_000 * SEC + 123_456_789 + i * 20_000_000 for i in range(5)]
    path = tmp_path / "f.pcap"
    pcap_file(
        path,
        [
            (t, wrap(ipv4("10.0.0.1", "10.0.0.2", udp(5000, 6000, p))))
            for t, p in zip(times, packets)
        ],
        linktype | 0x10000000,
        order,
        nanos,
    )
    got = list(read_capture(path))
    assert [d.data for d in got] == packets
    assert [d.arrival_ns for d in got] == [t if nanos else t // 1000 * 1000 for t in times]
    assert {(d.src, d.dst) for d in got} == {
        (Endpoint("10.0.0.1", 5000), Endpoint("10.0.0.2", 6000))
    }


def test_snaplen_cut_and_unknown_link_type_are_counted(tmp_path):
    full = eth(ipv4(LOCAL, LOCAL, udp(1, 2, b"y" * 100)))
    path = tmp_path / "f.pcap"
    pcap_file(path, [(SEC, full[:60]), (SEC, full)])
    stats = ReadStats()
    assert [d.data for d in read_pcap(path, stats)] == [b"y" * 100]
    assert stats.skipped == {"truncated by snaplen": 1}
    pcap_file(path, [(SEC, full)], linktype=105)  # 802.11
    stats = ReadStats()
    assert list(read_pcap(path, stats)) == [] and stats.skipped == {"unsupported link type": 1}


def test_damage_keeps_what_came_before(tmp_path):
    # 20 ms apart: a last packet a second after the one before would be a jump nothing confirms
    frames = [
        (SEC + i * SEC // 50, ipv4(LOCAL, LOCAL, udp(1, 2, bytes([i]) * 8))) for i in range(3)
    ]
    path = tmp_path / "f.pcap"
    pcap_file(path, frames, linktype=101)
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])  # truncated final record
    stats = ReadStats()
    assert [d.data[0] for d in read_pcap(path, stats)] == [0, 1]
    (problem,) = stats.problems
    assert (problem.file, problem.offset) == (str(path), 24 + 2 * (16 + 36))
    assert str(problem) == f"{path}, offset 128: truncated record (31 of 36 bytes)"
    bad = bytearray(whole)
    bad[24 + 52 + 8 : 24 + 52 + 12] = struct.pack("<I", 10**7)  # impossible captured length
    path.write_bytes(bytes(bad))
    stats = ReadStats()
    assert [d.data[0] for d in read_pcap(path, stats)] == [0, 2]  # resynchronised after it
    assert str(stats.problems[0]).endswith(
        "offset 76: skipped bytes 76-128: impossible captured length 10000000"
    )
    assert [(s.start, s.end) for s in stats.spans] == [(76, 128)]

    ng = (
        pcapng_shb("<")
        + pcapng_idb("<", 101)
        + b"".join(pcapng_epb("<", 0, t // 1000, f) for t, f in frames)
    )
    last = len(pcapng_epb("<", 0, 0, frames[2][1]))
    for cut, message in [
        (ng[:-4] + b"\x00\x00\x00\x00", "block trailer length differs"),
        (ng[:-last] + struct.pack("<II", 6, 13) + ng[8 - last :], "impossible block length 13"),
    ]:
        path.write_bytes(cut)
        stats = ReadStats()
        assert [d.data[0] for d in read_pcapng(path, stats)] == [0, 1]
        assert message in str(stats.problems[0]) and stats.problems[0].file == str(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xd4\xc3\xb2\xa1\x02\x00",
        b"GIF89a" + b"\x00" * 40,
        b"\x0a\x0d\x0d\x0a" + b"\x00" * 40,
    ],
)
def test_not_a_capture_raises_naming_the_file(tmp_path, content):
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as err:
        read_capture(path)  # raises at the call, before iteration
    assert (err.value.file, err.value.offset) == (str(path), 0)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("linktype", [1, 101, 113, 276])
def test_a_tiny_file_of_records_too_short_for_any_header(tmp_path, linktype):
    """The batch reader looks at no byte past the buffer (a file shorter than an IP header)."""
    path = tmp_path / "tiny.pcap"
    for size in range(10):
        pcap_file(path, [(SEC, b"\x45" * size)], linktype=linktype)
        stats, batch_stats = ReadStats(), ReadStats()
        assert list(read_capture(path, stats)) == []
        assert [len(b) for b in read_batches(path, batch_stats)] in ([], [0])
        assert stats.records == batch_stats.records == 1
        assert batch_stats.skipped == stats.skipped and sum(stats.skipped.values()) == 1
