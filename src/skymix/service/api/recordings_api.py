"""``/rest/recordings``: start a mix-and-deliver job on finished captures, read a recording,
list an application's recordings (paged), and follow one's state changes (Server-Sent Events).

A job is persisted before it is acknowledged: the recording's row (in STOP), its job (queued)
and its event log (START, STOP: the capture is complete) are written, then 202 is answered and
the job handed to the executor. Another application's recording is 404, as a missing one is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from ...deliver.states import EVENT_LOG_NAME, Recording, RecordingState, new_recording_id
from ...errors import DescriptionError, OptionsError
from ..auth import CurrentApp
from ..jobs import CaptureSpec, captures_root, relative_name, resolve_inside
from ..models import AppSettings, Job, RecordingRow, utcnow
from ..state import ServiceState

__all__ = ["STREAMS_END", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/rest/recordings", tags=["recordings"])

#: How often an event stream looks at the recording's row, and sends a comment to keep the
#: connection open.
POLL_S = 0.25
KEEPALIVE_S = 15.0
#: A recording id (and a cursor, which is one); a room or a file name: any text but NUL.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ROOM_PATTERN = r"^[^\x00]+$"
#: Every route's answers besides its own (the key's, the body's).
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no key, or not a valid one"},
    422: {"description": "a field that cannot be used: loc names it, msg says why"},
    429: {"description": "too many failed authentication attempts from this address"},
}
_MISSING: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such recording (or it is another application's)"}
}
RecordingId = Annotated[str, PathParam(pattern=ID_PATTERN)]
_Name = Annotated[str, Field(min_length=1, max_length=1024, pattern=ROOM_PATTERN)]
_FINAL = (RecordingState.LINK.value, RecordingState.ERROR.value)
#: Set when the service is stopping: open event streams end (the server waits for open
#: responses before it stops; a client's EventSource reconnects to the next start).
STREAMS_END = threading.Event()

StateName = Literal["START", "STOP", "LINK", "ERROR"]


class RecordingRequest(BaseModel):
    """A job on finished captures: files named relative to the application's own captures
    folder, ``captures/<app_id>/`` (or to ``s3_prefix``, read with the application's storage
    keys), their SDPs (one per participant, in order) or a manifest, the room, and skymix mix
    options."""

    model_config = ConfigDict(extra="forbid")

    captures: list[_Name] = Field(min_length=1, max_length=64, description="capture files")
    sdp: list[_Name] = Field(default_factory=list, max_length=64, description="SDP files")
    manifest: _Name | None = Field(default=None, description="a JSON manifest")
    s3_prefix: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^(s3://|arn:)[^\x00]*$",
        description="read the files under this S3 prefix (s3://bucket/prefix or an ARN)",
    )
    room: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=ROOM_PATTERN,
        description="default: the first capture's name",
    )
    options: dict[str, Any] | None = Field(
        default=None, description="skymix mix options (docs/options.schema.json)"
    )
    layout: dict[str, Any] | str | None = Field(
        default=None, description="the layout (an inline layout or grid/speaker/pip)"
    )


class ErrorOut(BaseModel):
    code: str
    message: str


class Timings(BaseModel):
    """When each step happened (from the recording's event log)."""

    created_at: datetime
    job_started_at: datetime | None = None
    mixed_at: datetime | None = None
    finished_at: datetime | None = None


class RecordingOut(BaseModel):
    id: str
    room: str
    kind: str
    state: StateName
    url: str | None = None
    link_expires_at: datetime | None = None
    error: ErrorOut | None = None
    created_at: datetime
    updated_at: datetime
    timings: Timings | None = Field(default=None, description="on GET of one recording")
    report: dict[str, Any] | None = Field(default=None, description="the mix report's summary")


class RecordingPage(BaseModel):
    items: list[RecordingOut]
    next_cursor: str | None = Field(
        default=None, description="give it as `cursor` for the next page; null on the last"
    )


def _state(request: Request) -> ServiceState:
    service: ServiceState = request.app.state.service
    return service


def _invalid(field: list[str | int], message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body", *field], "msg": message, "type": "value_error"}],
    )


def _loc(field: str) -> list[str | int]:
    """``captures[2]`` -> ["captures", 2]; ``options.size`` -> ["options", "size"]."""
    parts: list[str | int] = []
    for piece in field.split("."):
        name, _, rest = piece.partition("[")
        parts.append(name)
        for index in re.findall(r"(\d+)\]", "[" + rest if rest else ""):
            parts.append(int(index))
    return parts


def _spec_of(body: RecordingRequest, state: ServiceState, app_id: str) -> CaptureSpec:
    try:
        json.dumps(body.model_dump(), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid([], "text that is not Unicode (a lone surrogate)") from None
    options = dict(body.options or {})
    if body.layout is not None:
        options["layout"] = body.layout
    spec = CaptureSpec(
        tuple(body.captures), tuple(body.sdp), body.manifest, body.s3_prefix, options
    )
    try:
        spec.mix_options()
    except (OptionsError, DescriptionError) as exc:
        field = getattr(exc, "field", None) or "options"
        prefix = "" if field.startswith("options") else "options."
        raise _invalid(_loc(prefix + field), _message(exc, field)) from None
    try:
        if body.s3_prefix is None:
            root = captures_root(state.config, app_id)
            for field, name in spec.names():
                resolve_inside(root, name, field)
        else:
            for field, name in spec.names():
                relative_name(name, field)
    except OptionsError as exc:
        field = exc.field or "captures"
        raise _invalid(_loc(field), _message(exc, field)) from None
    return spec


def _message(exc: Exception, field: str) -> str:
    return str(exc).removeprefix(f"{field}: ")


def _out(row: RecordingRow, timings: Timings | None = None) -> RecordingOut:
    error = None
    if row.error_code is not None:
        error = ErrorOut(code=row.error_code, message=row.error_message or "")
    return RecordingOut(
        id=row.id,
        room=row.room,
        kind=row.kind,
        state=row.state,  # type: ignore[arg-type]
        url=row.url,
        link_expires_at=row.link_expires_at,
        error=error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        timings=timings,
        report=row.report_summary,
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RecordingOut,
    responses={
        **_ERRORS,
        400: {"description": "the body is not JSON"},
        409: {"description": "the application has no settings, or recording is disabled"},
    },
)
def create_recording(
    body: RecordingRequest, request: Request, response: Response, app_id: CurrentApp
) -> RecordingOut:
    """Start the mix-and-deliver job of finished captures; it is on record before the answer.
    The recording starts in STOP and goes to LINK or ERROR."""
    state = _state(request)
    spec = _spec_of(body, state, app_id)
    with state.db.session() as session:
        settings = session.get(AppSettings, app_id)
        enabled = None if settings is None else settings.recording_enabled
    if enabled is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "the application has no recording settings")
    if not enabled:
        raise HTTPException(status.HTTP_409_CONFLICT, "recording is disabled in the settings")
    recording_id = new_recording_id()
    room = body.room or Path(body.captures[0]).stem or "room"
    folder = state.config.recordings_dir / app_id / recording_id
    now = utcnow()
    row = RecordingRow(
        id=recording_id,
        app_id=app_id,
        room=room,
        kind="capture",
        state=RecordingState.STOP.value,
        spec=spec.to_json(),
        work_dir=str(folder.resolve()),
        created_at=now,
        updated_at=now,
    )
    try:
        with state.db.session() as session:
            session.add(row)
            session.flush()
            session.add(Job(recording_id=recording_id, status="queued", created_at=now))
            session.flush()
            folder.mkdir(parents=True, exist_ok=False)
            recording = Recording.create(folder / EVENT_LOG_NAME, app_id, room, recording_id)
            recording.start()
            recording.stop()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("recording %s of %s: job queued", recording_id, app_id)
    if state.executor is not None:
        state.executor.submit(recording_id)
    response.headers["Location"] = f"/rest/recordings/{recording_id}"
    return _out(row)


@router.api_route(
    "", methods=["PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"], include_in_schema=False
)
def recordings_other_methods() -> Response:
    """405 naming both methods of /rest/recordings (GET and POST are two routes: the framework's
    own 405 would name the first one only)."""
    return JSONResponse(
        {"detail": "Method Not Allowed"},
        status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
        headers={"Allow": "GET, POST"},
    )


def _own(state: ServiceState, app_id: str, recording_id: str) -> RecordingRow:
    with state.db.session() as session:
        row = session.get(RecordingRow, recording_id)
    if row is None or row.app_id != app_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such recording")
    return row


def _timings(row: RecordingRow) -> Timings:
    """The steps' times from the event log (those it holds)."""
    timings = Timings(created_at=row.created_at)
    try:
        lines = (Path(row.work_dir) / EVENT_LOG_NAME).read_text(encoding="utf-8").splitlines()
    except OSError:
        return timings
    for line in lines:
        try:
            event = json.loads(line)
            at = datetime.fromisoformat(str(event["at"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            continue
        kind = event.get("event")
        if kind == "job_attempt" and timings.job_started_at is None:
            timings.job_started_at = at
        elif kind == "mixed":
            timings.mixed_at = at
        elif kind == "state" and event.get("state") in _FINAL:
            timings.finished_at = at
    return timings


@router.get("/{recording_id}", response_model=RecordingOut, responses={**_ERRORS, **_MISSING})
def get_recording(recording_id: RecordingId, request: Request, app_id: CurrentApp) -> RecordingOut:
    """A recording: state, link and its expiry, error, timings, the mix report's summary."""
    row = _own(_state(request), app_id, recording_id)
    return _out(row, _timings(row))


@router.get("", response_model=RecordingPage, responses=_ERRORS)
def list_recordings(
    request: Request,
    app_id: CurrentApp,
    room: Annotated[str | None, Query(max_length=256, pattern=ROOM_PATTERN)] = None,
    state: StateName | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> RecordingPage:
    """The application's recordings, newest first, ``limit`` a page; ``next_cursor`` gives the
    next page (stable: recordings made meanwhile do not shift it)."""
    query = select(RecordingRow).where(RecordingRow.app_id == app_id)
    if room is not None:
        query = query.where(RecordingRow.room == room)
    if state is not None:
        query = query.where(RecordingRow.state == state)
    if cursor is not None:
        query = query.where(RecordingRow.id < cursor)
    query = query.order_by(RecordingRow.id.desc()).limit(limit + 1)
    with _state(request).db.session() as session:
        rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return RecordingPage(
        items=[_out(r) for r in rows], next_cursor=rows[-1].id if more and rows else None
    )


def _event(row: RecordingRow, number: int) -> str:
    data = {
        "state": row.state,
        "recording_id": row.id,
        "url": row.url,
        "expires_at": None if row.link_expires_at is None else row.link_expires_at.isoformat(),
        "error": None
        if row.error_code is None
        else {"code": row.error_code, "message": row.error_message},
    }
    return f"id: {number}\nevent: recordingState\ndata: {json.dumps(data)}\n\n"


@router.get(
    "/{recording_id}/events",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the state changes"},
        **_ERRORS,
        **_MISSING,
    },
    response_class=StreamingResponse,
)
def recording_events(
    recording_id: RecordingId, request: Request, app_id: CurrentApp
) -> StreamingResponse:
    """Server-Sent Events (``event: recordingState``, JSON data: state, recording_id, url,
    expires_at, error): the current state first, then each change; the stream ends after LINK
    or ERROR."""
    state = _state(request)
    first = _own(state, app_id, recording_id)

    def read() -> RecordingRow | None:
        with state.db.session() as session:
            return session.get(RecordingRow, recording_id)

    async def stream() -> AsyncIterator[str]:
        row: RecordingRow | None = first
        number = 1
        yield "retry: 3000\n\n" + _event(first, number)
        sent = (first.state, first.url)
        loop = asyncio.get_running_loop()
        quiet = loop.time()
        while row is not None and row.state not in _FINAL:
            await asyncio.sleep(POLL_S)
            if STREAMS_END.is_set() or await request.is_disconnected():
                return
            row = await anyio.to_thread.run_sync(read)
            if row is None:
                return
            if (row.state, row.url) != sent:
                sent = (row.state, row.url)
                number += 1
                quiet = loop.time()
                yield _event(row, number)
            elif loop.time() - quiet > KEEPALIVE_S:
                quiet = loop.time()
                yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
