"""RTP payload formats: from one codec's RTP payloads to encoded frames a decoder accepts.

One small stateless class per codec, all with the same interface (:class:`Codec`):

* ``starts_frame(payload)``: can this packet be the first of a frame (a picture, for video)?
  The payload formats say where a frame *begins*; where it *ends* is the RTP marker bit and the
  next timestamp, which the frame assembler (``skymix.streams``) watches, not this module.
* ``depayload(payload)``: the codec bytes this packet carries. Concatenating the depayloaded
  packets of one frame, in sequence order, gives the frame as a decoder takes it (VP8/VP9 frame,
  H.264 Annex-B access unit, Opus packet, G.711 samples).
* ``frame_info(frame, first_payload)``: keyframe flag, resolution and audio duration, read from
  the assembled frame (and from the first packet's payload descriptor where the codec needs it).

Malformed input raises :class:`~skymix.errors.CaptureError` with a message that says what is
wrong; the caller adds the file, SSRC and sequence number and skips the packet.

aiortc 1.16 (pinned in pyproject.toml) is the tests' reference for the VP8 payload descriptor
(not imported here: importing aiortc costs 0.1 s at every start). Its ``codecs.depayload`` is
not used: it matches codec names case-sensitively and passes unknown
ones (VP9) through unchanged; its H.264 parser rejects 1-byte NAL units (end of sequence/stream)
and accepts FU-A headers with both S and E set, so H.264 is parsed here; VP9, keyframe
detection and the SPS / VP9 header readers do not exist in aiortc and are written here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from ..errors import CaptureError

__all__ = [
    "H264",
    "Codec",
    "FrameInfo",
    "Opus",
    "Pcma",
    "Pcmu",
    "Vp8",
    "Vp9",
    "Vp9Descriptor",
    "Vp9ScalabilityStructure",
    "codec_for",
    "h264_sps_size",
    "opus_packet_samples",
    "vp8_descriptor",
    "vp9_split_superframe",
    "vp9_superframe",
]

ANNEXB_START = b"\x00\x00\x00\x01"


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """What the stream layer needs to know about one assembled frame.

    ``keyframe``: the frame can be decoded without any earlier frame (always true for audio).
    ``width``/``height``: the coded picture size when the frame says it (VP8/VP9 keyframes, VP9
    scalability structures, H.264 frames carrying an SPS), else None.
    ``duration``: audio only, the samples the frame holds in RTP clock ticks.
    ``dtx``: audio only, the frame carries no coded audio (Opus discontinuous transmission).
    """

    keyframe: bool
    width: int | None = None
    height: int | None = None
    duration: int | None = None
    dtx: bool = False


class Codec(ABC):
    """One RTP payload format. Instances are stateless: one per codec is enough."""

    name: ClassVar[str]
    """The encoding name as an SDP ``a=rtpmap`` writes it (RFC 4855 media subtype)."""
    kind: ClassVar[Literal["audio", "video"]]
    clock_rate: ClassVar[int]

    @property
    def mime_type(self) -> str:
        return f"{self.kind}/{self.name}"

    @abstractmethod
    def starts_frame(self, payload: bytes) -> bool:
        """True if the packet is the first one of a frame according to its payload header."""

    @abstractmethod
    def depayload(self, payload: bytes) -> bytes:
        """The codec bytes of one packet, ready to concatenate with the rest of its frame."""

    @abstractmethod
    def frame_info(self, frame: bytes, first_payload: bytes) -> FrameInfo:
        """Keyframe flag, resolution and duration of an assembled frame."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _Bits:
    """MSB-first bit reader with Exp-Golomb codes (H.264 §9.1), for SPS and VP9 headers."""

    __slots__ = ("_data", "_end", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data) * 8
        self._what = what

    def u(self, n: int) -> int:
        if self._pos + n > self._end:
            raise CaptureError(f"{self._what} is truncated at bit {self._pos}")
        value = 0
        for _ in range(n):
            value = (value << 1) | ((self._data[self._pos >> 3] >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise CaptureError(f"{self._what} has an Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


# ---------------------------------------------------------------------------------------- VP8


def vp8_descriptor(payload: bytes) -> tuple[int, bytes]:
    """A VP8 RTP payload's first descriptor byte (X R N S R PID) and the data after its
    descriptor (RFC 7741 §4.2), with the checks, in the same words, of aiortc's
    VpxPayloadDescriptor.parse, which the tests hold it to."""
    if not payload:
        raise CaptureError("VPX descriptor is too short")
    pos = 1
    if payload[0] & 0x80:
        if len(payload) < 2:
            raise CaptureError("VPX descriptor has truncated extended bits")
        ext, pos = payload[1], 2
        if ext & 0x80:  # I: PictureID, 7 or 15 bits
            if len(payload) < pos + 1:
                raise CaptureError("VPX descriptor has truncated PictureID")
            if payload[pos] & 0x80 and len(payload) < pos + 2:
                raise CaptureError("VPX descriptor has truncated long PictureID")
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            if len(payload) < pos + 1:
                raise CaptureError("VPX descriptor has truncated TL0PICIDX")
            pos += 1
        if ext & 0x30:  # T or K: TID / Y / KEYIDX
            if len(payload) < pos + 1:
                raise CaptureError("VPX descriptor has truncated T/K")
            pos += 1
    return payload[0], payload[pos:]


class Vp8(Codec):
    """VP8, RFC 7741, payload descriptor (§4.2) by :func:`vp8_descriptor`.

    A frame starts with the packet that has S=1 and PID=0 (§4.4). Keyframes and their size come
    from the VP8 frame header (RFC 6386 §9.1, summarised in RFC 7741 §4.3): the inverse key
    frame bit P, then on keyframes the start code ``9d 01 2a`` and two 14-bit little-endian sizes.
    """

    name = "VP8"
    kind = "video"
    clock_rate = 90000

    def starts_frame(self, payload: bytes) -> bool:
        first, _ = vp8_descriptor(payload)
        return bool(first & 0x10) and first & 0x07 == 0  # S=1, PID=0

    def depayload(self, payload: bytes) -> bytes:
        _, data = vp8_descriptor(payload)
        if not data:
            raise CaptureError("VP8 payload has no data after its descriptor")
        return data

    def frame_info(self, frame: bytes, first_payload: bytes) -> FrameInfo:
        if not self.starts_frame(first_payload):
            raise CaptureError("VP8 frame does not begin with S=1, PID=0 (RFC 7741 §4.4)")
        if not frame:
            raise CaptureError("VP8 frame is empty")
        if frame[0] & 0x01:
            return FrameInfo(keyframe=False)
        if len(frame) < 10:
            raise CaptureError(f"VP8 keyframe header is truncated ({len(frame)} of 10 bytes)")
        if frame[3:6] != b"\x9d\x01\x2a":
            raise CaptureError("VP8 keyframe has no start code 9d 01 2a (RFC 6386 §9.1)")
        width = int.from_bytes(frame[6:8], "little") & 0x3FFF
        height = int.from_bytes(frame[8:10], "little") & 0x3FFF
        if not width or not height:
            raise CaptureError(f"VP8 keyframe has an empty size {width}x{height}")
        return FrameInfo(keyframe=True, width=width, height=height)


# ---------------------------------------------------------------------------------------- VP9


@dataclass(frozen=True, slots=True)
class Vp9ScalabilityStructure:
    """RFC 9628 §4.2.1: spatial layer sizes (when Y=1) and the picture group (when G=1).

    ``sizes`` has one ``(width, height)`` per spatial layer, lowest first, or is empty.
    ``picture_group`` has one ``(tid, switching_up, p_diffs)`` per picture of the group.
    """

    spatial_layers: int
    sizes: tuple[tuple[int, int], ...]
    picture_group: tuple[tuple[int, bool, tuple[int, ...]], ...]


@dataclass(frozen=True, slots=True)
class Vp9Descriptor:
    """The VP9 payload descriptor, RFC 9628 §4.2, in flexible (F=1) or non-flexible mode.

    Optional fields are None when their flag is clear. ``size`` is the descriptor's length in
    bytes: the VP9 bitstream starts right after it.
    """

    inter_predicted: bool  # P
    flexible: bool  # F
    start: bool  # B: first packet of a layer frame
    end: bool  # E: last packet of a layer frame
    not_reference: bool  # Z: not used by upper spatial layers of this picture
    picture_id: int | None  # 7 or 15 bits (M)
    tid: int | None  # L: temporal layer
    switching_up: bool | None  # U
    sid: int | None  # spatial layer
    inter_layer: bool | None  # D: depends on the lower spatial layer
    tl0picidx: int | None  # non-flexible mode with L
    p_diffs: tuple[int, ...]  # flexible mode with P: up to 3 reference picture distances
    ss: Vp9ScalabilityStructure | None  # V
    size: int

    @classmethod
    def parse(cls, payload: bytes) -> Vp9Descriptor:
        n = len(payload)
        if n < 1:
            raise CaptureError("VP9 payload descriptor is empty")
        b0 = payload[0]
        i_bit, p_bit, l_bit, f_bit = b0 & 0x80, b0 & 0x40, b0 & 0x20, b0 & 0x10
        pos = 1
        picture_id = None
        if i_bit:
            if pos >= n:
                raise CaptureError("VP9 payload descriptor has truncated picture ID")
            if payload[pos] & 0x80:
                if pos + 2 > n:
                    raise CaptureError("VP9 payload descriptor has truncated extended picture ID")
                picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                pos += 2
            else:
                picture_id = payload[pos]
                pos += 1
        tid = sid = tl0picidx = None
        switching_up = inter_layer = None
        if l_bit:
            if pos >= n:
                raise CaptureError("VP9 payload descriptor has truncated layer indices")
            layer = payload[pos]
            tid, switching_up = layer >> 5, bool(layer & 0x10)
            sid, inter_layer = (layer >> 1) & 0x07, bool(layer & 0x01)
            pos += 1
            if not f_bit:
                if pos >= n:
                    raise CaptureError("VP9 payload descriptor has truncated TL0PICIDX")
                tl0picidx = payload[pos]
                pos += 1
        p_diffs: list[int] = []
        if f_bit and p_bit:
            while True:
                if pos >= n:
                    raise CaptureError("VP9 payload descriptor has truncated P_DIFF")
                if len(p_diffs) == 3:
                    raise CaptureError("VP9 payload descriptor has more than 3 P_DIFF")
                p_diffs.append(payload[pos] >> 1)
                pos += 1
                if not payload[pos - 1] & 0x01:
                    break
        ss = None
        if b0 & 0x02:
            ss, pos = cls._parse_ss(payload, pos)
        return cls(
            inter_predicted=bool(p_bit),
            flexible=bool(f_bit),
            start=bool(b0 & 0x08),
            end=bool(b0 & 0x04),
            not_reference=bool(b0 & 0x01),
            picture_id=picture_id,
            tid=tid,
            switching_up=switching_up,
            sid=sid,
            inter_layer=inter_layer,
            tl0picidx=tl0picidx,
            p_diffs=tuple(p_diffs),
            ss=ss,
            size=pos,
        )

    @staticmethod
    def _parse_ss(payload: bytes, pos: int) -> tuple[Vp9ScalabilityStructure, int]:
        n = len(payload)
        if pos >= n:
            raise CaptureError("VP9 scalability structure is truncated")
        head = payload[pos]
        pos += 1
        layers = (head >> 5) + 1
        sizes: list[tuple[int, int]] = []
        if head & 0x10:
            if pos + 4 * layers > n:
                raise CaptureError(
                    f"VP9 scalability structure has truncated sizes of {layers} layers"
                )
            for _ in range(layers):
                width = int.from_bytes(payload[pos : pos + 2])
                height = int.from_bytes(payload[pos + 2 : pos + 4])
                sizes.append((width, height))
                pos += 4
        group: list[tuple[int, bool, tuple[int, ...]]] = []
        if head & 0x08:
            if pos >= n:
                raise CaptureError("VP9 scalability structure has truncated N_G")
            count = payload[pos]
            pos += 1
            for _ in range(count):
                if pos >= n:
                    raise CaptureError("VP9 scalability structure has a truncated picture group")
                entry = payload[pos]
                refs = (entry >> 2) & 0x03
                if pos + 1 + refs > n:
                    raise CaptureError("VP9 scalability structure has truncated P_DIFF")
                p_diffs = tuple(payload[pos + 1 : pos + 1 + refs])
                group.append((entry >> 5, bool(entry & 0x10), p_diffs))
                pos += 1 + refs
        return Vp9ScalabilityStructure(layers, tuple(sizes), tuple(group)), pos


class Vp9(Codec):
    """VP9, RFC 9628 (flexible and non-flexible mode, layer indices, scalability structure).

    A picture starts with the packet that has B=1 in its lowest spatial layer (SID 0, or no
    layer indices). With spatial scalability one picture (one RTP timestamp, the marker bit on
    its last packet) holds one *layer frame* per spatial layer, each from a packet with B=1 to
    one with E=1 (§4.2). :meth:`depayload_frame` turns a picture's payloads into what a decoder
    takes: the layer frame as it is when there is one, else the layer frames wrapped in a VP9
    superframe (VP9 bitstream spec Annex B), the form libvpx's SVC encoder writes and both
    libvpx's and FFmpeg's decoders read. The per-packet :meth:`depayload` only strips the
    descriptor: concatenating its results is right for single-layer pictures only.

    A keyframe is a picture whose first packet has P=0 *and* whose base layer frame header
    (VP9 bitstream spec §6.2, ``frame_type``) says KEY_FRAME: P alone is not enough because
    some packetisers (FFmpeg's, which implements an early draft) never set P, and upper layers
    of a key picture are inter frames (predicted from the base layer). The size is that of the
    picture's top layer, the one a decoder of all layers shows (libvpx outputs only the last
    frame of a superframe; FFmpeg's own decoder outputs each layer frame that has show_frame set,
    as libvpx's SVC encoder sets it on all, the top one last): from the scalability structure
    when the first packet carries one with sizes (its top spatial layer), else from the top
    layer frame's header when that codes its size (keyframes, intra-only frames, inter frames
    with an explicit size or whose reference got its size earlier in the same picture), else
    None.
    """

    name = "VP9"
    kind = "video"
    clock_rate = 90000

    def starts_frame(self, payload: bytes) -> bool:
        d = Vp9Descriptor.parse(payload)
        return d.start and not d.sid

    def depayload(self, payload: bytes) -> bytes:
        d = Vp9Descriptor.parse(payload)
        if d.size == len(payload):
            raise CaptureError("VP9 payload has no data after its descriptor")
        return payload[d.size :]

    def depayload_frame(self, payloads: Sequence[bytes]) -> bytes:
        """The picture carried by one RTP timestamp's payloads, given in sequence order.

        A new layer frame begins at each packet with B=1. One layer frame is returned as it is,
        byte for byte what concatenating :meth:`depayload` gives; several are wrapped in a
        superframe (VP9 spec Annex B): the frames, then an index of their sizes. A layer frame
        that is already a superframe (libvpx packs a hidden alt-ref frame with the next shown
        one so, and packetisers such as FFmpeg's send that as one frame) has its frames taken
        into the picture's superframe: superframes do not nest.
        """
        layers: list[list[bytes]] = []
        for payload in payloads:
            d = Vp9Descriptor.parse(payload)
            if d.size == len(payload):
                raise CaptureError("VP9 payload has no data after its descriptor")
            if d.start or not layers:
                layers.append([])
            layers[-1].append(payload[d.size :])
        if not layers:
            raise CaptureError("VP9 picture has no packets")
        if len(layers) == 1:
            return b"".join(layers[0])
        return vp9_superframe(
            [frame for layer in layers for frame in vp9_split_superframe(b"".join(layer))]
        )

    def frame_info(self, frame: bytes, first_payload: bytes) -> FrameInfo:
        d = Vp9Descriptor.parse(first_payload)
        if not (d.start and not d.sid):
            raise CaptureError(
                "VP9 frame does not begin with B=1 in spatial layer 0 (RFC 9628 §4.2)"
            )
        frames = vp9_split_superframe(frame)
        slots: list[tuple[int, int] | None] = [None] * 8  # reference slot sizes, as far as known
        key, size = _vp9_frame_header(frames[0], slots)
        for layer in frames[1:]:
            size = _vp9_frame_header(layer, slots)[1]
        if d.ss is not None and d.ss.sizes:
            size = d.ss.sizes[-1]
        width, height = size if size is not None else (None, None)
        return FrameInfo(keyframe=key and not d.inter_predicted, width=width, height=height)


def vp9_split_superframe(data: bytes) -> list[bytes]:
    """The frames of a VP9 superframe (VP9 bitstream spec Annex B), or ``[data]`` if it is none.

    A superframe ends with an index: a marker byte ``0b110mmfff``, the sizes of the fff+1
    frames in mm+1 bytes each (little-endian), the marker byte again (B.4 says how decoders
    detect it). Raises CaptureError when the index is there but does not fit the data.
    """
    if not data or data[-1] & 0xE0 != 0xC0:
        return [data]
    marker = data[-1]
    size_bytes, count = ((marker >> 3) & 0x03) + 1, (marker & 0x07) + 1
    index_size = 2 + size_bytes * count
    if len(data) < index_size or data[-index_size] != marker:
        return [data]
    frames, pos, end = [], 0, len(data) - index_size
    for i in range(count):
        start = len(data) - index_size + 1 + i * size_bytes
        size = int.from_bytes(data[start : start + size_bytes], "little")
        if not size:
            raise CaptureError(f"VP9 superframe index gives frame {i} of {count} no bytes")
        if pos + size > end:
            raise CaptureError(
                f"VP9 superframe index overruns the data: frame {i} of {count} needs {size}"
                f" bytes, {end - pos} are left"
            )
        frames.append(data[pos : pos + size])
        pos += size
    return frames


def vp9_superframe(frames: Sequence[bytes]) -> bytes:
    """Frames wrapped in a VP9 superframe (VP9 bitstream spec Annex B) as libvpx writes it.

    Sizes take the fewest bytes (1 to 4) that hold the largest frame; a superframe holds at
    most 8 frames.
    """
    count = len(frames)
    if not 0 < count <= 8:
        raise CaptureError(f"VP9 superframe cannot hold {count} frames (1 to 8)")
    largest = max(len(f) for f in frames)
    if not min(len(f) for f in frames):
        raise CaptureError("VP9 superframe cannot hold an empty frame")
    size_bytes = next((n for n in (1, 2, 3, 4) if largest < 1 << (8 * n)), None)
    if size_bytes is None:
        raise CaptureError(f"VP9 frame of {largest} bytes is too large for a superframe")
    marker = bytes([0xC0 | (size_bytes - 1) << 3 | (count - 1)])
    sizes = b"".join(len(f).to_bytes(size_bytes, "little") for f in frames)
    return b"".join(frames) + marker + sizes + marker


def _vp9_color_config(bits: _Bits, profile: int) -> None:
    """Skip color_config(), VP9 bitstream spec §6.2.2."""
    if profile >= 2:
        bits.u(1)  # ten_or_twelve_bit
    color_space = bits.u(3)
    if color_space != 7:  # not CS_RGB
        bits.u(1)  # color_range
        if profile in (1, 3):
            bits.u(3)  # subsampling_x, subsampling_y, reserved_zero
    elif profile in (1, 3):
        bits.u(1)  # reserved_zero


def _vp9_frame_header(
    frame: bytes, slots: list[tuple[int, int] | None]
) -> tuple[bool, tuple[int, int] | None]:
    """(keyframe, size) from one frame's uncompressed header, VP9 bitstream spec §6.2.

    ``slots`` holds the sizes of the 8 reference frame slots where known (None where not); the
    frame's refresh_frame_flags update it, so a picture's frames are read in decoding order with
    one list. The size is None when the frame takes it from a slot whose size is not known.
    """
    bits = _Bits(frame, "VP9 frame header")
    if bits.u(2) != 2:
        raise CaptureError("VP9 frame header has a bad frame marker")
    profile = bits.u(1)
    profile |= bits.u(1) << 1
    if profile == 3:
        bits.u(1)  # reserved_zero
    if bits.u(1):  # show_existing_frame: repeats a decoded frame, codes nothing
        return False, slots[bits.u(3)]  # frame_to_show_map_idx
    key = not bits.u(1)  # frame_type 0: KEY_FRAME
    show_frame = bits.u(1)
    error_resilient = bits.u(1)
    size: tuple[int, int] | None
    if key:
        if bits.u(24) != 0x498342:
            raise CaptureError("VP9 keyframe has a bad sync code")
        _vp9_color_config(bits, profile)
        size = bits.u(16) + 1, bits.u(16) + 1
        slots[:] = [size] * 8
        return True, size
    intra_only = 0 if show_frame else bits.u(1)
    if not error_resilient:
        bits.u(2)  # reset_frame_context
    if intra_only:
        if bits.u(24) != 0x498342:
            raise CaptureError("VP9 intra-only frame has a bad sync code")
        if profile:
            _vp9_color_config(bits, profile)
        refresh = bits.u(8)
        size = bits.u(16) + 1, bits.u(16) + 1
    else:
        refresh = bits.u(8)
        refs = []
        for _ in range(3):
            refs.append(bits.u(3))  # ref_frame_idx
            bits.u(1)  # ref_frame_sign_bias
        for ref in refs:  # frame_size_with_refs(): found_ref takes the size of that reference
            if bits.u(1):
                size = slots[ref]
                break
        else:
            size = bits.u(16) + 1, bits.u(16) + 1
    for i in range(8):
        if refresh >> i & 1:  # refresh_frame_flags: bit i refreshes slot i
            slots[i] = size
    return False, size


# --------------------------------------------------------------------------------------- H.264

_H264_UNSUPPORTED = {
    0: "reserved",
    25: "STAP-B",
    26: "MTAP16",
    27: "MTAP24",
    29: "FU-B",
    30: "reserved",
    31: "reserved",
}


def _h264_unsupported(nal_type: int) -> CaptureError:
    return CaptureError(
        f"H.264 packet type {nal_type} ({_H264_UNSUPPORTED[nal_type]}) is not supported"
    )


# profile_idc values whose SPS carries chroma_format_idc etc. (H.264 §7.3.2.1.1)
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


class H264(Codec):
    """H.264, RFC 6184 in packetization modes 0 and 1: single NAL unit, STAP-A, FU-A.

    Depayloading gives Annex-B (a 4-byte start code before every NAL unit). STAP-B, MTAP and
    FU-B exist only in interleaved mode (§5.4), which WebRTC and FFmpeg do not send: they are
    refused. A packet can begin a frame when it begins a NAL unit (single NAL, STAP-A, FU-A with
    S=1); the payload format has no picture-start flag, so the timestamp and marker decide.

    Keyframe means the frame holds an IDR slice (NAL type 5), the only picture a decoder can
    start from. It decodes on its own when the SPS/PPS came with it (as libwebrtc, libx264 and
    FFmpeg send them) or earlier. Width and height come from the frame's SPS (type 7), if any.
    """

    name = "H264"
    kind = "video"
    clock_rate = 90000

    def starts_frame(self, payload: bytes) -> bool:
        if not payload:
            raise CaptureError("H.264 payload is empty")
        nal_type = payload[0] & 0x1F
        if nal_type == 28:
            if len(payload) < 2:
                raise CaptureError("H.264 FU-A has no FU header")
            return bool(payload[1] & 0x80)
        if nal_type in _H264_UNSUPPORTED:
            raise _h264_unsupported(nal_type)
        return True

    def depayload(self, payload: bytes) -> bytes:
        n = len(payload)
        if not n:
            raise CaptureError("H.264 payload is empty")
        nal_type = payload[0] & 0x1F
        if nal_type < 24 and nal_type:
            return ANNEXB_START + payload
        if nal_type == 24:  # STAP-A, §5.7.1
            if n == 1:
                raise CaptureError("H.264 STAP-A holds no NAL unit")
            parts = []
            pos = 1
            while pos < n:
                if pos + 2 > n:
                    raise CaptureError(f"H.264 STAP-A has a truncated NAL unit size at byte {pos}")
                size = (payload[pos] << 8) | payload[pos + 1]
                pos += 2
                if size == 0:
                    raise CaptureError(f"H.264 STAP-A has an empty NAL unit at byte {pos - 2}")
                if pos + size > n:
                    raise CaptureError(
                        f"H.264 STAP-A NAL unit at byte {pos} needs {size} bytes, has {n - pos}"
                    )
                inner = payload[pos] & 0x1F
                if not 0 < inner < 24:
                    raise CaptureError(f"H.264 STAP-A holds a NAL unit of type {inner}")
                parts.append(ANNEXB_START)
                parts.append(payload[pos : pos + size])
                pos += size
            return b"".join(parts)
        if nal_type == 28:  # FU-A, §5.8
            if n < 3:
                raise CaptureError(f"H.264 FU-A is truncated ({n} bytes, needs 3)")
            fu = payload[1]
            inner = fu & 0x1F
            if not 0 < inner < 24:
                raise CaptureError(f"H.264 FU-A fragments a NAL unit of type {inner}")
            if fu & 0xC0 == 0xC0:
                raise CaptureError("H.264 FU-A has both start and end bits set")
            if fu & 0x80:
                return ANNEXB_START + bytes([(payload[0] & 0xE0) | inner]) + payload[2:]
            return payload[2:]
        raise _h264_unsupported(nal_type)

    def frame_info(self, frame: bytes, first_payload: bytes) -> FrameInfo:
        if not self.starts_frame(first_payload):
            raise CaptureError("H.264 frame begins inside a fragmented NAL unit (FU-A without S)")
        keyframe = False
        size: tuple[int, int] | None = None
        pos = frame.find(b"\x00\x00\x01")
        if pos < 0:
            raise CaptureError("H.264 frame has no Annex-B start code")
        while pos >= 0:
            start = pos + 3
            pos = frame.find(b"\x00\x00\x01", start)
            if start >= len(frame):
                break
            nal_type = frame[start] & 0x1F
            if nal_type == 5:
                keyframe = True
            elif nal_type == 7 and size is None:
                size = h264_sps_size(frame[start + 1 : len(frame) if pos < 0 else pos])
        if size is None:
            return FrameInfo(keyframe=keyframe)
        return FrameInfo(keyframe=keyframe, width=size[0], height=size[1])


def h264_sps_size(rbsp: bytes) -> tuple[int, int]:
    """Cropped picture size from an SPS without its NAL header (H.264 §7.3.2.1.1, §7.4.2.1.1).

    Emulation prevention bytes (§7.4.1) are removed first. Handles the High profiles' chroma
    format and scaling lists, both picture order count types, field coding and cropping.
    """
    bits = _Bits(rbsp.replace(b"\x00\x00\x03", b"\x00\x00"), "H.264 SPS")
    profile_idc = bits.u(8)
    bits.u(16)  # constraint flags, reserved bits, level_idc
    bits.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_planes = 0
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc > 3:
            raise CaptureError(f"H.264 SPS has chroma_format_idc {chroma_format_idc}")
        if chroma_format_idc == 3:
            separate_planes = bits.u(1)
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if bits.u(1):  # seq_scaling_list_present_flag[i], then scaling_list() §7.3.2.1.1.1
                    last = next_scale = 8
                    for _ in range(16 if i < 6 else 64):
                        if next_scale:
                            next_scale = (last + bits.se()) % 256
                        last = next_scale or last
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.u(1)  # delta_pic_order_always_zero_flag
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        for _ in range(bits.ue()):  # num_ref_frames_in_pic_order_cnt_cycle
            bits.se()
    elif poc_type != 2:
        raise CaptureError(f"H.264 SPS has pic_order_cnt_type {poc_type}")
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if bits.u(1):  # frame_cropping_flag; crop units from Table 6-1 and (7-19)..(7-22)
        chroma_array_type = 0 if separate_planes else chroma_format_idc
        unit_x = 1 if chroma_array_type in (0, 3) else 2
        unit_y = (2 if chroma_array_type == 1 else 1) * (2 - frame_mbs_only)
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
        if width <= 0 or height <= 0:
            raise CaptureError("H.264 SPS crops the picture to nothing")
    return width, height


# ---------------------------------------------------------------------------------------- Opus

# Samples at 48 kHz per frame for each TOC configuration, RFC 6716 §3.1 Table 2.
_OPUS_FRAME_SAMPLES = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4


def _opus_frame_length(packet: bytes, pos: int) -> tuple[int, int]:
    """A frame length coded in one or two bytes (RFC 6716 §3.2.1) and the position after it."""
    if pos >= len(packet):
        raise CaptureError("Opus packet has a truncated frame length")
    first = packet[pos]
    if first < 252:
        return first, pos + 1
    if pos + 1 >= len(packet):
        raise CaptureError("Opus packet has a truncated frame length")
    return packet[pos + 1] * 4 + first, pos + 2


def opus_packet_samples(packet: bytes) -> tuple[int, bool]:
    """(samples at 48 kHz, no coded audio) of an Opus packet, checked against RFC 6716 §3.4.

    Parses the TOC byte and the frame count code (§3.2) and enforces requirements R1-R7, so a
    packet accepted here is one libopus's ``opus_packet_parse`` accepts too. A packet whose
    frames are all empty is the DTX/lost marker of §3.2.1 (libopus in DTX sends TOC-only).
    """
    n = len(packet)
    if not n:
        raise CaptureError("Opus packet is empty (RFC 6716 §3.4 R1)")
    toc = packet[0]
    frame_samples = _OPUS_FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    if code == 0:
        lengths = [n - 1]
    elif code == 1:
        if (n - 1) % 2:
            raise CaptureError("Opus code 1 packet has an odd payload length (RFC 6716 §3.4 R3)")
        lengths = [(n - 1) // 2] * 2
    elif code == 2:
        first, pos = _opus_frame_length(packet, 1)
        if first > n - pos:
            raise CaptureError("Opus code 2 packet's first frame overruns it (RFC 6716 §3.4 R4)")
        lengths = [first, n - pos - first]
    else:
        if n < 2:
            raise CaptureError("Opus code 3 packet has no frame count byte (RFC 6716 §3.4 R6)")
        count = packet[1] & 0x3F
        if not count or count * frame_samples > 5760:
            raise CaptureError(f"Opus code 3 packet has {count} frames (RFC 6716 §3.4 R5)")
        pos = 2
        padding = 0
        if packet[1] & 0x40:
            while True:
                if pos >= n:
                    raise CaptureError(
                        "Opus code 3 packet has truncated padding (RFC 6716 §3.4 R6)"
                    )
                step = packet[pos]
                pos += 1
                padding += 254 if step == 255 else step
                if step != 255:
                    break
        if packet[1] & 0x80:  # VBR: all but the last frame length are coded
            lengths = []
            for _ in range(count - 1):
                length, pos = _opus_frame_length(packet, pos)
                lengths.append(length)
            last = n - pos - padding - sum(lengths)
            if last < 0:
                raise CaptureError("Opus code 3 packet's frames overrun it (RFC 6716 §3.4 R7)")
            lengths.append(last)
        else:
            room = n - pos - padding
            if room < 0 or room % count:
                raise CaptureError(
                    "Opus code 3 CBR packet's length is not a multiple of its frames"
                    " (RFC 6716 §3.4 R6)"
                )
            lengths = [room // count] * count
    if max(lengths) > 1275:
        raise CaptureError("Opus packet has a frame longer than 1275 bytes (RFC 6716 §3.4 R2)")
    return frame_samples * len(lengths), not any(lengths)


class Opus(Codec):
    """Opus, RFC 7587: one Opus packet per RTP payload, taken as it is (§4.2); 48 kHz clock.

    Duration and DTX come from the TOC byte and frame count code (RFC 6716 §3.1, §3.2).
    """

    name = "opus"
    kind = "audio"
    clock_rate = 48000

    def starts_frame(self, payload: bytes) -> bool:
        return True

    def depayload(self, payload: bytes) -> bytes:
        if not payload:
            raise CaptureError("Opus packet is empty (RFC 6716 §3.4 R1)")
        return payload

    def frame_info(self, frame: bytes, first_payload: bytes) -> FrameInfo:
        samples, dtx = opus_packet_samples(frame)
        return FrameInfo(keyframe=True, duration=samples, dtx=dtx)


class _G711(Codec):
    """G.711 (RFC 3551 §4.5.14): one byte per sample at 8 kHz, payload taken as it is."""

    kind = "audio"
    clock_rate = 8000

    def starts_frame(self, payload: bytes) -> bool:
        return True

    def depayload(self, payload: bytes) -> bytes:
        if not payload:
            raise CaptureError(f"{self.name} payload is empty")
        return payload

    def frame_info(self, frame: bytes, first_payload: bytes) -> FrameInfo:
        if not frame:
            raise CaptureError(f"{self.name} frame is empty")
        return FrameInfo(keyframe=True, duration=len(frame))


class Pcmu(_G711):
    """G.711 mu-law, static payload type 0."""

    name = "PCMU"


class Pcma(_G711):
    """G.711 A-law, static payload type 8."""

    name = "PCMA"


_CODECS: dict[str, Codec] = {
    c.name.lower(): c for c in (Vp8(), Vp9(), H264(), Opus(), Pcmu(), Pcma())
}


def codec_for(name: str) -> Codec:
    """The codec for an encoding name or MIME type, any case: "VP8", "video/vp8", "opus"...

    Raises CaptureError for names it does not know or a MIME type of the wrong kind.
    """
    kind, slash, subtype = name.strip().lower().rpartition("/")
    codec = _CODECS.get(subtype)
    if codec is None or (slash and kind != codec.kind):
        raise CaptureError(f"unsupported codec {name!r} (known: VP8, VP9, H264, opus, PCMU, PCMA)")
    return codec
