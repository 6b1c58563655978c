"""Fuzzing every reader: truncated, corrupted and extended files never crash or hang, and keep
everything before the damage.

Each sample file is small and valid; ``boundaries`` are the byte offsets where its records end.
A reader given a damaged copy must raise CaptureError naming the file (only when the damage is
in the file header) or end normally, having yielded exactly the datagrams of the records that end
before the damage; a cut between records is no damage, a cut inside one is recorded in
``stats.problems``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_tools import (
    eth,
    ipv4,
    ipv6,
    mjr_file,
    pcap_file,
    pcapng_block,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
    rtp,
    rtpdump_file,
    sll,
    sll2,
    udp,
)
from skymix import CaptureError
from skymix.ingest import ReadStats, read_capture
from skymix.ingest.batch import read_batches

PACKETS = [rtp(i, 3000 * i, 0xABCD, bytes([i]) * (7 * i + 3)) for i in range(6)]
T0 = 1_700_000_000 * 10**9


def _frame(i: int) -> bytes:
    return eth(ipv4("10.0.0.1", "10.0.0.2", udp(4000, 5000, PACKETS[i])))


def _pcap(path):
    pcap_file(path, [(T0 + i * 10**7, _frame(i)) for i in range(len(PACKETS))], nanos=True)
    return 24, set()


def _pcap_mixed(path):
    """Classic pcap in big-endian µs with frames the batch reader cuts by arrays (plain IPv4
    over SLL2) and frames it hands to the record reader (IP options, IPv6, non-UDP)."""
    frames = [
        sll2(ipv4("10.0.0.1", "10.0.0.2", udp(4000, 5000, PACKETS[0]))),
        sll2(
            ipv4("10.0.0.1", "10.0.0.2", udp(4000, 5000, PACKETS[1]), options=b"\x01\x01\x01\x00")
        ),
        sll2(ipv6("fe80::1", "fe80::2", udp(4000, 5000, PACKETS[2])), protocol=0x86DD),
        sll2(ipv4("10.0.0.1", "10.0.0.3", udp(4001, 5000, PACKETS[3]))),
        sll2(ipv4("10.0.0.3", "10.0.0.1", PACKETS[4], proto=6)),
        sll2(ipv4("10.0.0.1", "10.0.0.2", udp(4000, 5000, PACKETS[5]))),
    ]
    pcap_file(path, [(T0 + i * 10**7, f) for i, f in enumerate(frames)], linktype=276, order=">")
    ends = [24 + sum(16 + len(f) for f in frames[: i + 1]) for i in range(len(frames))]
    return 24, set(ends)


def _pcapng(path):
    blocks = [
        pcapng_shb(">"),
        pcapng_idb(">", 1, 9),
        pcapng_idb(">", 113, 6),
        pcapng_block(">", 0x0BAD, b"\x00\x00\x00\x01zz"),
    ]
    blocks += [
        pcapng_epb(">", 0, T0 + i * 10**7, _frame(i))
        if i % 2
        else pcapng_epb(">", 1, T0 // 1000 + i, sll(_frame(i)[14:]))
        for i in range(len(PACKETS))
    ]
    path.write_bytes(b"".join(blocks))
    return len(blocks[0]), {sum(map(len, blocks[: i + 1])) for i in range(4)}


def _rtpdump(path):
    rtpdump_file(path, T0, [(i * 10, p, i == 2) for i, p in enumerate(PACKETS)])
    return len(b"#!rtpplay1.0 127.0.0.1/5004\n") + 16, set()


def _mjr(version):
    def write(path):
        mjr_file(
            path,
            [(i * 10, p) for i, p in enumerate(PACKETS)],
            {"t": "v", "c": "vp8", "s": 1, "u": 2},
            version,
        )
        return path.read_bytes().index(b"MEET", 8), set()

    return write


SAMPLES = {
    "pcap": _pcap,
    "pcap-mixed": _pcap_mixed,
    "pcapng": _pcapng,
    "rtpdump": _rtpdump,
    "mjr2": _mjr(2),
    "mjr1": _mjr(1),
    "legacy": _mjr(0),
}


@pytest.fixture(scope="module", params=sorted(SAMPLES))
def sample(request, tmp_path_factory):
    """(name, file bytes, header length, record boundaries, [(record end, datagram)])."""
    path = tmp_path_factory.mktemp("fuzz") / request.param
    header, boundaries = SAMPLES[request.param](path)
    data = path.read_bytes()
    stats = ReadStats()
    whole = list(read_capture(path, stats))
    expected = PACKETS[:4] + PACKETS[5:] if request.param == "pcap-mixed" else PACKETS
    assert [d.data for d in whole] == expected and not stats.problems
    assert not stats.skipped or stats.skipped == {"not UDP": 1}
    ends = [d.offset for d in whole[1:]] + [len(data)]  # datagram records are contiguous
    if request.param == "pcap-mixed":  # a TCP record among them: each ends at its boundary
        ends = [min(b for b in boundaries if b > d.offset) for d in whole]
    return (
        request.param,
        data,
        header,
        {header, *boundaries, *ends},
        list(zip(ends, map(_key, whole))),
    )


def _key(d):
    """A datagram without its file name (the damaged copies live elsewhere)."""
    return d.arrival_ns, d.data, d.src, d.dst, d.offset


def _read(path, data: bytes):
    """Write data and read it all: ("raised", error) or (datagram keys, stats).

    The batch reader (the one scan_room uses) must give the same, datagram for datagram, with
    the same counts, skip reasons and problems.
    """
    path.write_bytes(data)
    stats = ReadStats()
    try:
        iterator = read_capture(path, stats)
    except CaptureError as err:
        assert err.file == str(path)
        with pytest.raises(CaptureError) as batch_err:
            list(read_batches(path, ReadStats()))
        assert str(batch_err.value) == str(err)
        return "raised", err
    got = []
    for d in iterator:  # must end: the file is finite and every loop advances
        assert d.file == str(path)
        got.append(_key(d))
        assert len(got) <= len(data)
    assert all(p.file == str(path) for p in stats.problems)
    batch_stats = ReadStats()
    batched = [_key(b.datagram(i)) for b in read_batches(path, batch_stats) for i in range(len(b))]
    in_range = [key for key in got if -(2**63) <= key[0] < 2**63]  # corrupt times are skipped
    assert batched == in_range
    skipped = stats.skipped.copy()
    if len(in_range) < len(got):
        skipped["arrival time out of range"] = len(got) - len(in_range)
    assert (batch_stats.records, batch_stats.skipped) == (stats.records, skipped)
    assert [(str(p), p.offset) for p in batch_stats.problems] == [
        (str(p), p.offset) for p in stats.problems
    ]
    return got, stats


def _kept(records, damage_at):
    """The datagrams of records that end at or before the damage."""
    return [key for end, key in records if end <= damage_at]


def test_every_truncation(sample, tmp_path):
    name, data, header, boundaries, records = sample
    path = tmp_path / name
    for cut in range(len(data) + 1):
        got, stats = _read(path, data[:cut])
        if got == "raised":
            assert cut < header, (cut, stats)
            continue
        assert got == _kept(records, cut), cut
        assert bool(stats.problems) == (cut not in boundaries), (cut, stats.problems)
        if stats.problems:
            (problem,) = stats.problems
            assert problem.offset is not None and problem.offset < cut


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_corruption(sample, tmp_path, data):
    name, original, header, _, records = sample
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(original) - 1), st.integers(1, 255)),
            min_size=1,
            max_size=4,
        )
    )
    cut = data.draw(st.integers(0, len(original)))
    tail = data.draw(st.binary(max_size=64))
    damaged = bytearray(original)
    for at, xor in flips:
        damaged[at] ^= xor
    damaged = bytes(damaged[:cut]) + tail
    first_damage = min(
        [at for at, _ in flips if at < cut]
        + [cut if tail or cut < len(original) else len(original)]
    )
    got, _ = _read(tmp_path / name, damaged)
    if got == "raised":
        assert first_damage < header
        return
    kept = _kept(records, first_damage)
    assert got[: len(kept)] == kept


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=4), st.binary(max_size=300))
def test_random_bytes_after_a_magic(tmp_path, magic, rest):
    """Any magic this module knows, followed by anything: CaptureError or a normal end."""
    shb = b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a"
    for prefix in (
        b"\xd4\xc3\xb2\xa1",
        b"\x4d\x3c\xb2\xa1",
        shb,
        b"#!rtpplay1.0 1.2.3.4/5\n",
        b"MJR00002",
        b"MJR00001",
        b"MEETECHO",
    ):
        result = _read(tmp_path / "r", prefix + magic + rest)
        assert result[0] == "raised" or isinstance(result[0], list)


@pytest.mark.parametrize("chunk", [40, 97, 256, 1000])
def test_batches_across_chunk_boundaries(sample, tmp_path, monkeypatch, chunk):
    """Records cut by the batch reader's chunks are read again whole: the same datagrams
    whatever the chunk size (a chunk must still hold the longest record: 40 is too small for
    some, which must then be reported, not looped over)."""
    import skymix.ingest.batch as batch

    name, data, header, _, records = sample
    monkeypatch.setattr(batch, "CHUNK_BYTES", chunk)
    path = tmp_path / name
    path.write_bytes(data)
    stats = ReadStats()
    got = [_key(b.datagram(i)) for b in read_batches(path, stats) for i in range(len(b))]
    if chunk >= max(
        b - a for a, b in zip([header] + [e for e, _ in records], [e for e, _ in records])
    ):
        assert got == [key for _, key in records] and not stats.problems
    else:
        assert got == [key for _, key in records][: len(got)]
