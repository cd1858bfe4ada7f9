"""Credentials as presented on the wire: API keys and JWT bearer tokens.

An API key is ``jfk_<key id>_<secret>``. Only the SHA-256 digest of the secret is recorded: the
secret is 32 random bytes, so a slow password hash would add nothing but latency to every
request. JWTs are verified with PyJWT (HS256 with a shared secret, or RS256 with a public key).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
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


def new_api_key(key_id: str | None = None) -> IssuedKey:
    """A fresh secret under a random key id, or under ``key_id`` (16 letters and digits, as
    ``parse_api_key`` reads them) when the id itself must be known in advance."""
    if key_id is None:
        key_id = secrets.token_hex(_KEY_ID_HEX // 2)
    elif len(key_id) != _KEY_ID_HEX or not key_id.isalnum():
        raise ValueError(f"an API key id is {_KEY_ID_HEX} letters and digits, not {key_id!r}")
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


# A shared HS256 secret shorter than this can be guessed offline from one token (RFC 7518 3.2
# asks for a key at least as long as the hash output).
MIN_HS256_SECRET_BYTES = 32


def check_jwt_key(algorithm: str, key: str | None) -> None:
    """Refuse a weak HS256 secret when the service starts, not when the first token arrives."""
    if algorithm == "HS256" and key is not None and len(key.encode()) < MIN_HS256_SECRET_BYTES:
        raise ValueError(
            f"JETFLOW_JWT_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes for HS256"
        )


@dataclass(frozen=True)
class JwtVerifier:
    """Checks signature, expiry, lifetime and (if configured) audience; answers the claims.

    A token whose expiry lies further ahead than ``max_lifetime_s`` is refused: a stolen token
    with ``exp`` in the year 33658 would otherwise never stop working.
    """

    algorithm: str
    key: str
    audience: str | None = None
    max_lifetime_s: float = 86_400.0

    def claims(self, token: str) -> dict[str, object]:
        options = {"require": ["exp", "sub"], "verify_aud": self.audience is not None}
        claims = dict(
            jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                options=options,  # type: ignore[arg-type]
            )
        )
        expires = claims["exp"]
        if not isinstance(expires, int | float) or expires - time.time() > self.max_lifetime_s:
            raise jwt.InvalidTokenError(
                f"the token lives longer than the accepted {self.max_lifetime_s:g} s"
            )
        return claims


InvalidToken = jwt.InvalidTokenError
