"""``/rest/live``: browser credentials for live rooms, and the rooms' signalling socket.

With its secret key, an application manages its browser access (``/rest/live/access``: the
public key and the page origins allowed to use it; created or updated by PUT, rotated, revoked)
and makes room tokens for its backend to hand to pages (``/rest/live/tokens``: shown only in
that answer). Pages then open ``/rest/live/ws`` (skymix.service.live.ws) and say hello with
one or the other; the secret key is never taken there.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, WebSocket, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ...errors import OptionsError
from ..auth import CurrentApp
from ..live import access
from ..live.ws import serve_socket
from ..state import ServiceState

__all__ = ["AccessIn", "AccessOut", "TokenIn", "TokenOut", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/rest/live", tags=["live rooms"])

_NO_ACCESS = "this application has no browser access: PUT /rest/live/access first"
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no key, or not a valid one"},
    429: {"description": "too many failed authentication attempts from this address"},
}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"description": "a field that cannot be used: loc names it, msg says why"}
}
_MISSING: dict[int | str, dict[str, Any]] = {
    404: {"description": "the application has no browser access"}
}


class AccessIn(BaseModel):
    """The page origins allowed to use the application's public key."""

    model_config = ConfigDict(extra="forbid")

    origins: list[str] = Field(
        min_length=1,
        max_length=access.MAX_ORIGINS,
        description="exact origins, scheme://host[:port] (http or https, no path)",
        examples=[["https://app.example.com", "http://localhost:3000"]],
    )


class AccessOut(BaseModel):
    """The application's public key (for its pages: it is not a secret) and allowed origins."""

    public_key: str = Field(description="pk_...: what pages pass to Skymix.init()")
    origins: list[str] = Field(description="the allowed origins, normalised")


class TokenIn(BaseModel):
    """A room token's room and lifetime."""

    model_config = ConfigDict(extra="forbid")

    room: str = Field(
        pattern=f"^{access.ROOM_NAME.pattern}$", description="the room the token joins"
    )
    ttl_s: int = Field(
        default=600, ge=1, le=access.MAX_TOKEN_TTL_S, description="seconds the token is good for"
    )


class TokenOut(BaseModel):
    """A room token: shown in this answer only."""

    token: str = Field(description="skr_...: what a page passes to Skymix.init()")
    room: str
    expires_at: datetime


def _state(request: Request) -> ServiceState:
    service: ServiceState = request.app.state.service
    return service


def _invalid(exc: OptionsError, default: str) -> HTTPException:
    """FastAPI's 422 shape, naming the field."""
    field = exc.field or default
    message = str(exc).removeprefix(f"{field}: ")
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


def _out(view: access.AccessView) -> AccessOut:
    return AccessOut(public_key=view.public_key, origins=view.origins)


@router.put(
    "/access",
    response_model=AccessOut,
    summary="Create or update browser access",
    responses={**_ERRORS, **_INVALID},
)
async def put_access(body: AccessIn, request: Request, app_id: CurrentApp) -> AccessOut:
    """Allow these origins; makes the public key on the first call, keeps it after."""
    try:
        view = await run_in_threadpool(access.set_access, _state(request), app_id, body.origins)
    except OptionsError as exc:
        raise _invalid(exc, "origins") from None
    return _out(view)


@router.get(
    "/access",
    response_model=AccessOut,
    summary="Read browser access",
    responses={**_ERRORS, **_MISSING},
)
async def get_access(request: Request, app_id: CurrentApp) -> AccessOut:
    view = await run_in_threadpool(access.get_access, _state(request), app_id)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _NO_ACCESS)
    return _out(view)


@router.post(
    "/access/rotate",
    response_model=AccessOut,
    summary="Rotate the public key",
    responses={**_ERRORS, **_MISSING},
)
async def rotate_access(request: Request, app_id: CurrentApp) -> AccessOut:
    """A new public key; the old one is refused from now on (open sockets stay open)."""
    view = await run_in_threadpool(access.rotate_public_key, _state(request), app_id)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _NO_ACCESS)
    return _out(view)


@router.delete(
    "/access",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke browser access",
    responses={**_ERRORS, **_MISSING},
)
async def delete_access(request: Request, app_id: CurrentApp) -> Response:
    """The public key stops working; room tokens already made stay good until they expire."""
    if not await run_in_threadpool(access.revoke_access, _state(request), app_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, _NO_ACCESS)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.api_route("/access", methods=["POST", "PATCH", "OPTIONS", "TRACE"], include_in_schema=False)
def access_other_methods() -> Response:
    """405 naming the three methods of /rest/live/access (three routes: the framework's own
    405 would name the first one only)."""
    return JSONResponse(
        {"detail": "Method Not Allowed"},
        status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
        headers={"Allow": "GET, PUT, DELETE"},
    )


@router.post(
    "/tokens",
    response_model=TokenOut,
    summary="Make a room token",
    responses={**_ERRORS, **_INVALID},
)
async def make_token(body: TokenIn, request: Request, app_id: CurrentApp) -> TokenOut:
    """A token for one room of the application, for the customer's backend to give a page."""
    try:
        token, expires_at = access.make_room_token(_state(request), app_id, body.room, body.ttl_s)
    except OptionsError as exc:
        raise _invalid(exc, "room") from None
    return TokenOut(token=token, room=body.room, expires_at=expires_at)


@router.websocket("/ws")
async def live_socket(websocket: WebSocket) -> None:
    """The signalling socket of one page (docs/live.md, "Signalling protocol")."""
    await serve_socket(websocket)
