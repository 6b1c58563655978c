"""Decode one stream's EncodedFrames: video to yuv420p pictures, audio to 48 kHz stereo float32.

One decoder per stream, fed that stream's frames in media order; not shared between threads (the
PyAV calls release the GIL, so decoders of different streams can run in parallel threads).

Video. Pictures come back as ``av.VideoFrame`` in yuv420p at the size the bitstream codes
(other pixel formats are converted, nothing is scaled), each with ``pts`` set to the unwrapped
RTP timestamp of the frame it was decoded from and ``time_base`` 1/90000. Decoders: FFmpeg's
``vp8`` and ``h264``, and ``libvpx-vp9`` for VP9, which outputs only the last (top spatial
layer) picture of a superframe; FFmpeg's own ``vp9`` would output every layer, so VP9 output is
cut to the last picture of a packet in any case. A frame the decoder rejects (``av.FFmpegError``)
or marks corrupt returns ``[]`` and counts in ``errors``; the codec context is then recreated
and frames are skipped (counted) until the next keyframe, so no picture predicted from damaged
references is ever returned.

Threading is slice threading only (``thread_type = "SLICE"``, 2 threads by default), measured
with FFmpeg 8.1 on 720p streams: frame threading holds each picture back by ``thread_count - 1``
decode calls (vp8, h264 and FFmpeg's vp9 return nothing for the first 1 or 2 packets with 2 or 3
frame threads; libvpx-vp9 never lags), so a picture would come out only when later input comes
in. It is also unsafe with PyAV 18.1: freeing a frame-threaded context that still holds packets
deadlocks (a frame thread releases a packet made from Python bytes and waits for the GIL, which
the thread in ``avcodec_free_context`` holds while it joins it), and this module recreates
contexts after errors. Slice threading never delays output and shares the work where the
bitstream allows it (CPU time per thread, 2 threads: H.264 with 4 slices 60/40, VP9 with 2 tile
columns 55/45); single-slice H.264 and one-partition VP8 (libvpx's default) stay on one
thread at no measurable cost. Decoding several streams in parallel threads is the other way to
use cores.

Audio. ``decode`` returns float32 ``(samples, 2)`` at 48 kHz: exactly the frame's duration (at
its RTP clock) times ``48000 / clock_rate`` samples, mono sources copied to both channels at
full level. The first returned sample belongs at 48 kHz instant ``timestamp * 48000 /
clock_rate - delay`` (``AudioDecoder.position(timestamp)``). ``delay`` is 0 for Opus (libopus
decodes at 48 kHz; the sender's encoder
lookahead is in its RTP timestamps already, as every WebRTC receiver takes it). G.711 is
resampled from 8 kHz by one ``av.AudioResampler`` kept across frames: swresample keeps its
filter's half length back (96 output samples with FFmpeg 8.1's default 32-tap filter), and
instead of returning a short first block the decoder starts each run of contiguous frames with
``delay`` samples of the silence before it, so every block has its exact length and the
stream is simply ``delay`` samples late. ``flush()`` returns those last ``delay`` samples,
which follow the last block returned.

A G.711 frame whose timestamp does not continue the previous frame starts a new run: the
resampler is recreated (the previous run's last ``delay`` samples, 2 ms, are dropped unless
``flush()`` was called first; ``stats.discontinuities`` counts it). ``conceal(samples)`` fills a
gap of ``samples`` RTP clock units and keeps the run going: libopus packet loss concealment for
Opus, silence through the resampler for G.711.

Opus concealment: PyAV has no way to send libopus the NULL packet it conceals on (a
``Packet`` without data is end of stream: the context then answers every packet with EOF), but
libopus treats a frame of length 0 the same way (``opus_decode_frame``: ``len <= 1`` is a lost
frame). So ``conceal`` sends TOC-only code-3 packets (RFC 6716 §3.2.5, all frames empty) in the
last packet's configuration: the tone or voice goes on and fades over some 100 ms (measured:
RMS 0.35, 0.28, 0.23, 0.18 over four lost 20 ms frames of a 0.5 sine). FFmpeg's own ``opus``
decoder returns one faded frame and then silence, so it is only the fallback. A DTX packet (TOC
only, RFC 6716 §3.2.1: what libopus sends during silence) is returned as silence of the
duration its TOC says, without touching the decoder (an empty payload as silence of the last
packet's duration); a packet libopus rejects is counted and
concealed for its TOC's duration (that of the last packet if the TOC is unreadable).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext
from av.video.codeccontext import VideoCodecContext

from .errors import CaptureError, DecodeError
from .streams.assembler import EncodedFrame
from .streams.codecs import codec_for, opus_packet_samples

__all__ = [
    "OUTPUT_RATE",
    "VIDEO_TIME_BASE",
    "AudioDecoder",
    "DecodeStats",
    "VideoDecoder",
]

OUTPUT_RATE = 48_000
"""The sample rate of every decoded audio block."""

VIDEO_TIME_BASE = Fraction(1, 90_000)
"""time_base of decoded pictures, whose pts is the RTP timestamp (video RTP clock, RFC 3551)."""

Pcm = npt.NDArray[np.float32]

_VIDEO_DECODERS = {"VP8": ("vp8",), "VP9": ("libvpx-vp9", "vp9"), "H264": ("h264",)}
_AUDIO_DECODERS = {"opus": ("libopus", "opus"), "PCMU": ("pcm_mulaw",), "PCMA": ("pcm_alaw",)}
_OPUS_MAX_PACKET = 5760  # samples a packet may hold, RFC 6716 §3.4 R5
_OPUS_FRAME_SAMPLES = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4


@dataclass(slots=True)
class DecodeStats:
    """Counters of one decoder.

    frames_in: frames given to decode(); frames_out: pictures (video) or blocks (audio, decode
    conceal, flush) returned; samples_out: audio samples returned (48 kHz); errors: frames the
    decoder rejected; skipped: video frames dropped while waiting for a keyframe; dtx: Opus DTX
    packets; concealed: samples (48 kHz) made up by conceal() or for rejected frames;
    discontinuities: G.711 resampler restarts on a timestamp jump; last_error: its message.
    """

    frames_in: int = 0
    frames_out: int = 0
    samples_out: int = 0
    errors: int = 0
    skipped: int = 0
    dtx: int = 0
    concealed: int = 0
    discontinuities: int = 0
    last_error: str | None = None


def _pick(kind: str, codec_name: str, table: dict[str, tuple[str, ...]]) -> tuple[str, str]:
    """(skymix codec name, first FFmpeg decoder of it this PyAV build has)."""
    try:
        codec = codec_for(codec_name)
    except CaptureError as exc:
        raise DecodeError(str(exc)) from None
    if codec.kind != kind:
        raise DecodeError(f"{codec.name} is {codec.kind}, not {kind}")
    for name in table[codec.name]:
        if name in av.codecs_available:
            return codec.name, name
    names = ", ".join(table[codec.name])
    raise DecodeError(f"this PyAV build has no {codec.name} decoder ({names})")


class VideoDecoder:
    """Decodes one video stream's EncodedFrames into yuv420p VideoFrames tagged with their RTP
    timestamp (``pts``, ``time_base`` 1/90000).

    threads: slice threads per picture (0: FFmpeg picks, one per core and one more; libvpx-vp9
    takes it as its thread count, for tiles).
    """

    def __init__(self, codec_name: str, threads: int = 2) -> None:
        if threads < 0:
            raise DecodeError(f"threads must be 0 (automatic) or more, got {threads}")
        self.codec, self.decoder = _pick("video", codec_name, _VIDEO_DECODERS)
        self.threads = threads
        self.stats = DecodeStats()
        self._last_only = self.codec == "VP9"
        self._context = self._open()
        self._need_keyframe = True

    @property
    def errors(self) -> int:
        return self.stats.errors

    def _open(self) -> VideoCodecContext:
        context = av.CodecContext.create(self.decoder, "r")
        assert isinstance(context, VideoCodecContext)
        context.thread_type = "SLICE"
        context.thread_count = self.threads
        return context

    def decode(self, frame: EncodedFrame) -> list[av.VideoFrame]:
        """The pictures this frame completes (one, for WebRTC streams); [] when the decoder
        rejects it or a keyframe is awaited."""
        self.stats.frames_in += 1
        if self._need_keyframe and not frame.keyframe:
            self.stats.skipped += 1
            return []
        packet = av.Packet(frame.data)
        packet.pts = packet.dts = frame.timestamp
        packet.time_base = VIDEO_TIME_BASE
        try:
            decoded = self._context.decode(packet)
        except av.FFmpegError as exc:
            return self._fail(f"{self.decoder}: {exc}")
        if any(f.is_corrupt for f in decoded):
            return self._fail(f"{self.decoder}: decoded a corrupt picture")
        self._need_keyframe = False
        return self._finish(decoded, frame.timestamp)

    def flush(self) -> list[av.VideoFrame]:
        """Pictures the decoder still holds (only streams with B-frames leave any). The stream
        then starts afresh: the next frame decoded must be a keyframe."""
        try:
            decoded = self._context.decode(None)
        except av.FFmpegError as exc:
            decoded = []
            self._fail(f"{self.decoder}: {exc}")
        self._context = self._open()
        self._need_keyframe = True
        return self._finish(decoded, None)

    def _fail(self, message: str) -> list[av.VideoFrame]:
        """Count the error and start over at the next keyframe with a fresh context (whatever it
        held references damaged pictures)."""
        self.stats.errors += 1
        self.stats.last_error = message
        self._context = self._open()
        self._need_keyframe = True
        return []

    def _finish(self, decoded: list[av.VideoFrame], timestamp: int | None) -> list[av.VideoFrame]:
        if self._last_only and len(decoded) > 1:
            decoded = decoded[-1:]  # the top spatial layer of a superframe
        out = []
        for picture in decoded:
            pts = picture.pts if picture.pts is not None else timestamp
            if picture.format.name != "yuv420p":
                picture = picture.reformat(format="yuv420p")
            picture.pts = pts
            picture.time_base = VIDEO_TIME_BASE
            out.append(picture)
        self.stats.frames_out += len(out)
        return out


def _pcm(frames: list[av.AudioFrame]) -> Pcm:
    """Audio frames as one float32 (samples, channels) array (int16 scaled by 1/32768)."""
    blocks = []
    for frame in frames:
        if frame.format.name == "flt":  # libopus's output: read in place (to_ndarray copies)
            channels = frame.layout.nb_channels
            blocks.append(
                np.frombuffer(
                    memoryview(frame.planes[0]), np.float32, frame.samples * channels
                ).reshape(-1, channels)
            )
            continue
        data = frame.to_ndarray()
        block = data.T if frame.format.is_planar else data.reshape(-1, len(frame.layout.channels))
        if block.dtype == np.int16:
            block = block.astype(np.float32) / np.float32(32768)
        blocks.append(block.astype(np.float32, copy=False))
    if not blocks:
        return np.zeros((0, 1), np.float32)
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


@functools.cache
def _resampler_delay(clock_rate: int, channels: int) -> int:
    """Output samples (48 kHz) av.AudioResampler holds back from clock_rate input: measured by
    resampling 100 ms of silence once, as the value depends on FFmpeg's filter defaults."""
    resampler = av.AudioResampler(format="flt", layout=_layout(channels), rate=OUTPUT_RATE)
    n = clock_rate // 10
    silence = av.AudioFrame.from_ndarray(
        np.zeros((1, n * channels), np.int16), format="s16", layout=_layout(channels)
    )
    silence.sample_rate = clock_rate
    got = sum(f.samples for f in resampler.resample(silence))
    return n * OUTPUT_RATE // clock_rate - got


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


class AudioDecoder:
    """Decodes one audio stream's EncodedFrames into float32 (samples, 2) blocks at 48 kHz.

    clock_rate: the stream's RTP clock (48000 for Opus, 8000 for G.711). channels: those of the
    RTP stream (G.711 with 2 carries interleaved samples); Opus is always decoded to stereo, mono
    packets to both channels. See the module docstring for where each block belongs (``delay``).
    """

    def __init__(self, codec_name: str, clock_rate: int, channels: int | None = None) -> None:
        self.codec, self.decoder = _pick("audio", codec_name, _AUDIO_DECODERS)
        self._opus = self.codec == "opus"
        if self._opus and clock_rate != OUTPUT_RATE:
            raise DecodeError(f"Opus RTP clock is 48000 Hz (RFC 7587), got {clock_rate}")
        if clock_rate <= 0 or OUTPUT_RATE % clock_rate:
            raise DecodeError(f"clock rate {clock_rate} Hz does not divide {OUTPUT_RATE} Hz")
        self.channels = channels if channels is not None else (2 if self._opus else 1)
        if self.channels not in (1, 2):
            raise DecodeError(
                f"only mono and stereo audio is decoded, not {self.channels} channels"
            )
        self.clock_rate = clock_rate
        self.ratio = OUTPUT_RATE // clock_rate
        self.delay = 0 if clock_rate == OUTPUT_RATE else _resampler_delay(clock_rate, self.channels)
        self.plc = self.decoder == "libopus"
        self.stats = DecodeStats()
        self._context = self._open()
        self._resampler: av.AudioResampler | None = None
        self._next: int | None = None  # timestamp that continues the last frame
        self._last_toc: int | None = None
        self._last_duration = 960 if self._opus else 160

    @property
    def errors(self) -> int:
        return self.stats.errors

    def position(self, timestamp: int) -> int:
        """The 48 kHz sample (on the stream's RTP clock, scaled) where the first sample decode()
        returns for a frame of this timestamp belongs: timestamp * 48000 / clock_rate - delay."""
        return timestamp * self.ratio - self.delay

    def _open(self) -> AudioCodecContext:
        context = av.CodecContext.create(self.decoder, "r")
        assert isinstance(context, AudioCodecContext)
        context.sample_rate = self.clock_rate
        context.layout = "stereo" if self._opus else _layout(self.channels)
        if self.plc:
            context.options = {"request_sample_fmt": "flt"}
        return context

    def decode(self, frame: EncodedFrame) -> Pcm:
        """The frame's audio: duration * 48000 / clock_rate samples (see ``delay``)."""
        self.stats.frames_in += 1
        if self._opus:
            pcm = self._decode_opus(frame.data)
            self._next = frame.timestamp + len(pcm)
        else:
            pcm = self._decode_g711(frame)
            self._next = frame.timestamp + len(frame.data) // self.channels
        return self._out(pcm)

    def conceal(self, samples: int) -> Pcm:
        """Audio for `samples` RTP clock units that did not arrive, continuing the stream: Opus
        packet loss concealment, else silence. Returns samples * 48000 / clock_rate samples."""
        return self._out(self._conceal(max(samples, 0)))

    def _conceal(self, samples: int) -> Pcm:
        n = samples * self.ratio
        self.stats.concealed += n
        if self._next is not None:
            self._next += samples
        if self._opus:
            return self._opus_plc(samples)
        if self._resampler is None or not samples:  # nothing to continue
            return np.zeros((n, 2), np.float32)
        silence = av.AudioFrame.from_ndarray(
            np.zeros((1, samples * self.channels), np.int16),
            format="s16",
            layout=_layout(self.channels),
        )
        silence.sample_rate = self.clock_rate
        return self._resample([silence])

    def flush(self) -> Pcm:
        """The last ``delay`` samples of the current run (G.711; Opus has none), which follow the
        last block returned. The next frame starts a new run."""
        if self._resampler is None:
            return self._out(np.zeros((0, 2), np.float32))
        pcm = _pcm(self._resampler.resample(None))
        self._resampler = None
        self._next = None
        return self._out(self._stereo(pcm))

    def _out(self, pcm: Pcm) -> Pcm:
        self.stats.frames_out += 1
        self.stats.samples_out += len(pcm)
        return np.ascontiguousarray(pcm)

    def _stereo(self, pcm: Pcm) -> Pcm:
        if not len(pcm):
            return np.zeros((0, 2), np.float32)
        return np.repeat(pcm, 2, axis=1) if pcm.shape[1] == 1 else pcm

    # -- Opus -------------------------------------------------------------------------------

    def _decode_opus(self, packet: bytes) -> Pcm:
        if not packet:  # not valid Opus (RFC 6716 §3.4 R1), but some senders' DTX
            self.stats.dtx += 1
            return np.zeros((self._last_duration, 2), np.float32)
        try:
            duration, dtx = opus_packet_samples(packet)
        except CaptureError as exc:
            self.stats.errors += 1
            self.stats.last_error = str(exc)
            return self._conceal(self._last_duration)
        self._last_duration = duration
        if dtx:
            self.stats.dtx += 1
            return np.zeros((duration, 2), np.float32)
        try:
            pcm = _pcm(self._context.decode(av.Packet(packet)))
        except av.FFmpegError as exc:
            self.stats.errors += 1
            self.stats.last_error = f"{self.decoder}: {exc}"
            return self._conceal(duration)
        self._last_toc = packet[0]
        return _fit(self._stereo(pcm), duration)

    def _opus_plc(self, samples: int) -> Pcm:
        """libopus concealment for whole frames of the last packet's size, up to one packet's
        worth (120 ms; it has faded out by then), silence for the rest."""
        if not self.plc or self._last_toc is None:
            return np.zeros((samples, 2), np.float32)
        frame = _OPUS_FRAME_SAMPLES[self._last_toc >> 3]
        count = min(samples // frame, _OPUS_MAX_PACKET // frame)
        if not count:
            return np.zeros((samples, 2), np.float32)
        lost = bytes([self._last_toc | 0x03, count])  # code 3, CBR, `count` empty frames
        try:
            pcm = self._stereo(_pcm(self._context.decode(av.Packet(lost))))
        except av.FFmpegError:
            pcm = np.zeros((0, 2), np.float32)
        return _fit(pcm, samples)

    # -- G.711 ------------------------------------------------------------------------------

    def _decode_g711(self, frame: EncodedFrame) -> Pcm:
        duration = len(frame.data) // self.channels
        if self._next is not None and frame.timestamp != self._next and self._resampler is not None:
            self.stats.discontinuities += 1
            self._resampler = None
        try:
            decoded = self._context.decode(av.Packet(frame.data))
        except av.FFmpegError as exc:  # G.711 decoders accept any bytes; kept for symmetry
            self.stats.errors += 1
            self.stats.last_error = f"{self.decoder}: {exc}"
            self._next = None
            return self._conceal(duration)
        return self._resample(decoded)

    def _resample(self, frames: list[av.AudioFrame]) -> Pcm:
        """Frames through the run's resampler; a new run begins with `delay` samples of the
        silence before it, so that the run's output is as long as its input says."""
        first = self._resampler is None
        if self._resampler is None:
            self._resampler = av.AudioResampler(
                format="flt", layout=_layout(self.channels), rate=OUTPUT_RATE
            )
        out = [f for frame in frames for f in self._resampler.resample(frame)]
        pcm = self._stereo(_pcm(out)) if out else np.zeros((0, 2), np.float32)
        if first:
            pcm = np.concatenate([np.zeros((self.delay, 2), np.float32), pcm])
        return pcm


def _fit(pcm: Pcm, samples: int) -> Pcm:
    """pcm cut or padded with silence to exactly `samples` (decoders return what the packet
    says; this only guards the timing against one that does not)."""
    if len(pcm) == samples:
        return pcm
    if len(pcm) > samples:
        return pcm[:samples]
    return np.concatenate([pcm, np.zeros((samples - len(pcm), 2), np.float32)])
