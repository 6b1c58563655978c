"""Synthesize a relay capture of a call: real encoders, real packetizers, chosen impairments.

Each participant's camera shows its own colour and flashes white at known instants, and its
microphone plays a quiet tone of its own with a loud beep at the same instants: a viewer (or a
test) can see and hear whether picture and sound are in sync and where. Every sender has a clock
of its own (an offset and a drift against the relay), sends RTCP sender reports in that clock,
and its packets reach the relay through a network with the chosen loss, bursts, reordering,
duplicates and jitter. The relay's arrival times are written to a pcap; one SDP per
participant says which ports and payload types are whose; a truth file says what was sent.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpSenderInfo, RtcpSrPacket, RtpPacket, wrap_rtx
from av.video.codeccontext import VideoCodecContext

from ..errors import SkymixError
from .pcapwrite import PcapWriter

__all__ = ["Impairments", "SynthParticipant", "SynthResult", "preset", "synthesize"]

RELAY = ("127.0.0.1", 0)
VIDEO_PT, AUDIO_PT, RTX_PT = 96, 111, 97
RTX_DELAY = 0.06
Sent = list[tuple[float, int, tuple[str, int], tuple[str, int], bytes]]
"""What reached the relay: (arrival s, order, source, destination, datagram)."""
AUDIO_LEVEL_ID = 1
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
NTP_EPOCH_OFFSET = 2208988800
START_UNIX = 1_764_000_000  # the relay clock's zero, as a Unix time
START_NS = START_UNIX * 1_000_000_000


@dataclass(frozen=True, slots=True)
class SynthParticipant:
    """One sender. Times are seconds of the relay clock from the start of the capture.

    clock_offset: how far the sender's clock is ahead of the relay's (s); drift_ppm: how much
    faster it runs. resize_at: the camera switches to half size then; ssrc_change_at: the video
    stream restarts with a new SSRC then (a renegotiation). video_codec None: audio only.
    muted / camera_off: (from, to) during which no audio / video packets are sent.
    """

    name: str
    size: tuple[int, int] = (640, 480)
    fps: int = 30
    video_codec: str | None = "vp8"
    audio: bool = True
    tone_hz: float = 300.0
    color: tuple[int, int, int] = (60, 90, 160)
    joins_at: float = 0.0
    leaves_at: float | None = None
    clock_offset: float = 0.0
    drift_ppm: float = 0.0
    resize_at: float | None = None
    ssrc_change_at: float | None = None
    muted: tuple[float, float] | None = None
    camera_off: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Impairments:
    """What the network does to every packet (probabilities per packet; times in ms).

    rtx: the video sender retransmits every lost packet once on an RFC 4588 RTX stream, 60 ms
    later (as after a NACK); the retransmission crosses the same network.
    """

    loss: float = 0.0
    burst_every_s: float | None = None
    burst_packets: int = 0
    reorder: float = 0.0
    duplicate: float = 0.0
    jitter_ms: float = 0.0
    base_delay_ms: float = 20.0
    drop_first_keyframe: bool = False
    rtx: bool = False


@dataclass(slots=True)
class SynthResult:
    """Where the capture went and what was in it."""

    pcap: Path
    sdps: list[Path]
    truth: Path
    packets: int
    truth_data: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class _Sender:
    p: SynthParticipant
    index: int
    rng: random.Random

    def sender_time(self, relay: float) -> float:
        return self.p.clock_offset + relay * (1 + self.p.drift_ppm * 1e-6)

    def relay_time(self, sender: float) -> float:
        return (sender - self.p.clock_offset) / (1 + self.p.drift_ppm * 1e-6)


_PRESET = [
    SynthParticipant(
        "ada",
        (640, 480),
        30,
        "vp8",
        tone_hz=220,
        color=(190, 60, 60),
        clock_offset=2.5,
        drift_ppm=180,
    ),
    SynthParticipant(
        "grace",
        (1280, 720),
        30,
        "h264",
        tone_hz=330,
        color=(60, 160, 60),
        clock_offset=-4.0,
        drift_ppm=-250,
    ),
    SynthParticipant(
        "linus",
        (320, 240),
        15,
        "vp8",
        tone_hz=440,
        color=(60, 80, 200),
        clock_offset=0.7,
        drift_ppm=300,
        joins_at=1.5,
    ),
    SynthParticipant(
        "margaret",
        (480, 640),
        30,
        "vp8",
        tone_hz=550,
        color=(190, 150, 40),
        clock_offset=-1.2,
        drift_ppm=-120,
        leaves_at=None,
    ),
]


def preset(count: int, duration: float) -> list[SynthParticipant]:
    """`count` varied participants: sizes, codecs, clocks apart and drifting, a late joiner and,
    from four on, one who leaves before the end."""
    people = []
    for i in range(count):
        base = _PRESET[i % len(_PRESET)]
        name = base.name if i < len(_PRESET) else f"{base.name}{i // len(_PRESET) + 1}"
        leaves = duration * 0.75 if i == 3 else None
        people.append(SynthParticipant(**{**asdict(base), "name": name, "leaves_at": leaves}))
    return people


@dataclass(slots=True)
class _Link:
    """One stream of a sender: its ports, its span of sender time, and the network it crosses."""

    sender: _Sender
    host: str
    port: int
    start_s: float
    end_s: float
    events: list[float]
    imp: Impairments
    sent: Sent

    def deliver(
        self, send_relay: float, packet: bytes, lost: bool = False, rtcp: bool = False
    ) -> bool:
        """Send RTP (or, with rtcp, RTCP from port + 1) to the relay; False when it was lost."""
        port = self.port + rtcp
        return _network(
            self.sender,
            self.imp,
            send_relay,
            int(rtcp),
            packet,
            (self.host, port),
            ("127.0.0.1", port),
            self.sent,
            lost,
        )


def _during(span: tuple[float, float] | None, relay: float) -> bool:
    return span is not None and span[0] <= relay < span[1]


def _audio_extensions() -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=AUDIO_LEVEL_ID, uri=AUDIO_LEVEL_URI)
            ]
        )
    )
    return extensions


def _events(p: SynthParticipant, index: int, duration: float) -> list[float]:
    """Flash-and-beep instants in the sender's media time from its join (one every 2 s)."""
    return [0.5 + 0.15 * index + 2.0 * k for k in range(int(duration / 2.0) + 1)]


def _video_encoder(codec: str, size: tuple[int, int], fps: int) -> VideoCodecContext:
    cc = av.CodecContext.create("libvpx" if codec == "vp8" else "libx264", "w")
    assert isinstance(cc, VideoCodecContext)
    cc.width, cc.height = size
    cc.pix_fmt = "yuv420p"
    cc.time_base = Fraction(1, 90000)
    cc.framerate = Fraction(fps, 1)
    cc.gop_size = 2 * fps
    cc.bit_rate = 600_000
    if codec == "vp8":
        cc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    else:
        cc.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}
    return cc


def _picture(p: SynthParticipant, size: tuple[int, int], n: int, flash: bool) -> av.VideoFrame:
    w, h = size
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = (255, 255, 255) if flash else p.color
    bar = (n * 4) % max(h - h // 10, 1)
    rgb[bar : bar + h // 10, :, :] = 20 if flash else 230
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    return frame


def synthesize(
    participants: list[SynthParticipant],
    duration: float,
    out_dir: str | Path,
    *,
    impairments: Impairments = Impairments(),
    seed: int = 1,
    name: str = "synth",
) -> SynthResult:
    """Write <name>.pcap, one <name>-<participant>.sdp each and <name>-truth.json to out_dir."""
    if not participants:
        raise SkymixError("synthesize needs at least one participant")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sent: Sent = []
    records: list[dict[str, object]] = []
    truth: dict[str, object] = {
        "duration": duration,
        "start_unix": START_UNIX,
        "impairments": asdict(impairments),
        "participants": records,
    }
    sdps = []
    for index, p in enumerate(participants):
        sender = _Sender(p, index, random.Random(rng.random()))
        host = f"127.0.0.{10 + index}"
        vport, aport = 20000 + 10 * index, 20002 + 10 * index
        leaves = p.leaves_at if p.leaves_at is not None else duration
        record: dict[str, object] = {
            "name": p.name,
            "joins_at": p.joins_at,
            "leaves_at": leaves,
            "clock_offset": p.clock_offset,
            "drift_ppm": p.drift_ppm,
        }
        start_s = sender.sender_time(p.joins_at)
        end_s = sender.sender_time(leaves)
        events = [e for e in _events(p, index, end_s - start_s) if e < end_s - start_s]
        record["events_relay"] = [sender.relay_time(start_s + e) for e in events]
        if p.video_codec is not None:
            record["video"] = _send_video(
                _Link(sender, host, vport, start_s, end_s, events, impairments, sent)
            )
        if p.audio:
            record["audio"] = _send_audio(
                _Link(sender, host, aport, start_s, end_s, events, impairments, sent)
            )
        sdp = out / f"{name}-{p.name}.sdp"
        sdp.write_text(_sdp(p, host, vport, aport, record))
        sdps.append(sdp)
        records.append(record)
    sent.sort(key=lambda item: (item[0], item[1]))
    pcap = out / f"{name}.pcap"
    with PcapWriter(pcap) as writer:
        for arrival, _, src, dst, data in sent:
            writer.write(START_NS + round(arrival * 1e9), src, dst, data)
    truth_path = out / f"{name}-truth.json"
    truth_path.write_text(json.dumps(truth, indent=1))
    return SynthResult(pcap, sdps, truth_path, len(sent), truth)


def _network(
    sender: _Sender,
    imp: Impairments,
    send_relay: float,
    order: int,
    packet: bytes,
    src: tuple[str, int],
    dst: tuple[str, int],
    sent: Sent,
    lost: bool = False,
) -> bool:
    """Deliver one packet through the impaired network; False when it was lost."""
    rng = sender.rng
    if lost or rng.random() < imp.loss:
        return False
    delay = imp.base_delay_ms / 1000 + (
        rng.expovariate(1000 / imp.jitter_ms) if imp.jitter_ms > 0 else 0.0
    )
    if rng.random() < imp.reorder:
        delay += 0.03 + rng.random() * 0.05
    arrival = send_relay + delay
    sent.append((arrival, order, src, dst, packet))
    if rng.random() < imp.duplicate:
        sent.append((arrival + 0.001 + rng.random() * 0.01, order, src, dst, packet))
    return True


def _in_burst(imp: Impairments, relay: float, counter: dict[str, int]) -> bool:
    """Whether this packet falls into a loss burst (burst_packets in a row, every burst_every_s)."""
    if not imp.burst_every_s or imp.burst_packets <= 0:
        return False
    slot = int(relay / imp.burst_every_s)
    if slot != counter.get("slot"):
        counter["slot"], counter["left"] = slot, imp.burst_packets if slot > 0 else 0
    if counter["left"] > 0:
        counter["left"] -= 1
        return True
    return False


def _new_stream(rng: random.Random) -> tuple[int, int, int]:
    """A random SSRC, first sequence number and RTP timestamp origin (RFC 3550 5.1)."""
    return rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32)


def _sender_report(ssrc: int, sender_s: float, rtp: int, packets: int, octets: int) -> bytes:
    ntp_seconds = NTP_EPOCH_OFFSET + START_UNIX + sender_s
    ntp = int(ntp_seconds) << 32 | int((ntp_seconds % 1) * (1 << 32))
    return bytes(
        RtcpSrPacket(
            ssrc=ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=rtp & 0xFFFFFFFF,
                packet_count=packets,
                octet_count=octets,
            ),
        )
    )


def _send_video(link: _Link) -> dict[str, object]:
    sender, imp, start_s, end_s, events = (
        link.sender,
        link.imp,
        link.start_s,
        link.end_s,
        link.events,
    )
    p, rng = sender.p, sender.rng
    ssrc, seq, base = _new_stream(rng)
    rtx_ssrc, rtx_seq, _ = _new_stream(rng) if imp.rtx else (0, 0, 0)
    rtx_ssrcs = [rtx_ssrc]
    unrecovered = retransmitted = 0
    size = p.size
    cc = _video_encoder(p.video_codec or "vp8", size, p.fps)
    packer = Vp8Encoder() if p.video_codec == "vp8" else H264Encoder()
    frames: list[dict[str, object]] = []
    ssrcs = [ssrc]
    burst: dict[str, int] = {}
    packets = octets = 0
    next_report = 0.0
    n = 0
    first_keyframe_dropped = False
    while True:
        media = n / p.fps
        if start_s + media >= end_s:
            break
        relay = sender.relay_time(start_s + media)
        if p.ssrc_change_at is not None and len(ssrcs) == 1 and relay >= p.ssrc_change_at:
            ssrc, seq, base = _new_stream(rng)
            rtx_ssrc, rtx_seq, _ = _new_stream(rng) if imp.rtx else (0, 0, 0)
            ssrcs.append(ssrc)
            rtx_ssrcs.append(rtx_ssrc)
            cc = _video_encoder(p.video_codec or "vp8", size, p.fps)
        if p.resize_at is not None and relay >= p.resize_at and size == p.size:
            size = (p.size[0] // 2 // 2 * 2, p.size[1] // 2 // 2 * 2)
            cc = _video_encoder(p.video_codec or "vp8", size, p.fps)
        if _during(p.camera_off, relay):
            n += 1
            continue
        flash = any(abs(media - e) < 0.5 / p.fps for e in events)
        frame = _picture(p, size, n, flash)
        frame.pts, frame.time_base = round(media * 90000), Fraction(1, 90000)
        for packet in cc.encode(frame):
            payloads, _ = packer.pack(packet)
            drop_all = imp.drop_first_keyframe and not first_keyframe_dropped
            first_keyframe_dropped = True
            rtp_ts = (base + round(media * 90000)) & 0xFFFFFFFF
            delivered = 0
            for k, payload in enumerate(payloads):
                rtp = RtpPacket(
                    payload_type=VIDEO_PT,
                    marker=int(k == len(payloads) - 1),
                    sequence_number=seq & 0xFFFF,
                    timestamp=rtp_ts,
                    ssrc=ssrc,
                    payload=payload,
                )
                seq += 1
                packets += 1
                octets += len(payload)
                lost = drop_all or _in_burst(imp, relay, burst)
                ok = link.deliver(relay + k * 0.0001, rtp.serialize(), lost)
                if not ok and imp.rtx and not drop_all:
                    repair = wrap_rtx(rtp, RTX_PT, rtx_seq & 0xFFFF, rtx_ssrc)
                    rtx_seq += 1
                    retransmitted += 1
                    ok = link.deliver(relay + RTX_DELAY, repair.serialize())
                unrecovered += not ok
                delivered += ok
            frames.append(
                {
                    "n": n,
                    "relay": relay,
                    "rtp": rtp_ts,
                    "ssrc": ssrc,
                    "keyframe": packet.is_keyframe,
                    "flash": flash,
                    "size": list(size),
                    "packets": len(payloads),
                    "delivered": delivered,
                }
            )
        if media >= next_report:
            report = _sender_report(
                ssrc, start_s + media, base + round(media * 90000), packets, octets
            )
            link.deliver(relay, report, rtcp=True)
            next_report += 1.0
        n += 1
    return {
        "ssrcs": ssrcs,
        "codec": p.video_codec,
        "port": link.port,
        "frames": frames,
        "clock_rate": 90000,
        "rtx_ssrcs": rtx_ssrcs if imp.rtx else [],
        "retransmitted": retransmitted,
        "lost": unrecovered,
    }


def _send_audio(link: _Link) -> dict[str, object]:
    sender, imp, start_s, end_s, events = (
        link.sender,
        link.imp,
        link.start_s,
        link.end_s,
        link.events,
    )
    p, rng = sender.p, sender.rng
    ssrc, seq, base = _new_stream(rng)
    cc = av.CodecContext.create("libopus", "w")
    cc.sample_rate, cc.layout, cc.format = 48000, "stereo", "s16"
    cc.time_base = Fraction(1, 48000)
    packer = OpusEncoder()
    extensions = _audio_extensions()
    burst: dict[str, int] = {}
    packets = octets = 0
    next_report = 0.0
    blocks = int((end_s - start_s) * 50)
    delivered_blocks = []
    for b in range(blocks):
        t = (b * 960 + np.arange(960)) / 48000
        signal = 0.05 * np.sin(2 * np.pi * p.tone_hz * t)
        for e in events:
            if not t[0] - 0.05 < e <= t[-1]:  # only the beeps in this block (long captures)
                continue
            on = (t >= e) & (t < e + 0.05)
            signal = np.where(on, 0.5 * np.sin(2 * np.pi * 1000 * (t - e)), signal)
        pcm = np.repeat((signal * 32767).astype(np.int16), 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, b * 960
        media = b * 960 / 48000
        relay = sender.relay_time(start_s + media)
        rms = float(np.sqrt(np.mean(signal**2)))
        level = min(127, round(-20 * np.log10(max(rms, 1e-7))))  # RFC 6464: -dBov
        for packet in cc.encode(frame):
            payloads, _ = packer.pack(packet)
            if _during(p.muted, relay):
                continue
            pts = packet.pts if packet.pts is not None else b * 960
            rtp_ts = (base + pts) & 0xFFFFFFFF
            for payload in payloads:
                rtp = RtpPacket(
                    payload_type=AUDIO_PT,
                    marker=0,
                    sequence_number=seq & 0xFFFF,
                    timestamp=rtp_ts,
                    ssrc=ssrc,
                    payload=payload,
                )
                rtp.extensions.audio_level = (level < 40, level)
                data = rtp.serialize(extensions)
                seq += 1
                packets += 1
                octets += len(payload)
                ok = link.deliver(relay, data, _in_burst(imp, relay, burst))
                delivered_blocks.append((pts, ok))
        if media >= next_report:
            report = _sender_report(ssrc, start_s + media, base + b * 960, packets, octets)
            link.deliver(relay, report, rtcp=True)
            next_report += 1.0
    return {
        "ssrcs": [ssrc],
        "codec": "opus",
        "port": link.port,
        "clock_rate": 48000,
        "rtp_base": base,
        "packets": len(delivered_blocks),
        "lost": sum(1 for _, ok in delivered_blocks if not ok),
    }


def _sdp(p: SynthParticipant, host: str, vport: int, aport: int, record: dict[str, object]) -> str:
    lines = ["v=0", f"o=- 0 0 IN IP4 {host}", f"s={p.name}", "c=IN IP4 127.0.0.1", "t=0 0"]
    video = record.get("video")
    if isinstance(video, dict):
        codec = "VP8/90000" if p.video_codec == "vp8" else "H264/90000"
        types = f"{VIDEO_PT} {RTX_PT}" if video["rtx_ssrcs"] else f"{VIDEO_PT}"
        lines += [f"m=video {vport} RTP/AVP {types}", f"a=rtpmap:{VIDEO_PT} {codec}"]
        if p.video_codec == "h264":
            lines.append(f"a=fmtp:{VIDEO_PT} packetization-mode=1")
        lines += [f"a=ssrc:{s} cname:{p.name}" for s in video["ssrcs"]]
        if video["rtx_ssrcs"]:
            lines += [f"a=rtpmap:{RTX_PT} rtx/90000", f"a=fmtp:{RTX_PT} apt={VIDEO_PT}"]
            for media, rtx in zip(video["ssrcs"], video["rtx_ssrcs"]):
                lines += [f"a=ssrc-group:FID {media} {rtx}", f"a=ssrc:{rtx} cname:{p.name}"]
    audio = record.get("audio")
    if isinstance(audio, dict):
        lines += [
            f"m=audio {aport} RTP/AVP {AUDIO_PT}",
            f"a=rtpmap:{AUDIO_PT} opus/48000/2",
            f"a=extmap:{AUDIO_LEVEL_ID} {AUDIO_LEVEL_URI}",
        ]
        lines += [f"a=ssrc:{s} cname:{p.name}" for s in audio["ssrcs"]]
    return "\r\n".join(lines) + "\r\n"
