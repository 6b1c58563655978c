"""Janus .mjr reader: files written by Janus's own pcap2mjr from a tcpdump capture of FFmpeg,
read back against the capture; mjr2pcap's output; hand-built MJR00001, legacy and damaged files."""

from __future__ import annotations

import json
import subprocess

import pytest

from ingest_tools import ffmpeg_capture, mjr_file, rtp
from skymix import CaptureError
from skymix.ingest import (
    Endpoint,
    ReadStats,
    VideoroomName,
    parse_videoroom_name,
    read_capture,
    read_mjr,
    read_pcap,
)

MS = 1_000_000


@pytest.fixture(scope="module")
def janus(tmp_path_factory):
    """A tcpdump capture of FFmpeg's VP8 RTP, its datagrams, and pcap2mjr's .mjr of its SSRC."""
    directory = tmp_path_factory.mktemp("mjr")
    live = ffmpeg_capture(directory, {"lo": ("lo", ())})
    datagrams = list(read_pcap(live.files["lo"]))
    media = [d for d in datagrams if d.dst.port == live.port]
    ssrc = int.from_bytes(media[0].data[8:12], "big")
    mjr = directory / "out.mjr"
    subprocess.run(
        ["pcap2mjr", "-c", "vp8", "-s", str(ssrc), str(live.files["lo"]), str(mjr)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    return datagrams, media, mjr


def test_pcap2mjr_file_holds_the_captured_packets(janus):
    datagrams, media, mjr = janus
    recording = read_mjr(mjr)
    info = recording.info
    assert (info.kind, info.codec, info.format, info.timing, info.e2ee) == (
        "video",
        "vp8",
        "MJR00002",
        "recorded",
        False,
    )
    # pcap2mjr sets s and u to the capture time of the first packet of the SSRC.
    assert info.created_us == info.first_us == media[0].arrival_ns // 1000
    stats = ReadStats()
    got = list(read_capture(mjr, stats))
    assert [d.data for d in got] == [d.data for d in media]  # same packets, same order
    seqs = [int.from_bytes(d.data[2:4], "big") for d in got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    assert stats.datagrams == len(media) and stats.problems == [] and not stats.skipped
    assert all(d.src is None and d.dst is None for d in got)
    # Frame times are whole ms since the first packet pcap2mjr looked at (the capture's first,
    # FFmpeg's SR), not since u's packet: arrival = u + floor((t - t_first) / 1 ms).
    anchor = datagrams[0].arrival_ns
    assert anchor <= media[0].arrival_ns
    assert [d.arrival_ns for d in got] == [
        info.first_us * 1000 + (m.arrival_ns - anchor) // MS * MS for m in media
    ]


def test_mjr2pcap_round_trip(janus, tmp_path):
    _, media, mjr = janus
    back = tmp_path / "back.pcap"
    subprocess.run(["mjr2pcap", str(mjr), str(back)], check=True, timeout=60, capture_output=True)
    got = list(read_capture(back))
    assert [d.data for d in got] == [d.data for d in media]
    assert {(d.src, d.dst) for d in got} == {
        (Endpoint("10.1.1.1", 1000), Endpoint("10.2.2.2", 2000))
    }
    assert [d.arrival_ns for d in got] == [d.arrival_ns for d in read_mjr(mjr)]


def test_header_fields_agree_with_janus_pp_rec(tmp_path):
    info = {
        "t": "a",
        "c": "opus",
        "f": "useinbandfec=1",
        "x": {"1": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "bad": "x"},
        "s": 1_700_000_000_000_000,
        "u": 1_700_000_000_500_000,
        "e": True,
    }
    path = tmp_path / "a.mjr"
    mjr_file(path, [(0, rtp(1, 0, 5, b"\xfc" * 10, 111)), (20, rtp(2, 960, 5, b"\xfc", 111))], info)
    printed = subprocess.run(
        ["janus-pp-rec", "-j", str(path)], check=True, timeout=30, capture_output=True, text=True
    ).stdout
    assert json.loads(printed) == info
    recording = read_mjr(path)
    assert recording.info.raw == info
    assert (
        recording.info.kind,
        recording.info.codec,
        recording.info.fmtp,
        recording.info.e2ee,
        dict(recording.info.extmap),
        recording.info.clock_rate,
    ) == (
        "audio",
        "opus",
        "useinbandfec=1",
        True,
        {1: "urn:ietf:params:rtp-hdrext:ssrc-audio-level"},
        48000,
    )
    assert [d.arrival_ns for d in recording] == [
        1_700_000_000_500_000_000,
        1_700_000_000_520_000_000,
    ]
    assert [d.arrival_ns for d in recording] == [
        1_700_000_000_500_000_000,
        1_700_000_000_520_000_000,
    ]  # re-iterable


def test_mjr00001_times_come_from_rtp_timestamps(tmp_path):
    path = tmp_path / "v1.mjr"
    u = 1_600_000_000_000_000
    timestamps = [0xFFFFF000, 0xFFFFF000, 0xFFFFF000 + 3000, 1000, 500, 7000]  # wraps; 500 late
    mjr_file(
        path,
        [(0, rtp(i, ts, 9, b"v")) for i, ts in enumerate(timestamps)],
        {"t": "v", "c": "vp8", "s": u - 5, "u": u},
        version=1,
    )
    recording = read_mjr(path)
    assert (recording.info.format, recording.info.timing) == ("MJR00001", "rtp")
    ticks = [0, 0, 3000, 0x1000 + 1000, 0x1000 + 500, 0x1000 + 7000]
    assert [d.arrival_ns for d in recording] == [u * 1000 + t * 10**9 // 90000 for t in ticks]


def test_mjr00001_corrupt_rtp_timestamps_are_set_aside_without_shifting_the_rest(tmp_path):
    """A corrupt first timestamp does not move the anchor; a corrupt one in the middle (bit 31
    flipped) does not shift the packets after it by 2^32 ticks."""
    path = tmp_path / "v1.mjr"
    u = 1_600_000_000_000_000
    timestamps = [3000 * i for i in range(20)]
    timestamps[0] ^= 1 << 30
    timestamps[10] ^= 1 << 31
    mjr_file(
        path,
        [(0, rtp(i, ts, 9, b"v")) for i, ts in enumerate(timestamps)],
        {"t": "v", "c": "vp8", "s": u - 5, "u": u},
        version=1,
    )
    stats = ReadStats()
    got = list(read_mjr(path, stats))
    assert [int.from_bytes(d.data[2:4], "big") for d in got] == [*range(1, 10), *range(11, 20)]
    assert [d.arrival_ns for d in got] == [
        u * 1000 + (3000 * i - 3000) * 10**9 // 90000 for i in [*range(1, 10), *range(11, 20)]
    ]
    assert stats.skipped == {"arrival time out of line": 2} and stats.datagrams == 18


def test_legacy_header_anchors_at_the_videoroom_name(tmp_path):
    frames = [(0, rtp(i, 960 * i, 3, b"o", 111)) for i in range(3)]
    named = tmp_path / "videoroom-1234-user-5678-1700000000123456-audio.mjr"
    mjr_file(named, frames, version=0, legacy_kind=b"audio")
    recording = read_mjr(named)
    assert (
        recording.info.kind,
        recording.info.codec,
        recording.info.format,
        recording.info.first_us,
    ) == ("audio", "opus", "legacy", 1_700_000_000_123_456)
    assert [d.arrival_ns for d in recording] == [
        1_700_000_000_123_456_000 + i * 20 * MS for i in range(3)
    ]
    plain = tmp_path / "plain.mjr"
    mjr_file(plain, frames, version=0, legacy_kind=b"audio")
    recording = read_mjr(plain)
    assert recording.info.first_us is None  # no anchor: times start at 0
    assert [d.arrival_ns for d in recording] == [0, 20 * MS, 40 * MS]


def test_data_frames_and_short_frames_are_skipped_and_counted(tmp_path):
    path = tmp_path / "d.mjr"
    mjr_file(
        path,
        [(0, b"\x00" * 8 + b"hello"), (5, b"\x00" * 8 + b"there")],
        {"t": "d", "c": "text", "s": 1, "u": 2},
    )
    stats = ReadStats()
    assert list(read_capture(path, stats)) == []
    assert stats.skipped == {"data frame": 2} and stats.records == 2
    mjr_file(path, [(0, b"short"), (1, rtp(1, 0, 1, b""))], {"t": "v", "c": "h264", "s": 1, "u": 2})
    stats = ReadStats()
    assert len(list(read_capture(path, stats))) == 1
    assert stats.skipped == {"frame shorter than an RTP header": 1}


def test_truncation_ends_and_damage_is_skipped_to_the_next_frame(tmp_path):
    path = tmp_path / "t.mjr"
    frames = [(i, rtp(i, i, 1, b"x" * 20)) for i in range(3)]
    mjr_file(path, frames, {"t": "v", "c": "vp8", "s": 1, "u": 2})
    whole = path.read_bytes()
    path.write_bytes(whole[:-1])
    stats = ReadStats()
    assert len(list(read_mjr(path, stats))) == 2
    header = len(whole) - 3 * (10 + 32)
    assert str(stats.problems[0]) == (
        f"{path}, offset {header + 84}: truncated frame (31 of 32 bytes)"
    )
    path.write_bytes(whole[: header + 42] + b"XEET" + whole[header + 46 :])
    stats = ReadStats()
    assert [d.data for d in read_mjr(path, stats)] == [frames[0][1], frames[2][1]]
    assert str(stats.problems[0]) == (
        f"{path}, offset {header + 42}: skipped bytes {header + 42}-{header + 84}: "
        "bad frame prefix b'XEET'"
    )
    assert [(s.start, s.end) for s in stats.spans] == [(header + 42, header + 84)]
    # a length running over the next frame: the frame is cut at the next marker
    longer = bytearray(whole)
    longer[header + 8 : header + 10] = (32 + 10 + 5).to_bytes(2, "big")
    path.write_bytes(bytes(longer))
    stats = ReadStats()
    assert [d.data for d in read_mjr(path, stats)] == [f[1] for f in frames]
    assert [(s.start, s.end) for s in stats.spans] == [(header + 42, header + 57)]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"MJR00002\x00",
        b"MJR00002\x00\x10{}",
        b"MJR00002\x00\x02{}",
        b'MJR00002\x00\x0a{"t": "v"}',
        b"MJR00001\x00\x04null",
        b"MJR00002\x00\x03\xff\xfe\x00",
        b"MEETECHO\x00\x05xideo",
        b"MEETECHO\x00\x04vide",
        b"RIFF\x00\x00\x00\x00WAVE",
    ],
)
def test_bad_header_raises_naming_the_file(tmp_path, content):
    path = tmp_path / "h.mjr"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as err:
        read_capture(path)
    assert err.value.file == str(path)


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "videoroom-1234-user-5678-1700000000123456-audio-0.mjr",
            VideoroomName("1234", "5678", 1700000000123456, "audio", 0),
        ),
        (
            "/rec/videoroom-1234-user-5678-1700000000123456-video-1.mjr",
            VideoroomName("1234", "5678", 1700000000123456, "video", 1),
        ),
        (
            "videoroom-1234-user-5678-1600000000000000-video.mjr",  # Janus 0.x: no m-line index
            VideoroomName("1234", "5678", 1600000000000000, "video", None),
        ),
        (
            "videoroom-my-room-user-alice-2-1700000000000001-data-2.mjr",  # string ids with dashes
            VideoroomName("my-room", "alice-2", 1700000000000001, "data", 2),
        ),
        ("videoroom-1-user-2-1700000000000000-audio-0.mjr.tmp", None),  # still being written
        ("rec-sample-audio.mjr", None),
        ("videoroom-1-user-2-notatime-audio.mjr", None),
    ],
)
def test_parse_videoroom_name(name, expected):
    assert parse_videoroom_name(name) == expected
