"""SIGINT, SIGTERM and SIGKILL sent to a `skymix mix` process mid-mix: the earlier recording stays
intact and decodable; INT and TERM clean up (no temporary file, every thread stopped: the
process ends) and exit 130 and 143 with one line on stderr; after KILL, the next run removes the
temporary file the dead one left."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from skymix.synth import SynthResult, preset, synthesize

QUICK_SECONDS = 2.0


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthResult, SynthResult]:
    """A capture whose mix at 1920x1080 with x264's slowest preset takes ~10 s (the one to
    interrupt), and a short one for quick mixes."""
    folder = tmp_path_factory.mktemp("signals")
    long = synthesize(preset(1, 4.0), 4.0, folder / "long", seed=3)
    quick = synthesize(preset(1, QUICK_SECONDS), QUICK_SECONDS, folder / "quick", seed=4)
    return long, quick


@pytest.fixture(scope="module")
def earlier(
    captures: tuple[SynthResult, SynthResult], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A recording made before, which an interrupted mix must leave as it was."""
    path = tmp_path_factory.mktemp("earlier") / "earlier.mp4"
    subprocess.run(skymix(captures[1], path), check=True, capture_output=True)
    return path


def skymix(made: SynthResult, out: Path, *extra: str) -> list[str]:
    sdps = [a for sdp in made.sdps for a in ("--sdp", str(sdp))]
    return [sys.executable, "-m", "skymix", "mix", str(made.pcap), *sdps, "-o", str(out), *extra]


def frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def temporaries(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.glob(".*.skymix-*.partial")]


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)]
)
def test_a_signal_mid_mix_leaves_the_earlier_recording_intact(
    captures: tuple[SynthResult, SynthResult],
    earlier: Path,
    tmp_path: Path,
    sig: signal.Signals,
    code: int,
) -> None:
    long, quick = captures
    out = tmp_path / "room.mp4"
    shutil.copyfile(earlier, out)
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    sidecars = tmp_path / "each"
    outputs = ("--per-participant", str(sidecars), "--channels", str(tmp_path / "channels.wav"))
    slow = ("--size", "1920x1080", "--preset", "veryslow", "--threads", "1")
    command = skymix(long, out, *slow, *outputs)
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not temporaries(tmp_path) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # into the encoding of the first frames
    assert run.poll() is None, "the mix ended before it could be interrupted"
    run.send_signal(sig)
    _, err = run.communicate(timeout=60)
    assert run.returncode == code
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    assert frames(out) == QUICK_SECONDS * 30
    if sig == signal.SIGKILL:
        left = temporaries(tmp_path, sidecars)
        assert left, "a killed run leaves its temporary files"
        done = subprocess.run(skymix(quick, out, *outputs), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert not temporaries(tmp_path, sidecars)
    else:
        assert err == f"skymix: cancelled by {sig.name}\n"
        assert not temporaries(tmp_path, sidecars)
        assert not (tmp_path / "channels.wav").exists()
        assert not sidecars.exists()  # the folder the run made is removed with its files


def test_cancel_on_signals_raises_once_then_restores_the_handlers() -> None:
    from skymix.errors import CancelledError
    from skymix.outputs import cancel_on_signals

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(CancelledError, match="cancelled by SIGTERM"):
        with cancel_on_signals() as cancellation:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # the handler raises here
            finally:
                os.kill(os.getpid(), signal.SIGINT)  # a second one, during the clean-up: ignored
                time.sleep(0.01)
    assert (cancellation.signal, cancellation.exit_code) == (signal.SIGTERM, 143)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_cancellation_the_work_swallowed_is_raised_at_the_end() -> None:
    """The demo's case: SIGINT landed while a log line was written, and logging swallowed the
    CancelledError; the block still ends cancelled."""
    from skymix.errors import CancelledError
    from skymix.outputs import cancel_on_signals

    finished = False
    with pytest.raises(CancelledError, match="cancelled by SIGINT"):
        with cancel_on_signals() as cancellation:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except Exception:  # noqa: BLE001 - what logging.Handler.handleError amounts to
                pass
            finished = True
    assert finished and cancellation.exit_code == 130
