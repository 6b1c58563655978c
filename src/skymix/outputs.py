"""Outputs that never destroy what the user has.

Three rules, for every file a job writes (the recording, the report, the per-participant
recordings, the channel WAV):

- Before any work, ``check_outputs`` compares every output with every input and every other
  output: resolved paths (symlinks and ``..`` followed) and, for files that exist, device and
  inode (hard links, case-insensitive file systems). An output that exists and is not a regular
  file (a device such as /dev/null, a FIFO, a directory) is refused, and so is one whose folder
  is missing. Renaming a finished file over an input would otherwise lose the only capture.
- A file is written under a temporary name unique to the run, in its destination folder (a
  rename never crosses file systems), fsynced, and renamed over the destination only when every
  output of the run is complete (``PendingOutputs.commit``). What was there before stays intact
  until then; two runs to one output each rename a whole file (the last one wins). A failure
  (a full disk) or a cancellation removes every temporary file of the run.
- A temporary name says whose it is: ``.NAME.skymix-<pid>-<start>-<boot>-<random>.partial``,
  with the process's start time (clock ticks since boot) and the boot id, so a later run can
  tell a dead run's leftovers (SIGKILL, a power cut) from a live run's file and removes only the
  former (``remove_stale``): a reused pid has another start time, a reboot another boot id.

``cancel_on_signals`` turns SIGINT and SIGTERM into CancelledError in the main thread, so a
cancelled command line cleans up exactly like a failed one.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import signal
import stat
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from .errors import CancelledError, OutputConflictError, OutputError, SkymixError

__all__ = [
    "Cancellation",
    "PendingOutputs",
    "cancel_on_signals",
    "check_job",
    "check_outputs",
    "output_error",
    "participant_role",
    "prepare_outputs",
    "remove_stale",
    "temporary_name",
    "write_atomic",
]

logger = logging.getLogger(__name__)

PathArg = str | os.PathLike[str]

#: What a temporary name looks like; group "name" is the (possibly shortened) destination name.
TEMPORARY = re.compile(
    r"^\.(?P<name>.+)\.skymix-(?P<pid>\d+)-(?P<start>\d+)-(?P<boot>[0-9a-f]{8})-[0-9a-f]{8}"
    r"\.partial$"
)
#: Destination names are shortened to this many bytes in a temporary name, which stays under
#: the 255 bytes a file name may have.
NAME_KEEP = 160
#: Errors of a write that say the output, not an input, is at fault.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def _boot_id() -> str:
    """This boot's id (Linux), shortened; "00000000" where the system has none."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip().replace("-", "")[:8]
    except OSError:
        return "0" * 8


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), "0" where there is no
    /proc, None when there is no such process or it is a zombie (dead but not yet reaped)."""
    if not os.path.isdir("/proc/self"):
        return "0"
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


_BOOT = _boot_id()


def temporary_name(path: PathArg) -> Path:
    """A temporary name for `path` in its folder, unique to this run and telling whose it is."""
    dest = Path(path)
    start = _process_start(os.getpid()) or "0"
    name = os.fsencode(dest.name)[:NAME_KEEP].decode(errors="ignore")  # whole characters only
    return dest.with_name(
        f".{name}.skymix-{os.getpid()}-{start}-{_BOOT}-{secrets.token_hex(4)}.partial"
    )


def _alive(pid: int, start: str, boot: str) -> bool:
    """Whether the run that made a temporary file (its pid, start time, boot) still runs."""
    if boot != _BOOT:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    now = _process_start(pid)
    return now is not None and (start == "0" or now == "0" or now == start)


def remove_stale(folder: PathArg) -> list[Path]:
    """Remove the temporary files dead runs left in `folder` (never a live run's, never a file
    whose name is not one of ours); the paths removed."""
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed  # a folder not there (yet) holds nothing stale
    for name in names:
        m = TEMPORARY.match(name)
        if m is None or _alive(int(m["pid"]), m["start"], m["boot"]):
            continue
        path = Path(folder, name)
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                continue
            path.unlink()
        except OSError as exc:
            logger.warning("could not remove %s, left by a run that ended: %s", path, exc)
            continue
        logger.info("removed %s, left by run %s that ended", path, m["pid"])
        removed.append(path)
    return removed


# -- checks before any work ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a path leads: its resolved path and, if it exists, its device and inode."""

    role: str
    path: Path
    real: Path
    inode: tuple[int, int] | None

    @classmethod
    def of(cls, role: str, path: PathArg) -> _Place:
        p = Path(path)
        try:
            st = p.stat()
            inode: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            inode = None
        return cls(role, p, Path(os.path.realpath(p)), inode)

    def same(self, other: _Place) -> bool:
        return self.real == other.real or (self.inode is not None and self.inode == other.inode)

    def clash(self, other: _Place) -> OutputConflictError:
        also = f" ({other.path})" if str(other.path) != str(self.path) else ""
        return OutputConflictError(
            f"{self.role} {self.path} is also {other.role}{also}", path=str(self.path)
        )


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file" if stat.S_ISREG(mode) else "not a regular file"


def check_outputs(
    inputs: Mapping[str, PathArg],
    outputs: Mapping[str, PathArg],
    *,
    new_folders: Mapping[str, PathArg] | None = None,
) -> None:
    """Refuse, before any work, outputs that would replace an input or each other.

    inputs and outputs map a role ("capture 1", "the recording") to a path; new_folders are
    folders the job creates for outputs of its own (the per-participant folder): an output
    there needs no existing folder, any other output does. Raises OutputConflictError naming
    both roles, or OutputError for a missing folder.
    """
    folders = {role: _Place.of(role, path) for role, path in (new_folders or {}).items()}
    for place in folders.values():
        if place.path.exists() and not place.path.is_dir():
            raise OutputConflictError(
                f"{place.role} {place.path} is {_kind(place.path.stat().st_mode)}, not a folder",
                path=str(place.path),
            )
    sources = [_Place.of(role, path) for role, path in inputs.items()]
    done: list[_Place] = []
    for role, path in outputs.items():
        place = _Place.of(role, path)
        if place.inode is not None:
            mode = place.path.stat().st_mode
            if not stat.S_ISREG(mode):
                raise OutputConflictError(
                    f"{role} {place.path} is {_kind(mode)}; only a regular file is replaced",
                    path=str(place.path),
                )
        parent = place.real.parent
        if not parent.is_dir() and not any(parent == f.real for f in folders.values()):
            raise OutputError(f"the folder {place.path.parent} of {role} {place.path} is missing")
        for other in [*sources, *done, *folders.values()]:
            if place.same(other):
                raise place.clash(other)
        done.append(place)


def prepare_outputs(
    inputs: Mapping[str, PathArg],
    outputs: Mapping[str, PathArg],
    *,
    new_folders: Mapping[str, PathArg] | None = None,
) -> None:
    """``check_outputs``, then remove what dead runs left in the outputs' folders."""
    check_outputs(inputs, outputs, new_folders=new_folders)
    folders = {Path(os.path.realpath(p)).parent for p in outputs.values()}
    folders.update(Path(os.path.realpath(p)) for p in (new_folders or {}).values())
    for folder in sorted(folders):
        remove_stale(folder)


def participant_role(pid: str) -> str:
    """How errors name a participant's own recording."""
    return f"the recording of participant {pid!r}"


def check_job(
    captures: Sequence[PathArg],
    recording: PathArg,
    *,
    report: PathArg | None = None,
    channels: PathArg | None = None,
    per_participant: PathArg | None = None,
    participant_files: Mapping[str, PathArg] | None = None,
    layout: PathArg | None = None,
    other_inputs: Mapping[str, PathArg] | None = None,
    clean: bool = False,
) -> None:
    """``check_outputs`` for a mix: its inputs (captures, the layout file, and other_inputs by
    their own roles: the description's files, an options file) and outputs (recording, report,
    channel WAV, the per-participant folder and, once the participants are known, their files
    by id), each under its role; with `clean`, then remove what dead runs left in the outputs'
    folders (``prepare_outputs``)."""
    inputs: dict[str, PathArg] = {f"capture {i}": c for i, c in enumerate(captures, 1)}
    outputs: dict[str, PathArg] = {"the recording": recording}
    if layout is not None:
        inputs["the layout file"] = layout
    inputs.update(other_inputs or {})
    for role, path in (("the report", report), ("the channel WAV", channels)):
        if path is not None:
            outputs[role] = path
    for pid, path in (participant_files or {}).items():
        outputs[participant_role(pid)] = path
    folders = {"the per-participant folder": per_participant} if per_participant else None
    (prepare_outputs if clean else check_outputs)(inputs, outputs, new_folders=folders)


# -- writing --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    role: str
    path: Path
    temporary: Path


@dataclass(slots=True)
class PendingOutputs:
    """The files one run writes, each under its temporary name, renamed over their
    destinations together by ``commit()``; ``discard()`` (or leaving the ``with`` block by an
    exception) aborts their writers and removes every temporary file. An OSError of a write
    leaves the block as an OutputError naming the output."""

    _files: list[_Pending] = field(default_factory=list)
    _stops: list[Callable[[], None]] = field(default_factory=list)
    _folders: list[Path] = field(default_factory=list)  # made by this run, deepest last

    def add(self, path: PathArg, role: str) -> Path:
        """Reserve a temporary name for the output `path` (described as `role` in errors)."""
        temporary = temporary_name(path)
        self._files.append(_Pending(role, Path(path), temporary))
        return temporary

    def make_folder(self, folder: PathArg, role: str) -> None:
        """Create `folder` (and missing parents); those this run made are removed again by
        `discard()`, so a failed run leaves no empty folder behind."""
        missing = [p for p in (Path(folder), *Path(folder).parents) if not p.exists()]
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(f"{role} {folder}", exc) from exc
        self._folders.extend(reversed(missing))

    def on_discard(self, stop: Callable[[], None]) -> None:
        """Have `discard()` call `stop` first (a writer's abort: its file closed, its threads
        stopped), before the temporary files are removed."""
        self._stops.append(stop)

    def error(self, exc: OSError, path: PathArg | None = None) -> OutputError:
        """The OutputError for a failed write of the output `path`; without it, of the output
        whose file the error names, else of every output of the run."""
        named = [
            f
            for f in self._files
            if (str(f.path) == str(path) if path is not None else _names(exc, f))
        ]
        return output_error(
            ", ".join(f"{f.role} {f.path}" for f in named or self._files) or "an output", exc
        )

    def commit(self) -> None:
        """Make every file durable, then rename each over its destination and make the
        renames durable. A failure before the first rename leaves every destination as it was."""
        for f in self._files:
            try:
                _fsync(f.temporary)
            except OSError as exc:
                raise output_error(f"{f.role} {f.path}", exc) from exc
        with _signals_held():  # a cancel now would leave some outputs new and some old
            for f in self._files:
                try:
                    os.replace(f.temporary, f.path)
                except OSError as exc:
                    raise output_error(f"{f.role} {f.path}", exc) from exc
        folders = {f.path.parent for f in self._files}
        self._files.clear()
        self._stops.clear()
        self._folders.clear()
        for folder in folders:
            _fsync(folder, directory=True)

    def discard(self) -> None:
        """Abort the writers and remove every temporary file of the run."""
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception:  # noqa: BLE001 - the error being handled is the one raised
                logger.exception("stopping a writer failed")
        for f in self._files:
            try:
                f.temporary.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("could not remove %s: %s", f.temporary, exc)
        for folder in reversed(self._folders):
            try:
                folder.rmdir()
            except OSError as exc:  # something else was put there meanwhile: it stays
                logger.warning("could not remove the folder %s: %s", folder, exc)
        self._files.clear()
        self._stops.clear()
        self._folders.clear()

    def __enter__(self) -> PendingOutputs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        error = None
        if isinstance(exc, OSError) and not isinstance(exc, SkymixError):
            if exc.errno in WRITE_ERRNOS or any(_names(exc, f) for f in self._files):
                error = self.error(exc)
        self.discard()
        if error is not None:
            raise error from exc


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back (delivered when the block ends), where the system can."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def output_error(what: str, exc: OSError) -> OutputError:
    """The OutputError for `exc`, naming what could not be written ("the report r.json")."""
    error = OutputError(f"{what} could not be written: {exc.strerror or exc}")
    error.errno = exc.errno
    return error


def _names(exc: OSError, f: _Pending) -> bool:
    """Whether the error is about the output's file (its temporary name or its own)."""
    name = exc.filename
    return isinstance(name, str | bytes) and os.fsdecode(name) in (str(f.temporary), str(f.path))


def _fsync(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if not directory or exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise  # some file systems cannot sync a folder: the rename is as durable as it gets
    finally:
        os.close(fd)


def write_atomic(path: PathArg, data: str | bytes, role: str = "the file") -> None:
    """Write `data` to `path` so that it holds either its old content or all of `data`."""
    content = data.encode() if isinstance(data, str) else data
    with PendingOutputs() as pending:
        temporary = pending.add(path, role)
        with open(temporary, "xb") as f:
            f.write(content)
        pending.commit()


# -- signals --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Cancellation:
    """Which signal cancelled the work (None: none did). Set ``cancel`` to a job's cancel()
    and the signal asks the job to stop at its next check (cooperative: its clean-up is never
    interrupted) instead of raising wherever the main thread is."""

    signal: signal.Signals | None = None
    cancel: Callable[[], None] | None = None

    @property
    def exit_code(self) -> int:
        """The shell's code for a command ended by the signal: 128 + its number."""
        return 128 + (self.signal or 0)


@contextmanager
def cancel_on_signals(
    signals: Collection[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[Cancellation]:
    """Within the block, the first of `signals` raises CancelledError in the main thread, so
    the work unwinds and cleans up as after an error (threads are stopped by the code they
    belong to, on the way out); later ones are ignored until the block ends, so the clean-up
    itself is not cut short. A CancelledError the work swallowed (raised while a logging call
    wrote, caught by a handler of every exception) is raised again when the block ends: a
    signal is never lost. Outside the main thread this does nothing (Python runs signal
    handlers only there)."""
    cancellation = Cancellation()
    if threading.current_thread() is not threading.main_thread():
        yield cancellation
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancellation.signal is not None:
            return
        cancellation.signal = signal.Signals(signum)
        if cancellation.cancel is not None:
            cancellation.cancel()
            return
        raise CancelledError(f"cancelled by {cancellation.signal.name}")

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield cancellation
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if cancellation.signal is not None:
        raise CancelledError(f"cancelled by {cancellation.signal.name}")
