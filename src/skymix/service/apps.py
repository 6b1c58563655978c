"""Applications and their API keys, as the operator manages them (``skymix apps``): create one
(its key returned once), replace its key, delete it with everything it owns.

Only the key's id and the SHA-256 of its secret part are stored (skymix.service.auth), so a key
cannot be shown again: a lost key is replaced with ``rotate_key``, which ends the old one at once.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError

from ..deliver.settings import RecordingSettings
from ..errors import OptionsError
from .auth import new_key
from .models import App, utcnow
from .state import ServiceState

__all__ = ["create_app", "delete_app", "rotate_key"]

log = logging.getLogger(__name__)


def _checked(app_id: str) -> str:
    """The id, if it is one a settings document accepts (OptionsError naming app_id if not)."""
    RecordingSettings.from_json({"app_id": app_id})
    return app_id


def create_app(state: ServiceState, app_id: str) -> str:
    """A new application ``app_id``; its API key (shown to the operator once, stored hashed).
    OptionsError for an id that is not valid or already taken."""
    _checked(app_id)
    key = new_key()
    try:
        with state.db.session() as session:
            if session.get(App, app_id) is not None:
                raise OptionsError(f"application {app_id} exists already", field="app_id")
            session.add(App(app_id=app_id, key_id=key.key_id, key_hash=key.secret_hash))
    except IntegrityError:  # made by someone else between the look and the insert
        raise OptionsError(f"application {app_id} exists already", field="app_id") from None
    log.info("application %s created (key id %s)", app_id, key.key_id)
    return key.token


def rotate_key(state: ServiceState, app_id: str) -> str:
    """A new API key for ``app_id``; the old key stops working at once. OptionsError for an
    application that does not exist."""
    key = new_key()
    with state.db.session() as session:
        app = session.get(App, _checked(app_id))
        if app is None:
            raise OptionsError(f"no application {app_id}", field="app_id")
        app.key_id = key.key_id
        app.key_hash = key.secret_hash
        app.key_rotated_at = utcnow()
    log.info("application %s has a new key (key id %s)", app_id, key.key_id)
    return key.token


def delete_app(state: ServiceState, app_id: str) -> None:
    """Delete ``app_id``: its key, settings, recordings' records, jobs and outbox go with it (the
    database's cascades). The recordings' files in the data folder are left to the operator.
    OptionsError for an application that does not exist."""
    with state.db.session() as session:
        app = session.get(App, _checked(app_id))
        if app is None:
            raise OptionsError(f"no application {app_id}", field="app_id")
        session.delete(app)
    log.info("application %s deleted", app_id)
