"""A real Janus videoroom records two aiortc publishers; scan_room and the VP8 path read its .mjr.

Janus (Debian `janus`) runs with a minimal config, the videoroom plugin and the HTTP transport
only, inside a private network namespace together with the publishers (see janus_tools: Janus
will not do ICE on loopback). Each publisher sends a solid-colour VP8 video and an Opus tone for a
few seconds; the room records. The recordings must group into the two participants Janus
assigned, with an Opus and a VP8 stream each, every assembled VP8 frame must decode to the
published colour, and the recordings must mix into a recording of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc.rtp import RtpPacket

from janus_tools import (
    HEIGHT,
    PUBLISHERS,
    ROOM,
    WIDTH,
    janus_available,
    namespaces_available,
    record_room,
)
from mix_tools import read_recording, tile_chroma
from skymix import MixOptions, mix
from skymix.encode import EncodeSettings
from skymix.ingest import read_mjr
from skymix.ingest.mjr import parse_videoroom_name
from skymix.streams.assembler import StreamAssembler
from skymix.streams.codecs import codec_for
from skymix.streams.room import scan_room

COLOUR_TOLERANCE = 8.0  # per Y/U/V plane mean, in 8-bit code values (the colours differ by ~85)


def plane_means(frame: av.VideoFrame) -> np.ndarray:
    """Mean Y, U and V of a yuv420p picture."""
    yuv = frame.to_ndarray(format="yuv420p")  # Y rows, then U and V as HEIGHT/4 rows each
    chroma = yuv[HEIGHT:].reshape(-1)
    half = chroma.size // 2
    return np.array([yuv[:HEIGHT].mean(), chroma[:half].mean(), chroma[half:].mean()])


def reference_colour(rgb: tuple[int, int, int]) -> np.ndarray:
    """Plane means of the published picture itself (RGB -> yuv420p, as the publisher sent it)."""
    picture = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    picture[:] = rgb
    return plane_means(
        av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
    )


def test_janus_videoroom_recordings(tmp_path: Path) -> None:
    # make test installs janus and iproute2: their absence is a set-up failure, not a skip
    assert janus_available(), "Debian janus is not installed (make test installs it)"
    assert namespaces_available(), "needs unshare --user --net and iproute2's ip"
    users = record_room(tmp_path)
    assert sorted(users) == sorted(PUBLISHERS)
    files = sorted((tmp_path / "rec").glob("*.mjr"))
    names = {f: name for f in files if (name := parse_videoroom_name(f)) is not None}
    assert len(names) == len(files) == 4, [f.name for f in files]
    assert {n.room for n in names.values()} == {str(ROOM)}
    assert sorted((n.user, n.kind) for n in names.values()) == sorted(
        (str(u), k) for u in users.values() for k in ("audio", "video")
    )

    report: Any = scan_room(files).to_json()
    assert report["problems"] == [], report["problems"]
    assert {p["id"] for p in report["participants"]} == {str(u) for u in users.values()}
    for participant in report["participants"]:
        streams = {s["kind"]: s for s in participant["streams"]}
        assert sorted(streams) == ["audio", "video"], participant
        audio, video = streams["audio"], streams["video"]
        assert audio["codec"] == "opus" and video["codec"] == "vp8"
        # ~4 s of Opus at 20 ms and VP8 at 30 fps: well over a second's worth of each
        assert audio["frames"] > 50, audio
        assert video["frames"] > 30, video
        assert video["keyframes"] >= 1, video
        assert video["resolutions"] == [[WIDTH, HEIGHT]], video
        assert audio["lost"] == 0 and video["lost"] == 0, (audio, video)

    colours = {str(users[display]): rgb for display, (rgb, _) in PUBLISHERS.items()}
    for path, name in names.items():
        if name.kind != "video":
            continue
        recording = read_mjr(path)
        assert recording.info.codec == "vp8"
        assembler = None
        frames = []
        for d in recording:
            packet = RtpPacket.parse(d.data)
            if assembler is None:
                assembler = StreamAssembler(codec_for("vp8"), packet.ssrc, file=str(path))
            frames += assembler.push(
                d.arrival_ns,
                packet.sequence_number,
                packet.timestamp,
                bool(packet.marker),
                packet.payload,
            )
        assert assembler is not None, path.name
        frames += assembler.flush()
        assert len(frames) > 30 and frames[0].keyframe, (path.name, len(frames))
        decoder = av.CodecContext.create("vp8", "r")
        expected = reference_colour(colours[name.user])
        for frame in frames:
            pictures = decoder.decode(av.Packet(frame.data))
            assert len(pictures) == 1, (path.name, frame.timestamp)
            picture = pictures[0]
            assert (picture.width, picture.height) == (WIDTH, HEIGHT), path.name
            mean = plane_means(picture)
            assert np.abs(mean - expected).max() < COLOUR_TOLERANCE, (path.name, mean, expected)

    # and the recordings mix as they are: both publishers side by side in their colours, both
    # tones in the sound (.mjr carries no RTCP: each stream stands on its own clock fit)
    mixed = mix(
        files,
        tmp_path / "room.mp4",
        options=MixOptions(encode=EncodeSettings(width=640, height=360, preset="ultrafast")),
    )
    assert all(s.sync == "arrival" for s in mixed.streams)
    rec = read_recording(tmp_path / "room.mp4", mixed.to_json())
    middle = len(rec.frames) // 2
    tiles = rec.tiles_at(rec.frames[middle][0])
    assert set(tiles) == {str(u) for u in users.values()}
    for user, rgb in colours.items():
        _, u, v = reference_colour(rgb)
        got = tile_chroma(rec, middle, user)
        assert abs(got[0] - u) < COLOUR_TOLERANCE and abs(got[1] - v) < COLOUR_TOLERANCE, user
    sound = rec.audio[0][len(rec.audio[0]) // 4 : 3 * len(rec.audio[0]) // 4]
    spectrum = np.abs(np.fft.rfft(sound))
    freqs = np.fft.rfftfreq(len(sound), 1 / rec.rate)
    for _, tone in PUBLISHERS.values():
        near = (freqs > tone - 5) & (freqs < tone + 5)
        assert spectrum[near].max() > 20 * np.median(spectrum), tone
