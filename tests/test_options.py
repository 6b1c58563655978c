"""MixOptions as data: ranges refused with the field and the range, JSON round trips, unknown keys
named, layouts that show nobody refused, the memory estimate and its refusal, and the command line
reporting bad options in one line with exit 2 (a real `skymix mix` process)."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import skymix
from skymix.encode import X264_PRESETS, EncodeSettings
from skymix.errors import DescriptionError, JobTooLargeError, OptionsError
from skymix.layout import CustomSpec, GridSpec, PipSpec, Region, SpeakerSpec
from skymix.options import (
    MixOptions,
    ThreadPlan,
    available_memory,
    cameras,
    check_memory,
    estimate_memory,
    options_json_schema,
)

SKYMIX = Path(sys.executable).parent / "skymix"
MB = 1 << 20

BAD_OPTIONS: list[tuple[dict[str, Any], str, str]] = [
    ({"encode": {"crf": 1000}}, "encode.crf", "crf must be 1-51"),
    ({"encode": {"crf": -1}}, "encode.crf", "crf must be 1-51"),
    ({"encode": {"crf": 0}}, "encode.crf", "0, lossless, needs a profile browsers do not play"),
    ({"encode": {"crf": "23"}}, "encode.crf", "got '23'"),
    ({"fps": 0}, "fps", "fps must be 1-120, got 0"),
    ({"fps": 1000}, "fps", "fps must be 1-120, got 1000"),
    ({"size": "641x480"}, "size", "size must be even in both directions (yuv420p), got 641x480"),
    ({"size": [1280, 721]}, "size", "got 1280x721"),
    ({"size": "16000x16000"}, "size", "at most 7680x4320 (H.264 level 6.2's largest picture"),
    ({"size": "0x0"}, "size", "size must be at least 16x16, got 0x0"),
    ({"size": "big"}, "size", 'size must be "WIDTHxHEIGHT" such as "1280x720", got "big"'),
    ({"threads": -1}, "threads", "threads must be 0-128"),
    ({"encode": {"audio_channels": 6}}, "encode.audio_channels", "1-2 (mono or stereo)"),
    ({"layout": {"grid": {"gap": 3}}}, "layout.grid.gap", "expected an even integer >= 0, got 3"),
    ({"layout": {"grid": {"gap": 200}}}, "layout.gap", "gap must be at most 130 on a 1280x720"),
    ({"layout": {"speaker": {"gap": 20}}, "size": "64x64"}, "layout.gap", "at most 0 on a 64x64"),
    ({"layout": {"pip": {"margin": 400}}}, "layout.margin", "margin must be at most 352"),
    ({"layout": {"speaker": {"strip_size": 0.9}}}, "layout.speaker.strip_size", "(0, 0.5]"),
    ({"layout": "mosaic.json"}, "", "cannot read layout"),
    ({"layout": 7}, "layout", 'expected "grid", "speaker", "pip", a layout file or an object'),
    ({"layout": {"grid": {}, "pip": {}}}, "layout", "exactly one of grid, speaker, pip, custom"),
    ({"container": "avi"}, "container", 'expected one of "mp4", "webm", got "avi"'),
    ({"on_loss": "skip"}, "on_loss", 'expected one of "freeze", "placeholder"'),
    ({"trim": "yes"}, "trim", 'expected true or false, got "yes"'),
    ({"encode": {"video": False, "audio": False}}, "encode.video", "video, audio or both"),
]


@pytest.mark.parametrize(
    ("data", "field", "message"), BAD_OPTIONS, ids=[f"{f}:{m[:30]}" for _, f, m in BAD_OPTIONS]
)
def test_out_of_range_is_refused_naming_field_and_range(
    data: dict[str, Any], field: str, message: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)  # "mosaic.json" is missing
    error = DescriptionError if "cannot read layout" in message else OptionsError
    with pytest.raises(error) as info:
        MixOptions.from_json(data, layout_files=True)
    assert message in str(info.value)
    if isinstance(info.value, OptionsError):
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}: ")


def test_a_preset_typo_lists_the_presets() -> None:
    with pytest.raises(OptionsError) as info:
        MixOptions.from_json({"encode": {"preset": "veryfst"}})
    assert info.value.field == "encode.preset"
    assert str(info.value) == (
        f'encode.preset: preset must be one of {", ".join(X264_PRESETS)}, got "veryfst"'
    )


@pytest.mark.parametrize(
    ("data", "field", "key"),
    [
        ({"colour": "red"}, "colour", "colour"),
        ({"encode": {"crff": 20}}, "encode.crff", "crff"),
        ({"encoding": {"crf": 20}}, "encoding", "encoding"),
        ({"layout": {"grid": {"gapp": 2}}}, "layout.grid.gapp", "gapp"),
        ({"layout": {"pip": {"gap": 2}}}, "layout.pip.gap", "gap"),
        (
            {"layout": {"custom": {"regions": [{"x": 0, "y": 0, "w": 1, "show": "*"}]}}},
            "layout.custom.regions[0].w",
            "w",
        ),
    ],
)
def test_unknown_keys_are_refused_naming_the_key(data: Any, field: str, key: str) -> None:
    with pytest.raises(OptionsError) as info:
        MixOptions.from_json(data)
    assert info.value.field == field
    assert "unknown property (expected one of " in str(info.value)


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(OptionsError, match="not JSON"):
        MixOptions.from_json('{"fps": 30')
    with pytest.raises(OptionsError, match="expected an object, got \\[\\]"):
        MixOptions.from_json("[]")


SIDEBAR: dict[str, Any] = {
    "background": "#102030",
    "gap": 8,
    "regions": [
        {"name": "main", "x": 0, "y": 0, "width": 0.75, "height": 1.0, "show": "speaker"},
        {"x": 0.75, "y": 0, "width": 0.25, "height": 1.0, "show": ["b", "a"], "max_rows": 3},
    ],
}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"layout": "speaker", "size": "640x360", "fps": 15, "threads": 2},
        {"layout": {"speaker": {"strip": "right", "gap": 4, "background": "#ff0000"}}},
        {"layout": {"pip": {"corner": "top-left", "size": 0.3}}, "container": "webm"},
        {"layout": {"grid": {"fit": "cover", "aspect": [4, 3]}}, "on_loss": "placeholder"},
        {"layout": {"custom": SIDEBAR}, "trim": True, "labels": False},
        {
            "encode": {"crf": 30, "preset": "medium", "audio_bitrate": 64000, "audio": False},
            "per_participant": "people",
            "channels": "channels.wav",
        },
    ],
)
def test_json_round_trip(data: dict[str, Any]) -> None:
    options = MixOptions.from_json(data)
    text = json.dumps(options.to_json())
    again = MixOptions.from_json(text)
    assert again == options and again.to_json() == options.to_json()
    assert pickle.loads(pickle.dumps(options)) == options  # jobs run in other processes
    assert set(options.to_json()) == set(options_json_schema()["properties"])


def test_to_json_writes_the_defaults_in_full_and_layouts_shortest() -> None:
    assert MixOptions().to_json() == {
        "layout": "grid",
        "size": "1280x720",
        "fps": 30,
        "encode": {
            "crf": 23,
            "preset": "veryfast",
            "audio_bitrate": 128000,
            "audio_channels": 2,
            "video": True,
            "audio": True,
        },
        "container": "mp4",
        "threads": 0,
        "on_loss": "freeze",
        "trim": False,
        "labels": True,
        "per_participant": None,
        "channels": None,
    }
    options = MixOptions.from_json({"layout": {"speaker": {"strip": "right"}}})
    assert options.layout == SpeakerSpec(strip="right")
    assert options.to_json()["layout"] == {"speaker": {"strip": "right"}}


def test_a_layout_file_round_trips_as_its_regions(tmp_path: Path) -> None:
    path = tmp_path / "sidebar.json"
    path.write_text(json.dumps(SIDEBAR))
    options = MixOptions.from_json({"layout": str(path)}, layout_files=True)
    assert isinstance(options.layout, CustomSpec) and options.layout.file == str(path)
    assert options.layout.background == (16, 32, 48)
    # written out whole, so a job queued now does not change when the file does
    path.unlink()
    assert MixOptions.from_json(options.to_json()) == options


def test_a_service_can_refuse_layout_files(tmp_path: Path) -> None:
    path = tmp_path / "sidebar.json"
    path.write_text(json.dumps(SIDEBAR))
    with pytest.raises(OptionsError) as info:
        MixOptions.from_json({"layout": str(path)})  # the default: a service's
    assert info.value.field == "layout" and "a layout file is not taken here" in str(info.value)
    inline = MixOptions.from_json({"layout": {"custom": SIDEBAR}}, layout_files=False)
    assert inline == MixOptions.from_json({"layout": str(path)}, layout_files=True)
    assert MixOptions.from_json({"layout": "pip"}, layout_files=False).layout == PipSpec()


def test_the_python_api_gives_the_runtime_objects() -> None:
    """The job driver reads options.layout (a LayoutSpec) and options.encode (EncodeSettings);
    MixOptions is still made from them, and skymix.MixOptions is this class; skymix.mix is
    the function (no module of that name hides it)."""
    assert skymix.MixOptions is MixOptions and callable(skymix.mix)
    settings = EncodeSettings(width=640, height=360, fps=15, crf=28, preset="ultrafast")
    options = MixOptions(layout=PipSpec(corner="top-left"), encode=settings, trim=True)
    assert options.encode == settings
    assert options.layout == PipSpec(corner="top-left") and options.trim is True
    assert options.to_json()["size"] == "640x360" and options.to_json()["fps"] == 15
    assert isinstance(MixOptions().layout, GridSpec)
    assert isinstance(MixOptions().encode, EncodeSettings)
    with pytest.raises(OptionsError) as info:
        MixOptions(fps=0)
    assert info.value.field == "fps"
    with pytest.raises(OptionsError, match="48000 Hz") as info:
        MixOptions(encode=EncodeSettings(audio_rate=44100))
    assert info.value.field == "encode.audio_rate"


def test_threads_is_one_budget() -> None:
    assert MixOptions().thread_plan == ThreadPlan(decode=1, compose=1, encode=0)
    three = MixOptions.from_json({"threads": 3})
    assert three.thread_plan == ThreadPlan(decode=1, compose=1, encode=3)
    assert three.encode.threads == 3
    assert MixOptions(encode=EncodeSettings(threads=2)).to_json()["threads"] == 2


# --- layouts that show nobody -----------------------------------------------------------------

OFF_CANVAS: dict[str, Any] = {
    "regions": [
        {"name": "far", "x": 2000, "y": 0, "width": 400, "height": 300, "show": "speaker"},
        {"x": 0, "y": 719, "width": 640, "height": 200, "show": "others"},
        {"x": 100, "y": 100, "width": 30, "height": 30, "gap": 8, "show": "rest"},
    ]
}


def test_a_layout_file_off_the_canvas_is_refused_naming_its_regions(tmp_path: Path) -> None:
    path = tmp_path / "off.json"
    path.write_text(json.dumps(OFF_CANVAS))
    with pytest.raises(DescriptionError) as info:
        MixOptions.from_json({"layout": str(path)}, layout_files=True)
    assert info.value.file == str(path) and info.value.path == "regions"
    message = str(info.value)
    assert "no region shows anyone on the 1280x720 canvas" in message
    assert "regions[0] (far) has 0x300 pixels" in message  # x 2000 clipped to 1280
    assert "regions[1] has 640x0 pixels" in message  # y 719 rounds to the bottom edge
    assert "regions[2] has 14x14 pixels" in message  # 30 less a gap of 8 on each side
    # On a canvas it reaches, the same file is fine.
    assert MixOptions.from_json(
        {"layout": str(path), "size": "2560x1440"}, layout_files=True
    ).size == (2560, 1440)


def test_an_inline_layout_off_the_canvas_is_an_options_error() -> None:
    with pytest.raises(OptionsError) as info:
        MixOptions.from_json({"layout": {"custom": OFF_CANVAS}})
    assert info.value.field == "layout.regions"
    spec = CustomSpec(regions=(Region(5000, 5000, 100, 100, show="*"),))
    with pytest.raises(OptionsError, match="regions\\[0\\] has 0x0 pixels"):
        MixOptions(layout=spec)


def test_an_audio_only_recording_needs_no_canvas() -> None:
    spec = CustomSpec(regions=(Region(5000, 5000, 100, 100, show="*"),))
    assert MixOptions(layout=spec, encode=EncodeSettings(video=False)).layout == spec


def test_a_layout_partly_off_the_canvas_warns(caplog: Any) -> None:
    data = {
        "regions": [
            *OFF_CANVAS["regions"],
            {"x": 0, "y": 0, "width": 0.5, "height": 0.5, "show": ["a"]},
        ]
    }
    with caplog.at_level(logging.WARNING, logger="skymix.layout"):
        MixOptions.from_json({"layout": {"custom": data}})
    assert "show nobody: regions[0] (far) has 0x300 pixels" in caplog.text


# --- memory ---------------------------------------------------------------------------------


def test_the_estimate_matches_the_measured_jobs() -> None:
    """docs/performance.md: 9 participants into 720p veryfast: 290-341 MB peak with cameras of
    640x480 and smaller; 16 participants: 368 MB. The estimate is near, and higher for 720p
    cameras (the default assumption)."""
    options = MixOptions(threads=3)
    mixed = [(640, 480), (1280, 720), (320, 240), (480, 640)] * 2 + [(640, 480)]
    assert 260 * MB <= estimate_memory(options, mixed) <= 400 * MB
    assert estimate_memory(options, 9) > estimate_memory(options, mixed)
    assert 300 * MB <= estimate_memory(options, 16) <= 600 * MB


def test_the_estimate_counts_what_the_job_and_writer_hold() -> None:
    """The figures were measured with these settings: a change there needs a new measurement."""
    from skymix import job, options
    from skymix.encode import SYNC_LOOKAHEAD

    decoded_ahead = job.BATCH_TICKS + job.DECODE_AHEAD
    assert options.PICTURES_PER_PARTICIPANT == decoded_ahead + 4 and SYNC_LOOKAHEAD == 8


def test_the_estimate_grows_with_what_costs_memory() -> None:
    base = MixOptions(threads=2)
    bigger = [
        MixOptions(threads=2, size="1920x1080"),
        MixOptions(threads=4),
        MixOptions.from_json({"threads": 2, "encode": {"preset": "slow"}}),
        MixOptions(threads=2, per_participant=Path("people")),
    ]
    for options in bigger:
        assert estimate_memory(options, 4) > estimate_memory(base, 4)
    assert estimate_memory(base, 5) > estimate_memory(base, 4)
    audio_only = MixOptions(encode=EncodeSettings(video=False))
    assert estimate_memory(audio_only, 25) < 200 * MB


def test_the_estimate_covers_a_real_encoder(tmp_path: Path) -> None:
    """x264 at 720p with two threads in a fresh process peaks below the estimate of a job with
    nobody to decode, and not far below it (the estimate also counts the first pass)."""
    script = (
        "import numpy as np\n"
        "from skymix.encode import EncodeSettings, RecordingWriter\n"
        "s = EncodeSettings(threads=2, audio=False)\n"
        f"with RecordingWriter({str(tmp_path / 'x.mp4')!r}, s) as w:\n"
        "    rng = np.random.default_rng(1)\n"
        "    for n in range(30):\n"
        "        f = w.new_frame()\n"
        "        for p in f.planes:\n"
        "            a = np.frombuffer(p, np.uint8)\n"
        "            a[:] = rng.integers(0, 255, a.size, np.uint8)\n"
        "        w.write_video(f)\n"
        # VmHWM is this program's own peak: ru_maxrss would keep the forking pytest's across exec
        "print(next(int(line.split()[1]) * 1024 for line in open('/proc/self/status')\n"
        "           if line.startswith('VmHWM:')))\n"
    )
    peak = int(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, check=True, text=True
        ).stdout
    )
    estimate = estimate_memory(MixOptions(threads=2), 0)
    assert 0.5 * estimate <= peak <= estimate, (peak / MB, estimate / MB)


def test_a_huge_job_is_refused_before_any_work() -> None:
    with pytest.raises(OptionsError, match="at most 7680x4320"):
        MixOptions.from_json({"size": "16000x16000"})
    big = MixOptions.from_json(
        {"size": "7680x4320", "encode": {"preset": "placebo"}, "threads": 64}
    )
    with pytest.raises(JobTooLargeError) as info:
        check_memory(big, 25, limit=8 << 30)
    assert info.value.code == "job_too_large" and isinstance(info.value, OptionsError)
    message = str(info.value)
    assert "7680x4320 with x264 placebo, 25 participants" in message
    assert "more than the 8,192 MB available" in message


def test_the_reference_job_fits_here() -> None:
    have = available_memory()
    assert have is not None and have > 0
    need = check_memory(MixOptions(), 4)
    assert need == estimate_memory(MixOptions(), 4) < have
    with pytest.raises(JobTooLargeError):
        check_memory(MixOptions(), 4, limit=need - 1)
    assert check_memory(MixOptions(), 4, limit=need) == need


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: Any) -> Path:
    folder: Path = tmp_path_factory.mktemp("cli")
    (folder / "room.pcap").write_bytes(b"")
    (folder / "a.sdp").write_text("v=0\r\n")
    (folder / "off.json").write_text(json.dumps(OFF_CANVAS))
    (folder / "bad.json").write_text(json.dumps({"encode": {"crf": 99}}))
    return folder


CLI_CASES = [
    (["--crf", "1000"], 2, "skymix mix: error: argument --crf: crf must be 1-51"),
    (["--fps", "0"], 2, "argument --fps: fps must be 1-120, got 0"),
    (["--size", "641x480"], 2, "argument --size: size must be even in both directions"),
    (["--size", "16000x16000"], 2, "argument --size: size must be at most 7680x4320"),
    (["--preset", "veryfst"], 2, "argument --preset: preset must be one of ultrafast, superfast"),
    (["--gap", "3"], 2, "argument --gap: expected an even integer >= 0, got 3"),
    (["--gap", "400"], 2, "argument --gap: gap must be at most 130 on a 1280x720 canvas"),
    (["--layout", "pip", "--gap", "2"], 2, "argument --gap: the pip layout has no gap"),
    (["--layout", "{off}", "--gap", "2"], 2, "argument --gap: applies to the grid, speaker"),
    (["--options", "{bad}"], 2, "bad.json, encode.crf: crf must be 1-51 (lower is better"),
    (["--layout", "{off}"], 1, "off.json, regions: no region shows anyone on the 1280x720"),
]


@pytest.mark.parametrize(
    ("flags", "code", "message"), CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES]
)
def test_the_command_line_refuses_bad_options_in_one_line(
    inputs: Path, flags: list[str], code: int, message: str
) -> None:
    flags = [f.format(off=inputs / "off.json", bad=inputs / "bad.json") for f in flags]
    done = subprocess.run(
        [str(SKYMIX), "mix", str(inputs / "room.pcap"), "--sdp", str(inputs / "a.sdp")]
        + ["-o", str(inputs / "out.mp4"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (inputs / "out.mp4").exists()


def test_cameras_come_from_the_first_pass(tmp_path: Path) -> None:
    """A real capture (skymix.synth: VP8 and H.264 senders, one audio only, one resized): each
    participant's largest keyframe size, and audio only costs no pictures."""
    from skymix.session import load_description
    from skymix.streams.room import scan_room
    from skymix.synth import SynthParticipant, synthesize

    people = [
        SynthParticipant("ann", (320, 240)),
        SynthParticipant("bob", (480, 272), video_codec="h264", resize_at=0.5),
        SynthParticipant("cy", video_codec=None),
    ]
    made = synthesize(people, 1.0, tmp_path)
    sdps = [f"{p.name}={sdp}" for p, sdp in zip(people, made.sdps)]
    scan = scan_room([made.pcap], load_description(sdps))
    by_id = dict(zip([p.id for p in scan.participants], cameras(scan)))
    assert by_id == {"ann": (320, 240), "bob": (480, 272), "cy": (0, 0)}
    options = MixOptions(threads=1)
    assert estimate_memory(options, list(by_id.values())) < estimate_memory(options, 3)


def test_the_command_line_takes_an_options_file_and_flags_win(tmp_path: Path) -> None:
    """`--options` gives the document, a flag given as well replaces its field: the recording
    decodes at the file's size and the flag's rate."""
    import av

    from skymix.synth import SynthParticipant, synthesize

    people = [SynthParticipant("ann", (320, 240)), SynthParticipant("bob", (320, 240))]
    made = synthesize(people, 1.5, tmp_path)
    options = tmp_path / "options.json"
    options.write_text(
        json.dumps(
            {
                "size": "160x96",
                "fps": 30,
                "layout": {"speaker": {"strip": "right"}},
                "labels": False,
            }
        )
    )
    sdps = [f"--sdp={p.name}={sdp}" for p, sdp in zip(people, made.sdps)]
    out = tmp_path / "room.mp4"
    done = subprocess.run(
        [str(SKYMIX), "mix", str(made.pcap), *sdps, "-o", str(out), "--options", str(options)]
        + ["--fps", "10", "--preset", "ultrafast", "--report", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with av.open(str(out)) as f:
        video = f.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (160, 96)
        assert video.average_rate == 10
    tiles = json.loads((tmp_path / "r.json").read_text())["layouts"][0]["tiles"]
    # speaker strip on the right: the second tile sits right of the first
    assert len(tiles) == 2 and tiles[1]["x"] >= tiles[0]["x"] + tiles[0]["w"]


def test_the_example_in_the_docs_is_the_defaults() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "mixing.md").read_text()
    example = text.split("## Options", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    assert MixOptions.from_json(example) == MixOptions()
    assert json.loads(example) == MixOptions().to_json()


@pytest.mark.parametrize(
    "document",
    [b'{"fps": 30}\xff', b"\xff\xfe{", "[" * 200_000, b"[" * 200_000],
    ids=["bad-utf8-tail", "bad-utf8-start", "deep-text", "deep-bytes"],
)
def test_documents_that_are_not_json_are_options_errors(document: str | bytes) -> None:
    """A client's bytes never end in a decoding error or a RecursionError: OptionsError, no
    bytes quoted."""
    with pytest.raises(OptionsError, match="^not JSON") as info:
        MixOptions.from_json(document)
    assert "\\xff" not in str(info.value)
