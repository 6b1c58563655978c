"""The FastAPI application: its routes, the request-size limit, and the service's lifetime
(open the database and migrate it, start the job executor and the outbox, recover the jobs a
crash left; stop them at shutdown).

The OpenAPI document (``/openapi.json``) is generated from the routes' request and response
models, so it stays true to what the service does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ... import __version__
from ..config import ServiceConfig
from ..metrics import ServiceMetrics
from ..state import ServiceState
from . import health, live_api, recordings_api, settings_api, static_api

__all__ = ["AsciiJSONResponse", "DeclaredBodyLimit", "create_app"]


class AsciiJSONResponse(JSONResponse):
    """JSON with every character outside ASCII escaped: valid for any text a client sent,
    lone surrogates included (the UTF-8 of the default response cannot hold them)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode()


log = logging.getLogger(__name__)

#: What starts and stops with the service besides the database: (start, stop) pairs that the
#: job executor and the outbox register (ServiceState in, nothing out).
Lifecycle = tuple[Callable[[ServiceState], None], Callable[[ServiceState], None]]

#: The body limit's answer in the OpenAPI document.
TOO_LARGE: dict[str, Any] = {
    "description": "request body over the service's limit",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": {"type": "string"}},
                "required": ["detail"],
            }
        }
    },
}


class DeclaredBodyLimit:
    """Around the application: a request whose Content-Length is over the limit gets the JSON
    413 at once, as the document says. FastAPI's own limit (``max_body_size``, inside) counts a
    chunked body as it arrives, but replaces any answer to a request that declares too much
    with a plain-text one."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
                detail = f"request body over the limit of {self.limit} bytes"
                await AsciiJSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(config: ServiceConfig, *, lifecycle: list[Lifecycle] | None = None) -> FastAPI:
    """The service for ``config``: routes, limits, and what starts and stops with it."""
    parts = list(lifecycle or [])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState.open(config)
        app.state.service = state
        app.state.metrics = ServiceMetrics(state.db)
        started: list[Lifecycle] = []
        try:
            for part in parts:
                part[0](state)
                started.append(part)
            log.info("skymix service ready on %s:%d", config.host, config.port)
            yield
        finally:
            for part in reversed(started):
                try:
                    part[1](state)
                except Exception:  # noqa: BLE001 - every part gets its chance to stop
                    log.exception("stopping a part of the service failed")
            state.close()

    app = FastAPI(
        title="skymix recording service",
        version=__version__,
        lifespan=lifespan,
        default_response_class=AsciiJSONResponse,
        max_body_size=config.max_body_bytes,  # 413, counted as the body arrives (chunked too)
        description="Recording settings, recordings and their jobs. Every /rest route takes an "
        "application's key: `Authorization: Bearer skm_...`.",
    )

    # FastAPI's own handlers, answering with AsciiJSONResponse: a request's text that is not
    # Unicode (a lone surrogate, "\ud800") is echoed back escaped instead of failing to encode
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        body = {"detail": jsonable_encoder(exc.errors())}
        return AsciiJSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return AsciiJSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        metrics: ServiceMetrics | None = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            template = getattr(route, "path", None) or "unmatched"
            metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        return response

    app.include_router(health.router)
    app.include_router(settings_api.router)
    app.include_router(recordings_api.router)
    app.include_router(live_api.router)
    app.include_router(static_api.router)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        """The generated document, with the body limit's 413 on every operation (the limit is
        a middleware's, which no route declares)."""
        document = generate()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                operation.setdefault("responses", {}).setdefault("413", TOO_LARGE)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app
