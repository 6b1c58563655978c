"""What a capture means: who the participants are, which streams are theirs, which codec is which.

The SDP parser, the manifest loader and the packet guesser all produce these plain, frozen
values; the stream stage asks a SessionSpec which participant and stream each datagram belongs to.

Matching rules (SessionSpec.match_rtp / match_rtcp), most specific first:

1. SSRC: a declared SSRC (media, simulcast layer or RTX) names its stream exactly. An SSRC may be
   declared once in a session.
2. Port: otherwise a stream whose port equals the datagram's destination port, or failing that
   its source port (a WebRTC endpoint sends from the port it receives on), and whose host is
   unset, unspecified (0.0.0.0, ::) or equal to that endpoint's host. If several streams share
   the port, the payload type picks the one that declares it. This is the FFmpeg ``-sdp_file``
   route: no SSRCs, one port per stream.
3. Nothing else: a datagram that matches neither is not part of the description (the caller
   counts it). Payload types alone never pick a participant.

Times (ParticipantSpec.joins / leaves) are integer nanoseconds since the Unix epoch on the
relay's clock, the clock of the capture's arrival times (ingest.records.Datagram.arrival_ns),
so they compare with arrival times directly whatever file a capture starts with.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType
from typing import Literal, Protocol, TypeVar

from ..errors import DescriptionError

__all__ = [
    "Address",
    "CodecSpec",
    "Direction",
    "MediaKind",
    "ParticipantSpec",
    "SessionSpec",
    "StreamMatch",
    "StreamSpec",
    "canonical_host",
    "resolve_rtcp_port",
]

MediaKind = Literal["audio", "video"]
Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]

_UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::"})
_K = TypeVar("_K")
_V = TypeVar("_V")


class Address(Protocol):
    """A UDP endpoint as readers report it (ingest.records.Endpoint fits)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def canonical_host(host: str) -> str:
    """An IP address in the form socket.inet_ntop writes it (what readers report); names as given.

    Lets "::0001" in an SDP equal "::1" from a pcap without parsing addresses per datagram.
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def resolve_rtcp_port(port: int | None, rtcp_mux: bool, rtcp_port: int | None) -> int | None:
    """Where a stream's RTCP goes: its RTP port under rtcp-mux (RFC 5761), else the port given
    (a=rtcp, RFC 3605), else RTP port + 1 (RFC 3550 §11); None when the stream has no port."""
    if port is None:
        return None
    if rtcp_mux:
        return port
    if rtcp_port is not None:
        return rtcp_port
    return port + 1 if port < 65535 else None


def _frozen_map(mapping: Mapping[_K, _V]) -> Mapping[_K, _V]:
    """A read-only copy, so a frozen spec's mappings cannot change under it either."""
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """One payload type of a stream: a=rtpmap (+ a=fmtp) or a manifest codec entry.

    name is lowercased ("vp8", "h264", "opus", "pcmu") because SDP encoding names are
    case-insensitive and aiortc's own lookups are not; fmtp keys are lowercased for the same
    reason, values kept as written. A parameter without "=" (red's "111/111") is a key with "".
    """

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise DescriptionError(f"payload type {self.payload_type} is not 0..127")
        if self.clock_rate <= 0 or self.channels <= 0:
            raise DescriptionError(
                f"payload type {self.payload_type}: clock rate and channels must be positive"
            )
        object.__setattr__(self, "name", self.name.lower())
        object.__setattr__(self, "fmtp", _frozen_map(self.fmtp))


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One RTP stream of a participant (one m= section, or one manifest stream).

    port/host: where its RTP goes (None when ICE negotiated it, the JSEP placeholder port 9).
    rtcp_port: resolved at load time: a=rtcp, else the RTP port under rtcp-mux, else port + 1
    (RFC 3550 §11); None without a port. ssrcs: media SSRCs, simulcast layers in SIM order.
    codecs: payload type -> codec. rtx: RTX payload type -> the payload type it repairs (apt).
    rtx_ssrcs: RTX SSRC -> media SSRC (a=ssrc-group:FID). extmap: header extension id -> URI.
    The mappings are read-only views, so a spec compares by value but is not hashable.
    """

    kind: MediaKind
    port: int | None = None
    rtcp_port: int | None = None
    rtcp_mux: bool = False
    ssrcs: tuple[int, ...] = ()
    codecs: Mapping[int, CodecSpec] = field(default_factory=dict)
    rtx: Mapping[int, int] = field(default_factory=dict)
    rtx_ssrcs: Mapping[int, int] = field(default_factory=dict)
    extmap: Mapping[int, str] = field(default_factory=dict)
    mid: str | None = None
    host: str | None = None
    direction: Direction = "sendrecv"
    cname: str | None = None
    msid: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("audio", "video"):
            raise DescriptionError(f"stream kind must be 'audio' or 'video', got {self.kind!r}")
        for port in (self.port, self.rtcp_port):
            if port is not None and not 1 <= port <= 65535:
                raise DescriptionError(f"port {port} is not 1..65535")
        for pt, codec in self.codecs.items():
            if codec.payload_type != pt:
                raise DescriptionError(f"codec for payload type {pt} says {codec.payload_type}")
        for rtx_pt, apt in self.rtx.items():
            if apt not in self.codecs:
                raise DescriptionError(f"RTX payload type {rtx_pt} repairs undeclared {apt}")
            if rtx_pt in self.codecs:
                raise DescriptionError(f"payload type {rtx_pt} is both RTX and a codec")
        declared = [*self.ssrcs, *self.rtx_ssrcs]
        twice = sorted({ssrc for ssrc in declared if declared.count(ssrc) > 1})
        if twice:
            raise DescriptionError(f"ssrc {twice[0]} is declared twice in one stream")
        for rtx_ssrc, media_ssrc in self.rtx_ssrcs.items():
            if media_ssrc not in self.ssrcs:
                raise DescriptionError(f"RTX ssrc {rtx_ssrc} repairs undeclared ssrc {media_ssrc}")
        if self.host is not None:
            object.__setattr__(self, "host", canonical_host(self.host))
        for name in ("codecs", "rtx", "rtx_ssrcs", "extmap"):
            object.__setattr__(self, name, _frozen_map(getattr(self, name)))

    def declares(self, payload_type: int) -> bool:
        """Whether this stream carries the payload type (as a codec or as RTX)."""
        return payload_type in self.codecs or payload_type in self.rtx

    def label(self) -> str:
        """A short human name for messages: "video", "audio mid 0", "video :5004"."""
        if self.mid is not None:
            return f"{self.kind} mid {self.mid}"
        if self.port is not None:
            return f"{self.kind} :{self.port}"
        return self.kind


@dataclass(frozen=True, slots=True)
class ParticipantSpec:
    """A participant: an id the manifest refers to, a display name, its streams and presence.

    joins/leaves: ns since the Unix epoch on the relay's clock (sorted here), alternating in
    time. A leave before the first join means present from the start of the capture; a
    join after the last leave, present to its end. Both empty: presence comes from the media.
    described_by: where the description came from, for messages ("alice.sdp", "room.json
    participants[1]"); not part of the value.
    """

    id: str
    name: str
    streams: tuple[StreamSpec, ...]
    joins: tuple[int, ...] = ()
    leaves: tuple[int, ...] = ()
    described_by: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "joins", tuple(sorted(self.joins)))
        object.__setattr__(self, "leaves", tuple(sorted(self.leaves)))
        events = sorted([(t, "join") for t in self.joins] + [(t, "leave") for t in self.leaves])
        for (t0, kind0), (t1, kind1) in pairwise(events):
            if t0 == t1 or kind0 == kind1:
                raise DescriptionError(
                    f"participant {self.id!r}: joins and leaves must alternate in time, got "
                    f"a {kind0} at {t0} ns then a {kind1} at {t1} ns"
                )

    def presence(self) -> tuple[tuple[int | None, int | None], ...]:
        """Intervals (join, leave) in ns; None is the start or end of the capture."""
        events = sorted([(t, "join") for t in self.joins] + [(t, "leave") for t in self.leaves])
        intervals: list[tuple[int | None, int | None]] = []
        start: int | None = None
        for i, (t, kind) in enumerate(events):
            if kind == "join":
                start = t
                if i == len(events) - 1:
                    intervals.append((start, None))
            else:
                intervals.append((start, t))
        return tuple(intervals)


@dataclass(frozen=True, slots=True)
class StreamMatch:
    """Which participant and stream a datagram belongs to, and how that was decided.

    codec: the media codec (for RTX, the codec it repairs); None when the payload type is not
    declared by the stream (or for RTCP). rtx: the packet is an RFC 4588 retransmission.
    """

    participant: ParticipantSpec
    stream: StreamSpec
    codec: CodecSpec | None
    rtx: bool
    by: Literal["ssrc", "port"]


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """The whole description: participants in order, plus the indexes the lookups use.

    An empty SessionSpec means nothing was described: every stream is guessed (session.detect).
    """

    participants: tuple[ParticipantSpec, ...]
    #: the files the description was read from, by role ("SDP file 1", "the manifest", "the
    #: SDP file of 'ada'"): a job's inputs too, which no output may replace
    files: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    _by_ssrc: dict[int, tuple[ParticipantSpec, StreamSpec]] = field(
        init=False, repr=False, compare=False
    )
    _by_port: dict[int, list[tuple[ParticipantSpec, StreamSpec]]] = field(
        init=False, repr=False, compare=False
    )
    _by_rtcp_port: dict[int, list[tuple[ParticipantSpec, StreamSpec]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_ssrc: dict[int, tuple[ParticipantSpec, StreamSpec]] = {}
        by_port: dict[int, list[tuple[ParticipantSpec, StreamSpec]]] = {}
        by_rtcp_port: dict[int, list[tuple[ParticipantSpec, StreamSpec]]] = {}
        ids: set[str] = set()
        for p in self.participants:
            if p.id in ids:
                raise DescriptionError(f"participant id {p.id!r} is used twice")
            ids.add(p.id)
            for s in p.streams:
                for ssrc in (*s.ssrcs, *s.rtx_ssrcs):
                    if ssrc in by_ssrc:
                        other_p, other_s = by_ssrc[ssrc]
                        raise DescriptionError(
                            f"ssrc {ssrc} is declared by {other_p.id!r} {other_s.label()} and "
                            f"{p.id!r} {s.label()}"
                        )
                    by_ssrc[ssrc] = (p, s)
                if s.port is not None:
                    for other_p, other_s in by_port.get(s.port, []):
                        _check_port_sharing(other_p, other_s, p, s)
                    by_port.setdefault(s.port, []).append((p, s))
                if s.rtcp_port is not None:
                    by_rtcp_port.setdefault(s.rtcp_port, []).append((p, s))
        object.__setattr__(self, "_by_ssrc", by_ssrc)
        object.__setattr__(self, "_by_port", by_port)
        object.__setattr__(self, "_by_rtcp_port", by_rtcp_port)

    def participant(self, participant_id: str) -> ParticipantSpec:
        """The participant with this id; KeyError if there is none."""
        for p in self.participants:
            if p.id == participant_id:
                return p
        raise KeyError(participant_id)

    def match_rtp(
        self, ssrc: int, payload_type: int, src: Address | None = None, dst: Address | None = None
    ) -> StreamMatch | None:
        """The stream an RTP packet belongs to (module docstring: SSRC, then port + PT)."""
        hit = self._by_ssrc.get(ssrc)
        if hit is not None:
            return _rtp_match(hit, payload_type, "ssrc")
        for endpoint in (dst, src):
            if endpoint is None:
                continue
            candidates = _on_host(self._by_port.get(endpoint.port, ()), endpoint.host)
            declaring = [c for c in candidates if c[1].declares(payload_type)]
            if len(declaring) == 1:
                return _rtp_match(declaring[0], payload_type, "port")
            if not declaring and len(candidates) == 1:
                return _rtp_match(candidates[0], payload_type, "port")
            if candidates:
                return None
        return None

    def match_rtcp(
        self, ssrc: int, src: Address | None = None, dst: Address | None = None
    ) -> StreamMatch | None:
        """The stream an RTCP packet (sent by ``ssrc``) belongs to: by SSRC, else RTCP port."""
        hit = self._by_ssrc.get(ssrc)
        if hit is not None:
            return StreamMatch(hit[0], hit[1], None, False, "ssrc")
        for endpoint in (dst, src):
            if endpoint is None:
                continue
            candidates = _on_host(self._by_rtcp_port.get(endpoint.port, ()), endpoint.host)
            if len(candidates) == 1:
                return StreamMatch(candidates[0][0], candidates[0][1], None, False, "port")
            if candidates:
                return None
        return None


def _on_host(
    candidates: Sequence[tuple[ParticipantSpec, StreamSpec]], host: str
) -> list[tuple[ParticipantSpec, StreamSpec]]:
    return [
        c
        for c in candidates
        if c[1].host is None or c[1].host in _UNSPECIFIED_HOSTS or c[1].host == host
    ]


def _rtp_match(
    hit: tuple[ParticipantSpec, StreamSpec], payload_type: int, by: Literal["ssrc", "port"]
) -> StreamMatch:
    participant, stream = hit
    apt = stream.rtx.get(payload_type)
    codec = stream.codecs.get(payload_type if apt is None else apt)
    return StreamMatch(participant, stream, codec, apt is not None, by)


def _check_port_sharing(
    p1: ParticipantSpec, s1: StreamSpec, p2: ParticipantSpec, s2: StreamSpec
) -> None:
    """Two streams on one port must differ by host, by payload types, or both declare SSRCs."""
    hosts_overlap = (
        s1.host is None
        or s2.host is None
        or s1.host in _UNSPECIFIED_HOSTS
        or s2.host in _UNSPECIFIED_HOSTS
        or s1.host == s2.host
    )
    if not hosts_overlap or (s1.ssrcs and s2.ssrcs):
        return
    shared = sorted((set(s1.codecs) | set(s1.rtx)) & (set(s2.codecs) | set(s2.rtx)))
    if shared:
        raise DescriptionError(
            f"port {s1.port}: {p1.id!r} {s1.label()} and {p2.id!r} {s2.label()} both use "
            f"payload type {shared[0]}, so packets cannot be told apart; declare their SSRCs"
        )
