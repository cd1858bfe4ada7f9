"""Who may hold a live feed open, and for how long.

A live feed (``/events/stream``, ``/events/ws``, ``/files/{id}/events``) holds a connection and a
JetStream consumer for as long as its client stays, so it is admitted like any scarce resource:
at most ``JETFLOW_LIVE_FEEDS_PER_KEY`` at once per credential (an API key; a JWT's subject) and
``JETFLOW_LIVE_FEEDS_TOTAL`` in this process. Past either, SSE answers 429 before streaming and a
WebSocket is closed with ``LIMIT_CLOSE_CODE``; the slot comes back when the feed ends.

An admitted feed outlives no credential. A key's feed re-checks the key whenever the key cache
would read it from the read model again, so a revoked key's feeds end within the key cache time
(``JETFLOW_KEY_CACHE_S``), as its requests stop being served; a JWT's feed ends when the token's
``exp`` passes. The feed then ends with ``CredentialEnded``: SSE sends an ``error`` event with
the error envelope, a WebSocket is closed with ``CREDENTIAL_CLOSE_CODE``. Re-checks go through
the same ``KeyCache`` as requests: a feed asks the read model about its key at most once per
cache time (and never more often than every ``RECHECK_MIN_S``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from sqlalchemy.exc import SQLAlchemyError

from adapters.event_store import JetStreamEventStore
from adapters.live_feed import FeedEnded, FeedFilter, LiveFeed
from api.auth import KeyCache, Principal, principal_of
from api.errors import ApiError
from api.runtime import Runtime
from handlers.errors import ErrorBody, ErrorEnvelope

log = logging.getLogger(__name__)

# WebSocket close codes (application range, 4000 + the HTTP status an SSE client would get).
LIMIT_CLOSE_CODE = 4429
CREDENTIAL_CLOSE_CODE = 4401
# However short the key cache time, a feed asks the read model about its key no more often.
RECHECK_MIN_S = 0.25


class LiveFeedRefused(ApiError):
    """Too many live feeds open: this credential's, or this process's (429)."""


class CredentialEnded(FeedEnded):
    """The feed's credential no longer holds: the key was revoked, the token expired."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.body = ErrorBody(status=401, code=code, message=message)

    def envelope(self) -> str:
        """The error envelope every refusal answers with, as an SSE ``error`` event's data."""
        return ErrorEnvelope(error=self.body).model_dump_json()


def close_reason(body: ErrorBody) -> str:
    """A WebSocket close reason (at most 123 bytes) that starts with the stable code."""
    return f"{body.code}: {body.message}"[:120]


class _Slot:
    """One admitted feed's share of the caps, given back once (whichever path ends it)."""

    def __init__(self, slots: LiveSlots, holder: str) -> None:
        self._slots = slots
        self._holder = holder
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.give_back(self._holder)


class LiveSlots:
    """Counts the live feeds open in this process, per credential and in all."""

    def __init__(self, per_holder: int, total: int) -> None:
        self.per_holder = per_holder
        self.total = total
        self._held: dict[str, int] = {}
        self._open = 0

    @property
    def open_feeds(self) -> int:
        """Feeds open now in this process (``jetflow_live_feeds``)."""
        return self._open

    def take(self, holder: str) -> _Slot:
        held = self._held.get(holder, 0)
        if held >= self.per_holder:
            raise LiveFeedRefused(
                429,
                "live_feed_key_limit_reached",
                f"This credential has {held} live feeds open, as many as one may hold at once; "
                "close one first",
            )
        if self._open >= self.total:
            raise LiveFeedRefused(
                429,
                "live_feed_limit_reached",
                f"The service has {self._open} live feeds open, as many as it holds at once; "
                "try again later",
            )
        self._held[holder] = held + 1
        self._open += 1
        return _Slot(self, holder)

    def give_back(self, holder: str) -> None:
        self._open -= 1
        left = self._held[holder] - 1
        if left:
            self._held[holder] = left
        else:
            del self._held[holder]


async def credential_ends(
    principal: Principal, keys: KeyCache, runtime: Runtime
) -> CredentialEnded:
    """Returns once ``principal``'s credential stops holding, saying why."""
    if principal.expires_at is not None:
        await asyncio.sleep(max(0.0, principal.expires_at - time.time()))
        return CredentialEnded("token_expired", "The bearer token has expired")
    key_id = principal.credential.removeprefix("key:")
    while True:
        await asyncio.sleep(max(RECHECK_MIN_S, keys.fresh_for(key_id)))
        try:
            found = await keys.lookup(runtime, key_id)
        except SQLAlchemyError as unreadable:
            # Fail closed: a feed whose key cannot be confirmed ends; its client reconnects.
            log.warning(
                "live feed of key %s: the key could not be re-checked: %r", key_id, unreadable
            )
            return CredentialEnded(
                "credential_unconfirmed", "The API key could not be checked again; reconnect"
            )
        if found is None:
            return CredentialEnded("api_key_revoked", "The API key was revoked")


class AdmittedFeed:
    """A live feed admitted for one credential: it holds its slot from admission until it is
    left, and is ended (``CredentialEnded``) when its credential ends.

    ``async with admitted as feed`` opens the consumer and starts watching the credential. A
    feed never entered (an SSE client gone before its stream began) gives its slot back when
    dropped."""

    def __init__(
        self, feed: LiveFeed, slot: _Slot, ends: Callable[[], Awaitable[CredentialEnded]]
    ) -> None:
        self.feed = feed
        self._slot = slot
        self._ends = ends
        self._watch: asyncio.Task[None] | None = None
        weakref.finalize(self, slot.release)

    async def __aenter__(self) -> LiveFeed:
        try:
            await self.feed.__aenter__()
        except BaseException:
            self._slot.release()
            raise
        self._watch = asyncio.create_task(self._end_with_credential())
        return self.feed

    async def _end_with_credential(self) -> None:
        self.feed.end(await self._ends())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._watch is not None:
            self._watch.cancel()
        try:
            await self.feed.__aexit__(exc_type, exc, tb)
        finally:
            self._slot.release()


class LiveFeeds:
    """Admits live feeds on the stream for this app: one ordered consumer per client, a bounded
    queue, an end when the service shuts down or the credential ends, and the caps above."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.slots = LiveSlots(settings.live_feeds_per_key, settings.live_feeds_total)

    @property
    def store(self) -> JetStreamEventStore:
        return self.runtime.store

    def open(
        self,
        connection: ASGIConnection[Any, Any, Any, Any],
        wanted: FeedFilter,
        from_seq: int | None,
    ) -> AdmittedFeed:
        """Admit a feed for the connection's credential; ``LiveFeedRefused`` past a cap."""
        principal = principal_of(connection)
        if principal is None:  # the routes' policy admits no anonymous caller
            raise NotAuthorizedException("Credentials are required: an API key or a bearer token")
        # The API key; for JWTs the subject, as one issuer may mint any number of tokens for it.
        slot = self.slots.take(principal.credential)
        runtime = self.runtime
        feed = LiveFeed(
            runtime.store,
            wanted,
            from_seq=from_seq,
            max_queue=runtime.settings.live_queue,
            closing=runtime.closing,
        )
        keys: KeyCache = connection.app.state["api_keys"]
        return AdmittedFeed(feed, slot, partial(credential_ends, principal, keys, runtime))
