"""The mix-and-deliver job of a recording, as a worker process runs it.

``run_job(config_json, recording_id)`` takes plain values (it runs in another process, or on
another machine), opens the database itself, claims the job's lease, and does what the
recording's event log says is left: mix (unless a mixed file is on record; ``MixJob`` writes
atomically, so a killed mix leaves nothing half-written), then the delivery chain
(``deliver_recording`` on the loaded recording, as ``resume`` would: it aborts the recorded
multipart upload before uploading again, skips an upload on record, and sends the notifications
not yet acknowledged with the same webhook-id). Every state change goes to the recording's row
as it happens. Running it twice finishes it once: the lease is taken with a compare-and-set, and a
finished job is left alone.

A notification that failed its in-job tries goes to the outbox (``outbox.py``) for retries
across restarts; the outbox is filled even when something after LINK fails.

Only an error about the input (a ``SkymixError`` that is not a delivery or ``OSError`` one: a
capture that cannot be mixed, options, an S3 endpoint the guard refuses) fails the recording. A
transient one (``SQLAlchemyError``: the database locked or restarting; ``OSError``, delivery
errors included) puts the job back in the queue, without an owner, for the watcher to run again
once a wait that doubles with each attempt (``retry_delay``) is over; after MAX_ATTEMPTS runs
it is given up in ERROR, announced. The captures are an application's own:
``DATA_DIR/captures/<app_id>/``. Error messages name files relative to the data folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from ..deliver.chain import DeliveryOptions, deliver_recording, notification_channels
from ..deliver.settings import RecordingSettings
from ..deliver.states import EVENT_LOG_NAME, ErrorReason, Recording, RecordingState
from ..deliver.webhook import check_notify_host
from ..errors import DeliveryError, OptionsError, SkymixError
from ..options import MixOptions
from ..report import MixReport
from .config import ServiceConfig
from .models import AppSettings, Job, RecordingRow, utcnow
from .state import ServiceState

__all__ = [
    "LEASE_S",
    "MAX_ATTEMPTS",
    "CaptureSpec",
    "captures_root",
    "claimable",
    "lease_owner",
    "load_settings",
    "relative_name",
    "retry_delay",
    "resolve_inside",
    "run_job",
    "transient",
]

log = logging.getLogger(__name__)

#: How long a job's lease lasts without renewal; the worker renews it every third of that.
LEASE_S = 30.0
#: Runs of one job (crashes included) before it is given up in ERROR.
MAX_ATTEMPTS = 5
#: The wait before a job that met a transient error runs again: doubled with each attempt.
RETRY_S = 2.0
RETRY_MAX_S = 60.0
#: The webhook's in-job retry bounds, from the environment (the outbox retries later).
WEBHOOK_TRIES_ENV = "SKYMIX_WEBHOOK_MAX_TRIES"
WEBHOOK_TOTAL_ENV = "SKYMIX_WEBHOOK_MAX_TOTAL_S"
#: What a recording's working folder holds.
MIXED_NAME = "recording"
REPORT_NAME = "report.json"
INPUTS_DIR = "inputs"


def lease_owner() -> str:
    """This process as a lease owner: host and process id."""
    return f"{socket.gethostname()}/{os.getpid()}"


def _owner_alive(owner: str) -> bool | None:
    """Whether a lease owner of this host is alive; None for another host's (unknown)."""
    host, _, pid = owner.rpartition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def retry_delay(attempt: int) -> float:
    """Seconds before a job whose run ``attempt`` met a transient error runs again: 2, 4, 8,
    16, 32 (a database restarting has a minute to come back before the job is given up)."""
    return min(RETRY_MAX_S, RETRY_S * 2 ** max(0, attempt - 1))


def claimable(job: Job, now: datetime) -> bool:
    """Whether a job may be run now: queued (and due: ``lease_until`` is when a job queued
    again after a transient error is due), or running under a lease that expired or whose
    owner (a process of this host) is dead."""
    if job.status == "queued":
        return job.lease_until is None or job.lease_until <= now
    if job.status != "running":
        return False
    if job.lease_until is None or job.lease_until < now:
        return True
    return job.lease_owner is not None and _owner_alive(job.lease_owner) is False


def captures_root(config: ServiceConfig, app_id: str) -> Path:
    """The folder an application's local captures are named relative to: its own, so that no
    application reads (or probes for) another's files."""
    return config.data_dir / "captures" / app_id


def transient(exc: BaseException) -> bool:
    """Whether an error may go away when the job runs again (the database locked or
    restarting, a file system or network error, a delivery that failed), rather than being
    about the input."""
    return isinstance(exc, (SQLAlchemyError, OSError))


def relative_name(name: str, field: str) -> Path:
    """``name`` as a relative path; OptionsError naming ``field`` when it is empty, holds a NUL,
    is absolute or climbs with ``..``."""
    relative = Path(name)
    if (
        not name
        or "\x00" in name
        or relative.is_absolute()
        or name.startswith(("/", "\\"))
        or ".." in relative.parts
    ):
        raise OptionsError("expected a relative path without '..'", field=field)
    return relative


def resolve_inside(root: Path, name: str, field: str) -> Path:
    """``name`` under ``root``, refused (OptionsError naming ``field``) when it is empty, holds
    a NUL, is absolute, climbs with ``..``, or leads out of ``root`` through a symbolic link;
    the file must exist."""
    relative = relative_name(name, field)
    try:
        base = root.resolve()
        path = (base / relative).resolve()
        if not path.is_relative_to(base):
            raise OptionsError("leads out of the captures folder", field=field)
        found = path.is_file()
    except (OSError, ValueError):  # a name too long, or not encodable on this system
        raise OptionsError("not a usable file name", field=field) from None
    if not found:
        raise OptionsError(f"no such capture file: {name}", field=field)
    return path


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """What a recording job mixes: capture files and their SDPs or manifest, named relative to the
    application's captures folder or to an S3 prefix (read with the application's keys)."""

    captures: tuple[str, ...]
    sdp: tuple[str, ...]
    manifest: str | None
    s3_prefix: str | None
    options: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaptureSpec:
        return cls(
            tuple(data.get("captures") or ()),
            tuple(data.get("sdp") or ()),
            data.get("manifest"),
            data.get("s3_prefix"),
            dict(data.get("options") or {}),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "captures": list(self.captures),
            "sdp": list(self.sdp),
            "manifest": self.manifest,
            "s3_prefix": self.s3_prefix,
            "options": self.options,
        }

    def names(self) -> list[tuple[str, str]]:
        """(field, name) of every file the job reads."""
        named = [(f"captures[{n}]", c) for n, c in enumerate(self.captures)]
        named += [(f"sdp[{n}]", s) for n, s in enumerate(self.sdp)]
        if self.manifest is not None:
            named.append(("manifest", self.manifest))
        return named

    def mix_options(self) -> MixOptions:
        """The options, refusing what would write outside the recording's folder."""
        for name in ("per_participant", "channels"):
            if self.options.get(name) is not None:
                raise OptionsError("not available in the service", field=f"options.{name}")
        return MixOptions.from_json(self.options)


def load_settings(state: ServiceState, app_id: str) -> RecordingSettings:
    """The application's stored settings; DeliveryError when it has none."""
    with state.db.session() as session:
        row = session.get(AppSettings, app_id)
        document = None if row is None else row.document_enc
    if document is None:
        raise DeliveryError(f"application {app_id} has no recording settings")
    return RecordingSettings.from_json(json.loads(state.box.decrypt(document)))


def delivery_options(config: ServiceConfig) -> DeliveryOptions:
    """The operator's delivery options: the environment's, the config's backup folder, the
    webhook's in-job retry bounds (SKYMIX_WEBHOOK_MAX_TRIES, SKYMIX_WEBHOOK_MAX_TOTAL_S)."""
    base = DeliveryOptions.from_env(backup_dir=config.backup_dir)
    tries = int(_number(WEBHOOK_TRIES_ENV, base.webhook_max_tries))
    total = _number(WEBHOOK_TOTAL_ENV, base.webhook_max_total_s)
    return DeliveryOptions(
        smtp=base.smtp,
        allow_private=base.allow_private,
        backup_dir=base.backup_dir,
        webhook_max_tries=max(1, tries),
        webhook_max_total_s=max(0.0, total),
    )


def _number(variable: str, default: float) -> float:
    """A variable's number, or ``default`` when it is unset; OptionsError naming it."""
    text = os.environ.get(variable)
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise OptionsError("expected a number", field=variable) from None


def _claim(state: ServiceState, recording_id: str, owner: str) -> int | None:
    """Take the job's lease (compare-and-set on its status, owner and attempts); the attempt's
    number, or None when it is done or another live worker holds it."""
    now = utcnow()
    with state.db.session() as session:
        job = session.get(Job, recording_id)
        if job is None or not claimable(job, now):
            return None
        before = (job.status, job.lease_owner, job.attempts)
    with state.db.session() as session:
        taken = session.execute(
            update(Job)
            .where(
                Job.recording_id == recording_id,
                Job.status == before[0],
                Job.attempts == before[2],
                Job.lease_owner.is_(None) if before[1] is None else Job.lease_owner == before[1],
            )
            .values(
                status="running",
                lease_owner=owner,
                lease_until=now + timedelta(seconds=LEASE_S),
                attempts=before[2] + 1,
                updated_at=now,
            )
        )
    return before[2] + 1 if taken.rowcount == 1 else None  # type: ignore[attr-defined]


def _finish_job(
    state: ServiceState, recording_id: str, owner: str, status: str, error: str | None
) -> None:
    """The job's end: its status, why it failed, how long it took from its creation."""
    now = utcnow()
    with state.db.session() as session:
        job = session.get(Job, recording_id)
        if job is None or job.lease_owner != owner:
            return  # deleted, or given to another worker after this one's lease ran out
        job.status, job.lease_until, job.last_error = status, None, error
        job.duration_s = (now - job.created_at).total_seconds()
        job.updated_at = now


class _Lease:
    """Renews a job's lease every third of LEASE_S on a thread while the job runs."""

    def __init__(self, state: ServiceState, recording_id: str, owner: str) -> None:
        self._state, self._id, self._owner = state, recording_id, owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="skymix-lease", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            try:
                with self._state.db.session() as session:
                    session.execute(
                        update(Job)
                        .where(Job.recording_id == self._id, Job.lease_owner == self._owner)
                        .values(lease_until=utcnow() + timedelta(seconds=LEASE_S))
                    )
            except Exception:  # noqa: BLE001 - a missed renewal is retried at the next tick
                log.warning("recording %s: the job's lease could not be renewed", self._id)


def _row_follower(state: ServiceState, recording: Recording) -> None:
    """Subscribe the recording's row to its state changes (written as they happen)."""

    def changed(new: str, rid: str, url: str | None, error: ErrorReason | None) -> None:
        values: dict[str, Any] = {"state": new, "updated_at": utcnow()}
        if new == RecordingState.LINK.value:
            values.update(url=url, link_expires_at=recording.link_expires_at)
            values.update(error_code=None, error_message=None)
        if error is not None and new == RecordingState.ERROR.value:
            values.update(error_code=error.code, error_message=error.message)
        with state.db.session() as session:
            session.execute(update(RecordingRow).where(RecordingRow.id == rid).values(**values))

    recording.on("recordingState", changed)


def _summary(report: MixReport) -> dict[str, Any]:
    """The part of a mix report the API shows."""
    return {
        "duration_s": round(report.duration_s, 3),
        "frames": report.frames,
        "participants": [p.name for p in report.participants],
        "damage": list(report.damage),
        "text": report.summary(),
    }


def _fetch_inputs(
    spec: CaptureSpec, settings: RecordingSettings, folder: Path, recording: Recording
) -> Path:
    """The spec's files under its S3 prefix, downloaded into the recording's inputs folder with
    the application's keys; that folder."""
    from ..deliver.arn import parse_destination
    from ..deliver.chain import s3_access, storage_of
    from ..deliver.s3 import make_client

    assert spec.s3_prefix is not None
    storage = storage_of(settings)
    source = parse_destination(spec.s3_prefix)
    if source.bucket is None:
        raise OptionsError("expected an S3 prefix: s3://bucket/prefix", field="s3_prefix")
    client = make_client(s3_access(storage))
    inputs = folder / INPUTS_DIR
    for field, name in spec.names():
        target = inputs / relative_name(name, field)
        target.parent.mkdir(parents=True, exist_ok=True)
        key = f"{source.key.rstrip('/')}/{name}" if source.key else name
        partial = target.with_name(f".{target.name}.partial")
        try:
            client.download_file(source.bucket, key, str(partial))
        except Exception as exc:  # noqa: BLE001 - boto3's errors, named without secrets
            partial.unlink(missing_ok=True)
            if _missing(exc):
                raise OptionsError(
                    f"no such capture file: s3://{source.bucket}/{key}", field=field
                ) from None
            raise DeliveryError(
                f"{field}: cannot read s3://{source.bucket}/{key}: {type(exc).__name__}"
            ) from None
        partial.replace(target)
    recording.append("inputs_fetched", count=len(spec.names()))
    return inputs


def _missing(exc: Exception) -> bool:
    """Whether a boto3 error says the object (or its bucket) does not exist."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NoSuchBucket")


def _check_endpoints(settings: RecordingSettings, options: DeliveryOptions) -> None:
    """OptionsError naming the setting when the host of an S3 endpoint the job would talk to
    resolves to an address the notification guard refuses (loopback, private, link-local such
    as 169.254.169.254): DNS may have changed since the settings were stored. The operator's
    SKYMIX_ALLOW_PRIVATE_NOTIFY lets any host through, as the settings API does."""
    storage = settings.storage
    if storage is None:
        return
    named = [("storage.endpoint_url", storage.endpoint_url)]
    if storage.backup is not None:
        named.append(("storage.backup.endpoint_url", storage.backup.endpoint_url))
    for field, url in named:
        if url is None:
            continue
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            check_notify_host(parts.hostname or "", port, allow_private=options.allow_private)
        except (OptionsError, ValueError) as exc:
            raise OptionsError(f"refused: {exc}", field=field) from None


def _mix(
    spec: CaptureSpec, root: Path, folder: Path, recording: Recording
) -> tuple[Path, MixReport]:
    """Mix the spec's captures (under ``root``) into the working folder."""
    from ..job import MixJob
    from ..session import load_description

    options = spec.mix_options()
    paths = {field: resolve_inside(root, name, field) for field, name in spec.names()}
    captures = [paths[f"captures[{n}]"] for n in range(len(spec.captures))]
    sdps = [str(paths[f"sdp[{n}]"]) for n in range(len(spec.sdp))]
    manifest = paths.get("manifest")
    description = load_description(sdps, manifest)
    suffix = ".webm" if options.container == "webm" else ".mp4"
    output = folder / f"{MIXED_NAME}{suffix}"
    recording.append("mixing")
    report = MixJob(
        captures,
        output,
        description=description,
        options=options,
        job_id=recording.id,
        report=folder / REPORT_NAME,
    ).run()
    return output, report


def run_job(config_json: str, recording_id: str) -> str:
    """Run (or finish) the job of ``recording_id`` in this process: what the worker pool and a
    Dask worker call. Returns the job's status: "done", "failed", "queued" (a transient error:
    to be run again), or "skipped" (finished already, or another worker holds it)."""
    config = ServiceConfig.model_validate_json(config_json)
    state = ServiceState.open(config, migrate=False)
    try:
        return _run(state, recording_id)
    finally:
        state.close()


def _run(state: ServiceState, recording_id: str) -> str:
    owner = lease_owner()
    attempt = _claim(state, recording_id, owner)
    if attempt is None:
        log.info("recording %s: finished already or running elsewhere", recording_id)
        return "skipped"
    with state.db.session() as session:
        row = session.get(RecordingRow, recording_id)
        job = session.get(Job, recording_id)
        assert row is not None and job is not None  # the job's foreign key
        app_id, folder = row.app_id, Path(row.work_dir)
        spec = CaptureSpec.from_json(row.spec)
        last_error = job.last_error
    try:
        recording = Recording.load(folder / EVENT_LOG_NAME)
    except SkymixError as exc:  # the working folder is gone or its log unreadable
        reason = _reason(state.config, exc)
        log.error("recording %s: %s", recording_id, reason)
        _set_row_error(state, recording_id, reason)
        _finish_job(state, recording_id, owner, "failed", str(reason))
        return "failed"
    _row_follower(state, recording)
    recording.append("job_attempt", attempt=attempt, owner=owner)
    log.info("recording %s: job attempt %d", recording_id, attempt)
    if attempt > MAX_ATTEMPTS:
        return _give_up(state, recording, app_id, owner, last_error)
    status, error = "done", None
    with _Lease(state, recording_id, owner):
        try:
            _work(state, spec, app_id, folder, recording)
        except Exception as exc:  # noqa: BLE001 - the recording says why, or the job runs again
            reason = _reason(state.config, exc)
            if transient(exc):
                log.warning("recording %s: queued again after: %s", recording_id, reason)
                _requeue(state, recording_id, owner, attempt, str(reason))
                return "queued"
            if not isinstance(exc, SkymixError):
                log.exception("recording %s: the job failed", recording_id)
            if recording.state in (RecordingState.START, RecordingState.STOP):
                recording.fail(reason)
            status, error = "failed", str(reason)
    if recording.state is RecordingState.ERROR:
        status = "failed"
        error = error or (str(recording.error) if recording.error else None)
    _finish_job(state, recording_id, owner, status, error)
    log.info("recording %s: job %s (%s)", recording_id, status, recording.state)
    return status


def _reason(config: ServiceConfig, exc: BaseException) -> ErrorReason:
    """The reason an error gives, the service's own paths in its message made relative to the
    data folder (it goes into notifications and API answers)."""
    reason = ErrorReason.from_exception(exc)
    message = reason.message
    roots = {str(config.data_dir), str(config.data_dir.resolve())}
    for root in sorted(roots, key=len, reverse=True):
        message = message.replace(root.rstrip(os.sep) + os.sep, "")
    return ErrorReason(reason.code, message)


def _requeue(state: ServiceState, recording_id: str, owner: str, attempt: int, error: str) -> None:
    """The job back in the queue, without an owner, due after ``retry_delay(attempt)``, for the
    watcher to run again; when even that cannot be written, the lease runs out (or its owner
    ends) and the job is run again."""
    try:
        with state.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.recording_id == recording_id, Job.lease_owner == owner)
                .values(
                    status="queued",
                    lease_owner=None,
                    lease_until=utcnow() + timedelta(seconds=retry_delay(attempt)),
                    last_error=error,
                    updated_at=utcnow(),
                )
            )
    except SQLAlchemyError:
        log.warning("recording %s: the job could not be queued again", recording_id)


def _give_up(
    state: ServiceState, recording: Recording, app_id: str, owner: str, last_error: str | None
) -> str:
    """A job run MAX_ATTEMPTS times already: its recording to ERROR (unless it reached LINK),
    announced on the channels that have not heard of it."""
    if recording.state in (RecordingState.START, RecordingState.STOP):
        why = f"the job was cut short {MAX_ATTEMPTS} times; given up"
        recording.fail(DeliveryError(why + (f" (last: {last_error})" if last_error else "")))
    try:
        _announce(state, recording, app_id)
    except Exception:  # noqa: BLE001 - the job is over either way; the log says why
        log.exception("recording %s: its end could not be announced", recording.id)
    status = "done" if recording.state is RecordingState.LINK else "failed"
    _finish_job(state, recording.id, owner, status, "too many attempts")
    return status


def _announce(state: ServiceState, recording: Recording, app_id: str) -> None:
    """Outbox rows for what the recording's latest announcement has not delivered."""
    from .outbox import enqueue_failed, enqueue_unsent

    settings = load_settings(state, app_id)
    channels = notification_channels(settings, delivery_options(state.config).smtp)
    enqueue_failed(state, recording)
    enqueue_unsent(state, recording, channels)


def _work(
    state: ServiceState, spec: CaptureSpec, app_id: str, folder: Path, recording: Recording
) -> None:
    from .outbox import enqueue_failed, enqueue_unsent

    _sync_row(state, recording)
    settings = load_settings(state, app_id)
    options = delivery_options(state.config)
    channels = notification_channels(settings, options.smtp)
    try:
        if recording.state is RecordingState.ERROR and recording.mixed_file is None:
            return  # the mix failed: its ERROR is announced (finally)
        pending = recording.pending()
        if pending.upload or (pending.mix and spec.s3_prefix is not None):
            _check_endpoints(settings, options)  # before the job talks to the store
        report_file = folder / REPORT_NAME
        report: MixReport | None
        if pending.mix:
            root = captures_root(state.config, app_id)
            if spec.s3_prefix is not None:
                root = _fetch_inputs(spec, settings, folder, recording)
            file, report = _mix(spec, root, folder, recording)
        else:
            # what resume() does, on this Recording so that its subscriber sees every change
            assert recording.mixed_file is not None
            file = recording.mixed_file
            copy = recording.backup_copy
            if recording.upload is None and not file.is_file() and copy is not None:
                file = copy.path
            report = None
            if report_file.is_file():
                report = MixReport.from_json(report_file.read_bytes())
            if recording.state is RecordingState.START:
                recording.stop()
            log.info("recording %s: resuming (%s)", recording.id, recording.pending())
        if report is not None:
            _store_summary(state, recording.id, report)
        deliver_recording(file, settings, recording, report=report, options=options)
        _sync_row(state, recording)
    except Exception as exc:
        if not transient(exc) and recording.state in (RecordingState.START, RecordingState.STOP):
            recording.fail(_reason(state.config, exc))
        raise
    finally:
        if recording.state is RecordingState.ERROR:
            enqueue_unsent(state, recording, channels)
        enqueue_failed(state, recording)


def _sync_row(state: ServiceState, recording: Recording) -> None:
    """The row as the event log says (a crash may have come between the two)."""
    assert recording.state is not None
    error = recording.error
    with state.db.session() as session:
        session.execute(
            update(RecordingRow)
            .where(RecordingRow.id == recording.id)
            .values(
                state=recording.state.value,
                url=recording.url,
                link_expires_at=recording.link_expires_at,
                error_code=None if error is None else error.code,
                error_message=None if error is None else error.message,
            )
        )


def _set_row_error(state: ServiceState, recording_id: str, reason: ErrorReason) -> None:
    with state.db.session() as session:
        session.execute(
            update(RecordingRow)
            .where(RecordingRow.id == recording_id)
            .values(
                state=RecordingState.ERROR.value,
                error_code=reason.code,
                error_message=reason.message,
                updated_at=utcnow(),
            )
        )


def _store_summary(state: ServiceState, recording_id: str, report: MixReport) -> None:
    with state.db.session() as session:
        session.execute(
            update(RecordingRow)
            .where(RecordingRow.id == recording_id)
            .values(report_summary=_summary(report), updated_at=utcnow())
        )
