"""`skymix demo` end to end: the main job on the sample capture it makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mix_tools import read_recording, tile_chroma
from skymix.compose.color import rgb_to_yuv
from skymix.compose.labels import placeholder_color

SCRIPT = Path(sys.executable).with_name("skymix")


def test_demo_mixes_the_sample_session(tmp_path):
    out = tmp_path / "demo.mp4"
    ran = subprocess.run(
        [SCRIPT, "demo", "--output", out, "--seconds", "8"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "4 participants" in ran.stdout and str(out) in ran.stdout
    for name in ("ada", "grace", "linus", "margaret"):
        assert name in ran.stdout
    assert "sender reports" in ran.stdout  # the sync it applied
    report = json.loads(out.with_suffix(".json").read_text())
    assert (tmp_path / "demo-capture" / "synth.pcap").exists()
    rec = read_recording(out, report)
    assert len(rec.frames) == report["frames"] >= 8 * 30 - 15
    assert rec.frames[0][1].shape == (720, 1280)
    # grace turns her camera off from 2.4 s to 4.4 s: her tile shows her placeholder then
    during = next(i for i, f in enumerate(rec.frames) if f[0] >= 3.5)
    tile = rec.tiles_at(rec.frames[during][0])["grace"]
    assert not tile["video"]
    _, u, v = rgb_to_yuv(placeholder_color("grace"))
    got = tile_chroma(rec, during, "grace")
    assert abs(got[0] - u) < 30 and abs(got[1] - v) < 30
    after = next(i for i, f in enumerate(rec.frames) if f[0] >= 6.0)
    assert rec.tiles_at(rec.frames[after][0])["grace"]["video"]
    assert rec.audio.shape[1] > 7.5 * 48000
