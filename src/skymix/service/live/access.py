"""Browser credentials for live rooms: what a page may present instead of the application's
secret key, which never goes to a browser.

- A **public key** (``pk_`` + 24 url-safe characters) per application, kept in clear (it is in
  every page that uses it), good only from the page origins the application allows (exact
  ``scheme://host[:port]``, lower-case, default ports dropped, as browsers send ``Origin``).
- A **room token** (``skr_`` + a Fernet token of the service's SecretBox over
  ``{"a": app_id, "r": room, "e": expiry}``), made by the customer's backend with its secret
  key: bound to one room, expiring, checked by decrypting (no table, nothing to revoke).

Either can only join rooms of its application (a token: its room) and start or stop recordings
there. ``authenticate_browser`` turns what a page sent into a ``BrowserGrant`` or raises
``BrowserAuthError`` carrying the WebSocket close code to answer with; the message says what was
wrong without repeating the credential.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ...errors import OptionsError, SecretKeyError, SkymixError
from ..models import App, BrowserAccess, utcnow
from ..state import ServiceState

__all__ = [
    "MAX_ORIGINS",
    "MAX_TOKEN_TTL_S",
    "ROOM_NAME",
    "AccessView",
    "BrowserAuthError",
    "BrowserGrant",
    "authenticate_browser",
    "check_display_name",
    "check_room_name",
    "get_access",
    "make_room_token",
    "new_public_key",
    "normalise_origin",
    "normalise_origins",
    "revoke_access",
    "rotate_public_key",
    "set_access",
]

log = logging.getLogger(__name__)

MAX_ORIGINS = 20
MAX_TOKEN_TTL_S = 86_400
MAX_NAME_CHARS = 64
ROOM_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
PUBLIC_KEY = re.compile(r"pk_[A-Za-z0-9_-]{24}")
TOKEN_PREFIX = "skr_"
#: Close codes of the signalling socket for a refused hello.
CLOSE_UNAUTHORIZED = 4401
CLOSE_ORIGIN = 4403
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Characters a display name must not hold: control, format (bidi overrides and the like),
#: surrogates, line separators; but the joiners emoji sequences and some scripts need.
_NOT_IN_NAMES = ("Cc", "Cf", "Cs", "Zl", "Zp")
_JOINERS = ("\u200c", "\u200d")


class BrowserAuthError(SkymixError, PermissionError):
    """A page's credentials were refused; ``close_code`` is the WebSocket close code."""

    code = "browser_unauthorized"

    def __init__(self, message: str, close_code: int = CLOSE_UNAUTHORIZED) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class BrowserGrant:
    """What a page may do: join rooms of ``app_id`` (only ``room`` when a token gave it)."""

    app_id: str
    room: str | None


@dataclass(frozen=True, slots=True)
class AccessView:
    """An application's browser access as the API shows it (the public key is public)."""

    public_key: str
    origins: list[str]


def new_public_key() -> str:
    """A new random public key: ``pk_`` + 24 url-safe characters (144 bits)."""
    return "pk_" + secrets.token_urlsafe(18)


def check_room_name(room: object) -> str:
    """``room`` if it is a room name (1..128 of ``A-Za-z0-9._-``); OptionsError otherwise."""
    if not isinstance(room, str) or not ROOM_NAME.fullmatch(room):
        raise OptionsError(
            "a room name is 1 to 128 characters among A-Z a-z 0-9 . _ -", field="room"
        )
    return room


def check_display_name(name: object) -> str:
    """``name`` if it is a display name (1..64 characters, no control characters)."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
        raise OptionsError(f"a display name is 1 to {MAX_NAME_CHARS} characters", field="name")
    if any(unicodedata.category(c) in _NOT_IN_NAMES and c not in _JOINERS for c in name):
        raise OptionsError("a display name cannot hold control characters", field="name")
    return name


def normalise_origin(text: str) -> str:
    """``text`` as browsers send it in ``Origin``: ``scheme://host[:port]``, lower-case, the
    scheme's default port dropped. OptionsError for anything else (another scheme, a path, a
    query, user info, no host)."""
    problem = f"{text[:80]!r} is not an origin: expected http(s)://host[:port], nothing after"
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise OptionsError(problem, field="origins") from None
    scheme = parts.scheme.lower()
    if (
        scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "?" in text
        or "#" in text
    ):
        raise OptionsError(problem, field="origins")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalise_origins(origins: list[str]) -> list[str]:
    """The origins normalised, duplicates dropped, in order; 1 to MAX_ORIGINS of them."""
    if not origins:
        raise OptionsError("give at least one allowed origin", field="origins")
    normal = list(dict.fromkeys(normalise_origin(origin) for origin in origins))
    if len(normal) > MAX_ORIGINS:
        raise OptionsError(f"at most {MAX_ORIGINS} allowed origins", field="origins")
    return normal


def _app_exists(state: ServiceState, app_id: str) -> None:
    with state.db.session() as session:
        if session.get(App, app_id) is None:
            raise OptionsError(f"no application {app_id}", field="app_id")


def set_access(state: ServiceState, app_id: str, origins: list[str]) -> AccessView:
    """Create the application's browser access (a new public key) or replace its origins
    (the key kept)."""
    normal = normalise_origins(origins)
    _app_exists(state, app_id)
    for _ in range(2):  # a concurrent first PUT may insert between the look and ours
        try:
            with state.db.session() as session:
                row = session.get(BrowserAccess, app_id)
                if row is None:
                    row = BrowserAccess(app_id=app_id, public_key=new_public_key(), origins=normal)
                    session.add(row)
                    log.info("application %s: browser access created", app_id)
                else:
                    row.origins = normal
                    row.updated_at = utcnow()
                return AccessView(public_key=row.public_key, origins=list(row.origins))
        except IntegrityError:
            continue
    raise OptionsError("the browser access changed meanwhile; try again", field="origins")


def get_access(state: ServiceState, app_id: str) -> AccessView | None:
    """The application's browser access; None when it has none."""
    with state.db.session() as session:
        row = session.get(BrowserAccess, app_id)
        return None if row is None else AccessView(row.public_key, list(row.origins))


def rotate_public_key(state: ServiceState, app_id: str) -> AccessView | None:
    """A new public key for the application (the old one stops working at once); None when
    it has no browser access."""
    with state.db.session() as session:
        row = session.get(BrowserAccess, app_id)
        if row is None:
            return None
        row.public_key = new_public_key()
        row.updated_at = utcnow()
        log.info("application %s: new public key", app_id)
        return AccessView(row.public_key, list(row.origins))


def revoke_access(state: ServiceState, app_id: str) -> bool:
    """Remove the application's browser access (its public key stops working); whether it
    had one. Room tokens already made stay good until they expire."""
    with state.db.session() as session:
        row = session.get(BrowserAccess, app_id)
        if row is None:
            return False
        session.delete(row)
    log.info("application %s: browser access revoked", app_id)
    return True


def make_room_token(
    state: ServiceState, app_id: str, room: str, ttl_s: int
) -> tuple[str, datetime]:
    """A token for ``room`` of ``app_id`` good for ``ttl_s`` seconds; (token, expiry)."""
    check_room_name(room)
    if not 1 <= ttl_s <= MAX_TOKEN_TTL_S:
        raise OptionsError(f"ttl_s is 1 to {MAX_TOKEN_TTL_S} seconds", field="ttl_s")
    expiry = int(time.time()) + ttl_s
    body = json.dumps({"a": app_id, "r": room, "e": expiry}, separators=(",", ":"))
    return TOKEN_PREFIX + state.box.encrypt(body), datetime.fromtimestamp(expiry, UTC)


def _token_grant(state: ServiceState, key: str) -> BrowserGrant:
    refused = BrowserAuthError("the room token is not valid (made by another service?)")
    try:
        claims = json.loads(state.box.decrypt(key[len(TOKEN_PREFIX) :]))
    except (SecretKeyError, ValueError, UnicodeError):
        raise refused from None
    if not isinstance(claims, dict):
        raise refused
    app_id, room, expiry = claims.get("a"), claims.get("r"), claims.get("e")
    if not isinstance(app_id, str) or not isinstance(room, str) or type(expiry) is not int:
        raise refused
    if expiry <= time.time():
        raise BrowserAuthError("the room token has expired: ask the application for a new one")
    with state.db.session() as session:
        if session.get(App, app_id) is None:
            raise refused
    return BrowserGrant(app_id=app_id, room=room)


def _public_key_grant(state: ServiceState, key: str, origin: str | None) -> BrowserGrant:
    with state.db.session() as session:
        row = session.execute(
            select(BrowserAccess.app_id, BrowserAccess.origins).where(
                BrowserAccess.public_key == key
            )
        ).first()
    if row is None:
        raise BrowserAuthError("the public key is not valid (rotated or revoked?)")
    try:
        page = normalise_origin(origin) if origin else None
    except OptionsError:
        page = None
    if page is None or page not in row.origins:
        raise BrowserAuthError(
            f"this page's origin ({(origin or 'none')[:100]}) is not allowed for the public key",
            close_code=CLOSE_ORIGIN,
        )
    return BrowserGrant(app_id=row.app_id, room=None)


def authenticate_browser(state: ServiceState, key: object, origin: str | None) -> BrowserGrant:
    """What a page that sent ``key`` from ``origin`` may do; BrowserAuthError if nothing."""
    if not isinstance(key, str) or not key:
        raise BrowserAuthError("no key: send a public key (pk_...) or a room token (skr_...)")
    if key.startswith("skm_"):
        raise BrowserAuthError(
            "an application's secret key is never accepted from a browser: use its public key "
            "(pk_...) or a room token (skr_...) made by the application's backend"
        )
    if key.startswith(TOKEN_PREFIX) and len(key) < 8192:
        return _token_grant(state, key)
    if PUBLIC_KEY.fullmatch(key):
        return _public_key_grant(state, key, origin)
    raise BrowserAuthError("not a key: send a public key (pk_...) or a room token (skr_...)")
