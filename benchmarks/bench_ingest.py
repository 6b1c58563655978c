"""Ingest speed: reading, parsing and depayloading a capture, against a bare read of the file.

The capture: a synthesized four-party call (VP8, H.264, Opus; loss and reordering) repeated with
advancing sequence numbers, timestamps and arrival times to about 94,000 packets. Peers in the
same run: a bare loop that only walks the pcap records (the floor any reader stands on), the
record-by-record capture reader (link, IP, UDP; one Datagram object each), the batch reader
scan_room uses, and the whole first pass (RTP parse, matching, reordering, frame assembly and
depayloading, clock fits: `scan_room`), once as `skymix inspect` runs it and once handing every
frame over as the mix's second pass takes them (and touching each frame's bytes). The issue's
target for the whole pass is 500,000 packets/s on one core. Rates are printed as extra_info
(packets per second).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from skymix.ingest import read_capture
from skymix.ingest.batch import read_batches
from skymix.session import load_description
from skymix.streams.room import RoomReader, scan_room
from skymix.synth import Impairments, PcapWriter, preset, synthesize

REPEAT = 50
SECONDS = 6.0


def repeated_capture(out: Path):
    """(pcap, packets, description): the synthesized call repeated REPEAT times, each stream's
    sequence numbers advanced by its own span so a repetition joins the last one seamlessly."""
    made = synthesize(
        preset(4, SECONDS), SECONDS, out, seed=3, impairments=Impairments(loss=0.005, reorder=0.01)
    )
    records = list(read_capture(made.pcap))
    seqs: dict[int, list[int]] = {}
    for d in records:
        if 128 <= d.data[0] < 192 and not 192 <= d.data[1] <= 223:
            ssrc = struct.unpack_from("!I", d.data, 8)[0]
            unwrap = seqs.setdefault(ssrc, [])
            seq = struct.unpack_from("!H", d.data, 2)[0]
            unwrap.append(
                seq if not unwrap else unwrap[-1] + ((seq - unwrap[-1] + 0x8000) & 0xFFFF) - 0x8000
            )
    span = {ssrc: max(s) - min(s) + 1 for ssrc, s in seqs.items()}
    big = out / "big.pcap"
    with PcapWriter(big) as writer:
        for k in range(REPEAT):
            for d in records:
                data = bytearray(d.data)
                if 128 <= data[0] < 192 and not 192 <= data[1] <= 223:  # RTP: move it on
                    seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
                    clock = 90000 if data[1] & 0x7F == 96 else 48000
                    struct.pack_into(
                        "!HI",
                        data,
                        2,
                        (seq + span[ssrc] * k) & 0xFFFF,
                        (ts + round(k * SECONDS * clock)) & 0xFFFFFFFF,
                    )
                writer.write(
                    d.arrival_ns + round(k * SECONDS * 1e9),
                    (d.src.host, d.src.port),
                    (d.dst.host, d.dst.port),
                    bytes(data),
                )
    sdps = [f"{p.name}={sdp}" for p, sdp in zip(preset(4, SECONDS), made.sdps)]
    return big, len(records) * REPEAT, load_description(sdps)


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    return repeated_capture(tmp_path_factory.mktemp("ingest"))


def bare_read(path: Path) -> int:
    """Walk the pcap records and touch each one's bytes: the floor of any reader."""
    count = 0
    with open(path, "rb") as f:
        f.read(24)
        header = struct.Struct("<IIII")
        while True:
            head = f.read(16)
            if len(head) < 16:
                return count
            _, _, caplen, _ = header.unpack(head)
            f.read(caplen)
            count += 1


def rate(benchmark, packets):
    benchmark.extra_info["packets"] = packets
    benchmark.extra_info["packets_per_second"] = round(packets / benchmark.stats.stats.median)


def test_bare_read(benchmark, capture):
    path, packets, _ = capture
    benchmark.group = "ingest ~94k packets"
    assert benchmark.pedantic(bare_read, args=(path,), rounds=5) == packets
    rate(benchmark, packets)


def test_read_capture(benchmark, capture):
    path, packets, _ = capture
    benchmark.group = "ingest ~94k packets"
    count = benchmark.pedantic(lambda: sum(1 for _ in read_capture(path)), rounds=5)
    assert count == packets
    rate(benchmark, packets)


def test_read_batches(benchmark, capture):
    path, packets, _ = capture
    benchmark.group = "ingest ~94k packets"
    count = benchmark.pedantic(lambda: sum(len(b) for b in read_batches(path)), rounds=5)
    assert count == packets
    rate(benchmark, packets)


def test_scan_room(benchmark, capture):
    path, packets, description = capture
    benchmark.group = "ingest ~94k packets"
    scan = benchmark.pedantic(scan_room, args=([path], description), rounds=5)
    assert sum(s.total("frames") for p in scan.participants for s in p.streams) > 0
    assert not scan.problems
    rate(benchmark, packets)


def test_scan_room_with_frames(benchmark, capture):
    """The same pass handing over every depayloaded frame, as the mix's second pass takes them
    (RoomReader: each batch's frames in groups per stream)."""
    path, packets, description = capture
    benchmark.group = "ingest ~94k packets"

    def scan():
        frames = octets = 0
        reader = RoomReader([path], description)
        for step in reader:
            for _, _, group in step.frames:
                frames += len(group)
                octets += sum(len(f.data) for f in group)
        return reader.scan, frames, octets

    result, frames, octets = benchmark.pedantic(scan, rounds=5)
    assert frames == sum(s.total("frames") for p in result.participants for s in p.streams) > 0
    assert octets > frames
    rate(benchmark, packets)
