"""API keys and the authentication of every ``/rest`` request.

A key is ``skm_<key_id>_<secret>``: ``key_id`` is 12 lowercase base32 characters, stored in
clear to find the application; ``secret`` is 32 random bytes in url-safe base64, of which only
the SHA-256 is stored (it has the entropy of a random key, so a slow password hash would add
nothing) and compared in constant time.

``current_app`` is the FastAPI dependency that gives a request's application id. Every failure
(no header, not a bearer key, a key of the wrong shape, an unknown key id, a wrong secret) is
the same 401 with the same body, so a caller learns nothing about which part was wrong. Failed
attempts are counted per client address over a sliding minute; past the configured number the
address gets 429 with ``Retry-After`` until its oldest failure leaves the window, whatever key
it sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from .models import App
from .state import ServiceState

__all__ = [
    "ApiKey",
    "CurrentApp",
    "FailureLimiter",
    "UNAUTHORIZED",
    "current_app",
    "hash_secret",
    "new_key",
    "parse_key",
]

log = logging.getLogger(__name__)

#: The one answer to every failed authentication.
UNAUTHORIZED = "missing or invalid API key"
_KEY = re.compile(r"skm_([a-z2-7]{12})_([A-Za-z0-9_-]{43})")
#: Compared against when the key id is unknown, so both failures take the same time.
_NO_HASH = "0" * 64
#: How many client addresses the limiter remembers (the oldest are forgotten first).
_MAX_CLIENTS = 10_000
_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A new key: the ``token`` the client sends, and what is stored of it."""

    key_id: str
    secret_hash: str
    token: str = field(repr=False)


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret part: SHA-256, hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_key() -> ApiKey:
    """A new random key."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()[:12]
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return ApiKey(key_id=key_id, secret_hash=hash_secret(secret), token=f"skm_{key_id}_{secret}")


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a token of the right shape; None otherwise."""
    match = _KEY.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


class FailureLimiter:
    """Failed attempts per client address in a sliding window; thread-safe (the dependency runs
    on the server's worker threads). Remembers at most ``_MAX_CLIENTS`` addresses."""

    def __init__(self, limit: int, window_s: float = _WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def blocked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if times is None or len(times) < self.limit:
                return 0.0
            return times[len(times) - self.limit] + self.window_s - now

    def fail(self, client: str) -> None:
        """Count a failed attempt of ``client``."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if times is None:
                times = self._failures[client] = deque()
                while len(self._failures) > _MAX_CLIENTS:
                    self._failures.popitem(last=False)
            self._failures.move_to_end(client)
            times.append(now)
            while len(times) > self.limit:
                times.popleft()


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An application's API key, as `skymix apps create` printed it: skm_...",
)
_limiters_lock = threading.Lock()


def _limiter(request: Request, state: ServiceState) -> FailureLimiter:
    """The application's limiter, made on first use."""
    with _limiters_lock:
        limiter: FailureLimiter | None = getattr(request.app.state, "auth_limiter", None)
        if limiter is None:
            limiter = FailureLimiter(state.config.auth_failures_per_minute)
            request.app.state.auth_limiter = limiter
        return limiter


def _app_of(state: ServiceState, token: str) -> str | None:
    """The application whose key ``token`` is; None for any key that is not one."""
    parsed = parse_key(token)
    key_id, secret = parsed if parsed is not None else ("", "")
    with state.db.session() as session:
        row = session.execute(select(App.app_id, App.key_hash).where(App.key_id == key_id)).first()
    stored = row.key_hash if row is not None else _NO_HASH
    matches = hmac.compare_digest(stored, hash_secret(secret))
    return row.app_id if row is not None and matches else None


def current_app(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The id of the application whose key the request carries. 401 (one body for every
    failure, with ``WWW-Authenticate: Bearer``) or 429 (too many failures from this address).
    A valid key is always taken: the limit slows guessing, it must not lock out the
    applications behind a shared address (a proxy, NAT, the live-rooms relay)."""
    state: ServiceState = request.app.state.service
    limiter = _limiter(request, state)
    client = request.client.host if request.client is not None else "unknown"
    app_id = None if credentials is None else _app_of(state, credentials.credentials)
    if app_id is None:
        wait = limiter.blocked_for(client)
        if wait > 0:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "too many failed authentication attempts; try again later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        limiter.fail(client)
        log.info("authentication failed from %s", client)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"}
        )
    request.state.app_id = app_id
    return app_id


#: The annotation of a route's caller: ``app_id: CurrentApp``.
CurrentApp = Annotated[str, Depends(current_app)]
