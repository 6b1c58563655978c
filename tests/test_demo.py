"""`skymix demo` end to end: the MP4 it writes shows and sounds like the session it generated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np

SCRIPT = Path(sys.executable).with_name("skymix")


def test_demo_writes_the_session(tmp_path):
    out = tmp_path / "demo.mp4"
    ran = subprocess.run([SCRIPT, "demo", "--output", out, "--seconds", "3"],
                         capture_output=True, text=True, check=True)
    assert "4 participants (Ada, Grace, Linus, Margaret)" in ran.stdout
    assert str(out) in ran.stdout

    with av.open(str(out)) as f:
        frames = {i: fr.to_ndarray(format="rgb24") for i, fr in enumerate(f.decode(video=0))}
    assert len(frames) == 90 and frames[0].shape == (720, 1280, 3)
    before, after = frames[30], frames[75]  # t = 1.0 s and 2.5 s; Margaret joins at 2.0 s
    margaret = (slice(400, 680), slice(840, 1080))
    assert before[margaret].std() < 3 and before[margaret].mean() < 40  # empty tile: background
    assert after[margaret].std() > 20  # her picture
    ada = before[300, 320].astype(int)  # below the moving bar
    assert ada[0] > ada[1] + 40  # Ada's tile is red
    # the speaking dot on Ada's tile at t = 0.4 s, none at t = 1.0 s
    dot_on, dot_off = frames[12][26, 26].astype(int), frames[30][26, 26].astype(int)
    assert dot_on[1] > 180 and dot_on[0] < 140 and dot_off[1] < 60

    with av.open(str(out)) as f:
        pcm = np.concatenate([fr.to_ndarray() for fr in f.decode(audio=0)], axis=1)
    left = pcm[0]
    # 0.25-0.65 s: Ada alone, a 220 Hz tone of peak 0.3: full level (no 1/N drop), her pitch
    alone = left[int(0.25 * 48000): int(0.65 * 48000)]
    assert abs(np.sqrt(np.mean(alone**2)) - 0.3 / np.sqrt(2)) < 0.02
    spectrum = np.abs(np.fft.rfft(alone))
    assert abs(np.argmax(spectrum) * 48000 / len(alone) - 220) < 5
