"""Outputs beside the mix, from the same decode (nothing is decoded twice): each participant as a
recording of their own, and one WAV with a channel per participant (for transcription and
speaker diarisation). Both are written under temporary names and renamed when complete."""

from __future__ import annotations

import wave
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from .compose import Rect, Tile, composite
from .compose.labels import placeholder
from .encode import Container, EncodeSettings, RecordingWriter

__all__ = ["ChannelsWav", "ParticipantFiles", "participant_settings"]

Block = npt.NDArray[np.float32]


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


class ChannelsWav:
    """16-bit PCM WAV, channel i = participant i's audio (both sides averaged), unmixed."""

    def __init__(self, path: str | Path, ids: Sequence[str], rate: int) -> None:
        self.path = Path(path)
        self.ids = list(ids)
        self._file = wave.open(str(_partial(self.path)), "wb")
        self._file.setnchannels(len(self.ids))
        self._file.setsampwidth(2)
        self._file.setframerate(rate)

    def write(self, blocks: Sequence[Block]) -> None:
        """One block per participant, in ids order, all of the same length."""
        mono = np.stack([b.mean(axis=1) for b in blocks], axis=1)
        pcm = np.clip(np.round(mono * 32767), -32768, 32767).astype("<i2")
        self._file.writeframes(pcm.tobytes())

    def finish(self) -> None:
        self._file.close()
        _partial(self.path).replace(self.path)

    def abort(self) -> None:
        self._file.close()
        _partial(self.path).unlink(missing_ok=True)


class ParticipantFiles:
    """One recording per participant in a folder: their picture full frame (their placeholder
    when they have none), their audio; `<id>.mp4` (or .webm)."""

    def __init__(self, folder: str | Path, people: Sequence[tuple[str, str]],
                 settings: EncodeSettings, container: Container) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.names = dict(people)
        self.paths = {pid: self.folder / f"{_safe(pid)}.{container}" for pid, _ in people}
        self._writers = {pid: RecordingWriter(_partial(path), settings, container)
                         for pid, path in self.paths.items()}
        self._frames = {pid: w.new_frame() for pid, w in self._writers.items()
                        if settings.video}
        self._rect = Rect(0, 0, settings.width, settings.height)

    def write_video(self, pid: str, picture: av.VideoFrame | None) -> None:
        out = self._frames[pid]
        source = picture if picture is not None else placeholder(
            self.names[pid], self.settings.width, self.settings.height)
        composite([Tile(source, self._rect)], out)
        self._writers[pid].write_video(out)

    def write_audio(self, pid: str, block: Block) -> None:
        self._writers[pid].write_audio(block)

    def finish(self) -> None:
        for pid, writer in self._writers.items():
            writer.close()
            _partial(self.paths[pid]).replace(self.paths[pid])

    def abort(self) -> None:
        for pid, writer in self._writers.items():
            try:
                writer.close()
            finally:
                _partial(self.paths[pid]).unlink(missing_ok=True)


def _safe(pid: str) -> str:
    """A participant id as a file name: path separators and control characters replaced."""
    return "".join(c if c.isprintable() and c not in '/\\:' else "_" for c in pid) or "_"


def participant_settings(main: EncodeSettings) -> EncodeSettings:
    """The per-participant files' settings: the main ones at no more than 640x360."""
    scale = min(1.0, 640 / main.width, 360 / main.height)
    return replace(main, width=max(2, int(main.width * scale) // 2 * 2),
                   height=max(2, int(main.height * scale) // 2 * 2), threads=1)
