"""Session descriptions: SDP (FFmpeg's and browsers'), the JSON manifest, combining them, and
guessing codecs from real packets when nothing is described."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import socket
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from skymix.errors import DescriptionError, SkymixError
from skymix.session import (
    CodecSpec,
    ParticipantSpec,
    SessionSpec,
    StreamSpec,
    classify_datagram,
    guess_stream,
    load_description,
    manifest_json_schema,
    parse_manifest,
    parse_sdp,
    read_sdp,
)
from skymix.session.manifest import parse_time

DOCS = Path(__file__).resolve().parent.parent / "docs"


class Ep(NamedTuple):
    """An endpoint as the capture readers report one (host, port)."""

    host: str
    port: int


# ---------------------------------------------------------------------------------------------
# SDPs written by FFmpeg at test time


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


VIDEO_IN = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10"]
AUDIO_IN = ["-f", "lavfi", "-i", "sine=sample_rate=48000"]


def _ffmpeg_sdp(path: Path, inputs: list[str], *outputs: list[str]) -> tuple[Path, list[int]]:
    """Run ffmpeg with 0.2 s outputs to free local ports (nothing listens); return the SDP."""
    ports, args = [], ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs]
    for output in outputs:
        ports.append(_free_port())
        args += [*output, "-t", "0.2", "-f", "rtp", f"rtp://127.0.0.1:{ports[-1]}"]
    subprocess.run([*args, "-sdp_file", str(path)], check=True, timeout=120)
    return path, ports


@pytest.fixture(scope="module")
def ffmpeg_sdps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[int]]]:
    d = tmp_path_factory.mktemp("sdp")
    return {
        "vp8": _ffmpeg_sdp(d / "vp8.sdp", VIDEO_IN, ["-c:v", "libvpx"]),
        "h264": _ffmpeg_sdp(d / "h264.sdp", VIDEO_IN, ["-c:v", "libx264"]),
        "h264_global": _ffmpeg_sdp(
            d / "h264g.sdp", VIDEO_IN, ["-c:v", "libx264", "-flags", "+global_header"]
        ),
        "opus": _ffmpeg_sdp(d / "opus.sdp", AUDIO_IN, ["-c:a", "libopus"]),
        "pcmu": _ffmpeg_sdp(d / "pcmu.sdp", AUDIO_IN, ["-ar", "8000", "-c:a", "pcm_mulaw"]),
        "av": _ffmpeg_sdp(
            d / "av.sdp",
            VIDEO_IN + AUDIO_IN,
            ["-map", "0:v", "-c:v", "libvpx"],
            ["-map", "1:a", "-c:a", "libopus"],
        ),
    }


def test_ffmpeg_vp8(ffmpeg_sdps: dict[str, tuple[Path, list[int]]]) -> None:
    path, (port,) = ffmpeg_sdps["vp8"]
    assert read_sdp(path) == (
        StreamSpec(
            kind="video",
            port=port,
            rtcp_port=port + 1,
            host="127.0.0.1",
            codecs={96: CodecSpec(96, "vp8", 90000)},
        ),
    )


def test_ffmpeg_h264_without_and_with_global_header(
    ffmpeg_sdps: dict[str, tuple[Path, list[int]]],
) -> None:
    (plain,) = read_sdp(ffmpeg_sdps["h264"][0])
    assert plain.codecs == {96: CodecSpec(96, "h264", 90000, 1, {"packetization-mode": "1"})}
    (glob,) = read_sdp(ffmpeg_sdps["h264_global"][0])
    fmtp = glob.codecs[96].fmtp
    assert fmtp["packetization-mode"] == "1"
    assert re.fullmatch(r"[0-9A-Fa-f]{6}", fmtp["profile-level-id"])
    sps, pps = fmtp["sprop-parameter-sets"].split(",")  # base64, may end in "=": split once
    assert sps.startswith("Z") and pps.startswith("aO")  # NAL types 7 and 8


def test_ffmpeg_opus_and_pcmu(ffmpeg_sdps: dict[str, tuple[Path, list[int]]]) -> None:
    path, (port,) = ffmpeg_sdps["opus"]
    (opus,) = read_sdp(path)
    assert (opus.kind, opus.port, opus.codecs) == (
        "audio",
        port,
        {97: CodecSpec(97, "opus", 48000, 2)},
    )
    (pcmu,) = read_sdp(ffmpeg_sdps["pcmu"][0])
    assert pcmu.codecs == {0: CodecSpec(0, "pcmu", 8000)}  # static type: no a=rtpmap written


def test_ffmpeg_two_outputs_media_level_connection(
    ffmpeg_sdps: dict[str, tuple[Path, list[int]]],
) -> None:
    path, (vport, aport) = ffmpeg_sdps["av"]
    assert "\nc=" not in path.read_text().split("m=")[0]  # c= moved to media level
    video, audio = read_sdp(path)
    assert (video.kind, video.port, video.host, video.codecs[96].name) == (
        "video",
        vport,
        "127.0.0.1",
        "vp8",
    )
    assert (audio.kind, audio.port, audio.rtcp_port, audio.codecs[97].name) == (
        "audio",
        aport,
        aport + 1,
        "opus",
    )


def test_ffmpeg_sdps_match_packets_by_port_and_payload_type(
    ffmpeg_sdps: dict[str, tuple[Path, list[int]]],
) -> None:
    vp8, (vport,) = ffmpeg_sdps["vp8"]
    av_sdp, (avv, ava) = ffmpeg_sdps["av"]
    session = load_description([f"alice={vp8}", av_sdp])
    alice, bob = session.participants
    assert (alice.id, alice.name, bob.id, bob.name) == (
        "alice",
        "alice",
        "participant 2",
        "participant 2",
    )
    relay, sender = Ep("127.0.0.1", vport), Ep("127.0.0.1", 40000)
    hit = session.match_rtp(0xDEADBEEF, 96, src=sender, dst=relay)
    assert hit is not None and (hit.participant.id, hit.codec, hit.rtx, hit.by) == (
        "alice",
        CodecSpec(96, "vp8", 90000),
        False,
        "port",
    )
    hit = session.match_rtp(7, 97, src=sender, dst=Ep("127.0.0.1", ava))
    assert hit is not None and hit.participant.id == "participant 2" and hit.stream.kind == "audio"
    # the relay answering from the sender's port: matched by source port
    hit = session.match_rtp(9, 96, src=Ep("127.0.0.1", avv), dst=Ep("10.0.0.9", 6000))
    assert hit is not None and hit.participant.id == "participant 2"
    assert session.match_rtp(9, 96, src=sender, dst=Ep("127.0.0.1", 1)) is None
    assert session.match_rtp(9, 96, dst=Ep("10.1.1.1", vport)) is None  # c= names the host
    rtcp = session.match_rtcp(0xDEADBEEF, src=sender, dst=Ep("127.0.0.1", vport + 1))
    assert rtcp is not None and (rtcp.participant.id, rtcp.codec) == ("alice", None)


def test_two_senders_on_one_port_cannot_be_told_apart(
    ffmpeg_sdps: dict[str, tuple[Path, list[int]]],
) -> None:
    vp8 = ffmpeg_sdps["vp8"][0]
    with pytest.raises(
        DescriptionError,
        match=r"port \d+: 'a' video :\d+ and 'b' video :\d+ "
        r"both use payload type 96, .* declare their SSRCs",
    ):
        load_description([("a", vp8), ("b", vp8)])


# ---------------------------------------------------------------------------------------------
# SDPs as browsers and relays write them

CHROME_OFFER = """\
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=extmap-allow-mixed
a=msid-semantic: WMS stream0
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Hx8c
a=ice-pwd:hQ4WhY4tBXLrE3b6kCaYmUf5
a=ice-options:trickle
a=fingerprint:sha-256 49:66:12:17:0D:1C:91:AE:57:4C:C6:36:DD:D5:97:D2:7D:62:C9:9A:7F:B9:A3:F4
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:stream0 audio0
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1111 cname:Yq1uNfyHpCk5u4kD
a=ssrc:1111 msid:stream0 audio0
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 102 103
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:5/sendonly http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendonly
a=msid:stream0 video0
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:98 VP9/90000
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:102 H264/90000
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=ssrc-group:FID 2222 3333
a=ssrc:2222 cname:Yq1uNfyHpCk5u4kD
a=ssrc:2222 msid:stream0 video0
a=ssrc:3333 cname:Yq1uNfyHpCk5u4kD
a=ssrc:3333 msid:stream0 video0
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=mid:2
a=sctp-port:5000
"""


def test_chrome_offer() -> None:
    audio, video = parse_sdp(CHROME_OFFER.replace("\n", "\r\n"), file="chrome.sdp")
    assert (audio.port, audio.rtcp_port, audio.rtcp_mux, audio.host) == (
        None,
        None,
        True,
        "0.0.0.0",
    )
    assert (audio.mid, audio.direction, audio.ssrcs, audio.cname, audio.msid) == (
        "0",
        "sendrecv",
        (1111,),
        "Yq1uNfyHpCk5u4kD",
        "stream0 audio0",
    )
    assert list(audio.codecs) == [111, 63, 9, 0, 8, 13, 110, 126]
    assert audio.codecs[111] == CodecSpec(
        111, "opus", 48000, 2, {"minptime": "10", "useinbandfec": "1"}
    )
    assert audio.codecs[63].fmtp == {"111/111": ""}
    assert audio.codecs[9] == CodecSpec(9, "g722", 8000)
    assert audio.extmap[1] == "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    assert video.codecs[102].fmtp["profile-level-id"] == "42e01f"
    assert {pt: c.name for pt, c in video.codecs.items()} == {96: "vp8", 98: "vp9", 102: "h264"}
    assert video.rtx == {97: 96, 99: 98, 103: 102}
    assert (video.ssrcs, video.rtx_ssrcs, video.direction, video.mid) == (
        (2222,),
        {3333: 2222},
        "sendonly",
        "1",
    )
    assert video.extmap == {
        14: "urn:ietf:params:rtp-hdrext:toffset",
        2: "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        13: "urn:3gpp:video-orientation",
        5: "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        4: "urn:ietf:params:rtp-hdrext:sdes:mid",
    }


def test_chrome_offer_matches_by_ssrc_and_unwraps_rtx_payload_types() -> None:
    session = SessionSpec((ParticipantSpec("c", "Chrome", parse_sdp(CHROME_OFFER)),))
    rtx = session.match_rtp(3333, 97)
    assert rtx is not None and (rtx.stream.kind, rtx.codec, rtx.rtx, rtx.by) == (
        "video",
        CodecSpec(96, "vp8", 90000),
        True,
        "ssrc",
    )
    media = session.match_rtp(2222, 102)
    assert media is not None and (media.codec and media.codec.name, media.rtx) == ("h264", False)
    undeclared = session.match_rtp(1111, 45)
    assert undeclared is not None and (undeclared.stream.kind, undeclared.codec) == ("audio", None)
    assert session.match_rtp(4444, 96, dst=Ep("0.0.0.0", 9)) is None  # placeholder port 9
    assert session.match_rtcp(1111) is not None


SIMULCAST = """\
v=0
o=- 1 1 IN IP6 ::1
s=-
c=IN IP6 ::0001
t=0 0
a=sendonly
a=extmap:7/recvonly urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
m=video 7000 RTP/AVPF 96 97
a=rtcp:7010
a=rtpmap:96 VP8/90000
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=ssrc:30 cname:x
a=ssrc:10 cname:x
a=ssrc:20 cname:x
a=ssrc:11 cname:x
a=ssrc-group:SIM 10 20 30
a=ssrc-group:FID 10 11
a=ssrc-group:FID 20 21
a=ssrc-group:FID 30 31
m=video 0 RTP/AVP 96
a=rtpmap:96 VP8/90000
m=audio 0 RTP/AVP 0
a=bundle-only
m=audio 7002 RTP/AVP 0
a=rtcp-mux
"""


def test_simulcast_session_level_defaults_rejected_and_bundled_sections() -> None:
    video, bundled, audio = parse_sdp(SIMULCAST)  # the port-0 video section is rejected
    assert (video.ssrcs, video.rtx_ssrcs) == ((10, 20, 30), {11: 10, 21: 20, 31: 30})
    assert (video.host, video.port, video.rtcp_port) == ("::1", 7000, 7010)
    assert (video.direction, video.extmap) == (
        "sendonly",
        {7: "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"},
    )
    assert (bundled.kind, bundled.port, bundled.codecs) == (
        "audio",
        None,
        {0: CodecSpec(0, "pcmu", 8000)},
    )
    assert (audio.port, audio.rtcp_port, audio.rtcp_mux) == (7002, 7002, True)
    session = SessionSpec((ParticipantSpec("s", "S", (video, audio)),))
    hit = session.match_rtp(99, 97, dst=Ep("::1", 7000))
    assert hit is not None and hit.rtx and hit.codec == CodecSpec(96, "vp8", 90000)
    assert session.match_rtcp(99, dst=Ep("::1", 7010)) is not None


BASE = [
    "v=0",
    "o=- 0 0 IN IP4 127.0.0.1",
    "s=x",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=video 5004 RTP/AVP 96 97",
    "a=rtpmap:96 VP8/90000",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=ssrc:5 cname:x",
]


def _with(line: int, text: str | None, insert: bool = False) -> str:
    """BASE with 1-based line ``line`` replaced by (or, with insert, preceded by) ``text``."""
    lines = list(BASE)
    if insert:
        lines.insert(line - 1, text or "")
    elif text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    return "\n".join(lines) + "\n"


MALFORMED = [
    (_with(3, "hello"), 3, "expected '<type>=<value>'"),
    (_with(1, "v=1"), 1, "an SDP starts with 'v=0'"),
    (_with(1, "o=- 0 0 IN IP4 127.0.0.1"), 1, "an SDP starts with 'v=0'"),
    (_with(3, "v=0"), 3, "a second v= line"),
    (_with(2, "o=- 0 0 IN IP4"), 2, "o= needs 6 fields"),
    (_with(5, "t=0"), 5, "t= needs '<start> <stop>'"),
    (_with(5, "t=now 0"), 5, "t= time must be an integer"),
    (_with(4, "c=IN IPX 1.2.3.4"), 4, "c= needs 'IN IP4|IP6 <address>'"),
    (_with(6, "m=video 5004 RTP/AVP"), 6, "m= needs '<media> <port> <proto> <format>...'"),
    (
        _with(6, "m=video 70000 RTP/AVP 96 97"),
        6,
        "m= port must be an integer 0..65535",
    ),
    (
        _with(6, "m=video 5004 RTP/AVP 96 vp8"),
        6,
        "m= payload type must be an integer 0..127",
    ),
    (_with(6, "m=video 5004 RTP/AVP 96 97 128"), 6, "m= payload type must be an integer 0..127"),
    (_with(7, "a=rtpmap:96 VP8"), 7, "a=rtpmap needs '<pt> <name>/<rate>[/<channels>]'"),
    (_with(7, "a=rtpmap:96 VP8/fast"), 7, "a=rtpmap clock rate must be an integer"),
    (_with(7, "a=rtpmap:x VP8/90000"), 7, "a=rtpmap payload type must be an integer 0..127"),
    (_with(7, "a=rtpmap:96 opus/48000/0"), 7, "a=rtpmap channels must be an integer 1..255"),
    (_with(8, "a=rtpmap:96 VP9/90000", insert=True), 8, "a second a=rtpmap for payload type 96"),
    (_with(9, "a=fmtp:z apt=96"), 9, "a=fmtp payload type must be an integer 0..127"),
    (_with(9, "a=fmtp:97 apt=ninety"), 9, "a=fmtp apt must be an integer 0..127"),
    (_with(9, "a=fmtp:97 apt=98"), 9, "RTX payload type 97 repairs 98, which is not a codec"),
    (_with(9, None), 8, "RTX payload type 97 has no a=fmtp apt="),
    (_with(7, None), 6, "payload type 96 has no a=rtpmap"),
    (_with(10, "a=ssrc:4294967296 cname:x"), 10, "a=ssrc SSRC must be an integer 0..4294967295"),
    (_with(10, "a=ssrc:5"), 10, "a=ssrc needs '<ssrc> <attribute>[:<value>]'"),
    (_with(10, "a=ssrc-group:FID 5"), 10, "a=ssrc-group:FID needs 2 SSRCs, got 1"),
    (_with(10, "a=ssrc-group:SIM"), 10, "a=ssrc-group:SIM needs at least one SSRC"),
    (_with(10, "a=ssrc-group:FID 5 x"), 10, "a=ssrc-group SSRC must be an integer"),
    (_with(10, "a=rtcp:port"), 10, "a=rtcp port must be an integer 1..65535"),
    (_with(10, "a=rtcp:"), 10, "a=rtcp needs a port"),
    (_with(10, "a=extmap:1"), 10, "a=extmap needs '<id>[/<direction>] <uri>'"),
    (_with(10, "a=extmap:0 urn:x"), 10, "a=extmap id must be an integer 1..255"),
    (_with(10, "a=extmap:15 urn:x"), 10, "a=extmap id 15 is reserved (RFC 8285)"),
    (_with(10, "a=extmap:2/both urn:x"), 10, "a=extmap direction must be one of"),
    (_with(10, "a=extmap:2 urn:x\na=extmap:2 urn:y"), 11, "a second a=extmap with id 2"),
    (_with(5, "a=rtpmap:96 VP8/90000", insert=True), 5, "a=rtpmap before the first m= line"),
    (_with(5, "a=extmap:x urn:y", insert=True), 5, "a=extmap id must be an integer"),
]


@pytest.mark.parametrize(("text", "line", "message"), MALFORMED)
def test_malformed_lines_name_file_and_line(text: str, line: int, message: str) -> None:
    for ending in ("\n", "\r\n"):
        with pytest.raises(DescriptionError) as info:
            parse_sdp(text.replace("\n", ending), file="bad.sdp")
        assert str(info.value).startswith(f"bad.sdp, line {line}: {message}")
        assert (info.value.file, info.value.line) == ("bad.sdp", line)
        assert isinstance(info.value, ValueError) and isinstance(info.value, SkymixError)


def test_whole_file_problems(tmp_path: Path) -> None:
    with pytest.raises(DescriptionError, match=r"^e\.sdp: empty SDP$"):
        parse_sdp("\n\n", file="e.sdp")
    with pytest.raises(DescriptionError, match="no audio or video RTP m= line"):
        parse_sdp("v=0\no=- 0 0 IN IP4 ::1\ns=-\nt=0 0\nm=application 9 UDP/DTLS/SCTP x\n")
    with pytest.raises(DescriptionError, match=r"missing\.sdp: cannot read SDP"):
        read_sdp(tmp_path / "missing.sdp")


def test_unknown_lines_and_static_types_without_rtpmap() -> None:
    (audio,) = parse_sdp("""\
v=0
o=- 0 0 IN IP4 1.2.3.4
s=-
t=0 0
z=whatever
k=clear:x
a=tool:foo
m=audio 5030 RTP/AVP 0 8 9
b=AS:64
c=IN IP4 1.2.3.4/127
a=x-custom
a=rtcp-fb:0 nack
a=ptime:20
""")
    assert {pt: (c.name, c.clock_rate) for pt, c in audio.codecs.items()} == {
        0: ("pcmu", 8000),
        8: ("pcma", 8000),
        9: ("g722", 8000),
    }
    assert (audio.host, audio.rtcp_port) == ("1.2.3.4", 5031)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            BASE
            + [
                "a=rtpmap:",
                "a=ssrc-group:FID 1 2",
                "a=extmap:3 u",
                "m=audio 0 RTP/AVP 0",
                "c=IN IP6 ::",
                "a=rtcp-mux",
                "a=bundle-only",
                "a=fmtp:96 x",
                "m=video 9 RTP/AVP 100",
            ]
        )
        | st.text(max_size=20),
        max_size=14,
    )
)
def test_sdp_parser_never_crashes(lines: list[str]) -> None:
    try:
        parse_sdp("\n".join(lines))
    except DescriptionError:
        pass


# ---------------------------------------------------------------------------------------------
# The manifest and its schema


def _example_manifest() -> dict[str, Any]:
    text = (DOCS / "session-description.md").read_text()
    block = re.search(r"```json\n(.*?)```", text, re.DOTALL)
    assert block is not None
    return json.loads(block.group(1))


# Draft 2020-12 vocabularies (core, applicator, validation, meta-data, format-annotation)
DRAFT_2020_12_KEYWORDS = {
    "$schema",
    "$id",
    "$ref",
    "$defs",
    "$comment",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$vocabulary",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "prefixItems",
    "items",
    "contains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
    "format",
    "unevaluatedItems",
    "unevaluatedProperties",
}
TYPES = {"null", "boolean", "object", "array", "number", "string", "integer"}


def test_schema_is_well_formed_draft_2020_12() -> None:
    schema = manifest_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def walk(node: Any, where: str) -> None:
        assert isinstance(node, dict), where
        assert set(node) <= DRAFT_2020_12_KEYWORDS, (where, set(node) - DRAFT_2020_12_KEYWORDS)
        if "type" in node:
            assert node["type"] in TYPES, where
        if "$ref" in node:
            assert node["$ref"].startswith("#/$defs/"), where
            assert node["$ref"].removeprefix("#/$defs/") in schema["$defs"], where
        for key in ("required", "enum"):
            if key in node:
                assert isinstance(node[key], list) and len(set(map(str, node[key]))) == len(
                    node[key]
                ), where
        if "required" in node and "properties" in node:
            assert set(node["required"]) <= set(node["properties"]), where
        for key in ("minimum", "maximum", "minLength", "minItems"):
            if key in node:
                assert isinstance(node[key], int), where
        for key in ("properties", "$defs"):
            for name, sub in node.get(key, {}).items():
                walk(sub, f"{where}/{key}/{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{where}/{key}")
        for i, sub in enumerate(node.get("anyOf", [])):
            walk(sub, f"{where}/anyOf/{i}")

    walk(schema, "#")


def test_example_manifest_in_docs_validates() -> None:
    alice, bob, carol = parse_manifest(_example_manifest(), file="room.json", base_dir="/m")
    assert (alice.id, alice.name, alice.sdp, alice.streams) == (
        "alice",
        "Alice Liddell",
        "/m/alice.sdp",
        (),
    )
    assert alice.joins == (
        parse_time("2024-05-01T10:00:00Z"),
        parse_time("2024-05-01T10:20:00.500Z"),
    )
    assert alice.leaves == (1714558500 * 10**9,)
    video, audio = bob.streams
    assert (video.port, video.rtcp_port, video.host) == (5004, 5005, "127.0.0.1")
    assert video.codecs[96] == CodecSpec(
        96, "h264", 90000, 1, {"packetization-mode": "1", "profile-level-id": "42e01f"}
    )
    assert (audio.port, audio.rtcp_port, audio.codecs[0].name) == (5006, 5017, "pcmu")
    cvideo, caudio = carol.streams
    assert (cvideo.ssrcs, cvideo.rtx, cvideo.rtx_ssrcs, cvideo.rtcp_mux, cvideo.mid) == (
        (1111, 1112),
        {97: 96},
        {2222: 1111},
        True,
        "1",
    )
    assert cvideo.extmap == {3: "urn:ietf:params:rtp-hdrext:sdes:mid"}
    assert (caudio.port, caudio.codecs[111].channels) == (None, 2)
    assert carol.joins is None and carol.leaves == (parse_time("2024-05-01T08:30:00Z"),)


def _broken(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    manifest = _example_manifest()
    change(manifest)
    return manifest


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change setting the element at a dotted path ("participants.2.streams.0.ssrcs.1")."""

    def change(m: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = m
        for p in parents:
            node = node[p]
        node[last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = m
        for p in parents:
            node = node[p]
        del node[last]

    return change


BAD_MANIFESTS = [
    (
        _set("participants.2.streams.0.ssrcs.1", -1),
        "participants[2].streams[0].ssrcs[1]: expected an integer 0..4294967295, got -1",
    ),
    (
        _set("participants.2.streams.0.ssrcs.1", "1112"),
        'participants[2].streams[0].ssrcs[1]: expected an integer 0..4294967295, got "1112"',
    ),
    (
        _set("participants.2.streams.0.ssrcs.1", 1111),
        "participants[2].streams[0].ssrcs[1]: repeats participants[2].streams[0].ssrcs[0]",
    ),
    (
        _set("participants.2.streams.0.ssrcs", []),
        "participants[2].streams[0].ssrcs: expected at least 1 item(s)",
    ),
    (_delete("participants.1.id"), "participants[1]: missing required property 'id'"),
    (_set("participants.1.id", ""), "participants[1].id: expected a non-empty string"),
    (_set("participants.1.colour", "red"), "participants[1].colour: unknown property"),
    (
        _set("participants.1.streams.1.kind", "screen"),
        'participants[1].streams[1].kind: expected one of "audio", "video", got "screen"',
    ),
    (
        _delete("participants.1.streams.0.port"),
        "participants[1].streams[0]: needs 'ssrcs' or 'port'",
    ),
    (
        _set("participants.1.streams.0.port", 0),
        "participants[1].streams[0].port: expected an integer 1..65535, got 0",
    ),
    (
        _set("participants.1.streams.0.rtcp_mux", "yes"),
        'participants[1].streams[0].rtcp_mux: expected true or false, got "yes"',
    ),
    (
        _set("participants.1.streams.0.codecs.0.payload_type", 128),
        "participants[1].streams[0].codecs[0].payload_type: expected an integer 0..127, got 128",
    ),
    (
        _set("participants.1.streams.0.codecs.0.fmtp", {"packetization-mode": 1}),
        'participants[1].streams[0].codecs[0].fmtp["packetization-mode"]: expected a string, got 1',
    ),
    (
        _set("participants.1.streams.0.codecs", "H264"),
        'participants[1].streams[0].codecs: expected an array, got "H264"',
    ),
    (
        _set("participants.0.joins.1", "2024-05-01 10:20"),
        "participants[0].joins[1]: expected an ISO 8601 date-time with a UTC offset",
    ),
    (
        _set("participants.0.joins.1", "2024-05-01T10:20:00"),
        "participants[0].joins[1]: expected an ISO 8601 date-time with a UTC offset",
    ),
    (
        _set("participants.0.joins.1", "2024-02-30T10:20:00Z"),
        (
            "participants[0].joins[1]: expected an ISO 8601 date-time with a UTC offset, e.g. "
            "2024-05-01T10:00:00.250Z (day is out of range for month)"
        ),
    ),
    (
        _set("participants.0.joins.1", "2024-05-01T10:14:00Z"),
        "participants[0]: participant 'alice': joins and leaves must alternate in time",
    ),
    (_set("participants", {}), "participants: expected an array, got {}"),
    (
        _set("participants.2.id", "alice"),
        "participants[2].id: id 'alice' is already used by participants[0]",
    ),
    (
        _set(
            "participants.1.streams.0.codecs",
            [
                {"payload_type": 96, "name": "H264", "clock_rate": 90000},
                {"payload_type": 96, "name": "VP8", "clock_rate": 90000},
            ],
        ),
        "participants[1].streams[0].codecs[1].payload_type: payload type 96 is declared twice",
    ),
    (
        _set("participants.2.streams.0.rtx.0.apt", 100),
        "participants[2].streams[0].rtx[0].apt: 100 is not a payload type of this stream's codecs",
    ),
    (
        _set("participants.2.streams.0.rtx.0.payload_type", 96),
        "participants[2].streams[0].rtx[0].payload_type: payload type 96 is declared twice",
    ),
    (
        _set("participants.2.streams.0.rtx_ssrcs.0.media_ssrc", 5),
        "participants[2].streams[0].rtx_ssrcs[0].media_ssrc: 5 is not one of this stream's ssrcs",
    ),
    (
        _set("participants.2.streams.0.rtx_ssrcs.0.ssrc", 1112),
        "participants[2].streams[0].rtx_ssrcs[0].ssrc: ssrc 1112 is declared twice",
    ),
    (
        _set("participants.2.streams.0.extmap.0.id", 15),
        "participants[2].streams[0].extmap[0].id: id 15 is reserved (RFC 8285)",
    ),
    (
        _set("participants.2.streams.0.extmap", [{"id": 3, "uri": "a"}, {"id": 3, "uri": "b"}]),
        "participants[2].streams[0].extmap[1].id: id 3 is declared twice",
    ),
]


@pytest.mark.parametrize(("change", "message"), BAD_MANIFESTS)
def test_bad_manifest_names_json_path(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    with pytest.raises(DescriptionError) as info:
        parse_manifest(_broken(change), file="room.json")
    assert str(info.value).startswith(f"room.json, {message}")


def test_bad_manifest_top_level_and_json_syntax(tmp_path: Path) -> None:
    with pytest.raises(DescriptionError, match=r"^m\.json, \(top level\): expected an object"):
        parse_manifest([], file="m.json")
    with pytest.raises(
        DescriptionError,
        match=r"^<manifest>, \(top level\): missing required "
        r"property 'participants'$",
    ):
        parse_manifest({})
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "participants": [\n    {"id": "a",}\n  ]\n}\n')
    with pytest.raises(DescriptionError, match=r"bad\.json, line 3: not JSON: "):
        load_description([], bad)


def test_optional_properties_may_be_null_or_absent_and_schema_key_is_allowed() -> None:
    manifest = _example_manifest()
    manifest["$schema"] = "https://example.org/manifest.schema.json"
    manifest["participants"][1]["name"] = None
    manifest["participants"][1]["streams"][0]["host"] = None
    alice, bob, carol = parse_manifest(manifest)
    assert (bob.name, bob.streams[0].host) == (None, None)
    assert parse_manifest({"participants": []}) == ()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_PATHS = [
    "participants.0",
    "participants.0.joins",
    "participants.0.joins.0",
    "participants.1.streams.0",
    "participants.1.streams.0.port",
    "participants.1.streams.0.codecs.0",
    "participants.1.streams.0.codecs.0.fmtp",
    "participants.2.streams.0.ssrcs",
    "participants.2.streams.0.rtx.0",
    "participants.2.streams.0.rtx_ssrcs.0.media_ssrc",
    "participants.2.streams.0.extmap.0.id",
    "participants.2.streams.1.codecs.0.channels",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_PATHS), _JSON)
def test_manifest_validation_never_crashes(path: str, value: Any) -> None:
    """Whatever a manifest holds where, it is converted or refused with a DescriptionError."""
    try:
        parse_manifest(_broken(_set(path, value)), file="m.json")
    except DescriptionError as exc:
        assert str(exc).startswith("m.json, ")


def test_parse_time_is_exact_to_the_nanosecond() -> None:
    assert parse_time("1970-01-01T00:00:00Z") == 0
    assert parse_time("2024-05-01T10:00:00.123456789Z") == 1714557600_123456789
    assert parse_time("2024-05-01T12:00:00.5+02:00") == 1714557600_500000000
    assert parse_time("1969-12-31T23:59:59.999999999-00:00") == -1
    for bad in ("2024-05-01T10:00:00", "2024-05-01", "2024-05-01T10:00:00.1234567891Z"):
        with pytest.raises(ValueError, match="UTC offset"):
            parse_time(bad)


def test_specs_are_frozen_and_keep_their_invariants() -> None:
    codec = CodecSpec(96, "VP8", 90000, fmtp={"A": "1"})
    assert codec.name == "vp8"
    with pytest.raises(dataclasses.FrozenInstanceError):
        codec.name = "vp9"  # type: ignore[misc]
    with pytest.raises(TypeError):
        codec.fmtp["a"] = "2"  # type: ignore[index]
    with pytest.raises(DescriptionError, match="payload type 128 is not 0..127"):
        CodecSpec(128, "x", 90000)
    with pytest.raises(DescriptionError, match="stream kind must be 'audio' or 'video'"):
        StreamSpec(kind="screen")  # type: ignore[arg-type]
    with pytest.raises(DescriptionError, match="RTX ssrc 2 repairs undeclared ssrc 3"):
        StreamSpec(kind="video", ssrcs=(1,), rtx_ssrcs={2: 3})
    with pytest.raises(DescriptionError, match="RTX payload type 97 repairs undeclared 96"):
        StreamSpec(kind="video", rtx={97: 96})
    assert StreamSpec(kind="audio", host="::0001").host == "::1"


def test_presence_intervals() -> None:
    assert ParticipantSpec("a", "A", (), (10, 30), (20,)).presence() == ((10, 20), (30, None))
    assert ParticipantSpec("a", "A", (), (15,), (5, 20)).presence() == ((None, 5), (15, 20))
    assert ParticipantSpec("a", "A", ()).presence() == ()
    with pytest.raises(DescriptionError, match="must alternate"):
        ParticipantSpec("a", "A", (), (10, 20), ())


# ---------------------------------------------------------------------------------------------
# Combining SDPs and a manifest


def test_manifest_overrides_and_extends_sdp_participants(
    tmp_path: Path, ffmpeg_sdps: dict[str, tuple[Path, list[int]]]
) -> None:
    vp8 = ffmpeg_sdps["vp8"][0]
    opus, (aport,) = ffmpeg_sdps["opus"]
    (tmp_path / "sdps").mkdir()
    (tmp_path / "sdps" / "dave.sdp").write_text(ffmpeg_sdps["pcmu"][0].read_text())
    manifest = tmp_path / "room.json"
    manifest.write_text(
        json.dumps(
            {
                "participants": [
                    {"id": "dave", "sdp": "sdps/dave.sdp"},
                    {
                        "id": "participant 2",
                        "name": "Bob",
                        "joins": ["2024-05-01T10:00:00Z"],
                        "streams": [
                            {
                                "kind": "video",
                                "ssrcs": [42],
                                "codecs": [
                                    {"payload_type": 100, "name": "VP9", "clock_rate": 90000}
                                ],
                            }
                        ],
                    },
                    {"id": "alice", "name": "Alice", "leaves": ["2024-05-01T11:00:00Z"]},
                ]
            }
        )
    )
    session = load_description([("alice", vp8), Path(opus)], manifest)
    alice, bob, dave = session.participants
    assert (alice.id, alice.name, alice.leaves, alice.streams) == (
        "alice",
        "Alice",
        (parse_time("2024-05-01T11:00:00Z"),),
        read_sdp(vp8),
    )
    assert (bob.id, bob.name, bob.joins) == (
        "participant 2",
        "Bob",
        (parse_time("2024-05-01T10:00:00Z"),),
    )
    assert [s.kind for s in bob.streams] == ["audio", "video"]
    assert bob.streams[0].port == aport
    assert (dave.id, dave.name, dave.streams[0].codecs[0].name) == ("dave", "dave", "pcmu")
    hit = session.match_rtp(42, 100)
    assert hit is not None and (hit.participant.name, hit.codec and hit.codec.name) == (
        "Bob",
        "vp9",
    )


def test_combination_errors(tmp_path: Path, ffmpeg_sdps: dict[str, tuple[Path, list[int]]]) -> None:
    vp8 = ffmpeg_sdps["vp8"][0]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"participants": [{"id": "alice", "sdp": "a.sdp"}]}))
    with pytest.raises(
        DescriptionError,
        match=r"m\.json, participants\[0\]\.sdp: participant "
        r"'alice' already has an SDP \(.*vp8\.sdp\)$",
    ):
        load_description([f"alice={vp8}"], manifest)
    manifest.write_text(json.dumps({"participants": [{"id": "bob", "name": "Bob"}]}))
    with pytest.raises(
        DescriptionError,
        match=r"m\.json, participants\[0\]: participant 'bob' "
        r"has no streams: give 'streams' or 'sdp', or use the id of an SDP "
        r"participant \('participant 1'\)",
    ):
        load_description([vp8], manifest)
    with pytest.raises(DescriptionError, match="participant name 'x' is given to two SDPs"):
        load_description([f"x={vp8}", ("x", vp8)])
    with pytest.raises(DescriptionError, match="no file given"):
        load_description(["alice="])
    ssrc_stream = StreamSpec(kind="audio", ssrcs=(7,), codecs={0: CodecSpec(0, "pcmu", 8000)})
    with pytest.raises(DescriptionError, match="ssrc 7 is declared by 'a' audio and 'b' audio"):
        SessionSpec(
            (ParticipantSpec("a", "A", (ssrc_stream,)), ParticipantSpec("b", "B", (ssrc_stream,)))
        )
    with pytest.raises(DescriptionError, match="participant id 'a' is used twice"):
        SessionSpec((ParticipantSpec("a", "A", ()), ParticipantSpec("a", "B", ())))


def test_sdp_argument_with_equals_sign_in_an_existing_path(tmp_path: Path) -> None:
    odd = tmp_path / "a=b.sdp"
    odd.write_text("v=0\no=- 0 0 IN IP4 ::1\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 8\n")
    (p,) = load_description([str(odd)]).participants
    assert (p.id, p.streams[0].codecs[8].name) == ("participant 1", "pcma")


def test_nothing_given_is_an_empty_description() -> None:
    session = load_description()
    assert session.participants == ()
    assert session.match_rtp(1, 96, dst=Ep("127.0.0.1", 5004)) is None


# ---------------------------------------------------------------------------------------------
# Guessing from real packets (PyAV encoders, aiortc packetizers)

Sample = tuple[int, bytes, bool, int]


def _frames(n: int, width: int, height: int) -> list[av.VideoFrame]:
    """Moving bars over fixed noise (the noise makes big keyframes, fragmented in RTP)."""
    noise = np.random.default_rng(5).integers(0, 256, (height, width, 3), np.uint8)
    frames = []
    for i in range(n):
        image = noise.copy()
        image[:, : 8 * (i + 1)] = (200, 40 + 20 * i, 90)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i * 3000, Fraction(1, 90000)
        frames.append(frame)
    return frames


def _video_samples(
    codec: str,
    pack: Callable[[av.Packet], tuple[list[bytes], int]],
    pt: int = 96,
    n: int = 6,
    options: dict[str, str] | None = None,
    width: int = 64,
    height: int = 48,
) -> list[Sample]:
    ctx = av.CodecContext.create(codec, "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, 90000), Fraction(30)
    ctx.options = options or {}
    samples: list[Sample] = []
    for frame in [*_frames(n, width, height), None]:
        for packet in ctx.encode(frame):
            payloads, timestamp = pack(packet)
            samples += [(pt, p, i == len(payloads) - 1, timestamp) for i, p in enumerate(payloads)]
    return samples


class Vp9Packer:
    """A minimal RFC 9628 packetizer (I with 15-bit picture id, B/E), as aiortc has none."""

    def __init__(self) -> None:
        self.picture_id = 0

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        data, chunks = bytes(packet), []
        pieces = [data[i : i + 40] for i in range(0, len(data), 40)]
        for i, piece in enumerate(pieces):
            flags = 0x80 | (0x08 if i == 0 else 0) | (0x04 if i == len(pieces) - 1 else 0)
            chunks.append(
                bytes([flags, 0x80 | self.picture_id >> 8, self.picture_id & 0xFF]) + piece
            )
        self.picture_id = (self.picture_id + 1) % 0x8000
        assert packet.pts is not None
        return chunks, packet.pts


def _opus_samples(pt: int = 111, n: int = 12) -> list[Sample]:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 48000, "stereo", "s16"
    ctx.time_base = Fraction(1, 48000)
    encoder, samples = OpusEncoder(), []
    for i in range(n):
        tone = (np.sin(np.arange(i * 960, (i + 1) * 960) * 0.05) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.stack([tone, tone]).T.reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * 960, Fraction(1, 48000)
        for packet in ctx.encode(frame):
            payloads, timestamp = encoder.pack(packet)
            samples += [(pt, p, False, timestamp + 123456) for p in payloads]
    return samples


def test_guess_vp8_from_real_packets() -> None:
    guess = guess_stream(_video_samples("libvpx", Vp8Encoder().pack), ssrc=0x1234ABCD)
    assert guess.stream == StreamSpec(
        kind="video", ssrcs=(0x1234ABCD,), codecs={96: CodecSpec(96, "vp8", 90000)}
    )
    assert guess.note.startswith(
        "ssrc 0x1234abcd: guessed video, PT 96 = vp8/90000 (VP8 payload descriptor on all "
    )
    assert "keyframe start code 9d 01 2a in packet 1, 64x48)" in guess.note


def test_guess_h264_from_real_packets() -> None:
    samples = _video_samples(
        "libx264",
        H264Encoder().pack,
        pt=102,
        options={"profile": "baseline", "tune": "zerolatency"},
    )
    guess = guess_stream(samples)
    codec = guess.stream.codecs[102]
    assert (guess.stream.kind, codec.name, codec.clock_rate) == ("video", "h264", 90000)
    assert codec.fmtp["profile-level-id"].startswith("42")  # baseline
    assert codec.fmtp["packetization-mode"] == "1"  # aiortc aggregates SPS/PPS in a STAP-A
    assert "SPS profile 66" in guess.note


def test_guess_h264_from_fragmented_keyframe() -> None:
    samples = _video_samples(
        "libx264",
        H264Encoder().pack,
        n=2,
        width=320,
        height=240,
        options={"profile": "main", "tune": "zerolatency"},
    )
    assert any(p[0] & 0x1F == 28 for _, p, _, _ in samples)  # FU-A
    guess = guess_stream(samples)
    assert guess.stream.codecs[96].fmtp["profile-level-id"].startswith("4d")  # main
    assert "SPS profile 77" in guess.note


def test_guess_vp9_from_real_packets() -> None:
    guess = guess_stream(
        _video_samples(
            "libvpx-vp9",
            Vp9Packer().pack,
            pt=98,
            options={"lag-in-frames": "0", "deadline": "realtime"},
        )
    )
    assert guess.stream.codecs == {98: CodecSpec(98, "vp9", 90000)}
    assert "keyframe sync code 49 83 42 in packet 1, 64x48" in guess.note


def test_guess_opus_from_real_packets() -> None:
    guess = guess_stream(_opus_samples())
    assert guess.stream == StreamSpec(kind="audio", codecs={111: CodecSpec(111, "opus", 48000, 2)})
    assert "20 ms frames" in guess.note
    assert guess.note.startswith("guessed audio, PT 111 = opus/48000/2 (Opus TOC valid on all")


def test_guess_static_types_and_mixed_audio() -> None:
    pcmu = [(0, bytes(160), False, 160 * i) for i in range(3)] + [(13, b"\x40", False, 480)]
    guess = guess_stream(pcmu)
    assert {pt: c.name for pt, c in guess.stream.codecs.items()} == {0: "pcmu", 13: "cn"}
    assert "PT 0 = pcmu/8000 (static payload type 0, RFC 3551)" in guess.note
    assert guess_stream([(8, bytes(160), False, 0)]).stream.codecs[8].name == "pcma"
    with pytest.raises(
        DescriptionError, match="both audio and video in one stream: 0 audio, 26 video"
    ):
        guess_stream([(0, bytes(10), False, 0), (26, bytes(10), False, 0)])


def test_guess_refuses_random_bytes_under_a_dynamic_payload_type() -> None:
    rng = random.Random(3)
    for step in (960, 3000):
        samples = [(100, rng.randbytes(rng.randrange(20, 300)), False, i * step) for i in range(40)]
        with pytest.raises(DescriptionError) as info:
            guess_stream(samples, ssrc=0xABC)
        assert str(info.value) == (
            "ssrc 0x00000abc: payload type 100 (40 packets) looks like none of VP8, VP9, H.264, "
            "Opus; describe it in an SDP or a manifest"
        )


def test_guess_refuses_what_it_cannot_be_sure_of() -> None:
    vp8 = _video_samples("libvpx", Vp8Encoder().pack)
    first_frame = vp8[0][3]
    without_keyframe = [s for s in vp8 if s[3] != first_frame]
    with pytest.raises(DescriptionError, match="payload type 96"):
        guess_stream(without_keyframe)  # cannot be decoded from there, so not called VP8
    rtx = [(97, b"\x00" + bytes([i]) + p, m, t) for i, (_, p, m, t) in enumerate(vp8)]
    with pytest.raises(DescriptionError, match="payload type 97"):
        guess_stream(rtx)  # RTX: the OSN in front hides the codec
    with pytest.raises(DescriptionError, match="payload type 111"):
        guess_stream(_opus_samples()[:4])  # too few packets for the Opus timing check
    with pytest.raises(DescriptionError, match="no RTP packets"):
        guess_stream([])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(96, 127), st.binary(max_size=40), st.booleans(), st.integers(0, 2**32 - 1)
        ),
        min_size=1,
        max_size=12,
    )
)
def test_guess_never_crashes(samples: list[Sample]) -> None:
    try:
        guess_stream(samples)
    except DescriptionError:
        pass


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12), "stun"),
        (b"\x00\x01\x00\x00" + bytes(16), "other"),
        (b"\x16\xfe\xfd" + bytes(10), "dtls"),
        (b"\x80\x60" + bytes(10), "rtp"),
        (b"\x80\xe0" + bytes(10), "rtp"),  # marker + PT 96
        (b"\x80\xc8\x00\x06" + bytes(4), "rtcp"),
        (b"\x81\xc9\x00\x07" + bytes(4), "rtcp"),
        (b"\x80\x60" + bytes(5), "other"),  # too short for RTP
        (b"\x40\x60" + bytes(10), "other"),  # RTP version 1
        (b"", "other"),
    ],
)
def test_classify_datagram(data: bytes, kind: str) -> None:
    assert classify_datagram(data) == kind
