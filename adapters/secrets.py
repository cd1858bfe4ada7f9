"""Encryption of secrets (deployment environment variables) before they reach an event.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``): the key comes from
``JETFLOW_SECRET_KEY``; the embedded default generates one into the data folder on first start,
so a local service keeps reading its own history.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, key: str | None, data_dir: Path) -> SecretBox:
        if key:
            return cls(key.encode())
        key_file = data_dir / "secret.key"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_bytes(Fernet.generate_key())
            os.chmod(key_file, 0o600)
        return cls(key_file.read_bytes().strip())

    def seal(self, clear: str) -> str:
        return self._fernet.encrypt(clear.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as error:
            raise ValueError("secret sealed with another key") from error

    def seal_key_digest(self) -> bytes:
        """A key derived from this box's, for signatures that need no key of their own."""
        return hashlib.sha256(b"jetflow-webhooks:" + self._key).digest()
