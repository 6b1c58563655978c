"""skymix.decode on real encoded media: PyAV encoders (libvpx, libvpx-vp9, libx264, libopus,
G.711) and a synthesized RTP capture read back by scan_room.

Pictures are compared with what was encoded, plane by plane in yuv420p (the encoder's input,
converted by PyAV): flat-coloured pictures with a moving bar must match within a mean absolute
difference of 3 levels per plane (measured: at most 0.4; a wrong colour or a garbage picture is
tens of levels off, the picture before or after, its bar 6 rows away, 11 in luma). Pictures
from the synthesized capture must also equal a plain one-thread PyAV decode exactly.

Audio: a tone must come out at its frequency (±0.5 Hz over 1 s) and level (±0.5 dB RMS for
Opus, ±0.1 dB for G.711), with exactly the number of samples the frame's duration says, G.711
sample-exact at its documented position (timestamp * 6 - delay).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import av
import numpy as np
import pytest

from skymix.decode import (
    OUTPUT_RATE,
    VIDEO_TIME_BASE,
    AudioDecoder,
    DecodeError,
    VideoDecoder,
)
from skymix.session import load_description
from skymix.streams.assembler import EncodedFrame
from skymix.streams.room import scan_room
from skymix.synth import SynthParticipant, synthesize
from skymix.synth.generate import _picture

BASE = 5_000_000_000  # unwrapped RTP timestamps beyond 32 bits: pts must carry them whole
RT = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
# libvpx's VP8 realtime mode adapts to how long encoding takes, so its output differs from run to
# run; "good" with no lag gives the same kind of stream (no alt-ref frames), always the same
VP8 = {"deadline": "good", "cpu-used": "5", "lag-in-frames": "0"}
X264 = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}


# ----------------------------------------------------------------------------------- helpers


def encoded(data: bytes, timestamp: int, keyframe: bool) -> EncodedFrame:
    return EncodedFrame(0x1234, timestamp, 0, 0, data, keyframe, None, None, 0, 0)


def colour(n: int) -> tuple[int, int, int]:
    """Frame n's colour: a new one every 10 frames."""
    return [(200, 40, 40), (40, 200, 60), (30, 60, 210), (230, 210, 40)][n // 10 % 4]


def picture(n: int, size: tuple[int, int], fmt: str = "yuv420p") -> av.VideoFrame:
    w, h = size
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = colour(n)
    bar = (n * 6) % (h - h // 8)
    rgb[bar : bar + h // 8] = 240
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)


def planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The Y, U, V planes of a yuv420p frame without row padding."""
    assert frame.format.name == "yuv420p"
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        out.append(rows[:, : plane.width].astype(np.int16))
    return out


def assert_looks_like(
    got: av.VideoFrame, want: av.VideoFrame, luma: float = 3.0, chroma: float = 3.0
) -> None:
    assert (got.width, got.height) == (want.width, want.height)
    for g, w, tolerance in zip(
        planes(got), planes(want.reformat(format="yuv420p")), (luma, chroma, chroma)
    ):
        assert float(np.abs(g - w).mean()) <= tolerance


def encode_video(
    encoder: str,
    size: tuple[int, int],
    count: int,
    gop: int,
    options: dict[str, str],
    fmt: str = "yuv420p",
) -> list[EncodedFrame]:
    """count pictures encoded, as EncodedFrames in decoding order with RTP timestamps."""
    cc = av.CodecContext.create(encoder, "w")
    cc.width, cc.height = size
    cc.pix_fmt = fmt
    cc.time_base = Fraction(1, 90000)
    cc.framerate = Fraction(30, 1)
    cc.gop_size = gop
    cc.bit_rate = 800_000
    cc.options = {"keyint_min": str(gop), **options}  # keyframes every gop frames, no more
    packets = []
    for n in range(count):
        frame = picture(n, size, fmt)
        frame.pts = n * 3000
        packets += cc.encode(frame)
    packets += cc.encode(None)
    return [encoded(bytes(p), BASE + p.pts, p.is_keyframe) for p in packets]


def frame_number(timestamp: int) -> int:
    return (timestamp - BASE) // 3000


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)


def peak_hz(x: np.ndarray, rate: int) -> float:
    """Frequency of the strongest component (Hann window, parabolic interpolation)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(x)


def db(x: float) -> float:
    return 20 * float(np.log10(x))


def encode_opus(signal: np.ndarray) -> list[EncodedFrame]:
    """(samples, channels) float signal at 48 kHz as 20 ms Opus packets."""
    channels = signal.shape[1]
    cc = av.CodecContext.create("libopus", "w")
    cc.sample_rate, cc.layout, cc.format = 48000, "mono" if channels == 1 else "stereo", "s16"
    cc.time_base = Fraction(1, 48000)
    cc.bit_rate = 96000
    pcm = (signal * 32767).astype(np.int16)
    packets = []
    for b in range(len(pcm) // 960):
        block = pcm[b * 960 : (b + 1) * 960].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(block, format="s16", layout=cc.layout.name)
        frame.sample_rate, frame.pts = 48000, b * 960
        packets += cc.encode(frame)
    return [encoded(bytes(p), BASE + 960 * k, True) for k, p in enumerate(packets)]


def encode_g711(codec: str, signal: np.ndarray, per_frame: int = 160) -> list[EncodedFrame]:
    """(samples, channels) float signal at 8 kHz as G.711 frames of per_frame samples."""
    channels = signal.shape[1]
    cc = av.CodecContext.create("pcm_mulaw" if codec == "PCMU" else "pcm_alaw", "w")
    cc.sample_rate, cc.layout, cc.format = 8000, "mono" if channels == 1 else "stereo", "s16"
    frame = av.AudioFrame.from_ndarray(
        (signal * 32767).astype(np.int16).reshape(1, -1), format="s16", layout=cc.layout.name
    )
    frame.sample_rate, frame.pts = 8000, 0
    data = b"".join(bytes(p) for p in [*cc.encode(frame), *cc.encode(None)])
    step = per_frame * channels
    return [
        encoded(data[i : i + step], BASE + i // channels, True) for i in range(0, len(data), step)
    ]


# ------------------------------------------------------------------------------------- video


PEOPLE = [
    SynthParticipant("ada", (320, 240), 30, "vp8", color=(200, 60, 40)),
    SynthParticipant("bob", (320, 180), 30, "h264", color=(40, 90, 200)),
]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    made = synthesize(PEOPLE, 3.0, tmp_path_factory.mktemp("decode"), seed=3)
    got: dict[str, list[EncodedFrame]] = {p.name: [] for p in PEOPLE}

    def keep(participant: str, kind: str, frame: EncodedFrame) -> None:
        if kind == "video":
            got[participant].append(frame)

    scan_room(
        [made.pcap],
        load_description([f"{p.name}={s}" for p, s in zip(PEOPLE, made.sdps)]),
        on_frame=keep,
    )
    return made, got


@pytest.mark.parametrize("who", ["ada", "bob"])
def test_rtp_frames_decode_to_what_was_sent(capture, who):
    """VP8 and H.264 frames as ingest assembles them from RTP (H.264: aiortc's packetiser sends
    SPS and PPS aggregated in a STAP-A, depayloaded to Annex-B NAL units before the IDR) decode
    to the sent pictures."""
    made, got = capture
    person = next(p for p in PEOPLE if p.name == who)
    truth = next(p for p in made.truth_data["participants"] if p["name"] == who)["video"]
    sent = {f["rtp"]: f for f in truth["frames"]}
    frames = got[who]
    assert len(frames) == len(sent) and frames[0].keyframe
    if person.video_codec == "h264":
        parts = frames[0].data.split(b"\x00\x00\x00\x01")
        nal_types = [part[0] & 0x1F for part in parts if part]
        assert nal_types[:2] == [7, 8] and 5 in nal_types  # SPS, PPS, then the IDR slice
    decoder = VideoDecoder(person.video_codec or "vp8")
    reference = av.CodecContext.create(person.video_codec or "vp8", "r")  # plain, one thread
    for frame in frames:
        (pic,) = decoder.decode(frame)
        assert pic.format.name == "yuv420p"
        assert pic.pts == frame.timestamp and pic.time_base == VIDEO_TIME_BASE
        (plain,) = reference.decode(av.Packet(frame.data))
        assert all(np.array_equal(a, b) for a, b in zip(planes(pic), planes(plain)))
        f = sent[frame.timestamp & 0xFFFFFFFF]
        assert [pic.width, pic.height] == f["size"]
        # the synthesizer's VP8 runs libvpx in realtime mode, whose quality depends on the load
        # of the machine: chroma was once 3.8 levels off (luma: at most 1)
        assert_looks_like(pic, _picture(person, tuple(f["size"]), f["n"], f["flash"]), chroma=6)
    assert decoder.flush() == []
    s = decoder.stats
    assert (s.frames_in, s.frames_out, s.errors, s.skipped) == (len(frames), len(frames), 0, 0)


CODECS = [  # skymix name, PyAV encoder, its options
    ("VP8", "libvpx", VP8),
    ("VP9", "libvpx-vp9", RT),
    ("H264", "libx264", X264),
]


@pytest.mark.parametrize("codec, encoder, options", CODECS)
def test_pictures_sizes_and_timestamps(codec, encoder, options):
    """Every frame gives its picture at once (no frame-thread lag, even with 2 threads), tagged
    with its RTP timestamp, at the encoded size and colours."""
    frames = encode_video(encoder, (176, 144), 40, 20, options)
    decoder = VideoDecoder(codec, threads=2)
    for frame in frames:
        (pic,) = decoder.decode(frame)
        assert pic.pts == frame.timestamp
        assert_looks_like(pic, picture(frame_number(frame.timestamp), (176, 144)))
    assert decoder.flush() == []
    assert decoder.stats.frames_out == 40 and decoder.errors == 0


@pytest.mark.parametrize(
    "codec, encoder, options, damage",
    [
        *[(*c, "junk") for c in CODECS],
        # cut to a third: libvpx-vp9 rejects it, FFmpeg's h264 flags the picture corrupt (counted
        # as an error too); FFmpeg's vp8 decodes a truncated inter frame without complaint (VP8 has
        # no redundancy to tell), so there is nothing to count
        (*CODECS[1], "truncated"),
        (*CODECS[2], "truncated"),
    ],
)
def test_a_rejected_frame_is_counted_and_decoding_resumes_at_the_next_keyframe(
    codec, encoder, options, damage
):
    frames = encode_video(encoder, (176, 144), 40, 20, options)
    assert [f.keyframe for f in frames].count(True) == 2 and frames[20].keyframe
    rng = np.random.default_rng(5)
    bad = frames[5]
    if damage == "junk":
        data = rng.integers(0, 256, len(bad.data), np.uint8).tobytes()
    else:
        data = bad.data[: len(bad.data) // 3]
    frames[5] = bad._replace(data=data)
    decoder = VideoDecoder(codec)
    out = [decoder.decode(f) for f in frames]
    assert decoder.errors == 1 and decoder.stats.last_error
    assert out[5] == [] and all(o == [] for o in out[6:20])  # nothing predicted from damage
    assert decoder.stats.skipped == 14
    for frame, pics in zip(frames, out):
        if pics:
            (pic,) = pics
            assert_looks_like(pic, picture(frame_number(frame.timestamp), (176, 144)))
    assert sum(map(len, out)) == 40 - 15


def test_decoders_of_two_streams_run_in_two_threads():
    """Decoders are per stream; two in parallel threads give what one gives alone."""
    frames = encode_video("libx264", (176, 144), 30, 10, X264)

    def luma(decoder: VideoDecoder) -> list[np.ndarray]:
        return [planes(p)[0] for f in frames for p in decoder.decode(f)]

    alone = luma(VideoDecoder("h264"))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(luma, [VideoDecoder("h264"), VideoDecoder("h264")]))
    for result in results:
        assert len(result) == 30
        assert all(np.array_equal(a, b) for a, b in zip(alone, result))


def test_frames_before_the_first_keyframe_are_skipped():
    frames = encode_video("libvpx", (176, 144), 30, 10, VP8)
    decoder = VideoDecoder("vp8")
    out = [decoder.decode(f) for f in frames[3:]]
    assert all(o == [] for o in out[:7]) and all(len(o) == 1 for o in out[7:])
    assert decoder.stats.skipped == 7 and decoder.errors == 0


def test_vp9_superframe_gives_only_its_top_layer():
    """Two spatial layers in a superframe (here: two keyframes of different sizes): only the
    last, the top layer, comes out."""
    from skymix.streams.codecs import vp9_superframe

    layers = [
        encode_video("libvpx-vp9", size, 1, 10, RT)[0].data for size in ((88, 72), (176, 144))
    ]
    decoder = VideoDecoder("vp9")
    (pic,) = decoder.decode(encoded(vp9_superframe(layers), BASE, True))
    assert (pic.width, pic.height, pic.pts) == (176, 144, BASE)
    assert_looks_like(pic, picture(0, (176, 144)))


def test_h264_with_b_frames_reorders_and_flushes():
    frames = encode_video(
        "libx264", (176, 144), 30, 30, {"preset": "fast", "bf": "2", "x264-params": "b-adapt=0"}
    )
    assert [f.timestamp for f in frames] != sorted(f.timestamp for f in frames)  # B-frames
    decoder = VideoDecoder("h264")
    pics = [p for f in frames for p in decoder.decode(f)]
    assert len(pics) < 30
    pics += decoder.flush()
    assert [p.pts for p in pics] == sorted(f.timestamp for f in frames)
    for pic in pics:
        assert_looks_like(pic, picture(frame_number(pic.pts), (176, 144)))
    # after flush the decoder starts afresh at a keyframe: the stream decodes again
    again = [p for f in frames for p in decoder.decode(f)] + decoder.flush()
    assert [p.pts for p in again] == [p.pts for p in pics]
    assert decoder.errors == 0 and decoder.stats.frames_out == 60


def test_other_pixel_formats_become_yuv420p_at_their_size():
    """H.264 High 4:4:4 at an odd size: converted to yuv420p, nothing scaled."""
    frames = encode_video("libx264", (175, 143), 12, 12, {"preset": "ultrafast"}, fmt="yuv444p")
    decoder = VideoDecoder("h264")
    for frame in frames:
        (pic,) = decoder.decode(frame)
        assert (pic.format.name, pic.width, pic.height) == ("yuv420p", 175, 143)
        assert pic.pts == frame.timestamp
        assert_looks_like(pic, picture(frame_number(frame.timestamp), (175, 143)))


# ------------------------------------------------------------------------------------- audio


@pytest.mark.parametrize("channels", [1, 2])
def test_opus_tone_level_and_frame_lengths(channels):
    """440 Hz (and 660 Hz on the right) at -9 dBFS RMS; mono comes out on both channels alike."""
    left = tone(440, 1.0, 48000)
    signal = np.stack([left, tone(660, 1.0, 48000)], 1) if channels == 2 else left[:, None]
    frames = encode_opus(signal)
    decoder = AudioDecoder("opus", 48000)
    assert decoder.delay == 0
    blocks = [decoder.decode(f) for f in frames]
    assert all(b.shape == (960, 2) and b.dtype == np.float32 for b in blocks)
    pcm = np.concatenate(blocks)[2400:]  # past the encoder's start-up
    assert abs(peak_hz(pcm[:, 0], 48000) - 440) < 0.5
    want_right = 660 if channels == 2 else 440
    assert abs(peak_hz(pcm[:, 1], 48000) - want_right) < 0.5
    for ch in (0, 1):
        rms = float(np.sqrt(np.mean(pcm[:, ch] ** 2)))
        assert abs(db(rms) - db(0.5 / np.sqrt(2))) < 0.5
    if channels == 1:
        assert np.array_equal(pcm[:, 0], pcm[:, 1])
    assert decoder.flush().shape == (0, 2)
    s = decoder.stats
    assert (s.frames_in, s.samples_out, s.errors) == (len(frames), 960 * len(frames), 0)


def test_opus_dtx_is_silence_of_the_toc_duration():
    frames = encode_opus(tone(440, 0.2, 48000)[:, None])
    toc = frames[0].data[0] & 0xFC
    decoder = AudioDecoder("opus", 48000)
    for f in frames:
        decoder.decode(f)
    dtx = decoder.decode(encoded(bytes([toc]), BASE + 9600, True))
    assert dtx.shape == (960, 2) and not dtx.any()
    three = decoder.decode(encoded(bytes([toc | 3, 3]), BASE + 10560, True))  # 3 empty frames
    assert three.shape == (2880, 2) and not three.any()
    empty = decoder.decode(encoded(b"", BASE + 13440, True))  # some senders' DTX
    assert empty.shape == (2880, 2) and not empty.any()  # the last packet's duration
    assert decoder.stats.dtx == 3 and decoder.errors == 0


def test_opus_loss_is_concealed_by_libopus():
    frames = encode_opus(tone(440, 1.0, 48000)[:, None])
    decoder = AudioDecoder("opus", 48000)
    assert decoder.plc
    for f in frames[:25]:
        decoder.decode(f)
    plc = decoder.conceal(1920)  # two lost packets: the tone goes on, fading
    assert plc.shape == (1920, 2)
    rms = [float(np.sqrt(np.mean(plc[i : i + 960, 0] ** 2))) for i in (0, 960)]
    assert rms[0] > 0.2 and 0.05 < rms[1] <= rms[0]
    assert abs(peak_hz(plc[:, 0], 48000) - 440) < 15
    long = decoder.conceal(48000)  # a second: 120 ms of concealment, then silence
    assert long.shape == (48000, 2) and not long[5760:].any()
    after = [decoder.decode(f) for f in frames[27:35]]  # CELT energy prediction recovers
    assert all(b.shape == (960, 2) for b in after)
    assert abs(db(float(np.sqrt(np.mean(after[-1][:, 0] ** 2)))) - db(0.5 / np.sqrt(2))) < 0.5
    assert decoder.stats.concealed == 1920 + 48000 and decoder.errors == 0


def test_a_broken_opus_packet_is_counted_and_concealed():
    frames = encode_opus(tone(440, 0.2, 48000)[:, None])
    decoder = AudioDecoder("opus", 48000)
    for f in frames:
        decoder.decode(f)
    bad = decoder.decode(encoded(bytes([frames[0].data[0] | 3, 0]), BASE + 9600, True))
    assert bad.shape == (960, 2) and decoder.errors == 1 and decoder.stats.last_error
    good = decoder.decode(frames[3])
    assert good.shape == (960, 2)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_g711_is_resampled_sample_exactly_without_drift(codec):
    """500 frames of 160 samples: 960 samples each, none gained or lost; output sample j is the
    input at (j - delay) / 48000 s (timestamp * 6 - delay, as documented)."""
    signal = tone(440, 10.0, 8000)
    frames = encode_g711(codec, signal[:, None])
    assert len(frames) == 500
    decoder = AudioDecoder(codec, 8000)
    assert decoder.delay > 0
    assert decoder.position(BASE) == BASE * 6 - decoder.delay
    blocks = [decoder.decode(f) for f in frames]
    assert all(b.shape == (960, 2) and b.dtype == np.float32 for b in blocks)
    pcm = np.concatenate(blocks + [decoder.flush()])
    assert len(pcm) == 500 * 960 + decoder.delay
    assert np.array_equal(pcm[:, 0], pcm[:, 1])  # mono on both channels at full level
    assert abs(peak_hz(pcm[:, 0], 48000) - 440) < 0.5
    assert abs(db(float(np.sqrt(np.mean(pcm[:, 0] ** 2)))) - db(0.5 / np.sqrt(2))) < 0.1
    # alignment: compare with the ideal 48 kHz tone, shifted by candidate lags
    ideal = tone(440, 10.0, 48000)
    middle = slice(1000, len(ideal) - 1000)

    def error(lag: int) -> float:
        return float(np.sqrt(np.mean((pcm[lag:][middle, 0] - ideal[middle]) ** 2)))

    errors = {lag: error(lag) for lag in range(decoder.delay - 2, decoder.delay + 3)}
    assert min(errors, key=errors.__getitem__) == decoder.delay
    assert errors[decoder.delay] < 0.01  # G.711 quantisation, about -45 dB here
    s = decoder.stats
    assert (s.frames_in, s.errors, s.discontinuities) == (500, 0, 0)


def test_g711_stereo_keeps_its_channels():
    signal = np.stack([tone(440, 1.0, 8000), tone(1000, 1.0, 8000, 0.25)], 1)
    frames = encode_g711("PCMA", signal)
    decoder = AudioDecoder("PCMA", 8000, channels=2)
    pcm = np.concatenate([decoder.decode(f) for f in frames])
    assert pcm.shape == (48000, 2)
    assert abs(peak_hz(pcm[:, 0], 48000) - 440) < 0.5
    assert abs(peak_hz(pcm[:, 1], 48000) - 1000) < 0.5
    assert abs(db(float(np.sqrt(np.mean(pcm[1000:, 1] ** 2)))) - db(0.25 / np.sqrt(2))) < 0.1


def test_g711_loss_concealment_and_timestamp_jumps():
    frames = encode_g711("PCMU", tone(440, 1.0, 8000)[:, None])
    decoder = AudioDecoder("PCMU", 8000)
    out = [decoder.decode(f) for f in frames[:10]]
    out.append(decoder.conceal(320))  # frames 10 and 11 lost: silence, the run goes on
    out += [decoder.decode(f) for f in frames[12:20]]
    assert [len(b) for b in out] == [960] * 10 + [1920] + [960] * 8
    assert decoder.stats.discontinuities == 0
    assert decoder.stats.concealed == 1920
    # the block starts `delay` samples before the lost frames' place, and the resampler's
    # filter rings on for `delay` samples more; the rest is silent
    assert not out[10][2 * decoder.delay :].any() and out[10][: decoder.delay].any()
    # a jump without conceal(): a new run, still 960 samples per frame
    jumped = [decoder.decode(f) for f in frames[30:35]]
    assert [len(b) for b in jumped] == [960] * 5 and decoder.stats.discontinuities == 1
    assert not jumped[0][: decoder.delay].any()  # the new run starts with its silence
    # flush() before a jump keeps the last samples of the run and counts no discontinuity
    tail = decoder.flush()
    assert tail.shape == (decoder.delay, 2) and tail.any()
    decoder.decode(frames[40])
    assert decoder.stats.discontinuities == 1


def test_unusable_decoders_are_refused():
    with pytest.raises(DecodeError, match="unsupported codec 'AV1'"):
        VideoDecoder("AV1")
    with pytest.raises(DecodeError, match="opus is audio, not video"):
        VideoDecoder("opus")
    with pytest.raises(DecodeError, match="Opus RTP clock is 48000 Hz"):
        AudioDecoder("opus", 16000)
    with pytest.raises(DecodeError, match="clock rate 44100 Hz does not divide 48000 Hz"):
        AudioDecoder("PCMU", 44100)
    with pytest.raises(DecodeError, match="only mono and stereo"):
        AudioDecoder("PCMA", 8000, channels=6)
    assert issubclass(DecodeError, ValueError)
    assert OUTPUT_RATE == 48000
