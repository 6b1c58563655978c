"""Random corruption of whole captures (issue 9): 200 seeded bit flips, overwritten, duplicated
and removed spans and truncations of a small pcap (rewritten by tcpdump), pcapng and Janus .mjr
(pcap2mjr's) of a two-party call, each read by scan_room: it ends (else the suite hangs), the
session it finds is never longer than the capture (nor, but for a cut, much shorter), and only a
CaptureError for a destroyed file header escapes. Ten of them are mixed whole and the
recording's decoded length checked.
"""

from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path

import av
import pytest

from ingest_tools import eth, ipv4, pcapng_epb, pcapng_idb, pcapng_shb, udp
from skymix import CaptureError, mix
from skymix.encode import EncodeSettings
from skymix.ingest import read_pcap
from skymix.ingest.records import OUT_OF_LINE_NS
from skymix.options import MixOptions
from skymix.session import load_description
from skymix.streams.room import scan_room
from skymix.synth import SynthParticipant, synthesize

SECONDS = 3.0
CASES = 200
MIXED = 10
PEOPLE = [
    SynthParticipant("ann", (160, 120), 15, "vp8", tone_hz=300),
    SynthParticipant("bob", (160, 120), 15, "vp8", tone_hz=440, color=(40, 160, 60)),
]
SMALL = MixOptions(encode=EncodeSettings(width=160, height=90, fps=15, preset="ultrafast"))
#: A corrupt time at either end may stay when it is within this of its neighbour (records.py).
SLACK_NS = OUT_OF_LINE_NS


class Capture:
    """One undamaged capture: its bytes, header length, description and session."""

    def __init__(self, path: Path, header: int, description: object) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.header = header
        self.description = description
        scan = scan_room([path], description)  # type: ignore[arg-type]
        assert scan.start_ns is not None and scan.end_ns is not None
        self.start_ns, self.end_ns = scan.start_ns, scan.end_ns


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> dict[str, Capture]:
    directory = tmp_path_factory.mktemp("fuzz")
    made = synthesize(PEOPLE, SECONDS, directory, seed=21)
    description = load_description([f"{p.name}={sdp}" for p, sdp in zip(PEOPLE, made.sdps)])
    pcap = directory / "call.pcap"
    subprocess.run(
        ["tcpdump", "-r", str(made.pcap), "-w", str(pcap)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    datagrams = list(read_pcap(pcap))
    head = pcapng_shb("<") + pcapng_idb("<", 1, 9)
    blocks = [head]
    for d in datagrams:
        assert d.src is not None and d.dst is not None
        frame = eth(ipv4(d.src.host, d.dst.host, udp(d.src.port, d.dst.port, d.data)))
        blocks.append(pcapng_epb("<", 0, d.arrival_ns, frame))
    pcapng = directory / "call.pcapng"
    pcapng.write_bytes(b"".join(blocks))
    video = next(d for d in datagrams if d.dst is not None and d.dst.port == 20000)
    mjr = directory / "ann-video.mjr"
    subprocess.run(
        ["pcap2mjr", "-c", "vp8", "-s", str(int.from_bytes(video.data[8:12], "big")), str(pcap)]
        + [str(mjr)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    mjr_header = 10 + struct.unpack_from("!H", mjr.read_bytes(), 8)[0]
    return {
        "pcap": Capture(pcap, 24, description),
        "pcapng": Capture(pcapng, len(head), description),
        "mjr": Capture(mjr, mjr_header, None),
    }


KINDS = ("flips", "overwrite", "zeros", "duplicate", "remove", "truncate")


def corrupt(
    data: bytes,
    rng: random.Random,
    lo: float = 0.0,
    hi: float = 1.0,
    kinds: tuple[str, ...] = KINDS,
) -> tuple[bytes, int, str]:
    """(damaged copy, first offset changed, kind of damage): one kind, placed between lo and hi
    of the file."""
    size = len(data)
    at = rng.randrange(int(lo * size), int(hi * size))
    kind = rng.choice(kinds)
    out = bytearray(data)
    if kind == "flips":
        spots = sorted(rng.randrange(at, min(size, at + 4096)) for _ in range(rng.randint(1, 8)))
        for spot in spots:
            out[spot] ^= 1 << rng.randrange(8)
        return bytes(out), spots[0], kind
    length = rng.randint(1, max(1, min(2000, size // 20)))  # up to 5% of the file
    if kind == "overwrite":
        out[at : at + length] = rng.randbytes(min(length, size - at))
    elif kind == "zeros":
        out[at : at + length] = bytes(min(length, size - at))
    elif kind == "duplicate":
        out[at:at] = data[at : at + length]
    elif kind == "remove":
        del out[at : at + length]
    else:
        del out[at:]
    return bytes(out), at, kind


@pytest.mark.parametrize("seed", range(CASES))
def test_random_corruption_is_survived(captures, tmp_path, seed):
    rng = random.Random(seed)
    name = ("pcap", "pcapng", "mjr")[seed % 3]
    capture = captures[name]
    data, first, kind = corrupt(capture.data, rng)
    path = tmp_path / capture.path.name
    path.write_bytes(data)
    try:
        scan = scan_room([path], capture.description)  # type: ignore[arg-type]
    except CaptureError as err:
        assert first < capture.header, (first, err)  # only a destroyed file header may raise
        assert err.file == str(path)
        return
    if scan.start_ns is None or scan.end_ns is None:
        return  # nothing readable left
    assert scan.start_ns >= capture.start_ns - SLACK_NS, (seed, scan.problems)
    assert scan.end_ns <= capture.end_ns + SLACK_NS, (seed, scan.problems)
    if kind != "truncate":  # damage of up to 5% of the file costs about that much, not the rest
        whole = capture.end_ns - capture.start_ns
        assert scan.end_ns - scan.start_ns >= 0.9 * whole, (seed, kind, scan.problems)
    for participant in scan.participants:
        for a, b in participant.presence:
            assert capture.start_ns - SLACK_NS <= a <= b <= capture.end_ns + SLACK_NS


def mp4_duration(path: Path) -> float:
    """The decoded duration of a recording: the last video frame's end."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        last = max(float(f.time) for f in container.decode(stream))
        return last + 1 / float(stream.average_rate)


@pytest.mark.parametrize("seed", range(MIXED))
def test_randomly_corrupted_capture_still_mixes_whole(captures, tmp_path, seed):
    """Damage in the middle of the file (not a cut): the recording still spans the whole call."""
    rng = random.Random(1000 + seed)
    name = ("pcap", "pcapng")[seed % 2]
    capture = captures[name]
    data, _, _ = corrupt(capture.data, rng, 0.2, 0.8, KINDS[:-1])
    path = tmp_path / capture.path.name
    path.write_bytes(data)
    out = tmp_path / "out.mp4"
    report = mix([path], out, description=capture.description, options=SMALL)  # type: ignore[arg-type]
    session_s = (capture.end_ns - capture.start_ns) / 1e9
    assert report.duration_s <= session_s + 2 * SLACK_NS / 1e9
    assert report.duration_s == pytest.approx(session_s, abs=0.5)
    assert mp4_duration(out) == pytest.approx(report.duration_s, abs=0.2)
