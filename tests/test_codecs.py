"""skymix.streams.codecs against real encoders, real packetisers and real decoders.

Round trips: frames encoded with PyAV (libvpx, libvpx-vp9, libx264, libopus) are packetised by
aiortc's packetisers or by FFmpeg's RTP muxer (received on a loopback UDP socket), depayloaded
here, and decoded by PyAV: decoded pixels and samples must equal a direct decode of the encoder's
own packets, keyframe flags must equal the encoder's, sizes must equal the encoded sizes.
VP9 spatial SVC comes from libvpx's own SVC encoder (through ctypes): its layer frames, sent
as RFC 9628 packets, must come back as libvpx's superframe, byte for byte.
Malformed payloads raise CaptureError with exact text, and fuzzing finds no other exception.
"""

from __future__ import annotations

import ctypes
import itertools
import socket
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc.codecs.g711 import PcmaEncoder, PcmuEncoder
from aiortc.codecs.h264 import H264Encoder, h264_depayload
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from skymix.errors import CaptureError
from skymix.streams import (
    H264,
    FrameInfo,
    Opus,
    Vp8,
    Vp9,
    Vp9Descriptor,
    Vp9ScalabilityStructure,
    codec_for,
    h264_sps_size,
    opus_packet_samples,
)
from skymix.streams.codecs import vp8_descriptor, vp9_split_superframe, vp9_superframe

VIDEO_TB = Fraction(1, 90000)


# ----------------------------------------------------------------------------------- helpers


def moving_frames(width: int, height: int, count: int, fmt: str = "yuv420p") -> list[av.VideoFrame]:
    """Frames with texture and motion, so inter frames are real inter frames."""
    rng = np.random.default_rng(width * height)
    texture = rng.integers(0, 256, (height + count * 4, width + count * 4, 3), dtype=np.uint8)
    frames = []
    for n in range(count):
        rgb = texture[n * 3 : n * 3 + height, n * 4 : n * 4 + width].copy()
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)
        frame.pts, frame.time_base = n * 3000, VIDEO_TB
        frames.append(frame)
    return frames


def encode_video(
    codec: str, frames: list[av.VideoFrame], gop: int, fmt: str = "yuv420p", **options: str
) -> list[av.Packet]:
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = frames[0].width, frames[0].height, fmt
    ctx.time_base, ctx.framerate, ctx.gop_size = VIDEO_TB, Fraction(30), gop
    ctx.bit_rate = 2_000_000
    ctx.options = options
    packets = [p for f in frames for p in ctx.encode(f)] + list(ctx.encode(None))
    return packets


def decode(codec: str, datas: list[bytes]) -> list[np.ndarray]:
    """Decode whole frames in order; every frame must decode."""
    ctx = av.CodecContext.create(codec, "r")
    out = []
    for data in datas:
        out += [f.to_ndarray() for f in ctx.decode(av.Packet(data))]
    out += [f.to_ndarray() for f in ctx.decode(None)]
    return out


def assemble(codec, payloads: list[bytes]) -> bytes:
    """What the frame assembler does with one complete frame, checking starts_frame on the way."""
    assert codec.starts_frame(payloads[0])
    if codec.name != "H264":  # an H.264 packet starting a NAL unit may be mid-frame
        assert not any(codec.starts_frame(p) for p in payloads[1:])
    data = b"".join(codec.depayload(p) for p in payloads)
    if hasattr(codec, "depayload_frame"):  # the whole-frame hook agrees on single-layer frames
        assert codec.depayload_frame(payloads) == data
    return data


# ------------------------------------------------------------------ aiortc packetisers: VP8


def test_vp8_aiortc_round_trip_with_resolution_change():
    # Two encodes of different sizes, one packet stream: the keyframe after the switch says so.
    fast = {"deadline": "realtime", "cpu-used": "8"}
    packets = encode_video("libvpx", moving_frames(320, 240, 12), gop=5, **fast)
    packets += encode_video("libvpx", moving_frames(640, 360, 12), gop=5, **fast)
    packer, vp8 = Vp8Encoder(), Vp8()
    frames, sizes = [], []
    for packet in packets:
        payloads, timestamp = packer.pack(packet)
        assert timestamp == packet.pts
        data = assemble(vp8, payloads)
        assert data == bytes(packet)
        info = vp8.frame_info(data, payloads[0])
        assert info.keyframe == packet.is_keyframe
        sizes.append((info.width, info.height))
        frames.append((data, len(payloads)))
    assert max(n for _, n in frames) > 1  # frames spanning several packets were exercised
    keys = [p.is_keyframe for p in packets]
    assert [i for i, k in enumerate(keys) if k] == [0, 5, 10, 12, 17, 22]
    expected = [(320, 240) if i < 12 else (640, 360) for i in range(24)]
    assert sizes == [s if k else (None, None) for s, k in zip(expected, keys)]
    decoded = decode("vp8", [d for d, _ in frames])
    reference = decode("vp8", [bytes(p) for p in packets])
    assert len(decoded) == len(reference) == 24
    assert [f.shape for f in decoded] == [(h * 3 // 2, w) for w, h in expected]
    for got, want in zip(decoded, reference):
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------- aiortc packetisers: H.264


@pytest.mark.parametrize("width, height", [(640, 360), (1280, 720), (1920, 1080)])
def test_h264_aiortc_round_trip(width, height):
    packets = encode_video(
        "libx264", moving_frames(width, height, 6), gop=3, preset="ultrafast", bf="2"
    )
    packer, h264 = H264Encoder(), H264()
    datas, kinds = [], set()
    for packet in packets:
        payloads, timestamp = packer.pack(packet)
        assert timestamp == packet.pts
        kinds |= {p[0] & 0x1F for p in payloads}
        data = assemble(h264, payloads)
        info = h264.frame_info(data, payloads[0])
        assert info.keyframe == packet.is_keyframe
        size = (width, height) if packet.is_keyframe else (None, None)
        assert (info.width, info.height) == size  # libx264 repeats SPS/PPS before each IDR
        datas.append(data)
    assert sum(p.is_keyframe for p in packets) == 2
    assert {24, 28} <= kinds  # STAP-A (SPS+PPS+...) and FU-A (large slices) both seen
    decoded = decode("h264", datas)
    reference = decode("h264", [bytes(p) for p in packets])
    assert len(decoded) == len(reference) == 6
    assert decoded[0].shape == (height * 3 // 2, width)
    for got, want in zip(decoded, reference):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "fmt, width, height, params",
    [
        ("yuv420p", 640, 360, ""),  # baseline-like, cropped 368 -> 360
        ("yuv420p", 1280, 718, "cqm=jvt"),  # High with scaling lists in the SPS
        ("yuv420p", 640, 360, "interlaced=1"),  # frame_mbs_only 0: crop in units of 4 lines
        ("yuv422p", 322, 242, ""),  # High 4:2:2: crop unit 2x1
        ("yuv444p", 641, 361, ""),  # High 4:4:4: crop unit 1x1, odd sizes
        ("yuv420p10le", 352, 198, ""),  # High 10: bit depth fields
        ("gray", 200, 150, ""),  # chroma_format_idc 0
    ],
)
def test_h264_sps_size_matches_libx264(fmt, width, height, params):
    frames = [f.reformat(format=fmt) for f in moving_frames(width, height, 1)]
    options = {"preset": "ultrafast"} | ({"x264-params": params} if params else {})
    packet = encode_video("libx264", frames, gop=1, fmt=fmt, **options)[0]
    info = H264().frame_info(bytes(packet), b"\x65")
    assert info == FrameInfo(keyframe=True, width=width, height=height)
    (decoded,) = av.CodecContext.create("h264", "r").decode(packet)
    assert (decoded.width, decoded.height) == (width, height)


def exp_golomb(value: int, signed: bool = False) -> str:
    if signed:
        value = 2 * value - 1 if value > 0 else -2 * value
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def with_flat_scaling_lists(sps: bytes) -> bytes:
    """Rewrite a libx264 High 4:2:0 SPS to carry explicit scaling lists that are all flat (16).

    libx264 never writes scaling lists in the SPS, so this is how the parser meets them in a
    stream a decoder accepts: flat lists change nothing, so decoded pixels must not change.
    Lists 0, 3, 6, 7 are coded (0 and 6 in full, 3 and 7 ending early with a delta to 0, which
    repeats the last value), lists 1, 2, 4, 5 are absent and fall back to the one before
    (H.264 Table 7-2, rule A).
    """
    bits = "".join(f"{b:08b}" for b in sps.replace(b"\x00\x00\x03", b"\x00\x00"))
    pos = 24  # profile_idc, constraint flags, level_idc
    for _ in range(4):  # sps id, chroma_format_idc, two bit depths
        zeros = bits.index("1", pos) - pos
        pos += 2 * zeros + 1
    pos += 1  # qpprime_y_zero_transform_bypass_flag
    assert sps[0] == 100 and bits[pos] == "0"  # High profile, no lists yet
    full = lambda n: exp_golomb(8, True) + exp_golomb(0, True) * (n - 1)  # noqa: E731
    early = exp_golomb(8, True) + exp_golomb(-16, True)
    lists = "1" + full(16) + "0" + "0" + "1" + early + "0" + "0" + "1" + full(64) + "1" + early
    stop = bits.rindex("1")  # rbsp_stop_one_bit, then alignment zeros
    bits = bits[:pos] + "1" + lists + bits[pos + 1 : stop] + "1"
    bits += "0" * (-len(bits) % 8)
    out = bytearray()
    zeros = 0
    for byte in (int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)):
        if zeros >= 2 and byte <= 3:  # emulation prevention, H.264 §7.4.1
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def test_h264_sps_with_scaling_lists_decodes_the_same():
    packets = encode_video("libx264", moving_frames(1280, 718, 3), gop=10, preset="veryfast")
    first = bytes(packets[0])
    start = first.index(b"\x00\x00\x01\x67") + 4
    end = first.index(b"\x00\x00\x01", start)
    rewritten = first[:start] + with_flat_scaling_lists(first[start:end]) + first[end:]
    assert rewritten != first
    assert H264().frame_info(rewritten, b"\x67") == FrameInfo(keyframe=True, width=1280, height=718)
    decoded = decode("h264", [rewritten] + [bytes(p) for p in packets[1:]])
    reference = decode("h264", [bytes(p) for p in packets])
    assert len(decoded) == len(reference) == 3
    for got, want in zip(decoded, reference):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------ aiortc packetisers: audio


def sine_frames(count: int, samples: int) -> list[av.AudioFrame]:
    t = np.arange(count * samples) / 48000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.int16)
    frames = []
    for n in range(count):
        frame = av.AudioFrame.from_ndarray(
            np.repeat(pcm[None, n * samples : (n + 1) * samples], 2, 0).T.reshape(1, -1),
            format="s16",
            layout="stereo",
        )
        frame.sample_rate, frame.pts, frame.time_base = 48000, n * samples, Fraction(1, 48000)
        frames.append(frame)
    return frames


@pytest.mark.parametrize("duration_ms", ["2.5", "5", "10", "20", "40", "60", "120"])
def test_opus_aiortc_round_trip_durations(duration_ms):
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 48000, "stereo", "s16"
    ctx.time_base, ctx.bit_rate = Fraction(1, 48000), 64000
    ctx.options = {"frame_duration": duration_ms}
    packets = [p for f in sine_frames(25, 960) for p in ctx.encode(f)] + list(ctx.encode(None))
    packer, opus = OpusEncoder(), codec_for("audio/OPUS")
    expected = round(float(duration_ms) * 48)
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout = 48000, "stereo"
    for packet in packets:
        (payload,), timestamp = packer.pack(packet)
        assert timestamp == packet.pts
        data = assemble(opus, [payload])
        assert data == bytes(packet)
        info = opus.frame_info(data, payload)
        assert info == FrameInfo(keyframe=True, duration=expected)
        assert sum(f.samples for f in decoder.decode(av.Packet(data))) == expected
    # the encoder's own durations agree, except the end-trimmed last packet
    assert {p.duration for p in packets[:-1]} == {expected}


@pytest.mark.parametrize(
    "encoder, name, decoder",
    [(PcmuEncoder, "PCMU", "pcm_mulaw"), (PcmaEncoder, "pcma", "pcm_alaw")],
)
def test_g711_aiortc_round_trip(encoder, name, decoder):
    codec, enc = codec_for(name), encoder()
    assert (codec.kind, codec.clock_rate) == ("audio", 8000)
    payloads = [p for frame in sine_frames(10, 960) for p in enc.encode(frame)[0]]
    assert len(payloads) >= 9  # 200 ms at 48 kHz, resampled to 8 kHz, in 20 ms packets
    ctx = av.CodecContext.create(decoder, "r")
    ctx.sample_rate, ctx.layout = 8000, "mono"
    for payload in payloads:
        data = assemble(codec, [payload])
        assert data == payload
        assert codec.frame_info(data, payload) == FrameInfo(keyframe=True, duration=160)
        assert sum(f.samples for f in ctx.decode(av.Packet(data))) == 160


# ------------------------------------------------------------------------- VP9, RFC 9628


def vp9_payloads(data: bytes, head: int, body: bytes, ss: bytes = b"") -> list[bytes]:
    """A test packetiser: RFC 9628 descriptors of our choosing around real libvpx-vp9 frames.

    ``head`` is the first descriptor byte without B, E and V; those are set per packet, and the
    scalability structure ``ss`` goes in the first packet only.
    """
    chunks = [data[i : i + 300] for i in range(0, len(data), 300)]
    out = []
    for i, chunk in enumerate(chunks):
        first, last = i == 0, i == len(chunks) - 1
        flags = (0x08 if first else 0) | (0x04 if last else 0) | (0x02 if first and ss else 0)
        out.append(bytes([head | flags]) + body + (ss if first else b"") + chunk)
    return out


@pytest.mark.parametrize("flexible", [False, True])
def test_vp9_descriptors_around_libvpx_vp9(flexible):
    packets = encode_video(
        "libvpx-vp9",
        moving_frames(320, 240, 8),
        gop=4,
        deadline="realtime",
        **{"cpu-used": "8", "lag-in-frames": "0"},
    )
    packets += encode_video(
        "libvpx-vp9",
        moving_frames(256, 144, 4),
        gop=4,
        deadline="realtime",
        **{"cpu-used": "8", "lag-in-frames": "0"},
    )
    vp9 = codec_for("video/vp9")
    datas = []
    for n, packet in enumerate(packets):
        key = packet.is_keyframe
        width, height = (320, 240) if n < 8 else (256, 144)
        picture_id = (0x7FF0 + n) & 0x7FFF  # 15-bit picture id, wrapping
        head = 0x80 | (0 if key else 0x40) | 0x20 | (0x10 if flexible else 0)
        body = bytes([0x80 | picture_id >> 8, picture_id & 0xFF, (n % 2) << 5 | 0x10])
        if not flexible:
            body += bytes([n // 2 & 0xFF])  # TL0PICIDX
        elif not key:
            body += bytes([1 << 1 | 1, 2 << 1])  # P_DIFF 1, then 2
        # SS on keyframes: one spatial layer with its size, a picture group of one (TID 0, P_DIFF 1)
        ss = b""
        if key:
            ss = bytes([0x18]) + width.to_bytes(2) + height.to_bytes(2) + bytes([1, 0x04, 1])
        payloads = vp9_payloads(bytes(packet), head, body, ss)
        first = Vp9Descriptor.parse(payloads[0])
        assert (first.picture_id, first.tid, first.sid) == (picture_id, n % 2, 0)
        assert first.switching_up and not first.inter_layer
        assert first.flexible == flexible and first.inter_predicted == (not key)
        assert first.tl0picidx == (None if flexible else n // 2)
        assert first.p_diffs == ((1, 2) if flexible and not key else ())
        assert first.ss == (
            Vp9ScalabilityStructure(1, ((width, height),), ((0, False, (1,)),)) if key else None
        )
        ends = [Vp9Descriptor.parse(p).end for p in payloads]
        assert ends == [False] * (len(payloads) - 1) + [True]
        data = assemble(vp9, payloads)
        assert data == bytes(packet)
        info = vp9.frame_info(data, payloads[0])
        assert info == FrameInfo(key, *((width, height) if key else (None, None)))
        datas.append(data)
    assert [p.is_keyframe for p in packets] == [True, False, False, False] * 3
    assert max(len(d) for d in datas) > 300  # frames spanning several packets were exercised
    decoded = decode("vp9", datas)
    reference = decode("vp9", [bytes(p) for p in packets])
    assert len(decoded) == len(reference) == 12
    for got, want in zip(decoded, reference):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------- VP9 spatial SVC: libvpx's own SVC encoder via ctypes
#
# Neither FFmpeg (its libvpx-vp9 wrapper has temporal layers only) nor PyAV can encode spatial
# layers, and Debian ships no vp9_spatial_svc_encoder. libvpx itself can: its VP9E_SET_SVC
# controls are driven here through ctypes on Debian's libvpx.so.7 (1.12, a dependency of the
# ffmpeg package), with the struct offsets and ABI number of that version's libvpx-dev headers.

LIBVPX_SONAME = "libvpx.so.7"
VPX_ENCODER_ABI_VERSION = 25  # vpx_encoder.h of libvpx 1.12: 15 + VPX_CODEC_ABI_VERSION (9) + 1
CFG_SIZE, CTX_SIZE, IMG_SIZE, SVC_PARAMS_INTS = 504, 56, 136, 73  # sizeof() in 1.12
CFG = {  # offsetof(vpx_codec_enc_cfg_t, ...) in 1.12; every field is 4 bytes
    "g_threads": 4,
    "g_w": 12,
    "g_h": 16,
    "g_timebase.num": 28,
    "g_timebase.den": 32,
    "g_error_resilient": 36,
    "g_lag_in_frames": 44,
    "rc_dropframe_thresh": 48,
    "rc_end_usage": 72,
    "rc_target_bitrate": 112,
    "rc_min_quantizer": 116,
    "rc_max_quantizer": 120,
    "kf_mode": 160,
    "kf_min_dist": 164,
    "kf_max_dist": 168,
    "ss_number_layers": 172,
    "ts_number_layers": 216,
    "layer_target_bitrate": 328,
}
VP8E_SET_CPUUSED, VP9E_SET_SVC, VP9E_SET_SVC_PARAMETERS, VP9E_SET_SVC_LAYER_ID = 13, 39, 41, 42
VPX_IMG_FMT_I420, VPX_DL_REALTIME, VPX_CBR, VPX_KF_AUTO, VPX_FRAME_IS_KEY = 258, 1, 1, 1, 1


def libvpx_svc_encode(
    frames: list[av.VideoFrame], layers: int, kf_dist: int
) -> list[tuple[bytes, bool]]:
    """(superframe, keyframe) per input frame: one-pass CBR spatial SVC, layer s at 1/2**(L-1-s).

    Set up as libvpx's examples/vp9_spatial_svc_encoder.c does in its real-time mode.
    """
    # make test installs ffmpeg, which depends on Debian's libvpx7: its absence is a set-up
    # failure, not a reason to skip
    lib = ctypes.CDLL(LIBVPX_SONAME)
    lib.vpx_codec_vp9_cx.restype = ctypes.c_void_p
    lib.vpx_codec_get_cx_data.restype = ctypes.c_void_p
    lib.vpx_img_wrap.restype = ctypes.c_void_p
    lib.vpx_codec_error_detail.restype = ctypes.c_char_p
    iface = ctypes.c_void_p(lib.vpx_codec_vp9_cx())
    cfg = (ctypes.c_uint8 * CFG_SIZE)()
    assert lib.vpx_codec_enc_config_default(iface, cfg, 0) == 0

    def put(field: str, value: int, index: int = 0) -> None:
        ctypes.c_uint32.from_buffer(cfg, CFG[field] + 4 * index).value = value

    width, height = frames[0].width, frames[0].height
    rates = [100 * 3**s for s in range(layers)]  # kbit/s per spatial layer
    for field, value in [
        ("g_threads", 1),
        ("g_w", width),
        ("g_h", height),
        ("g_timebase.num", 1),
        ("g_timebase.den", 30),
        ("g_error_resilient", 1),
        ("g_lag_in_frames", 0),
        ("rc_dropframe_thresh", 0),
        ("rc_end_usage", VPX_CBR),
        ("rc_target_bitrate", sum(rates)),
        ("rc_min_quantizer", 2),
        ("rc_max_quantizer", 52),
        ("kf_mode", VPX_KF_AUTO),
        ("kf_min_dist", kf_dist),
        ("kf_max_dist", kf_dist),
        ("ss_number_layers", layers),
        ("ts_number_layers", 1),
    ]:
        put(field, value)
    for s, rate in enumerate(rates):
        put("layer_target_bitrate", rate, s)
    ctx = (ctypes.c_uint8 * CTX_SIZE)()
    assert lib.vpx_codec_enc_init_ver(ctx, iface, cfg, 0, VPX_ENCODER_ABI_VERSION) == 0

    def control(ctrl_id: int, arg) -> None:
        assert lib.vpx_codec_control_(ctx, ctrl_id, arg) == 0, lib.vpx_codec_error_detail(ctx)

    try:
        control(VP8E_SET_CPUUSED, ctypes.c_int(7))
        control(VP9E_SET_SVC, ctypes.c_int(1))
        # vpx_svc_extra_cfg_t: max_quantizers, min_quantizers, scaling_factor_num/den [12] ...
        params = (ctypes.c_int * SVC_PARAMS_INTS)()
        for s in range(layers):
            params[s], params[12 + s] = 52, 2
            params[24 + s], params[36 + s] = 1, 2 ** (layers - 1 - s)
        control(VP9E_SET_SVC_PARAMETERS, ctypes.byref(params))
        image = (ctypes.c_uint8 * IMG_SIZE)()
        layer_id = (ctypes.c_int * 7)()  # vpx_svc_layer_id_t: spatial 0, temporal 0
        out = []
        for n, frame in enumerate(frames):
            i420 = np.ascontiguousarray(frame.to_ndarray())  # yuv420p: Y, U, V rows in a row
            buf = (ctypes.c_uint8 * i420.size).from_buffer(i420)
            assert lib.vpx_img_wrap(image, VPX_IMG_FMT_I420, width, height, 1, buf)
            control(VP9E_SET_SVC_LAYER_ID, ctypes.byref(layer_id))
            assert (
                lib.vpx_codec_encode(
                    ctx,
                    image,
                    ctypes.c_int64(n),
                    ctypes.c_ulong(1),
                    ctypes.c_long(0),
                    ctypes.c_ulong(VPX_DL_REALTIME),
                )
                == 0
            )
            it = ctypes.c_void_p()
            while pkt := lib.vpx_codec_get_cx_data(ctx, ctypes.byref(it)):
                if ctypes.c_int.from_address(pkt).value == 0:  # VPX_CODEC_CX_FRAME_PKT
                    buf_ptr = ctypes.c_void_p.from_address(pkt + 8).value
                    size = ctypes.c_size_t.from_address(pkt + 16).value
                    flags = ctypes.c_uint32.from_address(pkt + 40).value
                    out.append((ctypes.string_at(buf_ptr, size), bool(flags & VPX_FRAME_IS_KEY)))
    finally:
        lib.vpx_codec_destroy(ctx)
    return out


def split_superframe(data: bytes) -> list[bytes]:
    """The test's own reading of a superframe index (VP9 spec Annex B); it must be one."""
    marker = data[-1]
    assert marker & 0xE0 == 0xC0
    size_bytes, count = (marker >> 3 & 3) + 1, (marker & 7) + 1
    index = data[len(data) - 2 - size_bytes * count :]
    assert index[0] == marker
    sizes = [
        int.from_bytes(index[1 + i * size_bytes : 1 + (i + 1) * size_bytes], "little")
        for i in range(count)
    ]
    assert sum(sizes) == len(data) - len(index)
    ends = list(itertools.accumulate(sizes))
    return [data[end - size : end] for size, end in zip(sizes, ends)]


def svc_payloads(
    layer_frames: list[bytes],
    n: int,
    key: bool,
    sizes: list[tuple[int, int]] | None,
    mtu: int = 300,
) -> list[bytes]:
    """One picture as RFC 9628 flexible-mode payloads, as libwebrtc sends spatial SVC.

    Per layer frame: I with a 15-bit picture id, P on non-key pictures (P_DIFF 1), L with
    TID 0, SID and D (inter-layer dependency) above the base, B on its first packet, E on its
    last. The scalability structure (sizes, no picture group) goes in a key picture's first
    packet when ``sizes`` are given.
    """
    out = []
    for sid, data in enumerate(layer_frames):
        chunks = [data[i : i + mtu] for i in range(0, len(data), mtu)]
        for i, chunk in enumerate(chunks):
            first, last = i == 0, i == len(chunks) - 1
            ss = b""
            if key and sizes and sid == 0 and first:
                ss = bytes([(len(sizes) - 1) << 5 | 0x10])
                ss += b"".join(w.to_bytes(2) + h.to_bytes(2) for w, h in sizes)
            head = (
                0x80
                | 0x20
                | 0x10
                | (0 if key else 0x40)
                | (0x08 if first else 0)
                | (0x04 if last else 0)
                | (0x02 if ss else 0)
            )
            body = bytes([0x80 | n >> 8 & 0x7F, n & 0xFF, sid << 1 | (sid > 0)])
            if not key:
                body += bytes([1 << 1])  # P_DIFF 1, no more
            out.append(bytes([head]) + body + ss + chunk)
    return out


@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("with_ss", [True, False])
def test_vp9_spatial_svc_superframe_from_libvpx(layers, with_ss):
    width, height = 320, 240
    sizes = [(width >> (layers - 1 - s), height >> (layers - 1 - s)) for s in range(layers)]
    encoded = libvpx_svc_encode(moving_frames(width, height, 8), layers, kf_dist=4)
    assert [k for _, k in encoded] == [True, False, False, False] * 2
    vp9 = Vp9()
    datas = []
    for n, (superframe, key) in enumerate(encoded):
        layer_frames = split_superframe(superframe)
        assert len(layer_frames) == layers
        # the base layer decides the keyframe: upper layers of a key picture are inter frames
        assert [f[0] >> 2 & 1 for f in layer_frames] == [0 if key else 1] + [1] * (layers - 1)
        payloads = svc_payloads(layer_frames, n, key, sizes if with_ss else None)
        starts = [vp9.starts_frame(p) for p in payloads]
        assert starts[0] and not any(starts[1:])  # only SID 0's B=1 starts the picture
        assert sum(Vp9Descriptor.parse(p).start for p in payloads) == layers
        data = vp9.depayload_frame(payloads)
        assert data == superframe  # libvpx's own superframe, index and all, byte for byte
        info = vp9.frame_info(data, payloads[0])
        # with no SS, a key picture's top layer codes its size (its references are the base's)
        assert info == FrameInfo(key, *((width, height) if key else (None, None)))
        datas.append(data)
    # libvpx decodes a superframe's frames and outputs the last: the top layer
    decoded = decode("libvpx-vp9", datas)
    assert [f.shape for f in decoded] == [(height * 3 // 2, width)] * 8
    for got, want in zip(decoded, decode("libvpx-vp9", [s for s, _ in encoded])):
        np.testing.assert_array_equal(got, want)
    # FFmpeg's own decoder outputs every shown frame: libvpx shows each spatial layer
    native = decode("vp9", datas)
    assert [f.shape for f in native] == [(h * 3 // 2, w) for w, h in sizes] * 8
    for got, want in zip(native, decode("vp9", [s for s, _ in encoded])):
        np.testing.assert_array_equal(got, want)
    # Without the superframe index, FFmpeg decodes the base layer only
    joined = [b"".join(split_superframe(s)) for s, _ in encoded]
    assert [f.shape for f in decode("vp9", joined)] == [(sizes[0][1] * 3 // 2, sizes[0][0])] * 8


def test_vp9_depayload_frame_superframes():
    vp9 = Vp9()
    # one layer frame (B on its first packet, E on its last): returned as it is, superframe or not
    tail = vp9_superframe([b"\x86\x01", b"\x87\x02\x03"])
    assert tail == b"\x86\x01\x87\x02\x03" + b"\xc1\x02\x03\xc1"
    assert vp9.depayload_frame([b"\x08" + tail[:3], b"\x04" + tail[3:]]) == tail
    # two layer frames (B=1 on the first packet of each): a superframe with 1-byte sizes
    assert vp9.depayload_frame([b"\x08\x86", b"\x04\x01", b"\x0c\x87\x02"]) == (
        b"\x86\x01\x87\x02" + b"\xc1\x02\x02\xc1"
    )
    # a layer frame that is a superframe itself: its frames join the picture's (no nesting)
    data = vp9.depayload_frame([b"\x0c" + tail, b"\x0c\x85" + bytes(299)])
    assert vp9_split_superframe(data) == [b"\x86\x01", b"\x87\x02\x03", b"\x85" + bytes(299)]
    assert data[-8:] == b"\xca\x02\x00\x03\x00\x2c\x01\xca"  # 2-byte sizes for 300 bytes
    # sizes take 1 to 4 bytes, as libvpx writes them
    for size, size_bytes in ((255, 1), (256, 2), (65536, 3)):
        assert vp9_superframe([bytes(size), b"\x01"])[-1] == 0xC1 | (size_bytes - 1) << 3
    # no index: too short for the one its last byte announces, or no marker byte where it starts
    for data in (b"", b"\x82", b"\x82\xc0", b"\x01\x02\x05\xc0"):
        assert vp9_split_superframe(data) == [data]
    for frames, message in (
        ([], "VP9 superframe cannot hold 0 frames (1 to 8)"),
        ([b"\x01"] * 9, "VP9 superframe cannot hold 9 frames (1 to 8)"),
        ([b"\x01", b""], "VP9 superframe cannot hold an empty frame"),
    ):
        with pytest.raises(CaptureError) as err:
            vp9_superframe(frames)
        assert str(err.value) == message


def vp9_header(*fields: tuple[int, int]) -> bytes:
    """(value, bits) fields written MSB first, zero-padded to whole bytes and 4 more."""
    value, bits = 0, 0
    for v, n in fields:
        value, bits = value << n | v, bits + n
    pad = -bits % 8 + 32
    return (value << pad).to_bytes((bits + pad) // 8)


# frame_marker, profile 0 (2 bits), show_existing_frame 0: the start of every header below
HEAD = ((2, 2), (0, 2), (0, 1))


def test_vp9_frame_info_reads_each_layer():
    # A real keyframe and an inter frame: the inter frame refers to the keyframe's slots, so a
    # picture [key 320x240, inter] has the inter frame's size from its reference
    (key, inter, *_) = [
        bytes(p)
        for p in encode_video(
            "libvpx-vp9",
            moving_frames(320, 240, 3),
            gop=10,
            deadline="realtime",
            **{"cpu-used": "8", "lag-in-frames": "0"},
        )
    ]
    vp9 = Vp9()
    assert vp9.frame_info(inter, b"\x48" + inter) == FrameInfo(False)
    assert vp9.frame_info(vp9_superframe([key, inter]), b"\x08") == FrameInfo(True, 320, 240)
    assert vp9.frame_info(vp9_superframe([inter, key]), b"\x08") == FrameInfo(False, 320, 240)
    # show_existing_frame of slot 0 after a keyframe: that slot's size
    assert vp9.frame_info(vp9_superframe([key, b"\x88"]), b"\x08") == FrameInfo(True, 320, 240)
    # an inter frame whose found_ref are all 0 codes its size (a resize without a keyframe)
    explicit = vp9_header(
        *HEAD,
        (1, 1),
        (1, 1),
        (1, 1),
        (0, 8),
        *[(0, 3), (0, 1)] * 3,
        (0, 1),
        (0, 1),
        (0, 1),
        (11, 16),
        (9, 16),
    )
    assert vp9.frame_info(explicit, b"\x48") == FrameInfo(False, 12, 10)
    # an intra-only frame (hidden, not error resilient) refreshing slot 2 with 64x48, then an
    # inter frame with references 5, 2, 7 taking the second one's size (found_ref 0, 1)
    intra_only = vp9_header(
        *HEAD,
        (1, 1),
        (0, 1),
        (0, 1),
        (1, 1),
        (0, 2),
        (0x498342, 24),
        (0b100, 8),
        (63, 16),
        (47, 16),
    )
    inter = vp9_header(
        *HEAD,
        (1, 1),
        (1, 1),
        (1, 1),
        (0, 8),
        (5, 3),
        (0, 1),
        (2, 3),
        (0, 1),
        (7, 3),
        (0, 1),
        (0, 1),
        (1, 1),
    )
    assert vp9.frame_info(vp9_superframe([intra_only, inter]), b"\x08") == FrameInfo(False, 64, 48)
    assert vp9.frame_info(inter, b"\x08") == FrameInfo(False)  # slot 2 unknown on its own


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=20)), max_size=10))
def test_fuzz_vp9_depayload_frame(packets):
    # B bit or not, then data ending in 0 (so no layer frame looks like a superframe)
    payloads = [bytes([0x08 if start else 0]) + data + b"\x00" for start, data in packets]
    layers: list[bytes] = []
    for start, data in packets:
        if start or not layers:
            layers.append(b"")
        layers[-1] += data + b"\x00"
    try:
        result = Vp9().depayload_frame(payloads)
    except CaptureError:
        assert not layers or len(layers) > 8
        return
    assert vp9_split_superframe(result) == layers
    assert (result == layers[0]) == (len(layers) == 1)


# --------------------------------------------------------- FFmpeg's RTP muxer over loopback UDP


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def ffmpeg_rtp(source: list[str], experimental: bool = False) -> list[RtpPacket]:
    """Send a file with `ffmpeg -c copy -f rtp` to a loopback socket; the packets in seq order."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtcp,
    ):
        rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rtp.bind(("127.0.0.1", 0))
        rtcp.bind(("127.0.0.1", 0))
        port, rtcp_port = rtp.getsockname()[1], rtcp.getsockname()[1]
        ffmpeg(
            *source,
            "-c",
            "copy",
            *(["-strict", "experimental"] if experimental else []),
            "-f",
            "rtp",
            f"rtp://127.0.0.1:{port}?rtcpport={rtcp_port}",
        )
        rtp.setblocking(False)
        datagrams = []
        while True:
            try:
                datagrams.append(rtp.recv(65536))
            except BlockingIOError:
                break
    packets = [RtpPacket.parse(d) for d in datagrams]
    seqs = [p.sequence_number for p in packets]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))], "loopback lost packets"
    return packets


def frames_by_timestamp(packets: list[RtpPacket]) -> list[list[RtpPacket]]:
    """Consecutive packets of one timestamp, in sequence order; the marker ends each frame."""
    frames: list[list[RtpPacket]] = []
    for packet in packets:
        if frames and frames[-1][0].timestamp == packet.timestamp:
            frames[-1].append(packet)
        else:
            frames.append([packet])
    assert all(f[-1].marker and not any(p.marker for p in f[:-1]) for f in frames)
    return frames


@pytest.mark.parametrize(
    "codec, decoder, container, encode",
    [
        ("VP8", "vp8", "webm", ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8"]),
        ("VP9", "vp9", "webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"]),
        ("H264", "h264", "ts", ["-c:v", "libx264", "-preset", "ultrafast", "-sc_threshold", "0"]),
    ],
)
def test_ffmpeg_rtp_video(tmp_path, codec, decoder, container, encode):
    # FFmpeg (the Debian build, with its own libvpx/libx264) encodes 30 frames, keyframe every 10
    path = str(tmp_path / f"in.{container}")
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30",
        "-frames:v",
        "30",
        "-g",
        "10",
        *encode,
        path,
    )
    with av.open(path) as f:
        originals = [p for p in f.demux(video=0) if p.size]
    packets = ffmpeg_rtp(["-i", path], experimental=codec == "VP9")
    frames = frames_by_timestamp(packets)
    depayloader = codec_for(codec)
    datas, keys, sizes = [], [], set()
    for frame in frames:
        payloads = [p.payload for p in frame]
        data = assemble(depayloader, payloads)
        info = depayloader.frame_info(data, payloads[0])
        datas.append(data)
        keys.append(info.keyframe)
        if info.keyframe:
            sizes.add((info.width, info.height))
    assert len(datas) == len(originals) == 30
    assert keys == [p.is_keyframe for p in originals]
    assert [i for i, k in enumerate(keys) if k] == [0, 10, 20]
    assert sizes == {(320, 240)}
    if codec != "H264":  # VP8/VP9 frames come back byte for byte
        assert datas == [bytes(p) for p in originals]
    decoded = decode(decoder, datas)
    reference = decode(decoder, [bytes(p) for p in originals])
    assert len(decoded) == len(reference) == 30
    for got, want in zip(decoded, reference):
        np.testing.assert_array_equal(got, want)


def test_ffmpeg_rtp_vp8_resolution_change(tmp_path):
    # Two encodes of different sizes sent as one RTP stream (concat demuxer, -c copy)
    listing = tmp_path / "list.txt"
    for size in ("320x240", "160x120"):
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=30",
            "-frames:v",
            "10",
            "-g",
            "5",
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            str(tmp_path / f"{size}.webm"),
        )
        with listing.open("a") as f:
            f.write(f"file '{tmp_path / size}.webm'\n")
    frames = frames_by_timestamp(ffmpeg_rtp(["-f", "concat", "-safe", "0", "-i", str(listing)]))
    vp8 = Vp8()
    datas, infos = [], []
    for frame in frames:
        payloads = [p.payload for p in frame]
        datas.append(assemble(vp8, payloads))
        infos.append(vp8.frame_info(datas[-1], payloads[0]))
    assert [(i.width, i.height) for i in infos if i.keyframe] == [
        (320, 240),
        (320, 240),
        (160, 120),
        (160, 120),
    ]
    assert [i for i, info in enumerate(infos) if info.keyframe] == [0, 5, 10, 15]
    decoded = decode("vp8", datas)
    assert [f.shape for f in decoded] == [(360, 320)] * 10 + [(180, 160)] * 10


def frames_by_timestamp_audio(packets: list[RtpPacket]) -> list[list[RtpPacket]]:
    """Audio: one packet per frame, a new timestamp each."""
    assert len({p.timestamp for p in packets}) == len(packets)
    return [[p] for p in packets]


def test_ffmpeg_rtp_opus(tmp_path):
    path = str(tmp_path / "in.ogg")
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000:duration=1",
        "-ac",
        "2",
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        path,
    )
    with av.open(path) as f:
        originals = [p for p in f.demux(audio=0) if p.size]
    frames = frames_by_timestamp_audio(ffmpeg_rtp(["-i", path]))
    opus = codec_for("opus")
    datas = []
    for (packet,) in frames:
        data = assemble(opus, [packet.payload])
        assert opus.frame_info(data, packet.payload) == FrameInfo(keyframe=True, duration=960)
        datas.append(data)
    assert datas == [bytes(p) for p in originals] and len(datas) == 51
    steps = {(b[0].timestamp - a[0].timestamp) & 0xFFFFFFFF for a, b in zip(frames, frames[1:])}
    assert steps == {960}
    decoded = decode("libopus", datas)
    reference = decode("libopus", [bytes(p) for p in originals])
    assert sum(f.shape[1] for f in decoded) == 51 * 960 * 2
    for got, want in zip(decoded, reference):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------ known answers and codec lookup


def test_codec_for_names():
    for name in ("VP8", "vp8", "video/VP8", " Video/vp8 "):
        assert codec_for(name) is codec_for("VP8")
    assert [codec_for(n).mime_type for n in ("vp9", "h264", "OPUS", "audio/pcmu", "PCMA")] == [
        "video/VP9",
        "video/H264",
        "audio/opus",
        "audio/PCMU",
        "audio/PCMA",
    ]
    assert [(c.kind, c.clock_rate) for c in map(codec_for, ("H264", "opus"))] == [
        ("video", 90000),
        ("audio", 48000),
    ]
    for name in ("AV1", "audio/VP8", "", "h.264"):
        with pytest.raises(CaptureError) as err:
            codec_for(name)
        assert str(err.value) == (
            f"unsupported codec {name!r} (known: VP8, VP9, H264, opus, PCMU, PCMA)"
        )


def test_vp9_descriptor_known_answer():
    # RFC 9628 §4.2 non-flexible: I, L, B, V; 15-bit picture id 0x1234; TID 2, U, SID 0, D 0;
    # TL0PICIDX 7; SS: two spatial layers with sizes, picture group of 2 (second with 2 P_DIFFs)
    payload = (
        bytes(
            [
                0xAA,
                0x92,
                0x34,
                0x50,
                0x07,
                0x38,
                0x01,
                0x40,
                0x00,
                0xB4,
                0x02,
                0x80,
                0x01,
                0x68,
                0x02,
                0x24,
                0x01,
                0x48,
                0x02,
                0x03,
            ]
        )
        + b"\x82\x49\x83"
    )
    d = Vp9Descriptor.parse(payload)
    assert d == Vp9Descriptor(
        inter_predicted=False,
        flexible=False,
        start=True,
        end=False,
        not_reference=False,
        picture_id=0x1234,
        tid=2,
        switching_up=True,
        sid=0,
        inter_layer=False,
        tl0picidx=7,
        p_diffs=(),
        size=20,
        ss=Vp9ScalabilityStructure(
            2, ((320, 180), (640, 360)), ((1, False, (1,)), (2, False, (2, 3)))
        ),
    )
    # flexible, P: 7-bit picture id, three P_DIFFs (N set on the first two); Z set
    d = Vp9Descriptor.parse(bytes([0xDD, 0x05, 0x03, 0x05, 0x06, 0xFF]))
    assert (d.picture_id, d.p_diffs, d.size) == (5, (1, 2, 3), 5)
    assert d.not_reference and d.end and d.inter_predicted and d.flexible
    assert Vp9().depayload(bytes([0xDD, 0x05, 0x03, 0x05, 0x06, 0xFF])) == b"\xff"


MALFORMED = [
    (Vp8(), "depayload", b"", "VPX descriptor is too short"),
    (Vp8(), "depayload", b"\x90", "VPX descriptor has truncated extended bits"),
    (Vp8(), "depayload", b"\x90\x80", "VPX descriptor has truncated PictureID"),
    (Vp8(), "depayload", b"\x90\x80\x81", "VPX descriptor has truncated long PictureID"),
    (Vp8(), "depayload", b"\x10", "VP8 payload has no data after its descriptor"),
    (
        Vp8(),
        "frame_info",
        (b"\x9d", b"\x00"),
        "VP8 frame does not begin with S=1, PID=0 (RFC 7741 §4.4)",
    ),
    (Vp8(), "frame_info", (b"", b"\x10\x00"), "VP8 frame is empty"),
    (
        Vp8(),
        "frame_info",
        (b"\x00\x00\x00", b"\x10\x00"),
        "VP8 keyframe header is truncated (3 of 10 bytes)",
    ),
    (
        Vp8(),
        "frame_info",
        (bytes(10), b"\x10\x00"),
        "VP8 keyframe has no start code 9d 01 2a (RFC 6386 §9.1)",
    ),
    (Vp9(), "depayload", b"", "VP9 payload descriptor is empty"),
    (Vp9(), "depayload", b"\x08", "VP9 payload has no data after its descriptor"),
    (Vp9(), "depayload", b"\x80", "VP9 payload descriptor has truncated picture ID"),
    (Vp9(), "depayload", b"\x80\x80", "VP9 payload descriptor has truncated extended picture ID"),
    (Vp9(), "depayload", b"\x20", "VP9 payload descriptor has truncated layer indices"),
    (Vp9(), "depayload", b"\x20\x00", "VP9 payload descriptor has truncated TL0PICIDX"),
    (Vp9(), "depayload", b"\x50\x03", "VP9 payload descriptor has truncated P_DIFF"),
    (Vp9(), "depayload", b"\x50\x03\x03\x03\x03", "VP9 payload descriptor has more than 3 P_DIFF"),
    (Vp9(), "depayload", b"\x02", "VP9 scalability structure is truncated"),
    (
        Vp9(),
        "depayload",
        b"\x02\x30\x01\x40\x00",
        "VP9 scalability structure has truncated sizes of 2 layers",
    ),
    (Vp9(), "depayload", b"\x02\x08", "VP9 scalability structure has truncated N_G"),
    (Vp9(), "depayload", b"\x02\x08\x02\x04", "VP9 scalability structure has truncated P_DIFF"),
    (
        Vp9(),
        "depayload",
        b"\x02\x08\x02\x00",
        "VP9 scalability structure has a truncated picture group",
    ),
    (
        Vp9(),
        "frame_info",
        (b"\x82", b"\x00\x82"),
        "VP9 frame does not begin with B=1 in spatial layer 0 (RFC 9628 §4.2)",
    ),
    (
        Vp9(),
        "frame_info",
        (b"\x82", b"\x28\x02\x00\x82"),
        "VP9 frame does not begin with B=1 in spatial layer 0 (RFC 9628 §4.2)",
    ),
    (Vp9(), "frame_info", (b"", b"\x08\x82"), "VP9 frame header is truncated at bit 0"),
    (Vp9(), "frame_info", (b"\x40", b"\x08\x40"), "VP9 frame header has a bad frame marker"),
    (Vp9(), "frame_info", (b"\x80\x49\x83", b"\x08\x80"), "VP9 frame header is truncated at bit 8"),
    (
        Vp9(),
        "frame_info",
        (b"\x80\x49\x83\x40\x00\x00", b"\x08\x80"),
        "VP9 keyframe has a bad sync code",
    ),
    (
        Vp9(),
        "frame_info",
        (b"\x84\x80\x00\x00\x00", b"\x08"),
        "VP9 intra-only frame has a bad sync code",
    ),
    (
        Vp9(),
        "frame_info",
        (b"\x82\xc1\x05\x01\xc1", b"\x08"),
        "VP9 superframe index overruns the data: frame 0 of 2 needs 5 bytes, 1 are left",
    ),
    (
        Vp9(),
        "frame_info",
        (b"\x82\xc0\x00\xc0", b"\x08"),
        "VP9 superframe index gives frame 0 of 1 no bytes",
    ),
    (Vp9(), "depayload_frame", [], "VP9 picture has no packets"),
    (
        Vp9(),
        "depayload_frame",
        [b"\x08\x82", b"\x00"],
        "VP9 payload has no data after its descriptor",
    ),
    (
        Vp9(),
        "depayload_frame",
        [b"\x08\x82", b"\x20"],
        "VP9 payload descriptor has truncated layer indices",
    ),
    (Vp9(), "depayload_frame", [b"\x08\x82"] * 9, "VP9 superframe cannot hold 9 frames (1 to 8)"),
    (H264(), "depayload", b"", "H.264 payload is empty"),
    (H264(), "starts_frame", b"", "H.264 payload is empty"),
    (H264(), "depayload", b"\x18", "H.264 STAP-A holds no NAL unit"),
    (H264(), "depayload", b"\x18\x00", "H.264 STAP-A has a truncated NAL unit size at byte 1"),
    (H264(), "depayload", b"\x18\x00\x00", "H.264 STAP-A has an empty NAL unit at byte 1"),
    (
        H264(),
        "depayload",
        b"\x18\x00\x03\x67\x42",
        "H.264 STAP-A NAL unit at byte 3 needs 3 bytes, has 2",
    ),
    (H264(), "depayload", b"\x18\x00\x01\x7c", "H.264 STAP-A holds a NAL unit of type 28"),
    (H264(), "depayload", b"\x7c\x85", "H.264 FU-A is truncated (2 bytes, needs 3)"),
    (H264(), "starts_frame", b"\x7c", "H.264 FU-A has no FU header"),
    (H264(), "depayload", b"\x7c\xc5\x00", "H.264 FU-A has both start and end bits set"),
    (H264(), "depayload", b"\x7c\x98\x00", "H.264 FU-A fragments a NAL unit of type 24"),
    (H264(), "depayload", b"\x19\x00", "H.264 packet type 25 (STAP-B) is not supported"),
    (H264(), "starts_frame", b"\x1d\x00", "H.264 packet type 29 (FU-B) is not supported"),
    (H264(), "depayload", b"\x1a\x00", "H.264 packet type 26 (MTAP16) is not supported"),
    (H264(), "depayload", b"\x00\x00", "H.264 packet type 0 (reserved) is not supported"),
    (
        H264(),
        "frame_info",
        (b"\x00\x00\x00\x01\x65", b"\x7c\x05"),
        "H.264 frame begins inside a fragmented NAL unit (FU-A without S)",
    ),
    (H264(), "frame_info", (b"\x65",) * 2, "H.264 frame has no Annex-B start code"),
    (H264(), "sps", b"\x42\x00\x1e", "H.264 SPS is truncated at bit 24"),
    (
        H264(),
        "sps",
        b"\x42\x00\x1e\x00\x00\x00\x00\x80",
        "H.264 SPS has an Exp-Golomb code longer than 32 bits",
    ),
    (H264(), "sps", b"\x64\x00\x1e\x88", "H.264 SPS has chroma_format_idc 7"),
    (H264(), "sps", b"\x42\x00\x1e\xca", "H.264 SPS has pic_order_cnt_type 4"),
    # 1x1 macroblocks, frame_mbs_only, cropped by 8 luma columns each side
    (H264(), "sps", b"\x42\x00\x1e\xdd\xf2\x97\x80", "H.264 SPS crops the picture to nothing"),
    (Opus(), "depayload", b"", "Opus packet is empty (RFC 6716 §3.4 R1)"),
    (Opus(), "frame_info", (b"",) * 2, "Opus packet is empty (RFC 6716 §3.4 R1)"),
    (
        Opus(),
        "frame_info",
        (b"\x01\x00",) * 2,
        "Opus code 1 packet has an odd payload length (RFC 6716 §3.4 R3)",
    ),
    (Opus(), "frame_info", (b"\x02",) * 2, "Opus packet has a truncated frame length"),
    (Opus(), "frame_info", (b"\x02\xfc",) * 2, "Opus packet has a truncated frame length"),
    (
        Opus(),
        "frame_info",
        (b"\x02\x05\x00",) * 2,
        "Opus code 2 packet's first frame overruns it (RFC 6716 §3.4 R4)",
    ),
    (
        Opus(),
        "frame_info",
        (b"\x03",) * 2,
        "Opus code 3 packet has no frame count byte (RFC 6716 §3.4 R6)",
    ),
    (
        Opus(),
        "frame_info",
        (b"\x03\x00",) * 2,
        "Opus code 3 packet has 0 frames (RFC 6716 §3.4 R5)",
    ),
    (
        Opus(),
        "frame_info",
        (b"\x1b\x04",) * 2,
        "Opus code 3 packet has 4 frames (RFC 6716 §3.4 R5)",
    ),
    (
        Opus(),
        "frame_info",
        (b"\x03\x41\xff",) * 2,
        "Opus code 3 packet has truncated padding (RFC 6716 §3.4 R6)",
    ),
    (
        Opus(),
        "frame_info",
        (b"\x03\x42\x00\x01",) * 2,
        "Opus code 3 CBR packet's length is not a multiple of its frames (RFC 6716 §3.4 R6)",
    ),
    (
        Opus(),
        "frame_info",
        (b"\x03\x82\x05\x00",) * 2,
        "Opus code 3 packet's frames overrun it (RFC 6716 §3.4 R7)",
    ),
    (
        Opus(),
        "frame_info",
        (b"\x00" + bytes(1276),) * 2,
        "Opus packet has a frame longer than 1275 bytes (RFC 6716 §3.4 R2)",
    ),
    (codec_for("PCMU"), "depayload", b"", "PCMU payload is empty"),
    (codec_for("PCMA"), "frame_info", (b"",) * 2, "PCMA frame is empty"),
]


@pytest.mark.parametrize("codec, method, args, message", MALFORMED)
def test_malformed_payloads_raise_exact_errors(codec, method, args, message):
    # args: a payload, or for frame_info (assembled frame, its first packet's payload)
    with pytest.raises(CaptureError) as err:
        if method == "frame_info":
            codec.frame_info(*args)
        elif method == "sps":
            h264_sps_size(args)
        else:
            getattr(codec, method)(args)
    assert str(err.value) == message
    assert isinstance(err.value, ValueError)


def test_opus_toc_known_answers():
    assert opus_packet_samples(b"\xfc") == (960, True)  # CELT FB 20 ms, code 0, empty: DTX
    assert opus_packet_samples(b"\xfd") == (1920, True)  # code 1, two empty frames
    assert opus_packet_samples(b"\x12\x01\x55\x55") == (3840, False)  # SILK 40 ms, code 2
    assert opus_packet_samples(b"\x12\x00\x55") == (3840, False)  # code 2, first frame empty
    # code 3 VBR with padding 254 + 1: frames of 2, 0 and the 3 bytes left
    packet = b"\x83\xc3\xff\x01\x02\x00" + bytes(5) + bytes(255)
    assert opus_packet_samples(packet) == (3 * 120, False)
    assert opus_packet_samples(b"\x03\x83\x00\x00") == (3 * 480, True)  # all frames empty
    assert Opus().frame_info(b"\xfc", b"\xfc") == FrameInfo(keyframe=True, duration=960, dtx=True)


# --------------------------------------------------------------------------------- fuzzing

CODECS = [codec_for(n) for n in ("VP8", "VP9", "H264", "opus", "PCMU", "PCMA")]
HEADS = [b"", b"\x10", b"\x90\xe0", b"\x08", b"\xaa", b"\x7c\x85", b"\x18\x00", b"\x03\x83"]
FRAME_HEADS = [
    b"",
    b"\x00\x00\x01\x67",
    b"\x00\x00\x01\x67\x64",
    b"\x82\x49\x83\x42",
    b"\x80",
    b"\x00\x9d\x01\x2a",
]


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(CODECS),
    st.sampled_from(HEADS),
    st.binary(max_size=48),
    st.sampled_from(FRAME_HEADS),
    st.binary(max_size=48),
)
def test_fuzz_raises_only_capture_error(codec, head, tail, frame_head, frame_tail):
    payload, frame = head + tail, frame_head + frame_tail
    for call, args in (
        (codec.starts_frame, (payload,)),
        (codec.depayload, (payload,)),
        (codec.frame_info, (frame, payload)),
    ):
        try:
            call(*args)
        except CaptureError:
            pass


def real_sps() -> bytes:
    frames = [f.reformat(format="yuv444p") for f in moving_frames(640, 360, 1)]
    data = bytes(encode_video("libx264", frames, gop=1, fmt="yuv444p", preset="ultrafast")[0])
    start = data.index(b"\x00\x00\x01\x67") + 4
    return data[start : data.index(b"\x00\x00\x01", start)]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_sps_mutations(data):
    sps = bytearray(SPS_444)
    for _ in range(data.draw(st.integers(1, 4))):
        sps[data.draw(st.integers(0, len(sps) - 1))] = data.draw(st.integers(0, 255))
    sps = sps[: data.draw(st.integers(0, len(sps)))]
    try:
        width, height = h264_sps_size(bytes(sps))
    except CaptureError:
        return
    assert width > 0 and height > 0


SPS_444 = real_sps()


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([b"", b"\x18", b"\x7c", b"\x65", b"\x19"]), st.binary(max_size=24))
def test_h264_depayload_agrees_with_aiortc(head, tail):
    payload = head + tail
    try:
        ours = H264().depayload(payload)
    except CaptureError:
        ours = None
    try:
        theirs = h264_depayload(payload)
    except ValueError:
        theirs = None
    if ours is not None and theirs is not None:
        assert ours == theirs
    if theirs is None:  # aiortc refuses 1-byte NAL units (end of sequence/stream); we take them
        assert ours is None or len(payload) == 1


OPUS_DECODER = av.CodecContext.create("libopus", "r")
OPUS_DECODER.sample_rate, OPUS_DECODER.layout = 48000, "stereo"


@settings(max_examples=600, deadline=None)
@given(
    st.integers(0, 255),
    st.sampled_from([b"", b"\x01", b"\x43", b"\x82", b"\xc3\xff"]),
    st.binary(max_size=40),
    st.sampled_from([0, 1270, 1290]),
)
def test_opus_parse_agrees_with_libopus(toc, count, body, filler):
    # libopus's opus_packet_parse is the reference: same packets refused, same sample counts;
    # the filler reaches the 1275-byte frame limit (R2)
    packet = bytes([toc]) + count + body + bytes(filler)
    try:
        samples = opus_packet_samples(packet)[0]
    except CaptureError:
        samples = None
    try:
        decoded = sum(f.samples for f in OPUS_DECODER.decode(av.Packet(packet)))
    except av.error.InvalidDataError:
        decoded = None
    assert samples == decoded


def test_vp9_frame_info_sources():
    # A real 320x240 keyframe: its header gives the size, unless an SS names the layer sizes
    (packet, *_) = encode_video(
        "libvpx-vp9", moving_frames(320, 240, 1), gop=1, deadline="realtime", **{"cpu-used": "8"}
    )
    key = bytes(packet)
    vp9 = Vp9()
    assert vp9.frame_info(key, b"\x08" + key) == FrameInfo(True, 320, 240)
    two_layers = b"\x0a\x30\x00\xa0\x00\x78\x01\x40\x00\xf0"  # B, V: 160x120 and 320x240
    assert vp9.frame_info(key, two_layers + key) == FrameInfo(True, 320, 240)
    assert vp9.frame_info(key, b"\x0a\x10\x02\x80\x01\x68" + key) == FrameInfo(True, 640, 360)
    # P=1 says inter-picture predicted: not a picture to start decoding from
    assert vp9.frame_info(key, b"\x48" + key) == FrameInfo(False, 320, 240)
    # show_existing_frame: no keyframe, no size
    assert vp9.frame_info(b"\x88", b"\x08\x88") == FrameInfo(False)


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=8),
        st.tuples(
            st.sampled_from([0x80, 0x90, 0x10, 0x00, 0x97]),
            st.integers(0, 255),
            st.binary(max_size=5),
        ).map(lambda t: bytes([t[0], t[1]]) + t[2]),
    )
)
def test_vp8_descriptor_matches_aiortc(payload):
    """Our VP8 descriptor reader against aiortc's VpxPayloadDescriptor.parse: the same payloads
    refused with the same words, the same S bit and partition id, the same data after it."""
    try:
        descriptor, data = VpxPayloadDescriptor.parse(payload)
    except ValueError as exc:
        with pytest.raises(CaptureError, match=f"^{exc}$"):
            vp8_descriptor(payload)
        return
    first, ours = vp8_descriptor(payload)
    assert ours == data
    assert (first >> 4 & 1, first & 0x0F) == (descriptor.partition_start, descriptor.partition_id)
