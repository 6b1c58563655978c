"""The clock fit on captures skymix did not write: two FFmpeg senders, each on its own fake clock.

Each participant is one ``ffmpeg -re -c copy -f rtp`` run under libfaketime with an offset and a
speed factor (``faketime -m -f "+3 x1.0003"``). The factor scales the sender's realtime and
monotonic clocks, so both its RTCP sender-report NTP times and its ``-re`` pacing follow the
fake clock: its media clock really runs (x - 1) * 1e6 ppm fast against the capture host, whose
tcpdump timestamps are the relay clock (research notes, section 5.3). scan_room must recover,
per stream, that drift from arrivals alone; the sender reports must show each sender's own NTP
offset (so NTP times of different participants are never comparable); and the sender reports
mapped through the fits must put one participant's audio and video on the same instant.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest_tools import FakeClock, Receiver, Tcpdump, wait_senders
from skymix.session import load_description
from skymix.streams.room import RoomScan, scan_room

# Why 24 s at 30 fps, not 12 s at 15: ffmpeg 5.1's -re releases a packet once the previous
# packet's dts is due and otherwise sleeps 10 ms, so send times sit on a 10 ms sleep grid that
# slides slowly (sleep overshoot). The fit keeps each 1 s window's earliest packet, and over 12 s
# that noise moved the fitted drift by up to 256 ppm (4 of 6 runs at 15 or 30 fps had a stream
# more than 60 ppm off). 30 fps gives the video envelope more packets per window, and a longer
# send shrinks what a window's error does to the slope: 5 runs of 20 s stayed within 36 ppm,
# 3 of 24 s within 28 ppm.
SECONDS = 24
FPS = 30
LOCAL = "127.0.0.1"
FFMPEG = ["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", "-nostdin"]


@dataclass(frozen=True)
class Sender(FakeClock):
    """One participant: what it sends and the fake clock its ffmpeg runs on."""

    name: str
    video_codec: str  # as skymix names it
    video_args: tuple[str, ...]
    container: str
    offset_s: float
    speed: float


SENDERS = (
    Sender(
        "ada",
        "vp8",
        ("-c:v", "libvpx", "-b:v", "500k", "-deadline", "realtime", "-cpu-used", "8"),
        "webm",
        3.0,
        1.0003,
    ),
    Sender(
        "bob",
        "h264",
        (
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-g",
            "30",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
        ),
        "mkv",
        -7.0,
        0.99975,
    ),
)


def free_port_block(count: int) -> int:
    """An even port P with P .. P + count - 1 all free for UDP on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOCAL, 0))
            base = s.getsockname()[1] & ~1
        if base < 1024 or base + count - 1 > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind((LOCAL, port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError(f"no {count} consecutive free UDP ports")


def encode(sender: Sender, path: Path, tone_hz: int) -> None:
    """SECONDS of test pattern and a sine in Opus, encoded ahead (not in real time)."""
    subprocess.run(
        FFMPEG
        + [
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=320x240:rate={FPS}:duration={SECONDS}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone_hz}:sample_rate=48000:duration={SECONDS}",
            *sender.video_args,
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            str(path),
        ],
        check=True,
        timeout=120,
    )


@dataclass
class Room:
    scan: RoomScan
    sdps: dict[str, Path]
    pcap: Path
    captured: int


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Room:
    return record_room(tmp_path_factory.mktemp("ffmpeg_room"))


def record_room(directory: Path) -> Room:
    """Both participants sent at once, each ffmpeg under its own faketime, tcpdump on lo."""
    media = {}
    for i, sender in enumerate(SENDERS):
        media[sender.name] = directory / f"{sender.name}.{sender.container}"
        encode(sender, media[sender.name], 440 + 220 * i)
    base = free_port_block(4 * len(SENDERS))
    ports = {s.name: (base + 4 * i, base + 4 * i + 2) for i, s in enumerate(SENDERS)}
    sdps = {s.name: directory / f"{s.name}.sdp" for s in SENDERS}
    pcap = directory / "room.pcap"
    # "." as the decimal separator of the speed factor, whatever the caller's locale
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    receiver = Receiver(tuple(range(base, base + 4 * len(SENDERS))))  # no ICMP unreachable
    tcpdump: Tcpdump | None = None
    procs: list[subprocess.Popen] = []
    try:
        tcpdump = Tcpdump(pcap, f"udp and portrange {base}-{base + 4 * len(SENDERS) - 1}")
        for sender in SENDERS:
            video, audio = ports[sender.name]
            procs.append(
                subprocess.Popen(
                    [
                        "faketime",
                        "-m",
                        "-f",
                        sender.faketime,
                        *FFMPEG,
                        "-re",
                        "-i",
                        str(media[sender.name]),
                        "-map",
                        "0:v",
                        "-c",
                        "copy",
                        "-f",
                        "rtp",
                        f"rtp://{LOCAL}:{video}?rtcpport={video + 1}",
                        "-map",
                        "0:a",
                        "-c",
                        "copy",
                        "-f",
                        "rtp",
                        f"rtp://{LOCAL}:{audio}?rtcpport={audio + 1}",
                        "-sdp_file",
                        str(sdps[sender.name]),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                    # faketime forks ffmpeg and waits for it: its own group stops both together
                    start_new_session=True,
                )
            )
    finally:
        wait_senders(procs, [s.name for s in SENDERS], SECONDS * 3 + 30)
        receiver.stop()
        report = tcpdump.stop() if tcpdump is not None else ""
    captured = tcpdump.captured(report)
    description = load_description([f"{name}={path}" for name, path in sdps.items()])
    return Room(scan_room([pcap], description), sdps, pcap, captured)


def streams(room: Room, name: str):
    (participant,) = [p for p in room.scan.participants if p.id == name]
    kinds = {s.kind: s for s in participant.streams}
    assert set(kinds) == {"audio", "video"} and len(participant.streams) == 2
    return kinds["audio"], kinds["video"]


def only(mapping):
    (value,) = mapping.values()
    return value


def test_both_participants_found_with_their_codecs(room):
    scan = room.scan
    # participants come in the order their first packet arrived, which is a race here
    assert sorted(p.id for p in scan.participants) == sorted(s.name for s in SENDERS)
    assert "VP8/90000" in room.sdps["ada"].read_text()
    assert "H264/90000" in room.sdps["bob"].read_text()
    assert scan.problems == []
    assert dict(scan.skipped) == {}
    for sender in SENDERS:
        audio, video = streams(room, sender.name)
        assert (audio.codec, video.codec) == ("opus", sender.video_codec)
        assert (audio.clock_rate, video.clock_rate) == (48000, 90000)
        for stream in (audio, video):
            assert len(stream.ssrcs) == 1
            assert stream.total("lost") == 0
            # FFmpeg's first report comes before its first packet; then one about every 5 s
            assert only(stream.sender_clocks).reports >= 2
        # the capture can stop before FFmpeg's last few frames left (seen: 717 of 720)
        assert video.total("frames") >= SECONDS * FPS - 10
        assert video.total("keyframes") >= 1
        assert audio.total("frames") >= SECONDS * 50 - 5
    # every datagram tcpdump captured was read (RTP and RTCP of four port pairs, nothing else)
    assert room.scan.files[str(room.pcap)].datagrams == room.captured


def test_fitted_drift_is_each_senders_own_clock(room):
    for sender in SENDERS:
        audio, video = streams(room, sender.name)
        fits = {s.kind: only(s.clocks) for s in (audio, video)}
        for kind, fit in fits.items():
            print(
                f"{sender.name} {kind}: drift {fit.drift_ppm:+.1f} ppm (faketime "
                f"{sender.ppm:+.0f}), {fit.points} windows, jitter {fit.jitter_ns / 1e6:.3f} ms"
            )
            assert abs(fit.drift_ppm - sender.ppm) < 60
        assert abs(fits["audio"].drift_ppm - fits["video"].drift_ppm) < 60


def test_sender_reports_carry_each_senders_own_ntp_clock(room):
    for sender in SENDERS:
        for stream in streams(room, sender.name):
            fit, clock = only(stream.clocks), only(stream.sender_clocks)
            # the middle of the stream, in RTP time, on the relay clock and on the sender's
            middle = fit.rtp_at((stream.first_arrival_ns + stream.last_arrival_ns) / 2)
            ahead = clock.ntp_of(middle, stream.clock_rate) - fit.arrival_ns(middle) / 1e9
            print(
                f"{sender.name} {stream.kind}: sender NTP - capture time {ahead:+.4f} s "
                f"(faketime {sender.offset_s:+g} s)"
            )
            assert abs(ahead - sender.offset_s) < 0.2


def test_lip_sync_from_sender_reports(room):
    """An audio and a video RTP time that ada's reports call simultaneous land together.

    Tolerance 40 ms, measured about -5.5 ms. Neither FFmpeg stream is sent exactly on its
    report mapping: the reports' RTP times are extrapolated from the wall clock since the
    first report (sent just before each stream's first packet), while -re lets a packet go as
    soon as the previous packet of the file is due, so each packet leaves up to one packet
    interval of the interleaved file early (audio about 20 ms, video 0-20 ms at 30 fps), and
    video starts 7 ms after audio (Opus pre-skip moves the file's start). The fits follow the
    earliest packets, so the skew is bounded by one 20 ms Opus packet plus the 7 ms shift plus
    scheduling; 40 ms covers that and is still below what people notice as lip-sync error
    (about 45 ms of audio lead, ITU-R BT.1359).
    """
    audio, video = streams(room, "ada")
    fit_a, fit_v = only(audio.clocks), only(video.clocks)
    clock_a, clock_v = only(audio.sender_clocks), only(video.sender_clocks)
    worst = 0.0
    for share in (0.25, 0.5, 0.75):
        instant = audio.first_arrival_ns + share * (audio.last_arrival_ns - audio.first_arrival_ns)
        ntp = clock_a.ntp_of(round(fit_a.rtp_at(instant)), 48000)
        rtp_a, rtp_v = clock_a.rtp_of(ntp, 48000), clock_v.rtp_of(ntp, 90000)
        skew_ms = (fit_v.arrival_ns(rtp_v) - fit_a.arrival_ns(rtp_a)) / 1e6
        print(f"ada lip sync at {share:.0%}: video - audio {skew_ms:+.2f} ms")
        worst = max(worst, abs(skew_ms))
    assert worst < 40
