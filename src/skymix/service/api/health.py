"""``GET /healthz`` (the service answers and its database too) and ``GET /metrics``
(Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import text

from ..metrics import ServiceMetrics
from ..state import ServiceState

__all__ = ["router"]

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


@router.get("/healthz", response_model=Health)
def healthz(request: Request) -> Health:
    """Ok when the database answers."""
    state: ServiceState = request.app.state.service
    with state.db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return Health(status="ok", database=state.db.engine.dialect.name)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: HTTP requests, jobs by status and duration, recordings by state,
    notification attempts by outcome."""
    registry: ServiceMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
