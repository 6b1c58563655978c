"""scan_room and `skymix inspect` on synthesized captures whose truth is known."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from skymix.session import load_description
from skymix.streams.room import scan_room
from skymix.synth import Impairments, SynthParticipant, synthesize

SCRIPT = Path(sys.executable).with_name("skymix")

PEOPLE = [
    SynthParticipant(
        "ada",
        (320, 240),
        30,
        "vp8",
        clock_offset=3.0,
        drift_ppm=200,
        muted=(4.0, 5.5),
        camera_off=(6.0, 8.5),
    ),
    SynthParticipant(
        "bob", (320, 180), 30, "h264", clock_offset=-6.0, drift_ppm=-280, joins_at=2.0
    ),
    SynthParticipant(
        "cy", (240, 320), 15, "vp8", clock_offset=0.4, drift_ppm=90, leaves_at=7.0, resize_at=4.0
    ),
]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    out = tmp_path_factory.mktemp("room")
    made = synthesize(
        PEOPLE, 10.0, out, seed=4, impairments=Impairments(loss=0.01, reorder=0.02, duplicate=0.01)
    )
    sdps = [f"{p.name}={sdp}" for p, sdp in zip(PEOPLE, made.sdps)]
    return made, sdps


def by_id(scan):
    return {p.id: p for p in scan.participants}


def test_scan_finds_who_when_and_what(capture):
    made, sdps = capture
    scan = scan_room([made.pcap], load_description(sdps))
    truth = {p["name"]: p for p in made.truth_data["participants"]}
    people = by_id(scan)
    assert set(people) == {"ada", "bob", "cy"}
    start = made.truth_data["start_unix"] * 1_000_000_000
    for name, p in people.items():
        t = truth[name]
        ((join, leave),) = p.presence  # nobody was away for 5 s
        assert abs((join - start) / 1e9 - t["joins_at"]) < 0.1
        assert abs((leave - start) / 1e9 - t["leaves_at"]) < 0.1
        kinds = {s.kind: s for s in p.streams}
        audio, video = kinds["audio"], kinds["video"]
        # every packet lost by the network shows as lost (but one lost at the very end)
        assert t["audio"]["lost"] - 1 <= audio.total("lost") <= t["audio"]["lost"]
        assert audio.total("frames") == t["audio"]["packets"] - audio.total("lost")
        assert video.total("frames") <= len(t["video"]["frames"])
        assert video.total("frames") >= len(t["video"]["frames"]) * 0.5
        sizes = {tuple(f["size"]) for f in t["video"]["frames"]}
        seen = {(w, h) for st in video.stats.values() for _, w, h in st.resolutions}
        assert seen == sizes
        assert video.codec == PEOPLE[[q.name for q in PEOPLE].index(name)].video_codec
        for stream in (audio, video):
            assert sum(c.reports for c in stream.sender_clocks.values()) >= 3
            (fit,) = stream.clocks.values()
            assert abs(fit.drift_ppm - t["drift_ppm"]) < 60  # 10 s, jitter-free network
    assert not scan.problems
    # ada muted 4.0-5.5 s and turned her camera off 6.0-8.5 s (relay clock); nobody else did
    ada = {s.kind: s for s in people["ada"].streams}
    (muted,), (camera_off,) = ada["audio"].idle, ada["video"].idle
    assert abs((muted[0] - start) / 1e9 - 4.0) < 0.05 and abs((muted[1] - start) / 1e9 - 5.5) < 0.05
    assert abs((camera_off[0] - start) / 1e9 - 6.0) < 0.1
    assert abs((camera_off[1] - start) / 1e9 - 8.5) < 0.1
    assert all(not s.idle for p in ("bob", "cy") for s in people[p].streams)
    # every audio packet carried its RFC 6464 level, and it reached the frames' stats
    assert ada["audio"].audio_levels == ada["audio"].total("packets")


def test_without_a_description_each_ssrc_is_guessed(capture):
    made, _ = capture
    scan = scan_room([made.pcap])
    codecs = sorted(s.codec for p in scan.participants for s in p.streams)
    assert codecs == ["h264", "opus", "opus", "opus", "vp8", "vp8"]
    assert all(p.id.startswith("ssrc 0x") for p in scan.participants)
    assert all(s.note and "guessed" in s.note for p in scan.participants for s in p.streams)


def test_inspect_command_prints_table_and_json(capture):
    made, sdps = capture
    args = [SCRIPT, "inspect", made.pcap] + [a for s in sdps for a in ("--sdp", s)]
    table = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert "bob (id bob): present 2.0" in table and "h264" in table and "320x180" in table
    data = json.loads(
        subprocess.run(args + ["--json"], capture_output=True, text=True, check=True).stdout
    )
    assert {p["id"] for p in data["participants"]} == {"ada", "bob", "cy"}
    cy = next(p for p in data["participants"] if p["id"] == "cy")
    video = next(s for s in cy["streams"] if s["kind"] == "video")
    assert video["resolutions"] == [[120, 160], [240, 320]]
    bad = subprocess.run(
        [SCRIPT, "inspect", made.truth], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1
    assert f"skymix: error: {made.truth}, offset 0: not a capture file" in bad.stderr


def test_janus_recordings_group_by_videoroom_name(capture, tmp_path):
    made, _ = capture
    for p in made.truth_data["participants"]:
        for kind in ("audio", "video"):
            stream = p[kind]
            codec = "opus" if kind == "audio" else stream["codec"]
            name = f"videoroom-1234-user-{p['name']}-1764000000000000-{kind}-0.mjr"
            subprocess.run(
                [
                    "pcap2mjr",
                    "-c",
                    codec,
                    "-s",
                    str(stream["ssrcs"][0]),
                    made.pcap,
                    tmp_path / name,
                ],
                check=True,
                capture_output=True,
            )
    scan = scan_room(sorted(tmp_path.glob("*.mjr")))
    people = by_id(scan)
    assert set(people) == {"ada", "bob", "cy"}
    for p in people.values():
        assert sorted(s.kind for s in p.streams) == ["audio", "video"]
        assert all(s.total("frames") > 0 for s in p.streams)


def test_frames_show_and_sound_what_was_sent(capture):
    """Decoded frames: ada's camera flashes and her microphone beeps exactly where she did."""
    made, sdps = capture
    got: dict[str, list] = {"audio": [], "video": []}

    def keep(participant, kind, frame):
        if participant == "ada":
            got[kind].append(frame)

    scan_room([made.pcap], load_description(sdps), on_frame=keep)
    ada = next(p for p in made.truth_data["participants"] if p["name"] == "ada")
    sent = {f["rtp"]: f for f in ada["video"]["frames"]}
    decoder = av.CodecContext.create("vp8", "r")
    checked = 0
    for frame in got["video"]:
        (picture,) = decoder.decode(av.Packet(frame.data))
        luma = float(picture.to_ndarray()[: picture.height].mean())
        truth = sent[frame.timestamp & 0xFFFFFFFF]
        assert (luma > 180) == truth["flash"], truth
        checked += truth["flash"]
    assert checked >= 3  # flashes were among the frames that arrived
    # audio: the 1 kHz beeps stand out of the quiet tone at the flash instants
    opus = av.CodecContext.create("libopus", "r")
    loud = []
    for frame in got["audio"]:
        pcm = np.concatenate([f.to_ndarray().ravel() for f in opus.decode(av.Packet(frame.data))])
        loud.append((frame.timestamp, float(np.abs(pcm).max()) > 0.3 * 32767))
    beeps = [ts for ts, is_loud in loud if is_loud]
    assert beeps
    flashes = [ts for ts, f in sent.items() if f["flash"]]
    first_video, first_audio = min(sent), min(ts for ts, _ in loud)
    # both media clocks start at her join: a beep sits within 2 audio frames of each flash
    for flash in flashes:
        at = first_audio + (flash - first_video) * 48000 // 90000
        assert any(abs(b - at) <= 2 * 960 for b in beeps) or not any(
            abs(ts - at) <= 2 * 960 for ts, _ in loud
        ), flash


def test_ssrc_change_lost_first_keyframe_and_loss_bursts(tmp_path):
    """A renegotiated SSRC continues the same participant's stream; a stream whose first
    keyframe never arrived starts at its second; a burst of loss costs frames, not the stream."""
    people = [SynthParticipant("dee", (320, 240), 30, "vp8", ssrc_change_at=3.0)]
    made = synthesize(
        people,
        6.0,
        tmp_path,
        seed=7,
        impairments=Impairments(drop_first_keyframe=True, burst_every_s=1.7, burst_packets=4),
    )
    scan = scan_room([made.pcap], load_description([f"dee={made.sdps[0]}"]))
    (dee,) = scan.participants
    video = next(s for s in dee.streams if s.kind == "video")
    truth = made.truth_data["participants"][0]["video"]
    assert video.ssrcs == truth["ssrcs"] and len(video.ssrcs) == 2
    first, second = (video.stats[s] for s in video.ssrcs)
    # the first SSRC lost its opening keyframe: nothing until the next one (frame 60, 2 s later;
    # 4 of the frames before it went in the 1.7 s burst), then frames 60-89 until the change
    assert first.frames_skipped_for_keyframe + first.lost == 59
    assert (first.frames, first.keyframes) == (30, 1)
    # the second: its keyframes at 3.0 and 5.0 s, each burst (3.4, 5.1 s) a wait for the next
    assert (second.keyframes, second.keyframe_waits) == (2, 2) and second.frames > 0
    audio = next(s for s in dee.streams if s.kind == "audio")
    assert audio.total("lost") >= 8  # bursts of 4 at 1.7, 3.4 and 5.1 s
    assert len([g for st in audio.stats.values() for g in st.gaps]) >= 2


def test_rtx_repairs_what_the_network_lost(tmp_path):
    """Retransmissions on an RTX stream (RFC 4588, ssrc-group FID) fill the media stream's holes:
    only packets whose retransmission was lost too stay lost."""
    people = [SynthParticipant("eve", (320, 240), 30, "vp8", ssrc_change_at=3.0)]
    made = synthesize(people, 6.0, tmp_path, seed=11, impairments=Impairments(loss=0.15, rtx=True))
    truth = made.truth_data["participants"][0]["video"]
    assert truth["retransmitted"] >= 5 and len(truth["rtx_ssrcs"]) == 2
    scan = scan_room([made.pcap], load_description([f"eve={made.sdps[0]}"]))
    (eve,) = scan.participants
    video = next(s for s in eve.streams if s.kind == "video")
    assert video.ssrcs == truth["ssrcs"]  # RTX SSRCs are repairs, not streams of their own
    assert video.total("lost") == truth["lost"] < truth["retransmitted"]
    assert video.total("duplicates") == 0 and not scan.skipped


def test_presence_from_the_manifest_overrides_the_media(tmp_path):
    """A manifest's join and leave times are the participants' presence (the room's signalling
    knows better than packets when someone joined); where it gives none, the media decide."""
    people = [
        SynthParticipant("ann", (160, 120), 15, "vp8"),
        SynthParticipant("bob", (160, 120), 15, "vp8", tone_hz=440),
    ]
    made = synthesize(people, 6.0, tmp_path, seed=2)
    start = 1_764_000_000  # the synthesizer's relay clock zero (Unix seconds)

    def iso(seconds: float) -> str:
        return datetime.datetime.fromtimestamp(start + seconds, datetime.UTC).isoformat()

    manifest = tmp_path / "room.json"
    manifest.write_text(
        json.dumps(
            {
                "participants": [
                    {
                        "id": "ann",
                        "name": "Ann",
                        "sdp": str(made.sdps[0]),
                        "joins": [iso(1.0)],
                        "leaves": [iso(2.0)],
                    },
                    {"id": "bob", "name": "Bob", "sdp": str(made.sdps[1])},
                ]
            }
        )
    )
    scan = scan_room([made.pcap], load_description([], manifest))
    ann, bob = sorted(scan.participants, key=lambda p: p.id)
    assert ann.presence == [[(start + 1) * 10**9, (start + 2) * 10**9]]
    assert len(bob.presence) == 1 and bob.presence[0][1] - bob.presence[0][0] > 5.5e9


def test_janus_recording_of_a_codec_that_cannot_be_mixed_is_skipped(tmp_path):
    """A .mjr whose codec skymix does not mix (G.722 here) is listed as skipped with its
    participant, SSRC and payload type; the participant's other recordings are read."""
    made = synthesize([SynthParticipant("ada", (160, 120), 15, "vp8")], 2.0, tmp_path, seed=1)
    truth = made.truth_data["participants"][0]
    names = {}
    for kind, codec in (("audio", "g722"), ("video", "vp8")):
        names[kind] = tmp_path / f"videoroom-1234-user-ada-1764000000000000-{kind}-0.mjr"
        subprocess.run(
            ["pcap2mjr", "-c", codec, "-s", str(truth[kind]["ssrcs"][0]), made.pcap, names[kind]],
            check=True,
            capture_output=True,
        )
    scan = scan_room([names["audio"], names["video"]])
    (ada,) = scan.participants
    assert [s.kind for s in ada.streams] == ["video"] and ada.streams[0].total("frames") > 0
    (skipped,) = scan.skipped_streams
    assert (skipped.participant, skipped.ssrc, skipped.payload_type, skipped.packets) == (
        "ada",
        truth["audio"]["ssrcs"][0],
        111,
        truth["audio"]["packets"],
    )
    assert skipped.reason == "codec g722 cannot be mixed" and scan.damaged()
