"""RecordingWriter: what it writes decodes to the frames, timing and sound that went in."""

from __future__ import annotations

import av
import numpy as np
import pytest

from skymix import SkymixError
from skymix.compose import frame_planes
from skymix.encode import SYNC_LOOKAHEAD, X264_PRESETS, EncodeSettings, RecordingWriter
from skymix.errors import OptionsError


def write_sample(path, container, settings=None):
    settings = settings or EncodeSettings(width=320, height=180, fps=30)
    rate = settings.audio_rate
    with RecordingWriter(path, settings, container) as w:
        for n in range(60):
            frame = w.new_frame()
            y, u, v = frame_planes(frame, "out")
            y[:] = 40 + 3 * n  # brightness ramps frame by frame
            u[:] = v[:] = 128
            w.write_video(frame)
            t = (n * rate // settings.fps + np.arange(rate // settings.fps)) / rate
            tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
            w.write_audio(np.stack([tone, tone], axis=1))
        assert (w.frames_written, w.samples_written) == (60, 96000)


@pytest.mark.parametrize(
    "container, vcodec, acodec", [("mp4", "h264", "aac"), ("webm", "vp9", "opus")]
)
def test_written_file_decodes_to_what_went_in(tmp_path, container, vcodec, acodec):
    path = tmp_path / f"out.{container}"
    write_sample(path, container)
    with av.open(str(path)) as f:
        video, audio = f.streams.video[0], f.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == (vcodec, acodec)
        if container == "mp4":
            assert video.codec_context.profile == "High"
            assert audio.codec_context.profile == "LC"
        frames = list(f.decode(video))
    assert len(frames) == 60
    times = [fr.time for fr in frames]
    assert np.allclose(np.diff(times), 1 / 30, atol=1e-3) and abs(times[0]) < 1e-3
    lumas = [float(fr.to_ndarray()[:180].mean()) for fr in frames]
    assert np.allclose(lumas, [40 + 3 * n for n in range(60)], atol=2.0)

    with av.open(str(path)) as f:
        pcm = np.concatenate([fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)])
    # a 1 kHz sine at 0.5 peak has RMS 0.354; both channels, whole 2 s, allowing codec delay
    assert len(pcm) >= 2 * 96000 * 0.95
    assert abs(float(np.sqrt(np.mean(pcm[20000:-20000] ** 2))) - 0.354) < 0.03


def test_mp4_is_faststart(tmp_path):
    path = tmp_path / "out.mp4"
    write_sample(path, "mp4")
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")


BAD_SETTINGS = [
    ({"width": 641}, "size", "size must be even in both directions (yuv420p), got 641x720"),
    ({"width": 0, "height": 0}, "size", "size must be at least 16x16, got 0x0"),
    ({"width": 16000, "height": 16000}, "size", "at most 7680x4320 (H.264 level 6.2"),
    ({"width": 1280.0}, "size", "two whole numbers of pixels"),
    ({"fps": 0}, "fps", "fps must be 1-120, got 0"),
    ({"fps": 1000}, "fps", "fps must be 1-120, got 1000"),
    ({"crf": 1000}, "crf", "crf must be 1-51 (lower is better; 0, lossless, needs a profile"),
    ({"crf": -1}, "crf", "crf must be 1-51 (lower is better; 0, lossless, needs a profile"),
    ({"crf": 0}, "crf", "got 0"),
    ({"threads": -1}, "threads", "threads must be 0-128"),
    ({"audio_channels": 6}, "audio_channels", "audio_channels must be 1-2 (mono or stereo)"),
    ({"audio_bitrate": 0}, "audio_bitrate", "audio_bitrate must be 16000-512000"),
    ({"preset": "veryfst"}, "preset", "preset must be one of ultrafast, superfast, veryfast"),
    ({"video": False, "audio": False}, "video", "a recording needs video, audio or both"),
]


@pytest.mark.parametrize(("changes", "field", "message"), BAD_SETTINGS)
def test_bad_settings_are_refused_naming_the_field_and_range(changes, field, message):
    """Nothing out of range reaches the encoders (which would replace it or fail mid-job)."""
    with pytest.raises(OptionsError) as info:
        EncodeSettings(**changes)
    assert info.value.field == field and message in str(info.value)
    assert isinstance(info.value, SkymixError) and isinstance(info.value, ValueError)


def test_a_preset_typo_lists_every_preset():
    with pytest.raises(OptionsError) as info:
        EncodeSettings(preset="medum")
    assert all(p in str(info.value) for p in X264_PRESETS) and "'medum'" in str(info.value)


def test_the_limits_are_accepted():
    """The ends of every range are settings: the smallest picture at 1 fps, the largest at 120."""
    EncodeSettings(width=16, height=16, fps=1, crf=1, threads=128, audio_channels=1)
    EncodeSettings(width=7680, height=4320, fps=120, crf=51, preset="placebo", audio=False)


def test_crf_at_the_ends_of_its_range_is_what_x264_gets(tmp_path):
    """crf 1 and 51 are passed on as given (not replaced): 1 is near lossless, 51 smaller."""
    sizes = {}
    for crf in (1, 51):
        path = tmp_path / f"crf{crf}.mp4"
        write_sample(path, "mp4", EncodeSettings(width=32, height=16, crf=crf, preset="ultrafast"))
        with av.open(str(path)) as f:
            frames = [fr.to_ndarray()[:16] for fr in f.decode(video=0)]
        with av.open(str(path)) as f:
            sizes[crf] = sum(p.size for p in f.demux(video=0) if p.size)
        assert len(frames) == 60 and frames[0].shape == (16, 32)
        if crf == 1:
            assert np.allclose(
                [int(fr[0, 0]) for fr in frames], [40 + 3 * n for n in range(60)], atol=1
            )
    assert sizes[51] < sizes[1]


def test_frames_are_recycled_only_once_encoded(tmp_path):
    """The caller draws while x264 encodes on its own thread: new_frame() hands out at most
    VIDEO_QUEUE + 1 frames in turn, never one still queued (each frame decodes to what was drawn
    into it, which test_written_file_decodes_to_what_went_in checks), and a frame the writer did
    not make is encoded as given."""
    from skymix.encode import VIDEO_QUEUE

    settings = EncodeSettings(width=64, height=64, fps=30, audio=False)
    path = tmp_path / "out.mp4"
    seen = set()
    with RecordingWriter(path, settings) as w:
        for n in range(40):
            frame = w.new_frame()
            seen.add(id(frame))
            y, u, v = frame_planes(frame, "out")
            y[:] = 20 + 5 * n
            u[:] = v[:] = 128
            w.write_video(frame)
        own = av.VideoFrame(64, 64, "yuv420p")
        y, u, v = frame_planes(own, "own")
        y[:], u[:], v[:] = 230, 128, 128
        w.write_video(own)
    assert len(seen) == VIDEO_QUEUE + 1
    with av.open(str(path)) as f:
        lumas = [float(fr.to_ndarray()[:64].mean()) for fr in f.decode(video=0)]
    assert np.allclose(lumas, [20 + 5 * n for n in range(40)] + [230], atol=2.0)


def test_x264_tuning_encodes_as_x264_defaults_do(tmp_path):
    """The writer's x264 buffers more frames between its lookahead and frame threads than
    x264's default (for speed, see SYNC_LOOKAHEAD); what comes out must be what the defaults
    give, frame threads on. Not compared bit for bit: x264 here is not exactly repeatable from
    one encode to the next in a process (two encodes of the defaults differ now and then), so
    the quality against the source and the size are compared instead."""
    settings = EncodeSettings(width=320, height=240, threads=3, audio=False)
    rng = np.random.default_rng(5)
    pictures = []
    for n in range(90):  # a moving gradient with noise: motion, B-frames, a scene cut at 60
        y = (np.add.outer(np.arange(240), np.arange(320)) * (1 + (n >= 60)) + 4 * n) % 256
        y = (y + rng.integers(0, 12, y.shape)).clip(0, 255).astype(np.uint8)
        pictures.append(
            (y, np.full((120, 160), 128 - n, np.uint8), np.full((120, 160), 90, np.uint8))
        )

    def draw(frame, planes):
        for dst, src in zip(frame_planes(frame, "out"), planes):
            dst[:] = src

    def decoded(path):
        with av.open(str(path)) as f:
            return [frame.to_ndarray().astype(np.int16) for frame in f.decode(video=0)]

    def plain(path, params):
        """PyAV's libx264 with the writer's settings; the frames in before the first packet."""
        first = None
        with av.open(str(path), "w") as out:
            v = out.add_stream("libx264", rate=settings.fps)
            v.width, v.height, v.pix_fmt = settings.width, settings.height, "yuv420p"
            v.thread_count = settings.threads
            v.codec_context.thread_type = "AUTO"
            v.options = {
                "crf": str(settings.crf),
                "preset": settings.preset,
                "profile": "high",
                **params,
            }
            for n, planes in enumerate(pictures):
                frame = av.VideoFrame(settings.width, settings.height, "yuv420p")
                draw(frame, planes)
                frame.pts = n
                got = v.encode(frame)
                if got and first is None:
                    first = n + 1
                out.mux(got)
            out.mux(v.encode(None))
        return first

    ours = tmp_path / "ours.mp4"
    with RecordingWriter(ours, settings) as w:
        for planes in pictures:
            frame = w.new_frame()
            draw(frame, planes)
            w.write_video(frame)
    default_delay = plain(tmp_path / "default.mp4", {})
    tuned_delay = plain(tmp_path / "tuned.mp4", {"x264-params": f"sync-lookahead={SYNC_LOOKAHEAD}"})
    # the parameter reaches x264: it holds more frames
    assert tuned_delay > default_delay, (default_delay, tuned_delay)
    source = [
        np.concatenate([p.reshape(-1) for p in planes]).astype(np.int16) for planes in pictures
    ]

    def psnr(path):
        got = decoded(path)
        assert len(got) == 90
        mse = np.mean([np.mean((g.reshape(-1) - s) ** 2) for g, s in zip(got, source)])
        return 10 * np.log10(255**2 / mse)

    default = tmp_path / "default.mp4"
    default_psnr = psnr(default)
    for path in (ours, tmp_path / "tuned.mp4"):
        db = psnr(path) - default_psnr
        size = path.stat().st_size / default.stat().st_size - 1
        # two encodes of the defaults that differ do so by ~0.04 dB and ~0.6%; once in the
        # whole suite more (not reproduced alone), hence the room
        assert abs(db) < 0.25 and abs(size) < 0.04, f"{path.name}: {db:+.3f} dB, size {size:+.2%}"
