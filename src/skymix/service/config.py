"""The service's own settings: where its data and database are, its secret keys, where it
listens, where jobs run. From a TOML file, then ``SKYMIX_*`` environment variables over it.

The embedded default needs no set-up: data in ``./skymix-data``, SQLite in it, a secret key
file made there on first start (readable by its owner only), 127.0.0.1:8765, a local process
pool with one worker per core.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import make_url

from ..errors import OptionsError
from ..jsondoc import JsonDocument, validation_problems

__all__ = ["ENV_VARS", "ServiceConfig"]

#: Environment variable -> config field. Variables win over the file.
ENV_VARS = {
    "SKYMIX_DATA_DIR": "data_dir",
    "SKYMIX_DATABASE_URL": "database_url",
    "SKYMIX_SECRET_KEY": "secret_keys",
    "SKYMIX_SECRET_KEY_FILE": "secret_key_file",
    "SKYMIX_HOST": "host",
    "SKYMIX_PORT": "port",
    "SKYMIX_WORKERS": "workers",
    "SKYMIX_DASK": "dask",
    "SKYMIX_MAX_BODY_BYTES": "max_body_bytes",
    "SKYMIX_BACKUP_DIR": "backup_dir",
    "SKYMIX_JANUS": "janus",
    "SKYMIX_JANUS_WS_URL": "janus_ws_url",
    "SKYMIX_JANUS_ADMIN_KEY": "janus_admin_key",
    "SKYMIX_JANUS_ICE_INTERFACE": "janus_ice_interface",
    "SKYMIX_JANUS_NAT_1_1": "janus_nat_1_1",
    "SKYMIX_ICE_SERVERS": "ice_servers",
    "SKYMIX_DEMO_APP": "demo_app",
}


class ServiceConfig(JsonDocument):
    """What ``skymix serve`` runs with (docs/service.md lists every field and variable)."""

    model_config = ConfigDict(title="skymix service configuration")

    data_dir: Path = Field(
        default=Path("skymix-data"), validate_default=True, description="recordings, keys, SQLite"
    )
    database_url: str | None = Field(
        default=None,
        description="sqlite:///PATH or postgresql://...; default: SQLite in the data folder",
    )
    secret_keys: list[str] = Field(
        default_factory=list,
        description="Fernet keys, newest first: the first encrypts, every one decrypts",
    )
    secret_key_file: Path | None = Field(
        default=None, description="a file of keys, one per line, newest first"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    dask: str | None = Field(default=None, description="a Dask scheduler: tcp://HOST:PORT")
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    backup_dir: Path | None = None
    auth_failures_per_minute: int = Field(default=20, ge=1)
    # live rooms (docs/live.md): the media relay and what browsers are told of it
    janus: str = Field(
        default="auto",
        description="'auto': start a Janus of its own on 127.0.0.1 when Janus is installed; "
        "'off': no live rooms; or the HTTP API of an existing Janus, http://HOST:PORT/janus",
    )
    janus_ws_url: str | None = Field(
        default=None,
        description="the Janus WebSocket browsers connect to (ws:// or wss://); default: the "
        "own Janus's; required with an existing Janus",
    )
    janus_admin_key: str | None = Field(
        default=None,
        description="the videoroom admin_key of an existing Janus (the own one gets a new one)",
    )
    janus_ice_interface: str | None = Field(
        default=None, description="the own Janus gathers ICE candidates on this interface only"
    )
    janus_nat_1_1: str | None = Field(
        default=None, description="the own Janus's public address (1:1 NAT, e.g. on EC2)"
    )
    ice_servers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="STUN/TURN servers given to browsers, as RTCIceServer objects (JSON in "
        "the variable)",
    )
    demo_app: str | None = Field(
        default=None, description="serve /demo for this application (its public key)"
    )

    @field_validator("data_dir", "secret_key_file", "backup_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Folders and files as absolute paths: a job worker started elsewhere (a Dask worker
        in another folder) must find the same ones."""
        return None if value is None else value.expanduser().absolute()

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The fields, keys counted and the database's password hidden, never shown."""
        for name, value in super().__repr_args__():
            if name == "secret_keys":
                yield name, f"<{len(value)} keys>"
            elif name == "janus_admin_key" and value is not None:
                yield name, "<hidden>"
            elif name == "ice_servers":
                yield name, f"<{len(value)} servers>"
            elif name == "database_url" and value is not None:
                yield name, make_url(value).render_as_string(hide_password=True)
            else:
                yield name, value

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:", "postgresql:", "postgresql+")):
            raise ValueError("expected sqlite:///PATH or postgresql://...")
        return value

    @field_validator("janus")
    @classmethod
    def _janus(cls, value: str) -> str:
        if value not in ("auto", "off") and not value.startswith(("http://", "https://")):
            raise ValueError("expected 'auto', 'off' or http://HOST:PORT/janus")
        return value

    @field_validator("janus_ws_url")
    @classmethod
    def _ws(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("expected ws://HOST:PORT/ or wss://HOST:PORT/")
        return value

    @field_validator("dask")
    @classmethod
    def _dask(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("tcp://", "tls://", "inproc://")):
            raise ValueError("expected a scheduler address: tcp://HOST:PORT")
        return value

    @property
    def database(self) -> str:
        """The database URL: the configured one, or SQLite in the data folder."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'skymix.db').resolve()}"

    @property
    def recordings_dir(self) -> Path:
        """Where each recording's working folder is made: recordings/<app_id>/<recording_id>."""
        return self.data_dir / "recordings"

    @classmethod
    def load(
        cls,
        file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ServiceConfig:
        """The configuration of a TOML ``file`` (optional), the ``SKYMIX_*`` variables of
        ``environ`` over it, then ``overrides`` (command-line flags) over both. OptionsError
        naming the file's field or the variable; no message quotes a secret key."""
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        if file is not None:
            try:
                data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
            except OSError as exc:
                raise OptionsError(f"{file}: cannot read: {exc.strerror}") from exc
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise OptionsError(f"{file}: not TOML: {exc}") from None
        origin = {key: f"{file}: {key}" for key in data}
        for variable, key in ENV_VARS.items():
            value = env.get(variable)
            if value:
                data[key] = _env_value(key, value)
                origin[key] = variable
        for key, value in overrides.items():
            if value is not None:
                data[key] = value
                origin[key] = key
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            path, message = validation_problems(exc)[0]
        top = path.split(".")[0].split("[")[0] if path else ""
        if top == "secret_keys":  # a message may quote the value: never for keys
            message = "expected a list of keys (the value is not shown)"
        elif top in ("janus_admin_key", "ice_servers"):  # TURN credentials, the admin key
            message = "not a valid value (the value is not shown)"
        raise OptionsError(message, field=origin.get(top, path or None))


def _env_value(key: str, value: str) -> Any:
    """A variable's text as the field takes it: key lists are comma-separated."""
    if key == "secret_keys":
        return [k.strip() for k in value.split(",") if k.strip()]
    if key == "ice_servers":
        try:
            return json.loads(value)
        except ValueError:
            raise OptionsError(
                "expected a JSON list of RTCIceServer objects", field="SKYMIX_ICE_SERVERS"
            ) from None
    return value
