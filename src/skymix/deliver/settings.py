"""An application's recording settings (storage and notifications) and the operator's SMTP
server, validated once, as the REST API will store them.

``RecordingSettings`` is the JSON document of issue 10, one pydantic model: validation with the
JSON path of each problem (skymix.jsondoc), and the JSON Schema in docs/settings.schema.json
generated from it. Secrets (the S3 secret key, the webhook secret) are ``Secret`` values that
show as ``****`` and their last 4 characters in every repr, str, error and JSON document, except
``to_json(reveal=True)``, which is for storing the settings only. A masked value sent back
(``****WQON``) is refused rather than stored as the secret. The SMTP server comes from the
environment (``SmtpSettings.from_env``), its URL parsed by ``SmtpTarget.from_url``.

Object keys come from the settings' key template (``render_key``): only the known fields, each
value made safe for a key (a room named ``../x`` cannot climb out of the prefix).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import OptionsError
from ..jsondoc import JsonDocument, json_int, parse_document, problem, validation_problems
from .arn import Destination, parse_destination
from .email import SmtpTarget

__all__ = [
    "BackupSettings",
    "BucketSettings",
    "DEFAULT_KEY_TEMPLATE",
    "KEY_FIELDS",
    "LimitSettings",
    "MAX_LINK_EXPIRY_S",
    "NotificationSettings",
    "RecordingSettings",
    "Secret",
    "SmtpSettings",
    "StorageSettings",
    "render_key",
    "safe_key_part",
    "settings_json_schema",
]

DEFAULT_KEY_TEMPLATE = "{app_id}/{room}/{recording_id}.mp4"
#: The fields a key template may use.
KEY_FIELDS = ("app_id", "room", "recording_id", "date", "started_at")
#: The longest a presigned link can live (S3's Signature Version 4 limit: 7 days).
MAX_LINK_EXPIRY_S = 7 * 24 * 3600

_MASK = "****"
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Secret(SecretStr):
    """A secret string that shows as ``****`` and its last 4 characters (``****WQON``), or as
    ``****`` alone when it is shorter than 12 characters (4 of 8 would give half of it away)."""

    def _display(self) -> str:
        value = self.get_secret_value()
        return _MASK + value[-4:] if len(value) >= 12 else _MASK

    def __repr__(self) -> str:
        return f"Secret('{self._display()}')"


def _secret_input(value: object) -> object:
    """A secret as given: a string that is not a masked one; the message never shows it."""
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise problem("expected a string")
    if not value:
        raise problem("expected a non-empty string")
    if value.startswith(_MASK):
        raise problem("a masked secret (****...) cannot be stored: give the secret itself")
    return value


def _secret_json(value: Secret | None, info: SerializationInfo) -> str | None:
    if value is None:
        return None
    reveal = isinstance(info.context, Mapping) and info.context.get("reveal") is True
    return value.get_secret_value() if reveal else value._display()


SecretField = Annotated[
    Secret,
    BeforeValidator(_secret_input),
    PlainSerializer(_secret_json, return_type=str),
]


# --- object keys ---------------------------------------------------------------------------------


def safe_key_part(value: str) -> str:
    """A value as one part of an object key: runs of characters other than ASCII letters,
    digits, ".", "_" and "-" become "_", leading dots are dropped (no "." or ".." part), at most
    128 characters; "_" for what is left empty."""
    part = _UNSAFE.sub("_", value).lstrip(".")[:128]
    return part or "_"


def _template_fields(template: str) -> list[str]:
    """The fields a key template uses; OptionsError (field-less: the caller knows where the
    template came from) for a template that is not plain ``{field}`` substitutions."""
    fields = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise OptionsError(f"bad key template: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in KEY_FIELDS:
            raise OptionsError(
                f"bad key template: unknown field {{{name}}} (expected {', '.join(KEY_FIELDS)})"
            )
        if spec or conversion:
            raise OptionsError(f"bad key template: {{{name}}} takes no format or conversion")
        fields.append(name)
    return fields


def _check_key(key: str) -> str:
    if not key or key.startswith("/"):
        raise OptionsError("bad key template: the key must not be empty or begin with '/'")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise OptionsError("bad key template: empty, '.' and '..' parts are not allowed")
    if len(key.encode("utf-8")) > 1024:
        raise OptionsError("bad key template: the key is longer than S3's 1024 bytes")
    return key


def render_key(template: str, **fields: str | datetime) -> str:
    """The object key a template names, each field's value made safe (safe_key_part).
    ``started_at`` may be a datetime (written as 20261207T021440Z, UTC) and then gives ``date``
    (2026-12-07) unless that is given. OptionsError for a bad template, a missing field or a key
    that is not safe."""
    values: dict[str, str] = {}
    for name, value in fields.items():
        if name not in KEY_FIELDS:
            raise OptionsError(f"unknown key field {name!r} (expected {', '.join(KEY_FIELDS)})")
        if isinstance(value, datetime):
            utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
            values.setdefault("date", utc.strftime("%Y-%m-%d"))
            value = (
                utc.strftime("%Y%m%dT%H%M%SZ") if name == "started_at" else utc.strftime("%Y-%m-%d")
            )
        values[name] = safe_key_part(str(value))
    for name in _template_fields(template):
        if name not in values:
            raise OptionsError(f"the key template needs {{{name}}}, which was not given")
    return _check_key(template.format(**values))


def _example_key(template: str) -> str:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return render_key(template, app_id="app", room="room", recording_id="id", started_at=stamp)


# --- the settings document -----------------------------------------------------------------------


def _as_problem(check: Any, value: object) -> Any:
    """check(value), an OptionsError from it turned into a validation problem."""
    try:
        return check(value)
    except OptionsError as exc:
        raise problem(str(exc)) from None


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise problem(f"expected an http:// or https:// URL with a host for {what}")
    if parts.username or parts.password:
        raise problem(f"the {what} must not hold a user name or password")
    return value


class BucketSettings(JsonDocument):
    """An S3 bucket (by ARN, or s3:// URL) and the keys that can write there (none: boto3's
    default credential chain)."""

    model_config = ConfigDict(title="bucket")

    arn: str = Field(description="arn:aws:s3:<region>::<bucket>/<prefix>, or s3://bucket/prefix")
    access_key_id: str | None = Field(default=None, min_length=1)
    secret_access_key: SecretField | None = None
    endpoint_url: str | None = Field(
        default=None, description="an S3-compatible store's URL; none for AWS itself"
    )

    @field_validator("arn")
    @classmethod
    def _destination(cls, value: str) -> str:
        destination = _as_problem(parse_destination, value)
        if destination.kind != "s3":
            raise problem("expected an S3 ARN or an s3:// URL, not a local path")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "endpoint")

    @property
    def destination(self) -> Destination:
        """The bucket, prefix (or object), region and partition ``arn`` names."""
        return parse_destination(self.arn)

    @model_validator(mode="after")
    def _key_pair(self) -> BucketSettings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise problem(
                "give both access_key_id and secret_access_key, or neither "
                "(the default credential chain)"
            )
        return self


class BackupSettings(BucketSettings):
    """A second bucket that takes a recording when the upload to the primary one has failed
    after its retries. Its object key is the primary's (the key template under this ARN's
    prefix, or the object this ARN names)."""

    model_config = ConfigDict(title="backup")


class StorageSettings(BucketSettings):
    """Where an application's recordings go: the primary bucket and its keys, how objects are
    named, how long links live, an optional backup bucket, and whether the local file is
    deleted once an upload is verified."""

    model_config = ConfigDict(title="storage")

    key_template: str = Field(
        default=DEFAULT_KEY_TEMPLATE, description="fields: " + ", ".join(KEY_FIELDS)
    )
    link_expiry_s: json_int(1, MAX_LINK_EXPIRY_S) = MAX_LINK_EXPIRY_S  # type: ignore[valid-type]
    backup: BackupSettings | None = Field(
        default=None, description="a second bucket, used when the primary upload has failed"
    )
    delete_local_after_upload: StrictBool = Field(
        default=False,
        description="delete the local file once an upload is verified complete",
    )

    @field_validator("key_template")
    @classmethod
    def _template(cls, value: str) -> str:
        _as_problem(_example_key, value)
        return value

    def object_key(self, **fields: str | datetime) -> str:
        """The key of a recording's object: the key template rendered with ``fields``
        (render_key) under the prefix, or the object ``arn`` names itself."""
        return self.key_in(self.destination, **fields)

    def key_in(self, destination: Destination, **fields: str | datetime) -> str:
        """The key of a recording's object in ``destination`` (this storage's or its backup's):
        the key template under its prefix, or the object it names."""
        if destination.names_object:
            return destination.key
        return destination.object_key(render_key(self.key_template, **fields))


def _check_webhook_secret(value: Secret) -> Secret:
    """A Standard Webhooks secret: whsec_ and the base64 of 24 to 64 random bytes."""
    text = value.get_secret_value()
    body = text.removeprefix("whsec_")
    try:
        size = len(base64.b64decode(body, validate=True)) if body != text else 0
    except (binascii.Error, ValueError):
        size = 0
    if not 24 <= size <= 64:
        raise problem("expected whsec_ followed by the base64 of 24 to 64 random bytes")
    return value


class NotificationSettings(JsonDocument):
    """Who is told when a recording is ready or failed: a signed HTTP POST to ``url`` and an
    e-mail to each address of ``emails``."""

    model_config = ConfigDict(title="notifications")

    enabled: StrictBool = False
    url: str | None = Field(default=None, description="http:// or https:// only")
    secret: SecretField | None = Field(
        default=None, description="Standard Webhooks signing secret: whsec_ + base64"
    )
    emails: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "notification URL")

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: Secret | None) -> Secret | None:
        return None if value is None else _check_webhook_secret(value)

    @field_validator("emails")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        for i, address in enumerate(value):
            if len(address) > 254 or not _EMAIL.fullmatch(address):
                raise problem(f"expected an e-mail address, got {json.dumps(address)}", f"[{i}]")
        return value

    @model_validator(mode="after")
    def _signed(self) -> NotificationSettings:
        if self.url is not None and self.secret is None:
            raise problem("a notification URL needs a secret to sign with")
        return self


class LimitSettings(JsonDocument):
    """Limits of a live recording: it is stopped when it has run ``max_length_s``, or when its
    room has had nobody in it for ``empty_room_s``."""

    model_config = ConfigDict(title="limits")

    max_length_s: json_int(1, 86400) = Field(  # type: ignore[valid-type]
        default=14400, description="the longest a live recording runs (seconds)"
    )
    empty_room_s: json_int(1, 3600) = Field(  # type: ignore[valid-type]
        default=60, description="a live recording stops after its room is empty this long"
    )


class RecordingSettings(JsonDocument):
    """An application's recording settings: the JSON document the REST API stores."""

    model_config = ConfigDict(title="skymix recording settings")

    app_id: str = Field(description="letters, digits, '.', '_', '-'; at most 128")
    recording_enabled: StrictBool = True
    storage: StorageSettings | None = None
    notifications: NotificationSettings = NotificationSettings()
    limits: LimitSettings = LimitSettings()

    @field_validator("app_id")
    @classmethod
    def _app_id(cls, value: str) -> str:
        if not _APP_ID.fullmatch(value):
            raise problem(
                "expected 1 to 128 letters, digits, '.', '_' or '-', beginning with a letter "
                "or digit"
            )
        return value

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> RecordingSettings:
        """Settings from a JSON document (text or decoded); OptionsError naming the field at the
        first problem. No message quotes a secret."""
        document = parse_document(data) if isinstance(data, (str, bytes)) else data
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            path, message = validation_problems(exc)[0]
        # raised out of the handler: the validation error holds the document, secrets included
        raise OptionsError(message, field=path or None)

    def to_json(self, *, reveal: bool = False) -> dict[str, Any]:
        """The settings as a JSON-ready dict. Secrets are masked (for API responses, logs,
        reports) unless ``reveal``, which is only for storing the settings: from_json() of that
        gives equal settings back."""
        dumped = self.model_dump(mode="json", context={"reveal": reveal})
        return cast(dict[str, Any], dumped)


def settings_json_schema() -> dict[str, Any]:
    """The JSON Schema of RecordingSettings documents (docs/settings.schema.json)."""
    schema = RecordingSettings.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# --- the operator's SMTP server ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """The operator's SMTP server (``target``, what ``send_email`` takes; its repr and str mask
    the password) and the address e-mail is sent as (``sender``)."""

    target: SmtpTarget
    sender: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SmtpSettings | None:
        """The server of SKYMIX_SMTP_URL (parsed by ``SmtpTarget.from_url``) sending as
        SKYMIX_SMTP_FROM; None when no URL is set (no e-mail). OptionsError naming the variable
        otherwise; no message quotes the URL."""
        env = os.environ if environ is None else environ
        url = env.get("SKYMIX_SMTP_URL", "")
        if not url:
            return None
        target = SmtpTarget.from_url(url, field="SKYMIX_SMTP_URL")
        sender = env.get("SKYMIX_SMTP_FROM", "")
        if not _EMAIL.fullmatch(sender):
            raise OptionsError(
                "expected the sender's e-mail address" if sender else "not set",
                field="SKYMIX_SMTP_FROM",
            )
        return cls(target=target, sender=sender)
