"""``GET /healthz``: the service answers and its database too."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text

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
