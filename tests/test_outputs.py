"""skymix.outputs: nothing the user has is replaced by accident; every output is whole or as it
was. On real files, the real command line (in this process, or as processes of its own where
runs overlap) and, for full disks, small tmpfs mounts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import pytest

from skymix import cli
from skymix.errors import OutputConflictError, OutputError
from skymix.outputs import (
    TEMPORARY,
    PendingOutputs,
    check_job,
    check_outputs,
    remove_stale,
    temporary_name,
    write_atomic,
)
from skymix.synth import SynthResult, preset, synthesize

SECONDS = 3.0
FPS = 30


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """Two participants for three seconds, as a relay capture and two SDP files."""
    return synthesize(preset(2, SECONDS), SECONDS, tmp_path_factory.mktemp("room"), seed=5)


@pytest.fixture(scope="module")
def earlier(room: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recording of the room made before: what a failed or refused run must leave intact."""
    path = tmp_path_factory.mktemp("earlier") / "earlier.mp4"
    assert cli.main(mix_args(room, "-o", str(path))) == 0
    return path


def mix_args(room: SynthResult, *extra: str) -> list[str]:
    sdps = [a for sdp in room.sdps for a in ("--sdp", str(sdp))]
    return ["mix", str(room.pcap), *sdps, "--size", "320x180", "--preset", "ultrafast", *extra]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temporaries(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob(".*.partial")]


def video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(args)
    return code, capsys.readouterr().err


# -- refused before any work ----------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["same path", "symlink", "hard link", "dot-dot"])
def test_an_output_that_is_the_capture_is_refused_and_the_capture_unchanged(
    room: SynthResult, tmp_path: Path, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    before = digest(room.pcap)
    if spelling == "same path":
        output = room.pcap
    elif spelling == "symlink":
        output = tmp_path / "room.mp4"
        output.symlink_to(room.pcap)
    elif spelling == "hard link":
        output = tmp_path / "room.mp4"
        os.link(room.pcap, output)
    else:
        (tmp_path / "sub").mkdir()
        output = tmp_path / "sub" / ".." / os.path.relpath(room.pcap, tmp_path)
    code, err = run_cli(mix_args(room, "-o", str(output)), capsys)
    assert code == 1
    assert err.strip() == (
        f"skymix: error: the recording {output} is also capture 1"
        + ("" if output == room.pcap else f" ({room.pcap})")
    )
    assert digest(room.pcap) == before
    assert not temporaries(room.pcap.parent, tmp_path)


def test_the_report_naming_the_recording_or_an_sdp_is_refused(
    room: SynthResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.mp4"
    code, err = run_cli(mix_args(room, "-o", str(out), "--report", str(out)), capsys)
    assert (code, err.strip()) == (1, f"skymix: error: the report {out} is also the recording")
    sdp = room.sdps[0]
    before = digest(sdp)
    code, err = run_cli(mix_args(room, "-o", str(out), "--report", str(sdp)), capsys)
    assert (code, err.strip()) == (1, f"skymix: error: the report {sdp} is also SDP file 1")
    assert digest(sdp) == before
    assert list(tmp_path.iterdir()) == []


def test_a_device_a_directory_and_a_fifo_are_refused(
    room: SynthResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(mix_args(room, "-o", "/dev/null"), capsys)
    assert (code, err.strip()) == (
        1,
        "skymix: error: the recording /dev/null is a device; only a regular file is replaced",
    )
    assert Path("/dev/null").is_char_device()
    code, err = run_cli(mix_args(room, "-o", str(tmp_path)), capsys)
    assert code == 1 and f"the recording {tmp_path} is a directory" in err
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(OutputConflictError, match="the channel WAV .*pipe.wav is a FIFO"):
        check_job([room.pcap], tmp_path / "x.mp4", channels=fifo)
    assert sorted(tmp_path.iterdir()) == [fifo]


def test_a_missing_folder_is_a_clear_error(
    room: SynthResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nowhere" / "x.mp4"
    code, err = run_cli(mix_args(room, "-o", str(out)), capsys)
    assert (code, err.strip()) == (
        1,
        f"skymix: error: the folder {out.parent} of the recording {out} is missing",
    )
    with pytest.raises(OutputError):
        check_outputs({}, {"the report": out})


def test_a_participants_file_that_is_the_recording_is_refused_before_writing(
    room: SynthResult, earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The per-participant files are named from the participants' ids, known after the scan:
    still before anything is written."""
    out = tmp_path / "participant 1.mp4"
    out.write_bytes(earlier.read_bytes())
    code, err = run_cli(mix_args(room, "-o", str(out), "--per-participant", str(tmp_path)), capsys)
    assert code == 1
    assert err.strip() == (
        f"skymix: error: the recording of participant 'participant 1' {out} is also the recording"
    )
    assert out.read_bytes() == earlier.read_bytes()
    assert sorted(tmp_path.iterdir()) == [out]


def test_an_input_inside_the_per_participant_folder_is_refused(tmp_path: Path) -> None:
    capture = tmp_path / "a.mp4"
    capture.write_bytes(b"not ours")
    with pytest.raises(OutputConflictError, match=r"participant 'a' .*a.mp4 is also capture 1"):
        check_job(
            [capture],
            tmp_path / "room.mp4",
            per_participant=tmp_path,
            participant_files={"a": tmp_path / "a.mp4"},
        )
    with pytest.raises(OutputConflictError, match="the per-participant folder .* is a file"):
        check_job([], tmp_path / "room.mp4", per_participant=capture)


# -- written whole, or not at all -----------------------------------------------------------------


def test_write_atomic_replaces_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("old")
    write_atomic(path, "new content", "the report")
    assert path.read_text() == "new content"
    assert list(tmp_path.iterdir()) == [path]


def test_pending_outputs_commit_together_or_not_at_all(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("old a")
    with pytest.raises(RuntimeError), PendingOutputs() as pending:
        pending.add(a, "a").write_text("new a")
        pending.add(b, "b").write_text("new b")
        raise RuntimeError("a failure before the commit")
    assert a.read_text() == "old a" and not b.exists()
    assert list(tmp_path.iterdir()) == [a]
    with PendingOutputs() as pending:
        pending.add(a, "a").write_text("new a")
        pending.add(b, "b").write_text("new b")
        pending.commit()
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert sorted(tmp_path.iterdir()) == [a, b]


def test_two_runs_to_one_output_both_finish_and_it_decodes_whole(
    room: SynthResult, tmp_path: Path
) -> None:
    out = tmp_path / "same.mp4"
    command = [sys.executable, "-m", "skymix", *mix_args(room, "-o", str(out))]
    runs = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    assert video_frames(out) == SECONDS * FPS
    with av.open(str(out)) as container:
        assert container.duration is not None
        assert abs(container.duration / 1e6 - SECONDS) < 0.1
    assert list(tmp_path.iterdir()) == [out]


# -- leftovers of dead runs -----------------------------------------------------------------------


def test_only_dead_runs_leftovers_are_removed(tmp_path: Path) -> None:
    """Removed: a run that ended, a run of an earlier boot, a pid reused by a later process;
    kept: this live run's file, and files that only look like ours."""
    live = temporary_name(tmp_path / "room.mp4")
    ours = TEMPORARY.match(live.name)
    assert ours is not None
    start, boot = ours["start"], ours["boot"]

    def name(pid: int, start: str, boot: str) -> Path:
        return tmp_path / f".room.mp4.skymix-{pid}-{start}-{boot}-0badcafe.partial"

    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    dead = name(gone.pid, start, boot)
    earlier_boot = name(os.getpid(), start, "ffffffff" if boot != "ffffffff" else "00000000")
    reused = name(os.getpid(), str(int(start) + 1), boot)
    not_ours = [tmp_path / ".room.mp4.partial", tmp_path / f"room.mp4.skymix-1-1-{boot}-0.partial"]
    for path in [live, dead, earlier_boot, reused, *not_ours]:
        path.write_bytes(b"x")
    assert sorted(remove_stale(tmp_path)) == sorted([dead, earlier_boot, reused])
    assert sorted(tmp_path.iterdir()) == sorted([live, *not_ours])


# -- full disks -----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str, int], Path]]:
    """A factory of small tmpfs mounts. Mounting needs root: a developer without it skips
    these tests; CI (root, CI=true) must run them, so there a refused mount fails."""
    mounted: list[Path] = []

    def make(name: str, size_kb: int) -> Path:
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            reason = f"cannot mount a small tmpfs here: {done.stderr.strip()}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("kind", ["recording", "report", "per-participant", "channels"])
def test_a_full_disk_fails_cleanly_for_every_output(
    room: SynthResult,
    earlier: Path,
    tmp_path: Path,
    small_disk: Callable[[str, int], Path],
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    """The output on a disk too small: exit 1 naming it, the earlier recording (and the
    earlier report) intact, no temporary file anywhere."""
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "room.mp4"
    report = folder / "room.json"
    extra: list[str] = []
    if kind == "recording":
        # the earlier recording fits, a second one as large does not
        disk = small_disk("disk", earlier.stat().st_size // 1024 + 32)
        out = disk / "room.mp4"
        what = f"the recording {out}"
    elif kind == "report":
        disk = small_disk("disk", 4)  # one page: the earlier report's
        report = disk / "room.json"
        what = f"the report {report}"
    elif kind == "per-participant":
        disk = small_disk("disk", 32)  # half a participant's file
        extra = ["--per-participant", str(disk)]
        what = f"the recording of participant 'participant 1' {disk / 'participant 1.mp4'}"
    else:
        disk = small_disk("disk", 64)
        extra = ["--channels", str(disk / "channels.wav")]
        what = f"the channel WAV {disk / 'channels.wav'}"
    out.write_bytes(earlier.read_bytes())
    report.write_text('{"earlier": true}\n')
    code, err = run_cli(mix_args(room, "-o", str(out), "--report", str(report), *extra), capsys)
    assert code == 1
    assert err.strip() == f"skymix: error: {what} could not be written: No space left on device"
    if kind == "report":  # the report is written after the mix: the recording is new
        assert video_frames(out) == SECONDS * FPS
    else:
        assert out.read_bytes() == earlier.read_bytes()
    assert report.read_text() == '{"earlier": true}\n'
    assert not temporaries(folder, disk)
    assert {p.name for p in disk.iterdir()} <= {"room.mp4", "room.json"}


def test_a_report_naming_a_participants_file_is_refused_and_the_file_kept(
    room: SynthResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Participants' file names are known once the mix has read the captures: the clash is
    refused then, before the second pass writes anything."""
    each = tmp_path / "each"
    mine = each / "participant 1.mp4"
    args = mix_args(room, "-o", str(tmp_path / "room.mp4"), "--per-participant", str(each))
    code, err = run_cli([*args, "--report", str(mine)], capsys)
    assert code == 1
    assert err.strip() == (
        f"skymix: error: the recording of participant 'participant 1' {mine} is also the report"
    )
    assert not mine.exists() and not (tmp_path / "room.mp4").exists()
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]


def test_the_demo_refuses_a_recording_named_like_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.json"
    code, err = run_cli(["demo", "-o", str(out)], capsys)
    assert (code, err.strip()) == (1, f"skymix: error: the report {out} is also the recording")
    assert list(tmp_path.iterdir()) == []


def test_the_sdp_files_a_manifest_names_are_inputs_too(
    room: SynthResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = room.pcap.parent / "manifest.json"
    manifest.write_text(json.dumps({"participants": [{"id": "a", "sdp": room.sdps[0].name}]}))
    before = digest(room.sdps[0])
    args = ["mix", str(room.pcap), "--manifest", str(manifest), "-o", str(tmp_path / "x.mp4")]
    code, err = run_cli([*args, "--report", str(room.sdps[0])], capsys)
    assert code == 1
    assert err.startswith(f"skymix: error: the report {room.sdps[0]} is also the SDP file of 'a'")
    assert digest(room.sdps[0]) == before
    code, err = run_cli([*args, "--report", str(manifest)], capsys)
    assert (code, err.strip()) == (1, f"skymix: error: the report {manifest} is also the manifest")
    manifest.unlink()


def test_the_options_file_is_an_input(
    room: SynthResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = tmp_path / "options.json"
    options.write_text('{"fps": 30}\n')
    args = mix_args(room, "-o", str(tmp_path / "x.mp4"), "--options", str(options))
    code, err = run_cli([*args, "--channels", str(options)], capsys)
    assert code == 1
    assert err.strip() == f"skymix: error: the channel WAV {options} is also the options file"
    assert options.read_text() == '{"fps": 30}\n'


def test_a_mix_removes_dead_runs_leftovers_in_every_output_folder(
    room: SynthResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    folders = [tmp_path / name for name in ("recording", "report", "each")]
    left = []
    for folder in folders:
        folder.mkdir()
        ours = TEMPORARY.match(temporary_name(folder / "x").name)
        assert ours is not None
        name = f".x.skymix-{gone.pid}-{ours['start']}-{ours['boot']}-00000000.partial"
        left.append(folder / name)
        left[-1].write_bytes(b"half")
    recording, report, each = folders
    args = ["-o", str(recording / "room.mp4"), "--report", str(report / "r.json")]
    code, err = run_cli(mix_args(room, *args, "--per-participant", str(each)), capsys)
    assert (code, err) == (0, "")
    assert not any(path.exists() for path in left)
    assert not temporaries(*folders)
