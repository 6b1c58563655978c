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
    mjr_file,
    pcap_file,
    pcapng_block,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
    rtp,
    rtpdump_file,
    sll,
    udp,
)

from skymix import CaptureError
from skymix.ingest import ReadStats, read_capture

PACKETS = [rtp(i, 3000 * i, 0xABCD, bytes([i]) * (7 * i + 3)) for i in range(6)]
T0 = 1_700_000_000 * 10**9


def _frame(i: int) -> bytes:
    return eth(ipv4("10.0.0.1", "10.0.0.2", udp(4000, 5000, PACKETS[i])))


def _pcap(path):
    pcap_file(path, [(T0 + i * 10**7, _frame(i)) for i in range(len(PACKETS))], nanos=True)
    return 24, set()


def _pcapng(path):
    blocks = [pcapng_shb(">"), pcapng_idb(">", 1, 9), pcapng_idb(">", 113, 6),
              pcapng_block(">", 0x0BAD, b"\x00\x00\x00\x01zz")]
    blocks += [pcapng_epb(">", 0, T0 + i * 10**7, _frame(i)) if i % 2 else
               pcapng_epb(">", 1, T0 // 1000 + i, sll(_frame(i)[14:])) for i in range(len(PACKETS))]
    path.write_bytes(b"".join(blocks))
    return len(blocks[0]), {sum(map(len, blocks[:i + 1])) for i in range(4)}


def _rtpdump(path):
    rtpdump_file(path, T0, [(i * 10, p, i == 2) for i, p in enumerate(PACKETS)])
    return len(b"#!rtpplay1.0 127.0.0.1/5004\n") + 16, set()


def _mjr(version):
    def write(path):
        mjr_file(path, [(i * 10, p) for i, p in enumerate(PACKETS)],
                 {"t": "v", "c": "vp8", "s": 1, "u": 2}, version)
        return path.read_bytes().index(b"MEET", 8), set()
    return write


SAMPLES = {"pcap": _pcap, "pcapng": _pcapng, "rtpdump": _rtpdump, "mjr2": _mjr(2),
           "mjr1": _mjr(1), "legacy": _mjr(0)}


@pytest.fixture(scope="module", params=sorted(SAMPLES))
def sample(request, tmp_path_factory):
    """(name, file bytes, header length, record boundaries, [(record end, datagram)])."""
    path = tmp_path_factory.mktemp("fuzz") / request.param
    header, boundaries = SAMPLES[request.param](path)
    data = path.read_bytes()
    stats = ReadStats()
    whole = list(read_capture(path, stats))
    assert [d.data for d in whole] == PACKETS and not stats.problems and not stats.skipped
    ends = [d.offset for d in whole[1:]] + [len(data)]  # datagram records are contiguous
    return request.param, data, header, {header, *boundaries, *ends}, list(zip(ends, map(_key, whole)))


def _key(d):
    """A datagram without its file name (the damaged copies live elsewhere)."""
    return d.arrival_ns, d.data, d.src, d.dst, d.offset


def _read(path, data: bytes):
    """Write data and read it all: ("raised", error) or (datagram keys, stats)."""
    path.write_bytes(data)
    stats = ReadStats()
    try:
        iterator = read_capture(path, stats)
    except CaptureError as err:
        assert err.file == str(path)
        return "raised", err
    got = []
    for d in iterator:  # must end: the file is finite and every loop advances
        assert d.file == str(path)
        got.append(_key(d))
        assert len(got) <= len(data)
    assert all(p.file == str(path) for p in stats.problems)
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


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_corruption(sample, tmp_path, data):
    name, original, header, _, records = sample
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(1, 255)),
                               min_size=1, max_size=4))
    cut = data.draw(st.integers(0, len(original)))
    tail = data.draw(st.binary(max_size=64))
    damaged = bytearray(original)
    for at, xor in flips:
        damaged[at] ^= xor
    damaged = bytes(damaged[:cut]) + tail
    first_damage = min([at for at, _ in flips if at < cut] + [cut if tail or cut < len(original)
                                                               else len(original)])
    got, _ = _read(tmp_path / name, damaged)
    if got == "raised":
        assert first_damage < header
        return
    kept = _kept(records, first_damage)
    assert got[:len(kept)] == kept


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4), st.binary(max_size=300))
def test_random_bytes_after_a_magic(tmp_path, magic, rest):
    """Any magic this module knows, followed by anything: CaptureError or a normal end."""
    shb = b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a"
    for prefix in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", shb, b"#!rtpplay1.0 1.2.3.4/5\n",
                   b"MJR00002", b"MJR00001", b"MEETECHO"):
        result = _read(tmp_path / "r", prefix + magic + rest)
        assert result[0] == "raised" or isinstance(result[0], list)

