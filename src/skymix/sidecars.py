"""Outputs beside the mix, from the same decode (nothing is decoded twice): each participant as a
recording of their own, and one WAV with a channel per participant (for transcription and
speaker diarisation). Both are written under temporary names (``outputs.PendingOutputs``): given
the job's, they are renamed with the recording when the whole run is complete; on their own, by
their ``finish()``."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from .compose import Rect, Tile, composite
from .compose.labels import placeholder
from .encode import Container, EncodeSettings, RecordingWriter
from .errors import SkymixError
from .outputs import PendingOutputs, participant_role

__all__ = ["ChannelsWav", "ParticipantFiles", "participant_paths", "participant_settings"]

Block = npt.NDArray[np.float32]


@contextmanager
def _writing(pending: PendingOutputs, path: Path | None = None) -> Iterator[None]:
    """An OSError of the block as the OutputError of the output `path` (without it, of the
    output whose file the error names)."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, SkymixError):
            raise
        raise pending.error(exc, path) from exc


#: The largest RIFF size a plain WAV can state; beyond it the file is finished as RF64 (EBU
#: Tech 3306), for which a JUNK chunk is reserved up front and becomes the ds64 chunk.
RIFF_LIMIT = 0xFFFFFFFF
_HEADER = 12 + 8 + 28 + 8 + 16 + 8  # RIFF/WAVE, JUNK(28), fmt (16), data header


class ChannelsWav:
    """16-bit PCM WAV, channel i = participant i's audio (both sides averaged), unmixed.

    Long recordings of many participants pass 4 GiB (18 participants: 41 minutes); the file is
    then finished as RF64, which FFmpeg, SoX and most editors read."""

    def __init__(
        self,
        path: str | Path,
        ids: Sequence[str],
        rate: int,
        pending: PendingOutputs | None = None,
    ) -> None:
        self.path = Path(path)
        self.ids = list(ids)
        channels = len(self.ids)
        self._own = pending is None
        self._pending = pending = pending or PendingOutputs()
        temporary = pending.add(self.path, "the channel WAV")
        with _writing(pending, self.path):
            self._file = open(temporary, "xb")  # closed by finish() or abort()
        pending.on_discard(self._file.close)
        try:
            self._write_header(channels, rate)
        except BaseException:
            if self._own:  # no one else has the file's name to remove it
                pending.discard()
            raise
        self._frames = 0

    def _write_header(self, channels: int, rate: int) -> None:
        with _writing(self._pending, self.path):
            self._file.write(
                b"RIFF"
                + bytes(4)
                + b"WAVE"
                + b"JUNK"
                + struct.pack("<I", 28)
                + bytes(28)
                + b"fmt "
                + struct.pack(
                    "<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16
                )
                + b"data"
                + bytes(4)
            )

    def write(self, blocks: Sequence[Block]) -> None:
        """One block per participant, in ids order, all of the same length."""
        mono = np.stack([b.mean(axis=1) for b in blocks], axis=1)
        pcm = np.clip(np.round(mono * 32767), -32768, 32767).astype("<i2")
        with _writing(self._pending, self.path):
            self._file.write(pcm.tobytes())
        self._frames += len(pcm)

    def finish(self) -> None:
        """Complete the header and close; on its own, rename the file into place."""
        with _writing(self._pending, self.path):
            self._finish()
        if self._own:
            self._pending.commit()

    def _finish(self) -> None:
        data = self._frames * 2 * len(self.ids)
        riff = _HEADER - 8 + data
        f = self._file
        if riff <= RIFF_LIMIT:
            f.seek(4)
            f.write(struct.pack("<I", riff))
            f.seek(_HEADER - 4)
            f.write(struct.pack("<I", data))
        else:
            f.seek(0)
            f.write(
                b"RF64"
                + struct.pack("<I", 0xFFFFFFFF)
                + b"WAVE"
                + b"ds64"
                + struct.pack("<IQQQI", 28, riff, data, self._frames, 0)
            )
            f.seek(_HEADER - 4)
            f.write(struct.pack("<I", 0xFFFFFFFF))
        f.close()

    def abort(self) -> None:
        """Stop; on its own, remove the temporary file (given the job's, the job does)."""
        self._file.close()
        if self._own:
            self._pending.discard()


class ParticipantFiles:
    """One recording per participant in a folder: their picture full frame (their placeholder
    when they have none), their audio; `<id>.mp4` (or .webm)."""

    def __init__(
        self,
        folder: str | Path,
        people: Sequence[tuple[str, str]],
        settings: EncodeSettings,
        container: Container,
        pending: PendingOutputs | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.settings = settings
        self.names = dict(people)
        self.paths = participant_paths(self.folder, list(self.names), container)
        self._own = pending is None
        self._pending = pending = pending or PendingOutputs()
        self._writers: dict[str, RecordingWriter] = {}
        pending.on_discard(self._stop)
        try:
            pending.make_folder(self.folder, "the per-participant folder")
            for pid, path in self.paths.items():
                temporary = pending.add(path, participant_role(pid))
                with _writing(pending, path):
                    self._writers[pid] = RecordingWriter(temporary, settings, container)
        except BaseException:
            if self._own:  # no one else has the files' names to remove them
                pending.discard()
            raise
        self._rect = Rect(0, 0, settings.width, settings.height)

    def write_video(self, pid: str, picture: av.VideoFrame | None) -> None:
        out = self._writers[pid].new_frame()
        source = (
            picture
            if picture is not None
            else placeholder(self.names[pid], self.settings.width, self.settings.height)
        )
        composite([Tile(source, self._rect)], out)
        with _writing(self._pending, self.paths[pid]):
            self._writers[pid].write_video(out)

    def write_audio(self, pid: str, block: Block) -> None:
        if self.settings.audio_channels == 1:
            block = block.mean(axis=1, keepdims=True)
        with _writing(self._pending, self.paths[pid]):
            self._writers[pid].write_audio(block)

    def finish(self) -> None:
        """Finish every file; on their own, rename them into place."""
        for pid, writer in self._writers.items():
            with _writing(self._pending, self.paths[pid]):
                writer.close()
        self._writers.clear()
        if self._own:
            self._pending.commit()

    def abort(self) -> None:
        """Stop every writer; on their own, remove the temporary files (given the job's, the
        job does)."""
        self._stop()
        if self._own:
            self._pending.discard()

    def _stop(self) -> None:
        writers = list(self._writers.values())
        self._writers.clear()  # each writer is stopped once
        for writer in writers:
            writer.abort()


def participant_paths(
    folder: str | Path, ids: Sequence[str], container: Container
) -> dict[str, Path]:
    """Each participant's file in `folder`, by id: `<id>.mp4` (or .webm), the id made a file
    name (ids that differ only in characters a file name cannot hold get a "_" more)."""
    paths: dict[str, Path] = {}
    for pid in ids:
        name = _safe(pid)
        while Path(folder, f"{name}.{container}") in paths.values():
            name += "_"
        paths[pid] = Path(folder, f"{name}.{container}")
    return paths


def _safe(pid: str) -> str:
    """A participant id as a file name: path separators and control characters replaced."""
    return "".join(c if c.isprintable() and c not in "/\\:" else "_" for c in pid) or "_"


def participant_settings(main: EncodeSettings) -> EncodeSettings:
    """The per-participant files' settings: the main ones at no more than 640x360."""
    scale = min(1.0, 640 / main.width, 360 / main.height)
    return replace(
        main,
        width=max(2, int(main.width * scale) // 2 * 2),
        height=max(2, int(main.height * scale) // 2 * 2),
        threads=1,
    )
