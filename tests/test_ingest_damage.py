"""Damaged captures cost only the damaged part (issue 9): a corrupt record length, block length,
frame length or frame marker is skipped to the next plausible record and reported with its
offsets; a record timestamp a day late is set aside and changes neither the session nor the mix.

The captures are made by third-party writers where one exists: a synthesized two-party call
(VP8 + Opus) rewritten by tcpdump (libpcap's pcap writer) and turned into a Janus recording by
Janus's own pcap2mjr; the pcapng is built here from tcpdump's datagrams (no tool on this machine
writes pcapng).
"""

from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path

import av
import pytest

from ingest_tools import eth, ipv4, pcapng_epb, pcapng_idb, pcapng_shb, udp
from skymix import mix
from skymix.encode import EncodeSettings
from skymix.ingest import ReadStats, read_capture, read_pcap
from skymix.ingest.batch import read_batches
from skymix.inspect import format_scan
from skymix.options import MixOptions
from skymix.session import load_description
from skymix.streams.room import scan_room
from skymix.synth import SynthParticipant, synthesize

SECONDS = 6.0
DAY_S = 86_400
PEOPLE = [
    SynthParticipant("ann", (160, 120), 15, "vp8", tone_hz=300),
    SynthParticipant("bob", (160, 120), 15, "vp8", tone_hz=440, color=(40, 160, 60)),
]
SMALL = MixOptions(encode=EncodeSettings(width=160, height=90, fps=15, preset="ultrafast"))


class Room:
    """The undamaged captures of one call and what reading them gives."""

    def __init__(self, directory: Path) -> None:
        made = synthesize(PEOPLE, SECONDS, directory, seed=11)
        self.description = load_description(
            [f"{p.name}={sdp}" for p, sdp in zip(PEOPLE, made.sdps)]
        )
        self.pcap = directory / "tcpdump.pcap"
        subprocess.run(
            ["tcpdump", "-r", str(made.pcap), "-w", str(self.pcap)],
            check=True,
            timeout=60,
            capture_output=True,
        )
        self.datagrams = list(read_pcap(self.pcap))
        self.pcapng = directory / "built.pcapng"
        blocks = [pcapng_shb("<"), pcapng_idb("<", 1, 9)]
        self.blocks = []  # (offset, length) of each EPB
        at = sum(map(len, blocks))
        for d in self.datagrams:
            assert d.src is not None and d.dst is not None
            frame = eth(ipv4(d.src.host, d.dst.host, udp(d.src.port, d.dst.port, d.data)))
            block = pcapng_epb("<", 0, d.arrival_ns, frame)
            self.blocks.append((at, len(block)))
            blocks.append(block)
            at += len(block)
        self.pcapng.write_bytes(b"".join(blocks))
        video = next(d for d in self.datagrams if d.dst is not None and d.dst.port == 20000)
        self.ssrc = int.from_bytes(video.data[8:12], "big")
        self.mjr = directory / "ann-video.mjr"
        subprocess.run(
            ["pcap2mjr", "-c", "vp8", "-s", str(self.ssrc), str(self.pcap), str(self.mjr)],
            check=True,
            timeout=60,
            capture_output=True,
        )
        self.mjr_frames = list(read_capture(self.mjr))
        self.scan = scan_room([self.pcap], self.description)


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Room:
    return Room(tmp_path_factory.mktemp("damage"))


def damaged(path: Path, out: Path, edits: list[tuple[int, bytes]]) -> Path:
    """A copy of path with bytes replaced at the given offsets."""
    data = bytearray(path.read_bytes())
    for at, new in edits:
        data[at : at + len(new)] = new
    out.write_bytes(bytes(data))
    return out


def read_both(path: Path) -> tuple[list[bytes], ReadStats]:
    """The datagrams of a capture; the batch reader must give the same ones and the same stats."""
    stats = ReadStats()
    got = list(read_capture(path, stats))
    batch_stats = ReadStats()
    batched = [b.datagram(i) for b in read_batches(path, batch_stats) for i in range(len(b))]
    assert [(d.arrival_ns, d.data, d.offset) for d in batched] == [
        (d.arrival_ns, d.data, d.offset) for d in got
    ]
    assert (batch_stats.skipped, batch_stats.spans) == (stats.skipped, stats.spans)
    return [d.data for d in got], stats


def mp4_duration(path: Path) -> float:
    """The decoded duration of a recording: the last video frame's end."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        last = max(float(f.time) for f in container.decode(stream))
        return last + 1 / float(stream.average_rate)


@pytest.mark.parametrize(
    "caplen",
    [0x7FFFFFFF, 40, 200_000],
    ids=["impossible", "shorter", "longer-within-snaplen"],
)
def test_pcap_corrupt_length_is_skipped(room, tmp_path, caplen):
    k = len(room.datagrams) // 2
    middle, after = room.datagrams[k], room.datagrams[k + 1]
    bad = damaged(
        room.pcap, tmp_path / "bad.pcap", [(middle.offset + 8, struct.pack("<I", caplen))]
    )
    got, stats = read_both(bad)
    assert len(got) >= 0.9 * len(room.datagrams)
    assert len(got) >= len(room.datagrams) - 1  # at most the damaged record is lost
    assert got == [d.data for d in room.datagrams if d.data in got]  # whole packets, in order
    (span,) = stats.spans  # from the damaged record (or where its length led) to the next one
    assert middle.offset <= span.start < span.end == after.offset
    assert str(span) in str(stats.problems[0]) and stats.problems[0].offset == span.start
    scan = scan_room([bad], room.description)
    assert scan.to_json()["files"][str(bad)]["damaged"] == [[span.start, span.end, span.reason]]
    assert f"skipped bytes {span.start}-{span.end}" in format_scan(scan)
    assert (scan.start_ns, scan.end_ns) == (room.scan.start_ns, room.scan.end_ns)


def test_pcap_corrupt_length_still_mixes_the_whole_call(room, tmp_path):
    middle = room.datagrams[len(room.datagrams) // 3]
    bad = damaged(room.pcap, tmp_path / "bad.pcap", [(middle.offset + 8, b"\xff\xff\xff\x7f")])
    report = mix([bad], tmp_path / "out.mp4", description=room.description, options=SMALL)
    assert report.duration_s == pytest.approx(SECONDS, abs=0.3)
    assert mp4_duration(tmp_path / "out.mp4") == pytest.approx(SECONDS, abs=0.3)
    files = report.to_json()["scan"]["files"]
    assert [span[0] for span in files[str(bad)]["damaged"]] == [middle.offset]


@pytest.mark.parametrize("edit", ["length", "trailer", "garbage"])
def test_pcapng_corrupt_block_is_skipped(room, tmp_path, edit):
    k = len(room.blocks) // 2
    at, length = room.blocks[k]
    patch = {
        "length": (at + 4, struct.pack("<I", length + 64)),
        "trailer": (at + length - 4, struct.pack("<I", 12)),
        "garbage": (at, b"\x5a" * 40),
    }[edit]
    bad = damaged(room.pcapng, tmp_path / "bad.pcapng", [patch])
    got, stats = read_both(bad)
    assert len(got) >= 0.9 * len(room.datagrams)
    assert len(got) >= len(room.datagrams) - 2
    (span,) = stats.spans
    assert span.start == at and span.end == at + length  # exactly the damaged block
    scan = scan_room([bad], room.description)
    assert (scan.start_ns, scan.end_ns) == (room.scan.start_ns, room.scan.end_ns)


@pytest.mark.parametrize("edit", ["longer", "shorter", "marker"])
def test_mjr_corrupt_frame_is_skipped(room, tmp_path, edit):
    frames = room.mjr_frames
    third = len(frames) // 3
    k = max(range(third, 2 * third), key=lambda i: len(frames[i].data))  # the largest there
    at = frames[k].offset  # "MEET", u32 ms, u16 length, then the RTP packet
    length = len(frames[k].data)
    patch = {
        "longer": (at + 8, struct.pack("!H", length + 300)),
        "shorter": (at + 8, struct.pack("!H", length // 2)),
        "marker": (at, b"MEEX"),
    }[edit]
    bad = damaged(room.mjr, tmp_path / "bad.mjr", [patch])
    got, stats = read_both(bad)
    assert len(got) >= 0.9 * len(frames)
    assert len(stats.spans) == 1 and stats.problems[0].offset == stats.spans[0].start
    # every other packet whole and in order (a frame whose length was cut short keeps that much)
    assert [d for d in got if d != frames[k].data[: len(d)]] == [
        d.data for d in frames[:k] + frames[k + 1 :] if d.data in got
    ]
    if edit == "longer":  # the frame is cut at the next marker: nothing is lost
        assert got == [d.data for d in frames]
    scan = scan_room([bad])
    assert scan.start_ns == scan_room([room.mjr]).start_ns
    assert "skipped bytes" in format_scan(scan)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_pcap_timestamp_a_day_late_is_set_aside(room, tmp_path, where):
    index = {"first": 0, "middle": len(room.datagrams) // 2, "last": -1}[where]
    record = room.datagrams[index]
    sec = struct.unpack_from("<I", room.pcap.read_bytes(), record.offset)[0]
    bad = damaged(
        room.pcap, tmp_path / "late.pcap", [(record.offset, struct.pack("<I", sec + DAY_S))]
    )
    got, stats = read_both(bad)
    assert len(got) == len(room.datagrams) - 1 and record.data not in got[index : index + 1]
    assert stats.skipped == {"arrival time out of line": 1} and not stats.spans
    scan = scan_room([bad], room.description)
    assert scan.files[str(bad)].skipped["arrival time out of line"] == 1
    if where != "first" and where != "last":
        assert (scan.start_ns, scan.end_ns) == (room.scan.start_ns, room.scan.end_ns)
    else:  # one packet fewer at that end: the session is the capture's, not a day long
        assert abs(scan.start_ns - room.scan.start_ns) < 50_000_000
        assert abs(scan.end_ns - room.scan.end_ns) < 50_000_000
    presence = [p.presence for p in scan.participants]
    assert all(b - a < (SECONDS + 1) * 1e9 for spans in presence for a, b in spans)


def test_a_day_late_record_does_not_make_a_day_long_mix(room, tmp_path):
    record = room.datagrams[len(room.datagrams) // 2]
    sec = struct.unpack_from("<I", room.pcap.read_bytes(), record.offset)[0]
    bad = damaged(
        room.pcap, tmp_path / "late.pcap", [(record.offset, struct.pack("<I", sec + DAY_S))]
    )
    report = mix([bad], tmp_path / "out.mp4", description=room.description, options=SMALL)
    assert report.duration_s == pytest.approx(SECONDS, abs=0.3)
    assert mp4_duration(tmp_path / "out.mp4") == pytest.approx(SECONDS, abs=0.3)


def test_pcapng_and_mjr_times_a_day_late_are_set_aside(room, tmp_path):
    at, _ = room.blocks[len(room.blocks) // 2]
    high, low = struct.unpack_from("<II", room.pcapng.read_bytes(), at + 12)
    units = ((high << 32 | low) + DAY_S * 10**9).to_bytes(8, "little")
    bad = damaged(room.pcapng, tmp_path / "late.pcapng", [(at + 12, units[4:] + units[:4])])
    got, stats = read_both(bad)
    assert len(got) == len(room.datagrams) - 1 and stats.skipped == {"arrival time out of line": 1}
    scan = scan_room([bad], room.description)
    assert (scan.start_ns, scan.end_ns) == (room.scan.start_ns, room.scan.end_ns)

    frame = room.mjr_frames[len(room.mjr_frames) // 2]
    ms = struct.unpack_from("!I", room.mjr.read_bytes(), frame.offset + 4)[0]
    bad = damaged(
        room.mjr, tmp_path / "late.mjr", [(frame.offset + 4, struct.pack("!I", ms + DAY_S * 1000))]
    )
    got, stats = read_both(bad)
    assert len(got) == len(room.mjr_frames) - 1 and stats.skipped == {"arrival time out of line": 1}
    whole = scan_room([room.mjr])
    scan = scan_room([bad])
    assert (scan.start_ns, scan.end_ns) == (whole.start_ns, whole.end_ns)


def test_a_real_pause_is_kept(room, tmp_path):
    """Every record after one point moved an hour later: the records after it confirm the jump."""
    data = bytearray(room.pcap.read_bytes())
    half = room.datagrams[len(room.datagrams) // 2 :]
    for d in half:
        sec = struct.unpack_from("<I", data, d.offset)[0]
        struct.pack_into("<I", data, d.offset, sec + 3600)
    bad = tmp_path / "pause.pcap"
    bad.write_bytes(bytes(data))
    got, stats = read_both(bad)
    assert got == [d.data for d in room.datagrams] and not stats.skipped and not stats.problems


@pytest.mark.parametrize("chunk", [300, 2000])
def test_batch_reader_resyncs_like_the_record_reader_across_chunks(
    room, tmp_path, monkeypatch, chunk
):
    """Damage near and across the batch reader's chunk boundaries: the same datagrams, counts
    and spans as the record reader."""
    import skymix.ingest.batch as batch

    monkeypatch.setattr(batch, "CHUNK_BYTES", chunk)
    rng = random.Random(chunk)
    original = room.pcap.read_bytes()
    spans = 0
    for _ in range(10):
        data = bytearray(original)
        for _ in range(rng.randint(1, 5)):
            at = rng.randrange(24, len(data) - 64)
            if rng.random() < 0.5:
                data[at : at + 4] = rng.randbytes(4)
            else:
                del data[at : at + rng.randint(1, 300)]
        bad = tmp_path / "bad.pcap"
        bad.write_bytes(bytes(data))
        got, stats = read_both(bad)
        assert len(got) >= 0.8 * len(room.datagrams)
        spans += len(stats.spans)
    assert spans  # (bytes overwritten inside a packet are no damage a reader can see)
