"""The service's commands: ``skymix serve`` and ``skymix apps create|rotate-key|delete|
browser-access``."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn
from sqlalchemy import select

from .config import ServiceConfig
from .crypto import new_key
from .models import AppSettings
from .state import ServiceState

__all__ = ["apps_command", "rotate_secrets", "serve_command"]

log = logging.getLogger(__name__)


def config_of(args: argparse.Namespace) -> ServiceConfig:
    """The configuration: the file, the environment, then the command's flags."""
    flags = {
        name: getattr(args, name, None) for name in ("data_dir", "host", "port", "workers", "dask")
    }
    return ServiceConfig.load(args.config, **flags)


def serve_command(args: argparse.Namespace) -> int:
    """Run the service until SIGINT or SIGTERM (uvicorn's graceful shutdown)."""
    if args.new_key:
        print(new_key())  # noqa: T201 - the command's output
        return 0
    from .api.app import DeclaredBodyLimit, create_app
    from .runtime import lifecycle

    config = config_of(args)
    if args.rotate_secrets:
        state = ServiceState.open(config)
        try:
            count = rotate_secrets(state)
        finally:
            state.close()
        print(f"re-encrypted the secrets of {count} applications under the first key")  # noqa: T201
        return 0
    app = DeclaredBodyLimit(create_app(config, lifecycle=lifecycle(config)), config.max_body_bytes)
    uvicorn.run(app, host=config.host, port=config.port, log_config=None, access_log=False)
    return 0


def rotate_secrets(state: ServiceState) -> int:
    """Re-encrypt every application's stored settings under the first key, in one
    transaction; returns how many."""
    with state.db.session() as session:
        rows = session.scalars(select(AppSettings)).all()
        for row in rows:
            row.document_enc = state.box.rotate(row.document_enc)
    log.info("re-encrypted %d settings documents under the first key", len(rows))
    return len(rows)


def apps_command(args: argparse.Namespace) -> int:
    """Create an application (its key printed once), rotate its key, delete it, or allow page
    origins its public key (printed)."""
    from . import apps

    state = ServiceState.open(config_of(args))
    try:
        if args.apps_command == "create":
            key = apps.create_app(state, args.app_id)
        elif args.apps_command == "rotate-key":
            key = apps.rotate_key(state, args.app_id)
        elif args.apps_command == "browser-access":
            key = _browser_access(state, args)
        else:
            apps.delete_app(state, args.app_id)
            print(f"deleted {args.app_id}", file=sys.stderr)  # noqa: T201
            return 0
    finally:
        state.close()
    print(key)  # noqa: T201 - shown once: only its hash is stored (a public key: any time)
    return 0


def _browser_access(state: ServiceState, args: argparse.Namespace) -> str:
    """Allow the origins (creating the browser access if needed), rotate the public key if
    asked; the public key."""
    from .live import access

    view = access.set_access(state, args.app_id, args.origin)
    if args.rotate:
        view = access.rotate_public_key(state, args.app_id) or view
    print(f"allowed origins: {', '.join(view.origins)}", file=sys.stderr)  # noqa: T201
    return view.public_key
