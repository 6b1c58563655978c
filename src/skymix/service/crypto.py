"""Secrets at rest: the S3 secret keys and webhook secrets of the applications' settings are
stored encrypted, so a row read straight from the database shows none.

Authenticated encryption (Fernet: AES-128-CBC with HMAC-SHA256, from the ``cryptography``
package) under the service's keys, several at once for rotation: the first key encrypts, every
key decrypts (``MultiFernet``), and ``rotate`` re-encrypts a stored token under the first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..errors import SecretKeyError
from .config import ServiceConfig

__all__ = ["SecretBox", "keys_of", "new_key"]

log = logging.getLogger(__name__)

#: The key file made in the data folder when no key is configured (the embedded default).
KEY_FILE_NAME = "secret.key"


def new_key() -> str:
    """A new random key (url-safe base64 of 32 bytes)."""
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    """Encrypts and decrypts secrets with the service's keys (newest first)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretKeyError("no secret key: set SKYMIX_SECRET_KEY or SKYMIX_SECRET_KEY_FILE")
        fernets = []
        for n, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise SecretKeyError(
                    f"secret key {n} is not a key (expected the url-safe base64 of 32 bytes, "
                    "as `skymix serve --new-key` prints)"
                ) from None
        self._box = MultiFernet(fernets)
        self.key_count = len(fernets)

    def __repr__(self) -> str:
        return f"SecretBox({self.key_count} keys)"

    def encrypt(self, plaintext: str) -> str:
        """The token for ``plaintext``, under the first key."""
        return self._box.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The plaintext of a token made under any of the keys; SecretKeyError when none of
        them opens it (a key was dropped before the secrets were rotated) or it was altered."""
        try:
            return self._box.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(
                "a stored secret cannot be decrypted with the configured keys (was a key "
                "removed before `skymix serve --rotate-secrets`?)"
            ) from None

    def rotate(self, token: str) -> str:
        """The token re-encrypted under the first key."""
        try:
            return self._box.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise SecretKeyError("a stored secret cannot be decrypted to rotate it") from None


def keys_of(config: ServiceConfig) -> list[str]:
    """The configured keys: SKYMIX_SECRET_KEY's, else the key file's (one per line), else the
    data folder's own key file, made with a new key on first use (mode 0600)."""
    if config.secret_keys:
        return list(config.secret_keys)
    file = config.secret_key_file
    if file is None:
        file = config.data_dir / KEY_FILE_NAME
        if not file.exists():
            _make_key_file(file)
    try:
        text = Path(file).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretKeyError(f"{file}: cannot read the key file: {exc}") from None
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not keys:
        raise SecretKeyError(f"{file}: no key in the key file")
    return keys


def _make_key_file(file: Path) -> None:
    """A new key file readable by its owner only, written complete or not at all."""
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_name(f".{file.name}.{os.getpid()}.partial")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(new_key() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, file)  # never replaces a key file another process just made
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)
    log.warning("made a new secret key in %s: back it up, stored secrets need it", file)
