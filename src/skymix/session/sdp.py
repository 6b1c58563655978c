"""SDP (RFC 8866) as FFmpeg's ``-sdp_file`` and WebRTC endpoints write it, read into StreamSpecs.

Read: v=, o=, c= (session and media level), t=, m= (audio and video RTP sections; others such as
the data channel's m=application are skipped), and the attributes a=rtpmap, a=fmtp, a=rtcp,
a=rtcp-mux, a=ssrc (cname, msid), a=ssrc-group (FID pairs an RTX SSRC with its media SSRC, SIM
orders simulcast layers), a=extmap (RFC 8285, with direction), a=mid, a=msid, a=bundle-only and
the direction attributes. Static payload types (RFC 3551: 0 PCMU, 8 PCMA, 9 G722, ...) need no
a=rtpmap. Every other line is ignored, as RFC 8866 asks of unknown attributes. A line that is
there but malformed raises DescriptionError naming the file, the 1-based line number and the
form expected there. Messages never quote the line: a path that points at some other file (a
manifest's ``sdp`` is someone else's input) must not disclose what that file holds.

JSEP placeholders: an m= port of 9 (or a=rtcp:9) with an unspecified address (0.0.0.0, ::)
means ICE chose the address, so the stream has no port and is matched by SSRC. A port of 0 is
a rejected section and is dropped, unless it is a=bundle-only (then it has no port either).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import DescriptionError
from ..jsondoc import read_description_text
from .model import (
    CodecSpec,
    Direction,
    MediaKind,
    StreamSpec,
    canonical_host,
    resolve_rtcp_port,
)

__all__ = ["STATIC_PAYLOAD_TYPES", "StaticPayloadType", "parse_sdp", "read_sdp"]


@dataclass(frozen=True, slots=True)
class StaticPayloadType:
    """A payload type RFC 3551 assigns for good (tables 4 and 5): no a=rtpmap needed."""

    kind: MediaKind
    name: str
    clock_rate: int
    channels: int = 1


STATIC_PAYLOAD_TYPES: dict[int, StaticPayloadType] = {
    0: StaticPayloadType("audio", "pcmu", 8000),
    3: StaticPayloadType("audio", "gsm", 8000),
    4: StaticPayloadType("audio", "g723", 8000),
    5: StaticPayloadType("audio", "dvi4", 8000),
    6: StaticPayloadType("audio", "dvi4", 16000),
    7: StaticPayloadType("audio", "lpc", 8000),
    8: StaticPayloadType("audio", "pcma", 8000),
    9: StaticPayloadType("audio", "g722", 8000),  # 16 kHz audio, 8 kHz RTP clock (RFC 3551 4.5.2)
    10: StaticPayloadType("audio", "l16", 44100, 2),
    11: StaticPayloadType("audio", "l16", 44100),
    12: StaticPayloadType("audio", "qcelp", 8000),
    13: StaticPayloadType("audio", "cn", 8000),
    14: StaticPayloadType("audio", "mpa", 90000),
    15: StaticPayloadType("audio", "g728", 8000),
    16: StaticPayloadType("audio", "dvi4", 11025),
    17: StaticPayloadType("audio", "dvi4", 22050),
    18: StaticPayloadType("audio", "g729", 8000),
    25: StaticPayloadType("video", "celb", 90000),
    26: StaticPayloadType("video", "jpeg", 90000),
    28: StaticPayloadType("video", "nv", 90000),
    31: StaticPayloadType("video", "h261", 90000),
    32: StaticPayloadType("video", "mpv", 90000),
    34: StaticPayloadType("video", "h263", 90000),
}

_DIRECTIONS: frozenset[str] = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_UNSPECIFIED = frozenset({"0.0.0.0", "::"})
_JSEP_PORT = 9


def read_sdp(path: str | os.PathLike[str]) -> tuple[StreamSpec, ...]:
    """Parse the SDP file at ``path`` (UTF-8, a regular file of a few kB); errors name the file
    and the line, never what it holds."""
    name, text = read_description_text(path, "SDP")
    return parse_sdp(text, file=name)


def parse_sdp(text: str, *, file: str = "<sdp>") -> tuple[StreamSpec, ...]:
    """The audio and video streams an SDP describes, in m= line order.

    ``file`` only names the source in error messages. CRLF and LF line ends both work.
    """
    return _Parser(file).parse(text)


class _Section:
    """One m= section while it is being read (mutable builder, private to the parser)."""

    def __init__(self, kind: MediaKind, port: int, formats: list[int], line: int) -> None:
        self.kind = kind
        self.port = port
        self.formats = formats
        self.line = line
        self.host: str | None = None
        self.rtpmap: dict[int, tuple[int, str, int, int]] = {}  # pt -> (line, name, rate, ch)
        self.fmtp: dict[int, tuple[int, dict[str, str]]] = {}  # pt -> (line, params)
        self.rtcp_port: int | None = None
        self.rtcp_placeholder = False
        self.rtcp_mux = False
        self.bundle_only = False
        self.direction: Direction | None = None
        self.mid: str | None = None
        self.msid: str | None = None
        self.extmap: dict[int, str] = {}
        self.ssrc_attrs: dict[int, dict[str, str]] = {}  # in order of appearance
        self.fid: list[tuple[int, int]] = []
        self.sim: list[int] = []


class _Parser:
    """Reads one SDP text; self.line is the line being read, for error messages."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.line = 0

    def fail(self, message: str, line: int | None = None) -> DescriptionError:
        return DescriptionError(message, file=self.file, line=self.line if line is None else line)

    def int_in(self, token: str, lo: int, hi: int, what: str, line: int | None = None) -> int:
        if not (token.isascii() and token.isdigit()) or not lo <= int(token) <= hi:
            raise self.fail(f"{what} must be an integer {lo}..{hi}", line)
        return int(token)

    def parse(self, text: str) -> tuple[StreamSpec, ...]:
        session_host: str | None = None
        session_direction: Direction | None = None
        session_extmap: dict[int, str] = {}
        sections: list[_Section] = []
        current: _Section | None = None
        in_skipped = False  # inside an m= section we do not read (m=application, non-RTP)
        seen_version = False
        for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
            self.line = number
            line = raw.rstrip("\r")
            if not line.strip():
                continue
            if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
                raise self.fail("expected '<type>=<value>'")
            key, value = line[0], line[2:]
            if not seen_version:
                if key != "v" or value.strip() != "0":
                    raise self.fail("an SDP starts with 'v=0'")
                seen_version = True
            elif key == "v":
                raise self.fail("a second v= line")
            elif key == "o":
                if len(value.split()) != 6:
                    raise self.fail(
                        "o= needs 6 fields: <username> <sess-id> <sess-version> "
                        "<nettype> <addrtype> <address>"
                    )
            elif key == "t":
                fields = value.split()
                if len(fields) != 2:
                    raise self.fail("t= needs '<start> <stop>'")
                for token in fields:
                    self.int_in(token, 0, 2**64 - 1, "t= time")
            elif key == "c":
                host = self.connection(value)
                if current is not None:
                    current.host = host
                elif not in_skipped:
                    session_host = host
            elif key == "m":
                current = self.media(value)
                in_skipped = current is None
                if current is not None:
                    sections.append(current)
            elif key == "a":
                name, _, arg = value.partition(":")
                if current is None and not in_skipped:
                    if name in _DIRECTIONS:
                        session_direction = name  # type: ignore[assignment]
                    elif name == "extmap":
                        self.extmap(arg, session_extmap)
                    elif name in ("rtpmap", "fmtp", "ssrc", "ssrc-group", "rtcp", "rtcp-mux"):
                        raise self.fail(f"a={name} before the first m= line")
                elif current is not None:
                    self.attribute(current, name, arg)
        if not seen_version:
            raise DescriptionError("empty SDP", file=self.file)
        streams = [
            self.finish(s, session_host, session_direction, session_extmap) for s in sections
        ]
        kept = tuple(s for s in streams if s is not None)
        if not kept:
            raise DescriptionError("no audio or video RTP m= line", file=self.file)
        return kept

    def connection(self, value: str) -> str:
        fields = value.split()
        if len(fields) != 3 or fields[0] != "IN" or fields[1] not in ("IP4", "IP6"):
            raise self.fail("c= needs 'IN IP4|IP6 <address>'")
        return canonical_host(fields[2].split("/")[0])  # drop a multicast /ttl

    def media(self, value: str) -> _Section | None:
        fields = value.split()
        if len(fields) < 4:
            raise self.fail("m= needs '<media> <port> <proto> <format>...'")
        media, port_token, proto = fields[0], fields[1], fields[2]
        port = self.int_in(port_token.split("/")[0], 0, 65535, "m= port")
        if media not in ("audio", "video") or "RTP" not in proto.upper():
            return None
        formats = [self.int_in(token, 0, 127, "m= payload type") for token in fields[3:]]
        return _Section(media, port, formats, self.line)  # type: ignore[arg-type]

    def attribute(self, s: _Section, name: str, arg: str) -> None:
        if name == "rtpmap":
            pt_token, _, encoding = arg.partition(" ")
            pt = self.int_in(pt_token, 0, 127, "a=rtpmap payload type")
            parts = encoding.strip().split("/")
            if len(parts) not in (2, 3) or not parts[0]:
                raise self.fail("a=rtpmap needs '<pt> <name>/<rate>[/<channels>]'")
            rate = self.int_in(parts[1], 1, 2**32 - 1, "a=rtpmap clock rate")
            channels = self.int_in(parts[2], 1, 255, "a=rtpmap channels") if len(parts) == 3 else 1
            if pt in s.rtpmap:
                raise self.fail(f"a second a=rtpmap for payload type {pt}")
            s.rtpmap[pt] = (self.line, parts[0].lower(), rate, channels)
        elif name == "fmtp":
            pt_token, _, params = arg.partition(" ")
            pt = self.int_in(pt_token, 0, 127, "a=fmtp payload type")
            parsed: dict[str, str] = {}
            for param in params.split(";"):
                key, _, val = param.strip().partition("=")
                if key:
                    parsed[key.strip().lower()] = val.strip()
            s.fmtp[pt] = (self.line, parsed)
        elif name == "rtcp":
            fields = arg.split()
            if not fields:
                raise self.fail("a=rtcp needs a port")
            s.rtcp_port = self.int_in(fields[0], 1, 65535, "a=rtcp port")
            address = fields[3] if len(fields) == 4 else None
            s.rtcp_placeholder = s.rtcp_port == _JSEP_PORT and (
                address is None or canonical_host(address) in _UNSPECIFIED
            )
        elif name == "rtcp-mux":
            s.rtcp_mux = True
        elif name == "bundle-only":
            s.bundle_only = True
        elif name in _DIRECTIONS:
            s.direction = name  # type: ignore[assignment]
        elif name == "mid":
            s.mid = arg.strip()
        elif name == "msid":
            s.msid = arg.strip()
        elif name == "extmap":
            self.extmap(arg, s.extmap)
        elif name == "ssrc":
            ssrc_token, _, attr = arg.partition(" ")
            ssrc = self.int_in(ssrc_token, 0, 2**32 - 1, "a=ssrc SSRC")
            attr_name, _, attr_value = attr.strip().partition(":")
            if not attr_name:
                raise self.fail("a=ssrc needs '<ssrc> <attribute>[:<value>]'")
            s.ssrc_attrs.setdefault(ssrc, {}).setdefault(attr_name, attr_value)
        elif name == "ssrc-group":
            semantics, _, members = arg.partition(" ")
            ssrcs = [self.int_in(t, 0, 2**32 - 1, "a=ssrc-group SSRC") for t in members.split()]
            if semantics == "FID":
                if len(ssrcs) != 2:
                    raise self.fail(f"a=ssrc-group:FID needs 2 SSRCs, got {len(ssrcs)}")
                s.fid.append((ssrcs[0], ssrcs[1]))
            elif semantics == "SIM":
                if not ssrcs:
                    raise self.fail("a=ssrc-group:SIM needs at least one SSRC")
                s.sim = ssrcs

    def extmap(self, arg: str, into: dict[int, str]) -> None:
        fields = arg.split()
        if len(fields) < 2:
            raise self.fail("a=extmap needs '<id>[/<direction>] <uri>'")
        id_token, _, direction = fields[0].partition("/")
        ext_id = self.int_in(id_token, 1, 255, "a=extmap id")
        if ext_id == 15:
            raise self.fail("a=extmap id 15 is reserved (RFC 8285)")
        if direction and direction not in _DIRECTIONS:
            raise self.fail(
                "a=extmap direction must be one of sendrecv, sendonly, recvonly, inactive"
            )
        if ext_id in into:
            raise self.fail(f"a second a=extmap with id {ext_id}")
        into[ext_id] = fields[1]

    def finish(
        self,
        s: _Section,
        session_host: str | None,
        session_direction: Direction | None,
        session_extmap: dict[int, str],
    ) -> StreamSpec | None:
        if s.port == 0 and not s.bundle_only:
            return None
        host = s.host if s.host is not None else session_host
        placeholder = host is None or host in _UNSPECIFIED
        port = None if s.port == 0 or (s.port == _JSEP_PORT and placeholder) else s.port
        codecs: dict[int, CodecSpec] = {}
        rtx: dict[int, int] = {}
        for pt in s.formats:
            line, params = s.fmtp.get(pt, (None, {}))
            if pt in s.rtpmap:
                map_line, name, rate, channels = s.rtpmap[pt]
                if name == "rtx":
                    if "apt" not in params:
                        raise self.fail(f"RTX payload type {pt} has no a=fmtp apt=", map_line)
                    rtx[pt] = self.int_in(params["apt"], 0, 127, "a=fmtp apt", line)
                    continue
                codecs[pt] = CodecSpec(pt, name, rate, channels, params)
            elif pt in STATIC_PAYLOAD_TYPES:
                static = STATIC_PAYLOAD_TYPES[pt]
                codecs[pt] = CodecSpec(pt, static.name, static.clock_rate, static.channels, params)
            else:
                raise self.fail(f"payload type {pt} has no a=rtpmap", s.line)
        for pt, apt in rtx.items():
            if apt not in codecs:
                raise self.fail(
                    f"RTX payload type {pt} repairs {apt}, which is not a codec of this m= line",
                    s.fmtp[pt][0],
                )
        rtx_ssrcs = {secondary: primary for primary, secondary in s.fid}
        ordered = [*s.sim, *(p for p, _ in s.fid), *s.ssrc_attrs]
        ssrcs = tuple(dict.fromkeys(x for x in ordered if x not in rtx_ssrcs))
        cname = next(
            (s.ssrc_attrs[x]["cname"] for x in ssrcs if "cname" in s.ssrc_attrs.get(x, {})), None
        )
        msid = s.msid or next(
            (s.ssrc_attrs[x]["msid"] for x in ssrcs if "msid" in s.ssrc_attrs.get(x, {})), None
        )
        rtcp_port = resolve_rtcp_port(port, s.rtcp_mux, None if s.rtcp_placeholder else s.rtcp_port)
        try:
            return StreamSpec(
                kind=s.kind,
                port=port,
                rtcp_port=rtcp_port,
                rtcp_mux=s.rtcp_mux,
                ssrcs=ssrcs,
                codecs=codecs,
                rtx=rtx,
                rtx_ssrcs=rtx_ssrcs,
                extmap={**session_extmap, **s.extmap},
                mid=s.mid,
                host=host,
                direction=s.direction or session_direction or "sendrecv",
                cname=cname,
                msid=msid,
            )
        except DescriptionError as exc:
            raise self.fail(str(exc), s.line) from exc
