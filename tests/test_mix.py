"""skymix.mix end to end on the synthesizer's captures: senders with clocks seconds apart and
drifting, a late joiner, a leaver, jitter, reordering and loss; checked the way a viewer would
check it: beeps heard and flashes seen at the instants the truth file says."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from mix_tools import (
    beep_onsets,
    displayable_flash_frames,
    expected_output_time,
    flashes,
    load_truth,
    read_recording,
    tile_chroma,
)
from skymix import MixOptions, SkymixError, mix
from skymix.compose.color import rgb_to_yuv
from skymix.compose.labels import placeholder_color
from skymix.encode import EncodeSettings
from skymix.layout import SpeakerSpec
from skymix.session import load_description
from skymix.synth import Impairments, SynthParticipant, preset, synthesize

SECONDS = 10.0
SMALL = EncodeSettings(width=640, height=360, preset="ultrafast")


def description(made, people):
    return load_description([f"{p.name}={sdp}" for p, sdp in zip(people, made.sdps)])


def run(
    tmp: Path,
    people,
    impairments: Impairments,
    seed: int,
    options: MixOptions | None = None,
    seconds: float = SECONDS,
):
    made = synthesize(people, seconds, tmp, seed=seed, impairments=impairments)
    report = mix(
        [made.pcap],
        tmp / "out.mp4",
        description=description(made, people),
        options=options or MixOptions(encode=SMALL),
    )
    data = json.loads(json.dumps(report.to_json()))
    return made, report, read_recording(tmp / "out.mp4", data), load_truth(tmp)


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    """Four senders (VP8 and H.264, 15 and 30 fps, clocks 2.5 s apart drifting -250..+300 ppm,
    one joining late, one leaving early) through a jittery, reordering network."""
    people = preset(4, SECONDS)
    return run(
        tmp_path_factory.mktemp("synced"), people, Impairments(jitter_ms=4.0, reorder=0.02), seed=5
    )


def test_every_beep_lands_within_10ms_of_its_place(synced):
    _, report, rec, truth = synced
    onsets = beep_onsets(rec)
    checked = 0
    for person in truth["participants"]:
        for event in person["events_relay"]:
            expected = expected_output_time(truth, report.to_json(), event)
            if not 0.1 < expected < report.duration_s - 0.1:
                continue
            nearest = onsets[np.argmin(np.abs(onsets - expected))]
            assert abs(nearest - expected) < 0.010, (person["name"], event, nearest - expected)
            checked += 1
    assert checked >= 14


def test_every_flash_is_shown_within_half_a_frame_of_its_time(synced):
    _, report, rec, truth = synced
    half = 0.5 / SMALL.fps
    checked = 0
    for person in truth["participants"]:
        seen = np.array(flashes(rec, person["name"]))
        for relay in displayable_flash_frames(truth, person["name"]):
            expected = expected_output_time(truth, report.to_json(), relay)
            if not 0.1 < expected < report.duration_s - 0.1:
                continue
            assert len(seen), person["name"]
            first = seen[np.argmin(np.abs(seen - expected))]
            assert abs(first - expected) <= half + 0.002, (person["name"], first - expected)
            checked += 1
    assert checked >= 10


def test_lip_sync_and_drift_are_reported_per_stream(synced):
    """Audio stands on its own clock fit (drift within 20 ppm on 7-10 s of jittery arrivals:
    0.2 ms over the stream); video is tied to it through sender reports, so its own coarser fit
    (8-10 windows of 15-30 frames) only shows."""
    _, report, _, truth = synced
    by_name = {p["name"]: p for p in truth["participants"]}
    for stream in report.to_json()["streams"]:
        assert stream["sync"] == ("sender reports" if stream["kind"] == "video" else "arrival")
        tolerance = 20 if stream["kind"] == "audio" else 60
        assert stream["drift_ppm"] == pytest.approx(
            by_name[stream["participant"]]["drift_ppm"], abs=tolerance
        )


def test_the_layout_follows_joins_and_leaves(synced):
    _, report, rec, truth = synced
    linus = next(p for p in truth["participants"] if p["name"] == "linus")
    margaret = next(p for p in truth["participants"] if p["name"] == "margaret")
    join = expected_output_time(truth, report.to_json(), linus["joins_at"])
    leave = expected_output_time(truth, report.to_json(), margaret["leaves_at"])
    assert set(rec.tiles_at(join - 0.2)) == {"ada", "grace", "margaret"}
    assert set(rec.tiles_at(join + 0.5)) == {"ada", "grace", "margaret", "linus"}
    assert set(rec.tiles_at(leave + 0.5)) == {"ada", "grace", "linus"}
    # the layout changes at those moments, not on every frame
    assert len(report.layouts) <= 8
    assert report.frames == len(rec.frames) == round(report.duration_s * SMALL.fps)


def test_each_tile_shows_its_participant(synced):
    _, report, rec, truth = synced
    middle = len(rec.frames) // 2
    t = rec.frames[middle][0]
    shown = 0
    for person in preset(4, SECONDS):
        tile = rec.tiles_at(t).get(person.name)
        if tile is None or not tile["video"]:
            continue
        _, u, v = rgb_to_yuv(person.color)
        got_u, got_v = tile_chroma(rec, middle, person.name)
        assert abs(got_u - u) < 12 and abs(got_v - v) < 12, person.name
        shown += 1
    assert shown == 4


def test_audio_is_continuous_and_nothing_concealed_without_loss(synced):
    _, report, rec, _ = synced
    assert rec.audio.shape[1] == pytest.approx(report.duration_s * 48000, abs=2048)
    for person in report.participants:
        assert person.video.decode_errors == 0
        assert person.audio.jumps_back == 0


@pytest.fixture(scope="module")
def lossy(tmp_path_factory):
    people = preset(3, 8.0)
    options = MixOptions(encode=SMALL, on_loss="placeholder")
    return run(
        tmp_path_factory.mktemp("lossy"),
        people,
        Impairments(loss=0.04, drop_first_keyframe=True),
        seed=9,
        options=options,
        seconds=8.0,
    )


def test_loss_never_shows_a_broken_picture(lossy):
    """Every video tile in every frame shows its participant's colour, a flash, or the
    placeholder: never a decoder's grey or green smear."""
    _, report, rec, truth = lossy
    colours = {p.name: rgb_to_yuv(p.color) for p in preset(3, 8.0)}
    placeholders = {
        p["name"]: rgb_to_yuv(placeholder_color(p["name"])) for p in truth["participants"]
    }
    for index in range(0, len(rec.frames), 3):
        t = rec.frames[index][0]
        for pid, tile in rec.tiles_at(t).items():
            u, v = tile_chroma(rec, index, pid)
            expected = colours[pid] if tile["video"] else placeholders[pid]
            white = abs(u - 128) < 6 and abs(v - 128) < 6
            close = abs(u - expected[1]) < 14 and abs(v - expected[2]) < 14
            background = not tile["video"] and abs(u - expected[1]) < 30  # around the circle
            assert close or white or background, (t, pid, tile["video"], u, v, expected)


def test_loss_is_reported_and_concealed(lossy):
    _, report, _, _ = lossy
    scan = report.scan
    lost = sum(s["lost"] for p in scan["participants"] for s in p["streams"])
    assert lost > 0
    assert any(p.video.shown_placeholder > 0 for p in report.participants)
    assert any(p.audio.concealed > 0 for p in report.participants)  # Opus PLC


def test_trim_leaves_out_the_empty_room(tmp_path):
    people = [
        SynthParticipant("ann", (320, 240), 15, "vp8", joins_at=0.0, leaves_at=2.0),
        SynthParticipant(
            "bob", (320, 240), 15, "vp8", joins_at=9.0, tone_hz=440, color=(40, 160, 60)
        ),
    ]
    made = synthesize(people, 11.0, tmp_path, seed=3)
    desc = description(made, people)
    full = mix(
        [made.pcap], tmp_path / "full.mp4", description=desc, options=MixOptions(encode=SMALL)
    )
    trimmed = mix(
        [made.pcap],
        tmp_path / "trim.mp4",
        description=desc,
        options=MixOptions(encode=SMALL, trim=True),
    )
    assert full.duration_s == pytest.approx(11.0, abs=0.3)
    assert trimmed.duration_s == pytest.approx(4.0, abs=0.3)
    assert [s.output_s for s in trimmed.segments] == pytest.approx([0.0, 2.0], abs=0.1)


def test_audio_only_sessions_give_an_audio_only_file(tmp_path):
    people = [
        SynthParticipant("ann", video_codec=None),
        SynthParticipant("bob", video_codec=None, tone_hz=440, joins_at=1.0),
    ]
    made = synthesize(people, 4.0, tmp_path, seed=4)
    report = mix([made.pcap], tmp_path / "out.mp4", description=description(made, people))
    rec = read_recording(tmp_path / "out.mp4", report.to_json())
    assert not rec.frames and report.frames == 0
    assert rec.audio.shape[1] == pytest.approx(4.0 * 48000, abs=4096)
    spectrum = np.abs(np.fft.rfft(rec.audio[0][48000:]))
    peak = np.fft.rfftfreq(len(rec.audio[0][48000:]), 1 / 48000)[np.argmax(spectrum)]
    assert peak in (
        pytest.approx(300, abs=3),
        pytest.approx(440, abs=3),
        pytest.approx(1000, abs=3),
    )


def test_speaker_layout_gives_one_large_tile(tmp_path):
    people = preset(3, 4.0)
    made = synthesize(people, 4.0, tmp_path, seed=2)
    report = mix(
        [made.pcap],
        tmp_path / "out.mp4",
        description=description(made, people),
        options=MixOptions(layout=SpeakerSpec(), encode=SMALL),
    )
    last = report.to_json()["layouts"][-1]["tiles"]
    areas = sorted((t["w"] * t["h"] for t in last), reverse=True)
    assert len(areas) == 3 and areas[0] > 3 * areas[1]


def test_nothing_to_mix_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    with pytest.raises(SkymixError, match="nothing to mix"):
        mix([empty], tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_cli_mixes_and_writes_the_report(synced, tmp_path):
    made, _, _, _ = synced
    sdps = [f"--sdp={p.name}={sdp}" for p, sdp in zip(preset(4, SECONDS), made.sdps)]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "skymix",
            "mix",
            str(made.pcap),
            *sdps,
            "-o",
            str(tmp_path / "cli.mp4"),
            "--size",
            "320x180",
            "--preset",
            "ultrafast",
            "--report",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert {p["id"] for p in report["participants"]} == {"ada", "grace", "linus", "margaret"}
    assert "ada" in out.stdout and "sender reports" in out.stdout
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "skymix",
            "mix",
            str(tmp_path / "nope.pcap"),
            "-o",
            str(tmp_path / "x.mp4"),
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "nope.pcap" in missing.stderr


def test_still_in_sync_at_the_end_of_a_long_session(tmp_path):
    """Three minutes with senders at +300 and -300 ppm: uncorrected, their audio would be 54 ms
    off by the end; placed by their clocks it stays within 10 ms, and video with it."""
    people = [
        SynthParticipant(
            "ann", (160, 120), 15, "vp8", tone_hz=300, clock_offset=4.0, drift_ppm=300
        ),
        SynthParticipant(
            "bob",
            (160, 120),
            15,
            "vp8",
            tone_hz=450,
            clock_offset=-3.0,
            drift_ppm=-300,
            color=(40, 160, 60),
        ),
    ]
    options = MixOptions(encode=EncodeSettings(width=320, height=180, fps=15, preset="ultrafast"))
    made, report, rec, truth = run(
        tmp_path, people, Impairments(jitter_ms=2.0), seed=1, options=options, seconds=180.0
    )
    onsets = beep_onsets(rec)
    late = 0
    for person in truth["participants"]:
        seen = np.array(flashes(rec, person["name"]))
        for event in person["events_relay"]:
            expected = expected_output_time(truth, report.to_json(), event)
            if not report.duration_s - 30 < expected < report.duration_s - 0.2:
                continue
            assert abs(onsets[np.argmin(np.abs(onsets - expected))] - expected) < 0.010
            flash = seen[np.argmin(np.abs(seen - expected))]
            assert abs(flash - expected) <= 0.5 / 15 + 0.5 / 15 + 0.002  # source and output frames
            late += 1
    assert late >= 20


def test_each_participant_alone_and_a_channel_each_from_the_same_decode(tmp_path):
    people = preset(3, 5.0)  # ada 220 Hz, grace 330 Hz, linus 440 Hz joining at 1.5 s
    made = synthesize(people, 5.0, tmp_path, seed=6)
    options = MixOptions(
        encode=SMALL, per_participant=tmp_path / "alone", channels=tmp_path / "channels.wav"
    )
    report = mix(
        [made.pcap], tmp_path / "out.mp4", description=description(made, people), options=options
    )
    with wave.open(str(tmp_path / "channels.wav")) as wav:
        assert wav.getnchannels() == 3 and wav.getframerate() == 48000
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 3) / 32768
    assert report.file("channels").channel_order == [p.name for p in people]
    assert abs(len(pcm) - report.samples) <= 1
    for i, person in enumerate(people):
        part = pcm[int(3.0 * 48000) : int(3.4 * 48000), i]  # no beep here, everyone present
        peak = np.fft.rfftfreq(len(part), 1 / 48000)[np.argmax(np.abs(np.fft.rfft(part)))]
        assert peak == pytest.approx(person.tone_hz, abs=5), person.name
    assert np.abs(pcm[: int(1.0 * 48000), 2]).max() < 1e-3  # linus before he joins: silence
    for person in people:
        path = Path(report.file("participant", person.name).path)
        alone = read_recording(path, {"layouts": []})
        assert len(alone.frames) == report.frames
        _, u, v = rgb_to_yuv(person.color)
        _, _, fu, fv = next(f for f in alone.frames if f[0] >= 3.3)  # no flash near
        assert abs(np.median(fu) - u) < 12 and abs(np.median(fv) - v) < 12, person.name
    assert not list(tmp_path.glob(".*.partial")) and not list((tmp_path / "alone").glob(".*"))


def test_an_audio_rate_other_than_48k_is_refused(synced, tmp_path):
    made, _, _, _ = synced
    with pytest.raises(SkymixError, match="48000 Hz"):
        mix(
            [made.pcap],
            tmp_path / "out.mp4",
            description=description(made, preset(4, SECONDS)),
            options=MixOptions(encode=EncodeSettings(audio_rate=44100)),
        )
    assert not list(tmp_path.iterdir())


def test_a_renegotiated_stream_goes_on_in_its_tile(tmp_path):
    """The camera restarts with a new SSRC mid-call (possibly a smaller number, fed first
    within a batch): the frames of both SSRCs are shown in time order, flashes on time."""
    people = [SynthParticipant("ann", (320, 240), 30, "vp8", ssrc_change_at=2.2)]
    made, report, rec, truth = run(tmp_path, people, Impairments(), seed=4, seconds=6.0)
    (ann,) = truth["participants"]
    assert len(ann["video"]["ssrcs"]) == 2
    seen = np.array(flashes(rec, "ann"))
    checked = 0
    for relay in displayable_flash_frames(truth, "ann"):
        expected = expected_output_time(truth, report.to_json(), relay)
        if 0.1 < expected < report.duration_s - 0.1:
            assert np.min(np.abs(seen - expected)) <= 0.5 / SMALL.fps + 0.002
            checked += 1
    assert checked >= 2 and report.participants[0].video.decode_errors == 0


def test_the_api_writes_webm_for_a_webm_name(tmp_path):
    people = [SynthParticipant("ann", video_codec=None)]
    made = synthesize(people, 2.0, tmp_path, seed=4)
    mix([made.pcap], tmp_path / "out.webm", description=description(made, people))
    with av.open(str(tmp_path / "out.webm")) as container:
        assert "webm" in container.format.name
        assert container.streams.audio[0].codec_context.name == "opus"


def test_someone_heard_for_under_a_second_is_in_the_mix(tmp_path):
    """0.6 s of audio is one clock window: placed at its offset on the nominal rate, not lost."""
    people = [
        SynthParticipant("ann", video_codec=None, tone_hz=300),
        SynthParticipant("bob", video_codec=None, tone_hz=440, joins_at=2.0, leaves_at=2.6),
    ]
    made, report, rec, truth = run(tmp_path, people, Impairments(), seed=3, seconds=4.0)
    bob = next(s for s in report.to_json()["streams"] if s["participant"] == "bob")
    assert bob["sync"] == "arrival"
    start = expected_output_time(truth, report.to_json(), 2.0)
    part = rec.audio[0][int((start + 0.1) * 48000) : int((start + 0.45) * 48000)]
    spectrum = np.abs(np.fft.rfft(part))
    freqs = np.fft.rfftfreq(len(part), 1 / 48000)
    near = (freqs > 435) & (freqs < 445)
    assert spectrum[near].max() > 0.5 * spectrum.max()  # bob's 440 Hz as loud as ann's tone


def test_a_mono_recording_has_everyone_in_its_one_channel(tmp_path):
    """audio_channels=1: the participants' stereo tracks mixed down into one channel."""
    people = [
        SynthParticipant("ann", tone_hz=300),
        SynthParticipant("bob", video_codec=None, tone_hz=440),
    ]
    options = MixOptions(
        encode=EncodeSettings(width=320, height=180, preset="ultrafast", audio_channels=1)
    )
    made, report, rec, truth = run(
        tmp_path, people, Impairments(), seed=6, options=options, seconds=3.0
    )
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.audio[0].codec_context.channels == 1
    part = rec.audio[0][48000:96000]
    spectrum = np.abs(np.fft.rfft(part))
    freqs = np.fft.rfftfreq(len(part), 1 / 48000)
    for tone in (300, 440):
        near = (freqs > tone - 5) & (freqs < tone + 5)
        assert spectrum[near].max() > 20 * np.median(spectrum), tone
