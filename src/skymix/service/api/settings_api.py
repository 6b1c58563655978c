"""``/rest/recording/notifications``: an application's recording settings (storage and
notifications, the ``RecordingSettings`` document), created, read, replaced, patched, deleted.

Only the caller's own settings exist for it: another application's id gives the same 404 as an
id nobody has, and a document naming another application is refused with 403 whatever that
application is. The document is stored encrypted whole; responses show its secrets masked
(``****WQON``), and a masked secret sent back in a PUT or PATCH means "keep the stored one", so
a client can GET, edit and PUT without holding the secrets.

Every validation error is FastAPI's 422 shape, ``{"detail": [{"loc": [...], "msg": ...,
"type": ...}]}``, naming the field. The notification URL (and a bucket's endpoint) must not be on
a private address (skymix.deliver.webhook's guard). When storage keys change, they are proven
(skymix.deliver.s3.check_access: write, read, delete a probe object) before they are stored;
``?verify=false`` skips that and the settings say ``verified: false``.

Updates are optimistic: each stored version has a number (also the ``ETag``); a write lands only
on the version it was computed from. ``If-Match`` makes a stale write a 409; without it the
change is recomputed on the newest version, so no acknowledged write is lost.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import random
import re
import time
from datetime import datetime
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import delete, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from ...deliver.chain import s3_access
from ...deliver.s3 import check_access
from ...deliver.settings import BucketSettings, RecordingSettings, StorageSettings
from ...deliver.webhook import check_notify_host
from ...errors import DeliveryError, OptionsError
from ...jsondoc import parse_document
from ..auth import CurrentApp
from ..models import AppSettings, utcnow
from ..state import ServiceState

__all__ = ["SettingsOut", "merge_patch", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/rest/recording/notifications", tags=["notification settings"])

#: Where a document holds secrets (masked in responses, "unchanged" when sent back masked).
SECRET_PATHS = (
    ("storage", "secret_access_key"),
    ("storage", "backup", "secret_access_key"),
    ("notifications", "secret"),
)
#: How long a write that keeps losing the race to others (without If-Match) is recomputed and
#: tried again, after a short random pause each time, before a 409.
_WRITE_PATIENCE_S = 10.0
_NOT_FOUND = "no notification settings for this application id"
#: What RecordingSettings takes as an app id (for the OpenAPI document).
APP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_VERSION = r'^\s*(?:W/)?"?(\d{1,18})"?\s*$'
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class SettingsOut(BaseModel):
    """The stored settings, secrets masked, with what the service records about them."""

    app_id: str
    recording_enabled: bool
    storage: dict[str, Any] | None = Field(description="the storage settings, secrets masked")
    notifications: dict[str, Any] = Field(description="the notification settings, secret masked")
    verified: bool = Field(description="the storage keys were proven to write, read and delete")
    version: int = Field(description="increases with every change (the ETag)")
    created_at: datetime
    updated_at: datetime


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """A JSON Schema with its local ``$ref``s replaced by what they name (for the OpenAPI
    document, where ``#/$defs`` would point at the document's root)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def _document_schema() -> dict[str, Any]:
    """The settings document's JSON Schema, inlined, with the app id's pattern (its validator
    checks it in code) so that clients and API testers see it."""
    schema = RecordingSettings.model_json_schema()
    inlined: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    inlined["properties"]["app_id"]["pattern"] = APP_ID_PATTERN
    return inlined


_SCHEMA = _document_schema()
_DOCUMENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _SCHEMA}},
    }
}
_PATCH_BODY = {
    "requestBody": {
        "required": True,
        "description": "a JSON merge patch (RFC 7396) of the settings document",
        "content": {
            media: {"schema": {"type": "object"}}
            for media in ("application/merge-patch+json", "application/json")
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no key, or not a valid one"},
    404: {"description": "no settings for this application id (or it is another application's)"},
    422: {"description": "a field that cannot be used: loc names it, msg says why"},
    429: {"description": "too many failed authentication attempts from this address"},
}


# --- errors ------------------------------------------------------------------------------------


def _loc(field: str | None) -> list[str | int]:
    """A document path (``storage.backup.arn``, ``notifications.emails[0]``) as a FastAPI loc."""
    parts: list[str | int] = ["body"]
    for name, index in _PART.findall(field or ""):
        parts.append(name if name else int(index))
    return parts


def _invalid(field: str | None, message: str, kind: str = "value_error") -> NoReturn:
    raise HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": _loc(field), "msg": message, "type": kind}],
    )


def _not_found() -> NoReturn:
    raise HTTPException(status.HTTP_404_NOT_FOUND, _NOT_FOUND)


def _conflict(message: str) -> NoReturn:
    raise HTTPException(status.HTTP_409_CONFLICT, message)


def _foreign(app_id: str) -> NoReturn:
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        [
            {
                "loc": ["body", "app_id"],
                "msg": f"the settings must be this application's own (app_id {app_id!r})",
                "type": "forbidden",
            }
        ],
    )


# --- documents ---------------------------------------------------------------------------------


def _object(body: bytes) -> dict[str, Any]:
    """The request's JSON object; 422 when it is not one."""
    try:
        document = parse_document(body)
    except OptionsError as exc:
        _invalid(None, str(exc), "json_invalid")
    if not isinstance(document, dict):
        _invalid(None, "expected a JSON object", "dict_type")
    return document


def _validated(document: dict[str, Any], caller: str) -> RecordingSettings:
    """The settings of a document; 422 naming the field, 403 for another application's."""
    try:
        settings = RecordingSettings.from_json(document)
    except OptionsError as exc:
        _invalid(exc.field, str(exc).removeprefix(f"{exc.field}: ") if exc.field else str(exc))
    if settings.app_id != caller:
        _foreign(caller)
    return settings


def _at(document: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(document, dict):
            return None
        document = document.get(name)
    return document


def _unmasked(document: dict[str, Any], stored: RecordingSettings) -> dict[str, Any]:
    """The document with each secret sent back masked exactly as the stored one shows replaced
    by the stored secret (any other masked value stays, and is refused by validation)."""
    masked, revealed = stored.to_json(), stored.to_json(reveal=True)
    for path in SECRET_PATHS:
        value = _at(document, path)
        if isinstance(value, str) and value.startswith("****") and value == _at(masked, path):
            parent = _at(document, path[:-1])
            assert isinstance(parent, dict)
            parent[path[-1]] = _at(revealed, path)
    return document


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: ``patch`` applied to ``target`` (null removes a member, objects merge, any
    other value replaces)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = merge_patch(merged.get(name), value)
    return merged


def _public_host(url: str | None, field: str) -> None:
    """422 for a URL whose host the notification guard refuses (private, loopback, ...)."""
    if url is None:
        return
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        check_notify_host(parts.hostname or "", port)
    except (OptionsError, ValueError) as exc:
        _invalid(field, f"refused: {exc}")


def _buckets(storage: StorageSettings | None) -> list[tuple[str, BucketSettings]]:
    if storage is None:
        return []
    found: list[tuple[str, BucketSettings]] = [("storage", storage)]
    if storage.backup is not None:
        found.append(("storage.backup", storage.backup))
    return found


def _access_of(settings: RecordingSettings | None) -> list[tuple[str, Any]]:
    """What decides whether the storage keys work: each bucket's ARN, endpoint and keys."""
    if settings is None:
        return []
    revealed = settings.to_json(reveal=True)
    return [
        (field, {k: _at(revealed, (*field.split("."), k)) for k in BucketSettings.model_fields})
        for field, _ in _buckets(settings.storage)
    ]


def _check_storage(settings: RecordingSettings, before: RecordingSettings | None) -> None:
    """The changed buckets' endpoints must be public, and their keys must write, read and
    delete a probe object; 422 naming the bucket and the missing permission otherwise."""
    unchanged = dict(_access_of(before))
    for field, bucket in _buckets(settings.storage):
        if unchanged.get(field) == dict(_access_of(settings))[field]:
            continue
        destination = bucket.destination
        assert destination.bucket is not None  # an S3 destination always names its bucket
        prefix = destination.prefix
        try:
            check_access(destination.bucket, prefix, access=s3_access(bucket))
        except DeliveryError as exc:
            _invalid(field, f"the keys cannot be used: {exc}", "access_denied")


def _endpoints_and_urls(settings: RecordingSettings, before: RecordingSettings | None) -> None:
    """The notification URL and bucket endpoints that changed are checked by the guard."""
    old = before.to_json(reveal=True) if before is not None else {}
    new = settings.to_json(reveal=True)
    paths = [("notifications", "url")] + [
        (*field.split("."), "endpoint_url") for field, _ in _buckets(settings.storage)
    ]
    for path in paths:
        url = _at(new, path)
        if url != _at(old, path):
            _public_host(url, ".".join(path))


def _storage_changed(settings: RecordingSettings, before: RecordingSettings | None) -> bool:
    return _access_of(settings) != _access_of(before)


# --- rows --------------------------------------------------------------------------------------


def _settings_of(state: ServiceState, row: AppSettings) -> RecordingSettings:
    return RecordingSettings.from_json(state.box.decrypt(row.document_enc))


def _out(state: ServiceState, row: AppSettings) -> SettingsOut:
    document = _settings_of(state, row).to_json()
    return SettingsOut(
        **document,
        verified=row.verified,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _sealed(state: ServiceState, settings: RecordingSettings) -> str:
    return state.box.encrypt(json.dumps(settings.to_json(reveal=True), separators=(",", ":")))


def _load(state: ServiceState, caller: str, app_id: str) -> AppSettings:
    """The caller's settings row; 404 for another application's id or none stored."""
    if app_id != caller:
        _not_found()
    with state.db.session() as session:
        row = session.get(AppSettings, app_id)
    if row is None:
        _not_found()
    return row


def _if_match(value: str | None) -> int | None:
    """The version an If-Match header names (``"3"``, ``W/"3"`` or ``3``: the header's pattern,
    checked by FastAPI); None without one."""
    if value is None:
        return None
    match = re.fullmatch(_VERSION, value)
    assert match is not None
    return int(match.group(1))


def _respond(response: Response, out: SettingsOut) -> SettingsOut:
    response.headers["ETag"] = f'"{out.version}"'
    return out


# --- operations --------------------------------------------------------------------------------


def _create(state: ServiceState, caller: str, body: bytes, verify: bool) -> SettingsOut:
    settings = _validated(_object(body), caller)
    with state.db.session() as session:
        if session.get(AppSettings, caller) is not None:
            _conflict("this application has notification settings already: PUT or PATCH them")
    _endpoints_and_urls(settings, None)
    if verify:
        _check_storage(settings, None)
    now = utcnow()
    row = AppSettings(
        app_id=caller,
        document_enc=_sealed(state, settings),
        recording_enabled=settings.recording_enabled,
        verified=verify and settings.storage is not None,
        created_at=now,
        updated_at=now,
    )
    try:
        with state.db.session() as session:
            session.add(row)
    except IntegrityError:
        _conflict("this application has notification settings already: PUT or PATCH them")
    log.info("notification settings of %s created (verified: %s)", caller, row.verified)
    return _out(state, row)


def _change(
    state: ServiceState,
    caller: str,
    app_id: str,
    body: bytes,
    *,
    patch: bool,
    verify: bool,
    expected: int | None,
) -> SettingsOut:
    """Replace (PUT) or patch the settings, on the version they were read at; recomputed on
    the newest version when another write came first (409 instead when If-Match was given)."""
    document = _object(body)
    checked: list[tuple[str, Any]] | None = None
    deadline = time.monotonic() + _WRITE_PATIENCE_S
    for attempt in itertools.count():
        if attempt and time.monotonic() > deadline:
            break
        if attempt:
            time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
        row = _load(state, caller, app_id)
        if expected is not None and row.version != expected:
            _conflict(f"the settings are at version {row.version}, not {expected}")
        before = _settings_of(state, row)
        if patch:
            proposed = merge_patch(before.to_json(reveal=True), copy.deepcopy(document))
        else:
            proposed = copy.deepcopy(document)
            proposed.setdefault("app_id", caller)
        settings = _validated(_unmasked(proposed, before), caller)
        changed = _storage_changed(settings, before)
        _endpoints_and_urls(settings, before)
        verified = row.verified
        if changed:
            if verify and checked != _access_of(settings):
                _check_storage(settings, before)
                checked = _access_of(settings)
            verified = verify and settings.storage is not None
        with state.db.session() as session:
            result = session.execute(
                update(AppSettings)
                .where(AppSettings.app_id == caller, AppSettings.version == row.version)
                .values(
                    document_enc=_sealed(state, settings),
                    recording_enabled=settings.recording_enabled,
                    verified=verified,
                    version=row.version + 1,
                    updated_at=utcnow(),
                ),
                execution_options={"synchronize_session": False},
            )
            assert isinstance(result, CursorResult)
            landed = result.rowcount == 1
        if landed:
            log.info(
                "notification settings of %s changed to version %d (verified: %s)",
                caller,
                row.version + 1,
                verified,
            )
            return _out(state, _load(state, caller, app_id))
        if expected is not None:
            _conflict("the settings were changed by another request; read them again")
    _conflict("the settings keep changing under this request; try again")


def _delete(state: ServiceState, caller: str, app_id: str) -> None:
    if app_id != caller:
        _not_found()
    with state.db.session() as session:
        result = session.execute(
            delete(AppSettings).where(AppSettings.app_id == caller),
            execution_options={"synchronize_session": False},
        )
        assert isinstance(result, CursorResult)
        if result.rowcount == 0:
            _not_found()
    log.info("notification settings of %s deleted", caller)


def _read(state: ServiceState, caller: str, app_id: str) -> SettingsOut:
    return _out(state, _load(state, caller, app_id))


async def _changed(
    request: Request,
    response: Response,
    app_id: str,
    caller: str,
    verify: bool,
    if_match: str | None,
    *,
    patch: bool,
) -> SettingsOut:
    """A PUT (``patch`` False) or PATCH, its checks and storage off the event loop."""
    expected = _if_match(if_match)
    body = await request.body()
    state = _state(request)
    out = await run_in_threadpool(
        lambda: _change(state, caller, app_id, body, patch=patch, verify=verify, expected=expected)
    )
    return _respond(response, out)


def _state(request: Request) -> ServiceState:
    service: ServiceState = request.app.state.service
    return service


VerifyQuery = Annotated[
    bool, Query(description="prove the storage keys can write (false: skipped, recorded)")
]
IfMatch = Annotated[
    str | None,
    Header(
        description='the version the change is for (the ETag, "3"); 409 if stale',
        pattern=_VERSION,
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SettingsOut,
    openapi_extra=_DOCUMENT_BODY,
    responses={**_ERRORS, 403: {"description": "the document names another application"}}
    | {409: {"description": "the settings exist already"}},
)
async def create_settings(
    request: Request, response: Response, caller: CurrentApp, verify: VerifyQuery = True
) -> SettingsOut:
    """Create the calling application's settings (the RecordingSettings document)."""
    body = await request.body()
    out = await run_in_threadpool(_create, _state(request), caller, body, verify)
    response.headers["Location"] = f"{router.prefix}/{caller}"
    return _respond(response, out)


@router.get("/{app_id}", response_model=SettingsOut, responses=_ERRORS)
async def read_settings(
    request: Request, response: Response, app_id: str, caller: CurrentApp
) -> SettingsOut:
    """The application's settings, secrets masked."""
    return _respond(response, await run_in_threadpool(_read, _state(request), caller, app_id))


@router.put(
    "/{app_id}",
    response_model=SettingsOut,
    openapi_extra=_DOCUMENT_BODY,
    responses={**_ERRORS, 403: {"description": "the document names another application"}}
    | {409: {"description": "If-Match names an older version"}},
)
async def replace_settings(
    request: Request,
    response: Response,
    app_id: str,
    caller: CurrentApp,
    verify: VerifyQuery = True,
    if_match: IfMatch = None,
) -> SettingsOut:
    """Replace the settings; a secret sent back masked as shown keeps the stored one."""
    return await _changed(request, response, app_id, caller, verify, if_match, patch=False)


@router.patch(
    "/{app_id}",
    response_model=SettingsOut,
    openapi_extra=_PATCH_BODY,
    responses={**_ERRORS, 403: {"description": "the patch names another application"}}
    | {409: {"description": "If-Match names an older version"}},
)
async def patch_settings(
    request: Request,
    response: Response,
    app_id: str,
    caller: CurrentApp,
    verify: VerifyQuery = True,
    if_match: IfMatch = None,
) -> SettingsOut:
    """Change some fields (a JSON merge patch: null removes a field); a secret sent back masked
    as shown keeps the stored one."""
    return await _changed(request, response, app_id, caller, verify, if_match, patch=True)


@router.delete(
    "/{app_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_ERRORS,
)
async def delete_settings(request: Request, app_id: str, caller: CurrentApp) -> Response:
    """Delete the application's settings (recording stops being configured)."""
    await run_in_threadpool(_delete, _state(request), caller, app_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
