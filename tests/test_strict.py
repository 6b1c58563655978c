"""The console says what the report says about damaged input, and --strict stops on it: a
described participant that matched nothing (a ghost), on a real `skymix` process."""

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest

from skymix.synth import preset, synthesize

GHOST_SDP = """v=0
o=- 0 0 IN IP4 127.0.0.99
s=ghost
c=IN IP4 127.0.0.1
t=0 0
m=audio 9999 RTP/AVP 111
a=rtpmap:111 opus/48000/2
"""


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    folder = tmp_path_factory.mktemp("strict")
    people = preset(2, 2.0)
    made = synthesize(people, 2.0, folder, seed=5)
    ghost = folder / "ghost.sdp"
    ghost.write_text(GHOST_SDP)
    sdps = [f"{p.name}={sdp}" for p, sdp in zip(people, made.sdps)]
    return made.pcap, sdps, ghost


def skymix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skymix", *args], capture_output=True, text=True, timeout=120
    )


def sdp_args(sdps: list[str], ghost: Path | None) -> list[str]:
    extra = [f"ghost={ghost}"] if ghost else []
    return [arg for sdp in [*sdps, *extra] for arg in ("--sdp", sdp)]


def test_damage_is_on_the_console_and_in_the_report(room, tmp_path):
    pcap, sdps, ghost = room
    out, report = tmp_path / "out.mp4", tmp_path / "out.json"
    run = skymix(
        "mix",
        str(pcap),
        *sdp_args(sdps, ghost),
        "-o",
        str(out),
        "--report",
        str(report),
        "--size",
        "320x180",
    )
    assert run.returncode == 0, run.stderr
    line = f"ghost: described by {ghost}, no packet matched port 9999 / payload type 111"
    assert line in run.stdout
    assert line in json.loads(report.read_text())["damage"]
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 60


def test_strict_stops_before_writing_anything(room, tmp_path):
    pcap, sdps, ghost = room
    out = tmp_path / "out.mp4"
    run = skymix("mix", str(pcap), *sdp_args(sdps, ghost), "-o", str(out), "--strict")
    assert run.returncode == 2
    assert run.stderr.startswith("skymix: error: the input is damaged") and "ghost" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []
    inspect = skymix("inspect", str(pcap), *sdp_args(sdps, ghost), "--strict")
    assert inspect.returncode == 2 and "ghost: described by" in inspect.stdout


def test_strict_passes_a_clean_room(room, tmp_path):
    pcap, sdps, _ = room
    out = tmp_path / "out.mp4"
    run = skymix(
        "mix", str(pcap), *sdp_args(sdps, None), "-o", str(out), "--strict", "--size", "320x180"
    )
    assert run.returncode == 0, run.stderr
    assert "input damage" not in run.stdout and out.stat().st_size > 0
