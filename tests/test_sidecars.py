"""The channel-per-participant WAV: plain RIFF while it fits, RF64 beyond 4 GiB."""

from __future__ import annotations

import struct
import wave

import av
import numpy as np
import pytest

from skymix import sidecars
from skymix.sidecars import ChannelsWav


def blocks(k: int, channels: int) -> list[np.ndarray]:
    """Participant i's block k: the value (i + 1) / 10 on both sides."""
    return [np.full((480, 2), (i + 1) / 10 + k / 1000, np.float32) for i in range(channels)]


def test_a_plain_wav_while_it_fits(tmp_path):
    path = tmp_path / "ch.wav"
    out = ChannelsWav(path, ["a", "b", "c"], 48000)
    for k in range(10):
        out.write(blocks(k, 3))
    out.finish()
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (3, 48000, 4800)
        pcm = np.frombuffer(w.readframes(4800), "<i2").reshape(-1, 3)
    assert pcm[0].tolist() == [round(0.1 * 32767), round(0.2 * 32767), round(0.3 * 32767)]
    assert not list(tmp_path.glob(".*"))


def test_rf64_beyond_the_riff_limit(tmp_path, monkeypatch):
    """Past the limit (4 GiB; lowered here) the header becomes RF64 with a ds64 chunk, and
    FFmpeg reads every sample back."""
    monkeypatch.setattr(sidecars, "RIFF_LIMIT", 1000)
    path = tmp_path / "ch.wav"
    out = ChannelsWav(path, ["a", "b"], 48000)
    for k in range(10):
        out.write(blocks(k, 2))
    out.finish()
    head = path.read_bytes()[:48]
    assert head[:4] == b"RF64" and head[12:16] == b"ds64"
    _, riff, data, frames, _ = struct.unpack("<IQQQI", head[16:48])
    assert (data, frames, riff) == (4800 * 2 * 2, 4800, path.stat().st_size - 8)
    with av.open(str(path)) as container:
        pcm = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in container.decode(audio=0)])
    assert len(pcm) == 4800 and pcm[-1].tolist() == [
        round((0.1 + 0.009) * 32767),
        round((0.2 + 0.009) * 32767),
    ]


def test_abort_leaves_nothing(tmp_path):
    out = ChannelsWav(tmp_path / "ch.wav", ["a"], 48000)
    out.write(blocks(0, 1))
    out.abort()
    assert not list(tmp_path.iterdir())


def test_participant_files_get_a_name_each(tmp_path):
    from skymix.encode import EncodeSettings
    from skymix.sidecars import ParticipantFiles

    files = ParticipantFiles(
        tmp_path,
        [("a/b", "A"), ("a:b", "B"), ("a_b", "C")],
        EncodeSettings(width=64, height=36, video=False),
        "mp4",
    )
    files.abort()
    assert len(set(files.paths.values())) == 3
    assert all(p.parent == tmp_path for p in files.paths.values())


def test_given_the_jobs_outputs_nothing_is_renamed_before_the_job_commits(tmp_path):
    """A finished sidecar waits for the recording: renamed by the job's commit, or removed
    with everything else when the job fails."""
    from skymix.encode import EncodeSettings
    from skymix.outputs import PendingOutputs
    from skymix.sidecars import ParticipantFiles

    (tmp_path / "ch.wav").write_bytes(b"earlier")
    settings = EncodeSettings(width=64, height=36, video=False)
    with PendingOutputs() as pending:
        wav = ChannelsWav(tmp_path / "ch.wav", ["a"], 48000, pending)
        files = ParticipantFiles(tmp_path / "each", [("a", "A")], settings, "mp4", pending)
        wav.write(blocks(0, 1))
        files.write_audio("a", blocks(0, 1)[0])
        wav.finish()
        files.finish()
        assert (tmp_path / "ch.wav").read_bytes() == b"earlier"
        assert not (tmp_path / "each" / "a.mp4").exists()
        pending.commit()
    with wave.open(str(tmp_path / "ch.wav")) as w:
        assert w.getnframes() == 480
    with av.open(str(tmp_path / "each" / "a.mp4")) as container:
        assert container.streams.audio
    assert not list(tmp_path.rglob(".*"))

    with pytest.raises(RuntimeError), PendingOutputs() as pending:
        wav = ChannelsWav(tmp_path / "ch.wav", ["a", "b"], 48000, pending)
        files = ParticipantFiles(tmp_path / "each", [("a", "A")], settings, "mp4", pending)
        wav.write(blocks(0, 2))
        raise RuntimeError("the recording failed")
    with wave.open(str(tmp_path / "ch.wav")) as w:
        assert w.getnchannels() == 1
    assert not list(tmp_path.rglob(".*"))


def test_participant_paths_are_known_before_any_file_is_made(tmp_path):
    from skymix.sidecars import participant_paths

    paths = participant_paths(tmp_path, ["a/b", "a:b", "c"], "webm")
    assert paths == {
        "a/b": tmp_path / "a_b.webm",
        "a:b": tmp_path / "a_b_.webm",
        "c": tmp_path / "c.webm",
    }
    assert not list(tmp_path.iterdir())
