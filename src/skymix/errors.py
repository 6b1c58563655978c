"""The one error hierarchy of skymix: every failure a caller can act on is a SkymixError.

Subclasses also derive from the builtin that fits, so ``except ValueError`` keeps working for
callers that do not know skymix, and carry where the problem is (file, offset, stream, tile).
"""

from __future__ import annotations

__all__ = ["CaptureError", "ComposeError", "DeliveryError", "DescriptionError", "SkymixError"]


class SkymixError(Exception):
    """Base class of every error skymix raises on purpose."""


def _located(message: str, where: list[str]) -> str:
    """The message behind the places it concerns: "file.pcap, offset 12: message"."""
    return f"{', '.join(where)}: {message}" if where else message


class ComposeError(SkymixError, ValueError):
    """A frame, plane, tile, mask or audio block that the compositor or mixer cannot use."""


class CaptureError(SkymixError, ValueError):
    """A capture file or packet that cannot be read; says where."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        offset: int | None = None,
        ssrc: int | None = None,
        seq: int | None = None,
    ) -> None:
        where = []
        if file is not None:
            where.append(str(file))
        if offset is not None:
            where.append(f"offset {offset}")
        if ssrc is not None:
            where.append(f"ssrc {ssrc:#010x}")
        if seq is not None:
            where.append(f"seq {seq}")
        super().__init__(_located(message, where))
        self.file = file
        self.offset = offset
        self.ssrc = ssrc
        self.seq = seq


class DescriptionError(SkymixError, ValueError):
    """A session description (SDP or manifest) that cannot be used, or a stream whose codec
    cannot be guessed; says where: file, line (SDP), JSON path (manifest), SSRC (guessing)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        path: str | None = None,
        ssrc: int | None = None,
    ) -> None:
        where = []
        if file is not None:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if path is not None:
            where.append(path)
        if ssrc is not None:
            where.append(f"ssrc {ssrc:#010x}")
        super().__init__(_located(message, where))
        self.file = file
        self.line = line
        self.path = path
        self.ssrc = ssrc


class DeliveryError(SkymixError, OSError):
    """Storing or announcing a recording failed; keeps the last underlying exception."""

    def __init__(self, message: str, last_exception: BaseException | None = None) -> None:
        super().__init__(message)
        self.last_exception = last_exception
