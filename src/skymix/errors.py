"""The one error hierarchy of skymix: every failure a caller can act on is a SkymixError.

Subclasses also derive from the builtin that fits, so ``except ValueError`` keeps working for
callers that do not know skymix, and carry where the problem is (file, offset, stream, field).
Each class has a stable ``code``: the reason a recording's ERROR state gives in webhooks and the
error body of the REST API. Codes never change once published; a new failure gets a new class.
``tests/test_errors.py`` pins every class, its bases and its code.

Messages speak of the library's own terms (an option's field name, a file), never of a command
line flag: the command line adds its hints itself.
"""

from __future__ import annotations

import concurrent.futures

__all__ = [
    "CancelledError",
    "CaptureError",
    "ComposeError",
    "DamageError",
    "DecodeError",
    "DeliveryError",
    "DescriptionError",
    "InternalError",
    "JobTooLargeError",
    "NothingToMixError",
    "OptionsError",
    "OutputConflictError",
    "OutputError",
    "RecordingStateError",
    "RelayError",
    "SecretKeyError",
    "SkymixError",
]


class SkymixError(Exception):
    """Base class of every error skymix raises on purpose."""

    code: str = "skymix_error"


def _located(message: str, where: list[str]) -> str:
    """The message behind the places it concerns: "file.pcap, offset 12: message"."""
    return f"{', '.join(where)}: {message}" if where else message


class ComposeError(SkymixError, ValueError):
    """A frame, plane, tile, mask or audio block that the compositor or mixer cannot use."""

    code = "compose_invalid"


class DecodeError(SkymixError, ValueError):
    """A codec this build cannot decode, or decoder settings that cannot work."""

    code = "decode_unsupported"


class CaptureError(SkymixError, ValueError):
    """A capture file or packet that cannot be read; says where."""

    code = "capture_invalid"

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
    """A session description (SDP or manifest), a layout file or another JSON document that
    cannot be used, or a stream whose codec cannot be guessed; says where: file, line (SDP), JSON
    path (manifest), SSRC (guessing)."""

    code = "description_invalid"

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


class OptionsError(SkymixError, ValueError):
    """An option out of its range or of the wrong kind; ``field`` names it (``encode.crf``)."""

    code = "options_invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(_located(message, [field] if field else []))
        self.field = field


class JobTooLargeError(OptionsError):
    """A job whose memory estimate cannot fit on this machine: refused before any work."""

    code = "job_too_large"


class NothingToMixError(SkymixError, ValueError):
    """The captures hold no decodable audio or video, or nobody is present in them."""

    code = "nothing_to_mix"


class DamageError(SkymixError, ValueError):
    """Strict mode: the captures were damaged, streams were skipped or described participants
    matched nothing. The recording was not written."""

    code = "input_damaged"


class OutputConflictError(SkymixError, ValueError):
    """An output that would replace an input or another output, or that is not a regular file;
    refused before any work, so nothing the caller has is touched."""

    code = "output_conflict"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class OutputError(SkymixError, OSError):
    """An output that could not be written (a full disk, no permission); what was there before
    is intact and no temporary file is left."""

    code = "output_failed"


class CancelledError(SkymixError, concurrent.futures.CancelledError):
    """The job was cancelled (by its caller or a signal) and cleaned up like an error."""

    code = "cancelled"


class InternalError(SkymixError, RuntimeError):
    """A failure skymix did not foresee (a dependency's error, a bug): the job is failed with
    this code instead of an uncoded exception; the original is its __cause__ and in the log."""

    code = "internal_error"


class DeliveryError(SkymixError, OSError):
    """Storing or announcing a recording failed; keeps the last underlying exception."""

    code = "delivery_failed"

    def __init__(self, message: str, last_exception: BaseException | None = None) -> None:
        super().__init__(message)
        self.last_exception = last_exception


class RecordingStateError(SkymixError, RuntimeError):
    """A recording asked to move where its states do not go (backwards, twice to the same
    state, out of ERROR other than to LINK), or to announce before LINK or ERROR."""

    code = "recording_state_invalid"

    def __init__(
        self, message: str, *, recording_id: str, state: str | None, to: str | None
    ) -> None:
        super().__init__(message)
        self.recording_id = recording_id
        self.state = state
        self.to = to


class SecretKeyError(SkymixError, ValueError):
    """The service's secret keys are missing, malformed, or none of them opens a stored secret
    (the key was changed without keeping the old one for rotation). Never quotes a key."""

    code = "secret_key_invalid"


class RelayError(SkymixError, OSError):
    """The media relay (Janus) could not be started, did not answer, or refused a request;
    ``error_code`` is Janus's or its videoroom's code when it gave one. Never quotes a secret."""

    code = "relay_failed"

    def __init__(self, message: str, *, error_code: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
