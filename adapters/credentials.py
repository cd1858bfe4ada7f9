"""Credentials as presented on the wire: API keys and JWT bearer tokens.

An API key is ``jfk_<key id>_<secret>``. Only the SHA-256 digest of the secret is recorded: the
secret is 32 random bytes, so a slow password hash would add nothing but latency to every
request. JWTs are verified with PyJWT (HS256 with a shared secret, or RS256 with a public key).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import jwt

KEY_PREFIX = "jfk_"
_KEY_ID_HEX = 16


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    digest: str
    token: str  # shown once, never stored


@dataclass(frozen=True)
class PresentedKey:
    key_id: str
    secret: str

    def matches(self, digest: str) -> bool:
        return hmac.compare_digest(digest_of(self.secret), digest)


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key() -> IssuedKey:
    key_id = secrets.token_hex(_KEY_ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(key_id, digest_of(secret), f"{KEY_PREFIX}{key_id}_{secret}")


def parse_api_key(token: str) -> PresentedKey | None:
    """The key id and secret of something shaped like an API key, else None (maybe a JWT)."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token.removeprefix(KEY_PREFIX).partition("_")
    if not sep or len(key_id) != _KEY_ID_HEX or not key_id.isalnum() or not secret:
        return None
    return PresentedKey(key_id, secret)


@dataclass(frozen=True)
class JwtVerifier:
    """Checks signature, expiry and (if configured) audience; answers the claims."""

    algorithm: str
    key: str
    audience: str | None = None

    def claims(self, token: str) -> dict[str, object]:
        options = {"require": ["exp", "sub"], "verify_aud": self.audience is not None}
        return dict(
            jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                options=options,  # type: ignore[arg-type]
            )
        )


InvalidToken = jwt.InvalidTokenError
