"""mjr_tools.extend_mjr on a real Janus recording: the copies read with skymix's reader as one
continuous stream per file (sequence numbers without a gap, also across the 16-bit wrap, RTP
timestamps and packet times covering the length asked), named as Janus names them with the new
publishers' ids, each loop starting on a VP8 keyframe; and 4 publishers made from 2 mix into a
recording where each shows its colour in the last loop.

The source is recorded once for the module by a real Janus videoroom with two aiortc publishers
(janus_tools.record_room, about 6 s: a real recording is what the tools must loop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from janus_tools import PUBLISHERS, janus_available, namespaces_available, record_room
from mix_tools import read_recording, tile_chroma
from mjr_tools import extend_mjr, extend_room, read_source, vp8_keyframe_start
from skymix import MixOptions, mix
from skymix.encode import EncodeSettings
from skymix.ingest import read_mjr
from skymix.ingest.mjr import parse_videoroom_name
from skymix.streams.room import scan_room

COLOUR_TOLERANCE = 8.0


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], dict[str, int]]:
    assert janus_available(), "Debian janus is not installed (make test installs it)"
    assert namespaces_available(), "needs unshare --user --net and iproute2's ip"
    folder = tmp_path_factory.mktemp("janus_source")
    users = record_room(folder)
    files = sorted((folder / "rec").glob("*.mjr"))
    assert len(files) == 4
    return files, users


def packets(path: Path) -> list[RtpPacket]:
    recording = read_mjr(path)
    got = [RtpPacket.parse(d.data) for d in recording]
    assert recording.stats.problems == [] and recording.stats.spans == []
    return got


def test_extended_recordings_are_continuous_streams_of_new_publishers(
    recorded: tuple[list[Path], dict[str, int]], tmp_path: Path
) -> None:
    files, users = recorded
    seconds = 10.0  # the sources last about 4 s: two whole loops and part of a third
    made = extend_room(files, tmp_path, seconds, copies=2)
    assert len(made) == 8
    names = [parse_videoroom_name(p) for p in made]
    assert all(n is not None for n in names)
    by_user: dict[str, set[str]] = {}
    for n in names:
        assert n is not None
        by_user.setdefault(n.user, set()).add(n.kind)
    originals = {str(u) for u in users.values()}
    assert set(by_user) == originals | {str(u + 1) for u in users.values()}
    assert all(kinds == {"audio", "video"} for kinds in by_user.values())

    for path in made:
        name = parse_videoroom_name(path)
        assert name is not None
        (src,) = [
            f
            for f in files
            if (s := parse_videoroom_name(f))
            and s.kind == name.kind
            and int(s.user) in (int(name.user), int(name.user) - 1)
        ]
        source = read_mjr(src).info
        info = read_mjr(path).info
        assert (info.kind, info.codec, info.format) == (source.kind, source.codec, "MJR00002")
        got = packets(path)
        rate = info.clock_rate
        seqs = [p.sequence_number for p in got]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:])), path.name
        ts = [p.timestamp for p in got]
        steps = [(b - a) & 0xFFFFFFFF for a, b in zip(ts, ts[1:])]
        assert max(steps) <= rate // 10, path.name  # no jump at a loop boundary
        span = sum(steps) / rate
        assert seconds - 0.1 <= span < seconds, (path.name, span)
        arrivals = [d.arrival_ns for d in read_mjr(path)]
        assert arrivals == sorted(arrivals)
        assert abs((arrivals[-1] - arrivals[0]) / 1e9 - span) < 0.1, path.name
        assert {p.ssrc for p in got} == {got[0].ssrc}
        original = packets(src)[0].ssrc
        assert (got[0].ssrc == original) == (name.user in originals), path.name
        if info.kind == "video":
            first_key = next(p for p in packets(src) if vp8_keyframe_start(p.serialize()))
            assert got[0].payload == first_key.payload
            # every loop starts where the source's cut begins: on a keyframe
            loop = len(read_source(src).frames)
            starts = [got[i] for i in range(0, len(got), loop)]
            assert len(starts) == 3
            assert all(vp8_keyframe_start(p.serialize()) for p in starts)

    report: Any = scan_room(made).to_json()
    assert report["problems"] == []
    assert len(report["participants"]) == 4
    for participant in report["participants"]:
        for stream in participant["streams"]:
            assert stream["lost"] == 0, stream

    # 4 publishers from 2 mix, each in its colour late in the third loop
    mixed = mix(
        made,
        tmp_path / "room.mp4",
        options=MixOptions(encode=EncodeSettings(width=640, height=360, preset="ultrafast")),
    )
    rec = read_recording(tmp_path / "room.mp4", mixed.to_json())
    assert abs(len(rec.frames) / 30 - seconds) < 0.5
    late = len(rec.frames) * 9 // 10
    tiles = rec.tiles_at(rec.frames[late][0])
    assert set(tiles) == set(by_user)
    colours = {str(users[d]): rgb for d, (rgb, _) in PUBLISHERS.items()}
    colours |= {str(int(u) + 1): rgb for u, rgb in colours.items()}
    for user, rgb in colours.items():
        picture = np.empty((16, 16, 3), np.uint8)
        picture[:] = rgb
        yuv = av.VideoFrame.from_ndarray(picture, format="rgb24").to_ndarray(format="yuv420p")
        u, v = yuv[16:20].mean(), yuv[20:24].mean()
        got_u, got_v = tile_chroma(rec, late, user)
        assert abs(got_u - u) < COLOUR_TOLERANCE and abs(got_v - v) < COLOUR_TOLERANCE, user


def test_sequence_numbers_run_on_across_the_16_bit_wrap(
    recorded: tuple[list[Path], dict[str, int]], tmp_path: Path
) -> None:
    files, _ = recorded
    audio = next(f for f in files if "-audio-" in f.name)
    path = extend_mjr(audio, tmp_path, 1400.0)  # 70,000 Opus packets of 20 ms
    got = packets(path)
    assert len(got) == 70_000
    seqs = [p.sequence_number for p in got]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
    assert max(seqs) == 0xFFFF and seqs.index(0) > 0
    report: Any = scan_room([path]).to_json()
    (stream,) = report["participants"][0]["streams"]
    assert stream["lost"] == 0 and stream["frames"] == 70_000


def test_damaged_or_unloopable_sources_are_refused(
    recorded: tuple[list[Path], dict[str, int]], tmp_path: Path
) -> None:
    files, _ = recorded
    video = next(f for f in files if "-video-" in f.name)
    cut = tmp_path / "cut" / video.name
    cut.parent.mkdir()
    cut.write_bytes(video.read_bytes()[:-5])
    with pytest.raises(ValueError, match="damaged frame"):
        extend_mjr(cut, tmp_path, 5.0)
    with pytest.raises(ValueError, match="seconds"):
        extend_mjr(video, tmp_path, 0.0)
    with pytest.raises(ValueError, match="user_id"):
        extend_mjr(video, tmp_path, 5.0, user_id=1 << 53)
    odd = tmp_path / "odd.mjr"
    odd.write_bytes(video.read_bytes())
    with pytest.raises(ValueError, match="videoroom"):
        extend_mjr(odd, tmp_path / "out", 5.0)
