"""StreamAssembler on real VP8 and Opus packets (PyAV encoders, aiortc packetizers), impaired."""

from __future__ import annotations

import random
from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder

from skymix.streams.assembler import SequenceUnwrapper, StreamAssembler, TimestampUnwrapper
from skymix.streams.codecs import codec_for

SEQ0 = 65500  # sequence numbers wrap after a few dozen packets
TS0 = 0xFFFF0000  # and timestamps after a few frames


def vp8_stream(frames=60, gop=20, size=(320, 240), seed=1):
    """[(frame index, is keyframe, encoded bytes, [(seq, ts, marker, payload)])] of a VP8 stream."""
    rng = np.random.default_rng(seed)
    cc = av.CodecContext.create("libvpx", "w")
    cc.width, cc.height, cc.pix_fmt = *size, "yuv420p"
    cc.time_base = Fraction(1, 90000)
    cc.framerate = Fraction(30, 1)
    cc.gop_size = gop
    cc.bit_rate = 2_000_000
    cc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packer = Vp8Encoder()
    out, seq = [], SEQ0
    for i in range(frames):
        img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i * 3000, Fraction(1, 90000)
        for packet in cc.encode(frame):
            payloads, ts = packer.pack(packet)
            rtp = []
            for k, payload in enumerate(payloads):
                rtp.append((seq & 0xFFFF, (TS0 + ts) & 0xFFFFFFFF, k == len(payloads) - 1, payload))
                seq += 1
            out.append((i, packet.is_keyframe, bytes(packet), rtp))
    return out


def run(assembler, packets, arrival_step_ns=1_000_000):
    frames = []
    for n, (seq, ts, marker, payload) in enumerate(packets):
        frames += assembler.push(n * arrival_step_ns, seq, ts, marker, payload)
    return frames + assembler.flush()


def decodes(frames):
    """Every emitted frame decodes, in order, with one decoder (as the mixer will)."""
    dec = av.CodecContext.create("vp8", "r")
    pictures = 0
    for f in frames:
        pictures += len(dec.decode(av.Packet(f.data)))
    return pictures == len(frames)


def test_unwrappers_continue_across_wraps():
    seq = SequenceUnwrapper()
    assert [seq(s) for s in (65534, 65535, 0, 1, 65535, 2)] == [
        65534,
        65535,
        65536,
        65537,
        65535,
        65538,
    ]
    ts = TimestampUnwrapper()
    assert [ts(t) for t in (0xFFFFFFF0, 0x10, 0xFFFFFFFF, 0x20)] == [
        0xFFFFFFF0,
        0x100000010,
        0xFFFFFFFF,
        0x100000020,
    ]


def test_clean_stream_gives_every_frame_exactly():
    stream = vp8_stream()
    assert any(len(rtp) > 1 for _, _, _, rtp in stream)  # frames span several packets
    packets = [p for _, _, _, rtp in stream for p in rtp]
    asm = StreamAssembler(codec_for("vp8"), ssrc=1)
    frames = run(asm, packets)
    assert [f.data for f in frames] == [data for _, _, data, _ in stream]
    assert [f.keyframe for f in frames] == [key for _, key, _, _ in stream]
    assert [f.timestamp for f in frames] == [TS0 + i * 3000 for i in range(60)]
    assert (frames[0].width, frames[0].height) == (320, 240)
    assert asm.stats.lost == asm.stats.duplicates == asm.stats.reordered == 0
    assert asm.stats.frames == 60 and asm.stats.keyframes == 3
    assert decodes(frames)


def test_reordering_and_duplicates_change_nothing():
    stream = vp8_stream()
    packets = [p for _, _, _, rtp in stream for p in rtp]
    rng = random.Random(5)
    jumbled = []
    for i in range(0, len(packets), 6):  # shuffle within groups of 6, and repeat some
        group = packets[i : i + 6]
        rng.shuffle(group)
        jumbled += group + [p for p in group if rng.random() < 0.2]
    asm = StreamAssembler(codec_for("vp8"), ssrc=1)
    frames = run(asm, jumbled)
    assert [f.data for f in frames] == [data for _, _, data, _ in stream]
    assert asm.stats.reordered > 0 and asm.stats.duplicates == len(jumbled) - len(packets)
    assert asm.stats.lost == 0


def test_loss_waits_for_the_next_keyframe_and_never_emits_a_broken_frame():
    stream = vp8_stream()
    lost_frame = 25
    drop = stream[lost_frame][3][0]  # the first packet of frame 25 (a delta frame)
    packets = [p for _, _, _, rtp in stream for p in rtp if p is not drop]
    asm = StreamAssembler(codec_for("vp8"), ssrc=1)
    frames = run(asm, packets)
    got = [(f.timestamp - TS0) // 3000 for f in frames]
    assert got == list(range(lost_frame)) + list(range(40, 60))  # frame 40 is the next keyframe
    assert asm.stats.lost == 1 and asm.stats.keyframe_waits == 1
    assert asm.stats.frames_skipped_for_keyframe + asm.stats.incomplete_frames == 15
    assert len(asm.stats.gaps) == 1 and asm.stats.gaps[0].packets == 1
    assert decodes(frames)


def test_missing_first_keyframe_starts_at_the_second():
    stream = vp8_stream()
    packets = [p for _, _, _, rtp in stream[1:] for p in rtp]
    frames = run(StreamAssembler(codec_for("vp8"), ssrc=1), packets)
    assert (frames[0].timestamp - TS0) // 3000 == 20 and frames[0].keyframe
    assert decodes(frames)


def test_a_packet_later_than_the_window_is_lost_then_late():
    stream = vp8_stream(frames=30)
    packets = [p for _, _, _, rtp in stream for p in rtp]
    victim = packets[40]
    delayed = packets[:40] + packets[41:] + [victim]  # arrives 1 ms x (len - 40) later
    asm = StreamAssembler(codec_for("vp8"), ssrc=1, window_ns=5_000_000)
    run(asm, delayed)
    assert asm.stats.lost == 1 and asm.stats.late == 1 and asm.stats.duplicates == 0


def test_padding_only_packets_take_sequence_numbers_but_no_frame():
    stream = vp8_stream(frames=10)
    packets = []
    for _, _, _, rtp in stream:
        packets += rtp
    # re-number with a padding-only packet after every frame, as bandwidth probes do
    renumbered, seq = [], SEQ0
    for _, _, _, rtp in stream:
        for _, ts, marker, payload in rtp:
            renumbered.append((seq & 0xFFFF, ts, marker, payload))
            seq += 1
        renumbered.append((seq & 0xFFFF, rtp[-1][1], False, b""))
        seq += 1
    asm = StreamAssembler(codec_for("vp8"), ssrc=1)
    frames = run(asm, renumbered)
    assert [f.data for f in frames] == [data for _, _, data, _ in stream]
    assert asm.stats.padding_only == 10 and asm.stats.lost == 0


@pytest.mark.parametrize("lost", [[7], [7, 8, 9], []])
def test_audio_gaps_are_reported_and_the_rest_kept(lost):
    enc = OpusEncoder()
    cc = av.CodecContext.create("libopus", "w")
    cc.sample_rate, cc.layout, cc.format = 48000, "stereo", "s16"
    cc.time_base = Fraction(1, 48000)
    packets, seq = [], SEQ0
    t = np.arange(960 * 30) / 48000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    for i in range(30):
        block = np.repeat(pcm[i * 960 : (i + 1) * 960], 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(block, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, i * 960
        for packet in cc.encode(frame):
            payloads, ts = enc.pack(packet)
            for payload in payloads:
                packets.append((seq & 0xFFFF, (TS0 + ts) & 0xFFFFFFFF, False, payload))
                seq += 1
    kept = [p for i, p in enumerate(packets) if i not in lost]
    asm = StreamAssembler(codec_for("opus"), ssrc=2)
    frames = run(asm, kept)
    assert len(frames) == len(packets) - len(lost)
    assert asm.stats.lost == len(lost)
    if lost:
        (gap,) = asm.stats.gaps
        assert gap.packets == len(lost) and gap.after_timestamp == frames[lost[0] - 1].timestamp


def test_audio_level_reaches_the_frame():
    asm = StreamAssembler(codec_for("opus"), ssrc=3, window_ns=0)
    toc = bytes([0xFC, 0xFF, 0xFE])  # an Opus packet: 20 ms, one frame
    frames = asm.push(0, 1, 960, False, toc, audio_level=42)
    frames += asm.push(1_000_000, 2, 1920, False, toc)
    frames += asm.flush()
    assert [f.audio_level for f in frames] == [42, None]
