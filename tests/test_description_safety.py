"""Descriptions that never lose or leak: a manifest cannot make skymix read (or quote) a file
outside its folder; streams that cannot be mixed are skipped and listed, never fatal; described
participants that nothing matched and streams nobody claims are named.

The room: two synthesized participants (real VP8 and Opus encoders, skymix.synth) plus what a
relay also sees. The L16 stream is what FFmpeg's RTP muxer sends (received on a local socket).
FFmpeg cannot send comfort noise or telephone events, so those packets are built with aiortc's
RtpPacket; the telephone events share the Opus stream's SSRC and sequence numbers, as WebRTC
senders do. All of it is written with skymix.synth's PcapWriter.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import av
import pytest
from aiortc.rtp import RtpPacket

from ingest_tools import Receiver
from skymix.encode import EncodeSettings
from skymix.errors import DescriptionError
from skymix.ingest import Datagram, read_capture
from skymix.job import mix
from skymix.options import MixOptions
from skymix.session import load_description, load_manifest, read_sdp
from skymix.streams.room import RoomScan, scan_room
from skymix.synth import Impairments, PcapWriter, SynthParticipant, synthesize

SCRIPT = Path(sys.executable).with_name("skymix")
SECRET = "root:x:0:0:SECRET-7f3a9c:/root:/bin/bash"
SDP = "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"


def _everything_said(exc: BaseException) -> str:
    """The message, repr, attributes and traceback text of an exception and its whole chain."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        parts += [str(current), repr(current), repr(current.args), repr(vars(current))]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """(the manifest's folder two levels down, a secret file at the top, outside it)."""
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    room = tmp_path / "rooms" / "r1"
    room.mkdir(parents=True)
    return room, tmp_path / "secret.txt"


def _manifest(room: Path, sdp: str) -> Path:
    path = room / "room.json"
    path.write_text(json.dumps({"participants": [{"id": "eve", "sdp": sdp}]}))
    return path


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked folder"])
def test_manifest_sdp_leaving_its_folder_is_refused_unread(
    folders: tuple[Path, Path], how: str
) -> None:
    room, secret = folders
    if how == "dotdot":
        sdp = "../../secret.txt"
    elif how == "absolute":
        sdp = str(secret)
    elif how == "symlink":
        (room / "link.sdp").symlink_to(Path("../..") / secret.name)
        sdp = "link.sdp"
    else:
        (room / "sdps").symlink_to(secret.parent)
        sdp = "sdps/secret.txt"
    manifest = _manifest(room, sdp)
    with pytest.raises(DescriptionError) as info:
        load_description([], manifest)
    assert str(info.value) == (
        f"{manifest}, participants[0].sdp: {json.dumps(sdp)} is outside the manifest's folder"
    )
    assert info.value.path == "participants[0].sdp"
    assert "SECRET" not in _everything_said(info.value)


def test_leaving_the_folder_when_allowed(folders: tuple[Path, Path]) -> None:
    room, secret = folders
    (secret.parent / "eve.sdp").write_text(SDP)
    (room / "link.sdp").symlink_to(secret.parent / "eve.sdp")
    for sdp in ("../../eve.sdp", "link.sdp"):
        (eve,) = load_description([], _manifest(room, sdp), allow_outside=True).participants
        assert (eve.id, eve.streams[0].port, eve.streams[0].codecs[0].name) == ("eve", 5004, "pcmu")
        assert eve.described_by == str(secret.parent / "eve.sdp")
    # allowed to read it, the secret file is still not an SDP: said without quoting it
    with pytest.raises(DescriptionError) as info:
        load_description([], _manifest(room, "../../secret.txt"), allow_outside=True)
    assert str(info.value) == f"{secret}, line 1: expected '<type>=<value>'"
    assert "SECRET" not in _everything_said(info.value)


def test_files_inside_the_folder_are_read(folders: tuple[Path, Path]) -> None:
    room, _ = folders
    (room / "sdps").mkdir()
    (room / "sdps" / "eve.sdp").write_text(SDP)
    (entry,) = load_manifest(_manifest(room, "sdps/../sdps/eve.sdp"))
    assert entry.sdp == str((room / "sdps" / "eve.sdp").resolve())


def test_sdp_errors_never_quote_the_file(folders: tuple[Path, Path]) -> None:
    """Whatever a line holds, a malformed SDP is reported by line number and expected form."""
    room, secret = folders
    cases = {
        "not an SDP at all": (secret.read_text(), 1, "expected '<type>=<value>'"),
        "not an SDP, but x=": ("x=" + SECRET, 1, "an SDP starts with 'v=0'"),
        "a bad line": (SDP + SECRET + "\n", 7, "expected '<type>=<value>'"),
        "a bad port": (SDP.replace("5004", "SECRET"), 6, "m= port must be an integer 0..65535"),
        "a bad attribute": (SDP + "a=rtpmap:0 PCMU/SECRET\n", 7, "a=rtpmap clock rate must be"),
    }
    for name, (text, line, expected) in cases.items():
        path = room / f"{name}.sdp"
        path.write_text(text)
        with pytest.raises(DescriptionError) as info:
            load_description([], _manifest(room, path.name))
        assert str(info.value).startswith(f"{path.resolve()}, line {line}: {expected}"), name
        assert "SECRET" not in _everything_said(info.value), name
    (room / "binary.sdp").write_bytes(b"v=0\n\xff\xfe" + SECRET.encode())
    with pytest.raises(DescriptionError) as info:
        read_sdp(room / "binary.sdp")
    assert str(info.value).endswith("binary.sdp, line 2: cannot read SDP: not UTF-8 text")
    assert "SECRET" not in _everything_said(info.value)


def test_a_fifo_or_a_folder_is_not_read(folders: tuple[Path, Path]) -> None:
    """Opening a FIFO named by a manifest must not wait for a writer that never comes."""
    room, _ = folders
    os.mkfifo(room / "pipe.sdp")
    with pytest.raises(DescriptionError, match=r"pipe\.sdp: cannot read SDP: not a regular file"):
        load_description([], _manifest(room, "pipe.sdp"))
    (room / "dir.sdp").mkdir()
    with pytest.raises(DescriptionError, match=r"dir\.sdp: cannot read SDP: Is a directory"):
        load_description([], _manifest(room, "dir.sdp"))


def test_a_manifest_that_is_not_json_is_not_quoted(folders: tuple[Path, Path]) -> None:
    _, secret = folders
    with pytest.raises(DescriptionError) as info:
        load_description([], secret)
    assert str(info.value).startswith(f"{secret}, line 1: not JSON: ")
    assert "SECRET" not in _everything_said(info.value)


# ---------------------------------------------------------------------------------------------
# A room with streams that cannot be mixed

SECONDS = 3.0
START_NS = 1_764_000_000 * 10**9  # the synthesizer's relay clock zero
TE_PT, L16_PT, ODD_PT = 126, 98, 99
CN_SSRC, ODD_SSRC, STRAY_SSRC = 0xC0C0C0C0, 0x0DD0DD0D, 0xDEADBEEF
STRAY_FROM = ("10.1.2.3", 5000)


@dataclass
class Room:
    pcap: Path
    sdps: list[str]  # NAME=FILE, with the extra payload types declared
    truth: dict
    ssrc: dict[str, int]  # "ada audio", "bob video", "l16", ...
    sent: dict[str, int]  # packets of each extra stream


def _rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    packet = RtpPacket(
        payload_type=pt, marker=int(marker), sequence_number=seq, timestamp=ts, ssrc=ssrc
    )
    packet.payload = payload
    return packet.serialize()


def _is_rtp_of(data: bytes, ssrc: int) -> bool:
    return len(data) >= 12 and not 192 <= data[1] <= 223 and data[8:12] == ssrc.to_bytes(4, "big")


def _ffmpeg_l16(tmp: Path) -> list[bytes]:
    """One second of a 500 Hz tone as FFmpeg's RTP muxer sends L16 (16 kHz mono), as received."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    receiver = Receiver((port,))
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
            "-f", "lavfi", "-i", "sine=frequency=500:sample_rate=16000", "-t", "1",
            "-ac", "1", "-c:a", "pcm_s16be", "-payload_type", str(L16_PT),
            "-f", "rtp", f"rtp://127.0.0.1:{port}",
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    receiver.stop()
    packets = [data for _, _, data in receiver.got]
    assert len(packets) >= 10 and all(p[1] & 0x7F == L16_PT for p in packets)
    return packets


def _with_extras(sdp: str, media: str, extra: str, lines: list[str]) -> str:
    """The SDP with payload types added to its m=<media> line and attribute lines after it."""
    out = []
    for line in sdp.splitlines():
        if line.startswith(f"m={media} "):
            out += [f"{line} {extra}", *lines]
        else:
            out.append(line)
    return "\r\n".join(out) + "\r\n"


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Room:
    out = tmp_path_factory.mktemp("room")
    people = [
        SynthParticipant("ada", (160, 120), 15, "vp8"),
        SynthParticipant("bob", (160, 120), 15, "vp8", tone_hz=440),
    ]
    made = synthesize(people, SECONDS, out, seed=3, impairments=Impairments())
    truth = made.truth_data
    ssrc = {
        f"{p['name']} {kind}": p[kind]["ssrcs"][0]
        for p in truth["participants"]
        for kind in ("audio", "video")
    }
    port = {
        f"{p['name']} {kind}": p[kind]["port"]
        for p in truth["participants"]
        for kind in ("audio", "video")
    }
    relay = "127.0.0.1"
    extra: list[tuple[int, tuple[str, int], tuple[str, int], bytes]] = []
    sent = {"telephone-event": 0, "cn": 0, "l16": 0, "odd": 0, "stray": 0}
    # ada's audio: a DTMF "5" from 1.0 to 1.3 s (3 end packets), in her Opus stream's sequence
    shifted: list[Datagram] = []
    events: list[bytes] = []
    ends = 0
    event_ts: int | None = None
    for d in read_capture(made.pcap):
        if not _is_rtp_of(d.data, ssrc["ada audio"]):
            shifted.append(d)
            continue
        seq = (int.from_bytes(d.data[2:4], "big") + len(events)) & 0xFFFF
        shifted.append(replace(d, data=d.data[:2] + seq.to_bytes(2, "big") + d.data[4:]))
        t = (d.arrival_ns - START_NS) / 1e9
        ending = t >= 1.3 and bool(events) and ends < 3
        ends += ending
        if 1.0 <= t < 1.3 or ending:
            if event_ts is None:
                event_ts = int.from_bytes(d.data[4:8], "big")
            flags = (0x80 if ending else 0) | 10  # E bit, volume 10
            payload = struct.pack("!BBH", 5, flags, 960 * (len(events) + 1))
            te = _rtp(TE_PT, seq + 1 & 0xFFFF, event_ts, ssrc["ada audio"], payload, not events)
            events.append(te)
            shifted.append(replace(d, arrival_ns=d.arrival_ns + 1_000_000, data=te))
    sent["telephone-event"] = len(events)
    # comfort noise on ada's audio port from an SSRC of its own
    for i in range(10):
        cn = _rtp(13, 100 + i, 8000 * i // 50, CN_SSRC, bytes([45]))
        extra.append(
            (
                START_NS + 2_000_000_000 + i * 20_000_000,
                ("127.0.0.10", 20002),
                (relay, port["ada audio"]),
                cn,
            )
        )
        sent["cn"] += 1
    # L16 from FFmpeg to bob's audio port
    l16 = _ffmpeg_l16(out)
    ssrc["l16"] = int.from_bytes(l16[0][8:12], "big")
    first_ts = int.from_bytes(l16[0][4:8], "big")
    for data in l16:
        at = (
            START_NS
            + 500_000_000
            + ((int.from_bytes(data[4:8], "big") - first_ts) % 2**32) * 10**9 // 16000
        )
        extra.append((at, ("127.0.0.11", 20012), (relay, port["bob audio"]), data))
        sent["l16"] += 1
    # a payload type nobody declared, to bob's video port
    for i in range(8):
        odd = _rtp(ODD_PT, i, 3000 * i, ODD_SSRC, b"\xff" * 40)
        extra.append(
            (
                START_NS + 1_500_000_000 + i * 33_000_000,
                ("127.0.0.11", 20010),
                (relay, port["bob video"]),
                odd,
            )
        )
        sent["odd"] += 1
    # ada's first second of video again, from a stranger's address to a port nobody describes
    for d in list(shifted):
        if _is_rtp_of(d.data, ssrc["ada video"]) and d.arrival_ns < START_NS + 10**9:
            data = d.data[:8] + STRAY_SSRC.to_bytes(4, "big") + d.data[12:]
            extra.append((d.arrival_ns + 500_000, STRAY_FROM, (relay, 30000), data))
            sent["stray"] += 1
    everything = [
        (d.arrival_ns, (d.src.host, d.src.port), (d.dst.host, d.dst.port), d.data)
        for d in shifted
        if d.src and d.dst
    ]
    everything += extra
    everything.sort(key=lambda item: item[0])
    pcap = out / "room.pcap"
    with PcapWriter(pcap) as writer:
        for at, src, dst, data in everything:
            writer.write(at, src, dst, data)
    ada_sdp = out / "ada.sdp"
    ada_sdp.write_text(
        _with_extras(
            made.sdps[0].read_text(),
            "audio",
            f"{TE_PT} 13",
            [f"a=rtpmap:{TE_PT} telephone-event/48000", f"a=fmtp:{TE_PT} 0-16"],
        )
    )
    bob_sdp = out / "bob.sdp"
    bob_sdp.write_text(
        _with_extras(
            made.sdps[1].read_text(), "audio", str(L16_PT), [f"a=rtpmap:{L16_PT} L16/16000"]
        )
    )
    return Room(pcap, [f"ada={ada_sdp}", f"bob={bob_sdp}"], truth, ssrc, sent)


def _skipped(scan: RoomScan) -> dict[tuple[int, int], tuple[str, int, str | None]]:
    return {
        (s.ssrc, s.payload_type): (s.reason, s.packets, s.participant) for s in scan.skipped_streams
    }


def test_streams_that_cannot_be_mixed_are_skipped_and_listed(room: Room) -> None:
    scan = scan_room([room.pcap], load_description(room.sdps))
    people = {p.id: {s.kind: s for s in p.streams} for p in scan.participants}
    assert set(people) == {"ada", "bob"}
    for p in room.truth["participants"]:
        audio, video = people[p["name"]]["audio"], people[p["name"]]["video"]
        # telephone events between ada's Opus packets took their sequence numbers: no loss
        assert (audio.total("lost"), audio.total("frames")) == (0, p["audio"]["packets"])
        assert audio.total("packets") == p["audio"]["packets"]
        assert (audio.ssrcs, video.ssrcs) == (p["audio"]["ssrcs"], p["video"]["ssrcs"])
        assert video.total("frames") == len(p["video"]["frames"])
        for stream in (audio, video):  # the events' timestamps say nothing of the clock
            (fit,) = stream.clocks.values()
            assert abs(fit.drift_ppm - p["drift_ppm"]) < 60
    assert _skipped(scan) == {
        (room.ssrc["ada audio"], TE_PT): (
            "codec telephone-event cannot be mixed",
            room.sent["telephone-event"],
            "ada",
        ),
        (CN_SSRC, 13): ("codec cn cannot be mixed", room.sent["cn"], "ada"),
        (room.ssrc["l16"], L16_PT): ("codec l16 cannot be mixed", room.sent["l16"], "bob"),
        (ODD_SSRC, ODD_PT): (
            f"payload type {ODD_PT} is not described for video :20010",
            room.sent["odd"],
            "bob",
        ),
    }
    (stray,) = scan.unclaimed
    assert (stray.ssrc, stray.payload_type, stray.packets, stray.source) == (
        STRAY_SSRC,
        96,
        room.sent["stray"],
        "10.1.2.3:5000",
    )
    assert not scan.unmatched and scan.damaged()
    summary = scan.damage_summary()
    assert (
        f"unclaimed stream: ssrc {STRAY_SSRC:#010x}, pt 96, {room.sent['stray']} packets, from "
        f"10.1.2.3:5000 to 127.0.0.1:30000 ({room.pcap})" in summary
    )
    assert (
        f"ada: skipped ssrc {CN_SSRC:#010x}, pt 13, {room.sent['cn']} packets: codec cn cannot "
        f"be mixed ({room.pcap})"
    ) in summary
    data = scan.to_json()
    assert data["damage"] == summary
    assert {(s["ssrc"], s["payload_type"]) for s in data["skipped_streams"]} == set(_skipped(scan))  # type: ignore[union-attr]


def test_inspect_lists_what_it_skipped(room: Room) -> None:
    args = [SCRIPT, "inspect", room.pcap] + [a for s in room.sdps for a in ("--sdp", s)]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    table = done.stdout
    assert "ada (id ada)" in table and "bob (id bob)" in table
    damage = table[table.index("\ndamage:") :]
    assert f"ssrc {room.ssrc['l16']:#010x}, pt {L16_PT}" in damage
    assert "codec telephone-event cannot be mixed" in damage
    assert f"unclaimed stream: ssrc {STRAY_SSRC:#010x}" in damage
    data = json.loads(
        subprocess.run([*args, "--json"], capture_output=True, text=True, check=True).stdout
    )
    assert {s["reason"] for s in data["skipped_streams"]} >= {
        "codec cn cannot be mixed",
        "codec l16 cannot be mixed",
    }


def test_without_a_description_unknown_payload_types_are_skipped(room: Room) -> None:
    """Guessing: each payload type on its own; what is not recognised or cannot be mixed is
    skipped, the rest of its SSRC kept."""
    scan = scan_room([room.pcap])
    streams = {s.ssrcs[0]: s for p in scan.participants for s in p.streams}
    opus = streams[room.ssrc["ada audio"]]
    assert (opus.codec, opus.total("frames"), opus.total("lost")) == ("opus", 150, 0)
    assert streams[STRAY_SSRC].codec == "vp8"  # nobody describes it: it is just guessed
    skipped = _skipped(scan)
    reason, packets, who = skipped[(room.ssrc["ada audio"], TE_PT)]
    assert (packets, who) == (room.sent["telephone-event"], f"ssrc {room.ssrc['ada audio']:#010x}")
    assert re.fullmatch(
        rf"payload type {TE_PT} \(\d+ packets\) looks like none of VP8, VP9, H\.264, Opus; "
        "describe it in an SDP or a manifest",
        reason,
    )
    assert skipped[(CN_SSRC, 13)][0].startswith(
        "codec cn cannot be mixed (guessed audio, PT 13 = cn/8000"
    )
    assert skipped[(room.ssrc["l16"], L16_PT)][1] == room.sent["l16"]
    assert skipped[(ODD_SSRC, ODD_PT)][1] == room.sent["odd"]
    assert not scan.unclaimed and not scan.unmatched


def test_mix_with_streams_that_cannot_be_mixed(room: Room, tmp_path: Path) -> None:
    out = tmp_path / "room.mp4"
    report = mix(
        [room.pcap],
        out,
        description=load_description(room.sdps),
        options=MixOptions(encode=EncodeSettings(width=320, height=180, preset="ultrafast")),
    )
    assert {p.id for p in report.participants} == {"ada", "bob"}
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert abs(float(container.duration / av.time_base) - SECONDS) < 0.5
        frames = sum(1 for _ in container.decode(video))
    assert frames > 0 and audio.codec_context.name == "aac"


def test_a_ghost_is_named_and_costs_nobody_else(room: Room, tmp_path: Path) -> None:
    """A described participant whose ports and payload types no packet has is named, with them;
    the others are read as without it. A participant missing one stream is named with it."""
    ghost = tmp_path / "ghost.sdp"
    ghost.write_text(
        SDP.replace("5004 RTP/AVP 0", "9999 RTP/AVP 111") + "a=rtpmap:111 opus/48000/2\n"
    )
    ada = Path(room.sdps[0].partition("=")[2])
    half = tmp_path / "half.sdp"
    half.write_text(ada.read_text() + "m=video 9998 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n")
    scan = scan_room([room.pcap], load_description([f"ada={half}", room.sdps[1], f"ghost={ghost}"]))
    assert {p.id for p in scan.participants} == {"ada", "bob"}
    assert all(s.total("frames") > 0 for p in scan.participants for s in p.streams)
    assert [str(u) for u in scan.unmatched] == [
        f"ada: video :9998 (described by {half}): no packet matched port 9998 / payload type 96",
        f"ghost: described by {ghost}, no packet matched port 9999 / payload type 111",
    ]
    assert [u.whole for u in scan.unmatched] == [False, True]
    assert all(line in scan.damage_summary() for line in map(str, scan.unmatched))


def test_a_clean_room_is_not_damaged(tmp_path: Path) -> None:
    made = synthesize([SynthParticipant("cy", (160, 120), 15, "vp8")], 2.0, tmp_path, seed=5)
    scan = scan_room([made.pcap], load_description([f"cy={made.sdps[0]}"]))
    assert not scan.damaged() and scan.damage_summary() == []
    assert not scan.skipped_streams and not scan.unclaimed and not scan.unmatched


def test_read_damage_is_in_the_summary(tmp_path: Path) -> None:
    """A corrupt record length (skipped to the next plausible record) and a timestamp a day
    late (set aside) are in the scan's damage summary and make it damaged, as inspect shows."""
    made = synthesize([SynthParticipant("cy", (160, 120), 15, "vp8")], 3.0, tmp_path, seed=5)
    data = bytearray(made.pcap.read_bytes())
    records, at = [], 24
    while at + 16 <= len(data):
        records.append(at)
        at += 16 + struct.unpack_from("<I", data, at + 8)[0]
    struct.pack_into("<I", data, records[len(records) // 2] + 8, 0x7FFFFFFF)
    late = records[len(records) // 3]
    struct.pack_into("<I", data, late, struct.unpack_from("<I", data, late)[0] + 86400)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(data)
    sdp = f"cy={made.sdps[0]}"
    scan = scan_room([bad], load_description([sdp]))
    assert scan.damaged()
    first, aside = scan.damage_summary()
    assert re.fullmatch(
        rf"{re.escape(str(bad))}: skipped 1 damaged span\(s\), \d+ bytes in all, the first at "
        rf"bytes {records[len(records) // 2]}-\d+: impossible captured length 2147483647",
        first,
    )
    assert aside == f"{bad}: set aside 1 datagram(s) whose arrival time was out of line"
    table = subprocess.run(
        [SCRIPT, "inspect", bad, "--sdp", sdp], capture_output=True, text=True, check=True
    ).stdout
    assert f"damage:\n  {first}\n  {aside}\n" in table


def test_a_deeply_nested_manifest_is_a_description_error(tmp_path: Path) -> None:
    manifest = tmp_path / "deep.json"
    manifest.write_text("[" * 200_000)
    with pytest.raises(DescriptionError, match="nested too deeply"):
        load_description([], manifest)
