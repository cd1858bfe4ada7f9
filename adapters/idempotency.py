"""Remembered answers to commands sent with an idempotency key.

JetStream's ``Nats-Msg-Id`` stops a second *append*, but the server checks the expected sequence
first, and a resent command may no longer pass ``decide`` (a second cancel). So the first answer is
kept in a JetStream key-value bucket and handed back before deciding anything.

The bucket shares the JetStream store with the event stream, so when the server or the account
runs out of room a record can be refused just after its command's append was taken (the append
that crosses the limit is stored, the next write is not): that refusal is ``StoreFull``, and the
command path answers what was appended all the same.

The in-memory records keep the same bytes under the same keys, so the fast test tier goes through
the real encoding of an answer; they never expire (a test lives far less than the bucket's TTL).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import APIError, KeyNotFoundError
from nats.js.kv import KeyValue

from adapters.event_store import no_room
from handlers.outcome import CommandOutcome
from handlers.ports import StoreFull

# Rewritten by ``writable``; not a record key (those are ``<aggregate>.<Command>.<digest>``).
_PROBE_KEY = "jetflow-probe"


class KeyValueIdempotencyRecords:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        bucket: str = "jetflow_idempotency",
        ttl_s: float = 86_400,
        *,
        replicas: int = 1,
    ) -> KeyValueIdempotencyRecords:
        config = KeyValueConfig(
            bucket=bucket, ttl=ttl_s, storage=StorageType.FILE, history=1, replicas=replicas
        )
        return cls(await js.create_key_value(config))

    async def get(self, scope: str, key: str) -> CommandOutcome | None:
        try:
            entry = await self.kv.get(_key(scope, key))
        except KeyNotFoundError:
            return None
        return _recalled(entry.value) if entry.value is not None else None

    async def put(self, scope: str, key: str, outcome: CommandOutcome) -> None:
        await self._put(_key(scope, key), _remembered(outcome))

    async def writable(self) -> bool:
        """Whether the store takes a write now: one small value rewritten under a fixed key
        (history 1, so the bucket does not grow), refused when the server or account is full."""
        try:
            await self._put(_PROBE_KEY, b"1")
        except StoreFull:
            return False
        return True

    async def _put(self, key: str, value: bytes) -> None:
        try:
            await self.kv.put(key, value)
        except APIError as error:
            if no_room(error.err_code, error.description):
                raise StoreFull(f"{error.err_code}: {error.description}") from error
            raise


class MemoryIdempotencyRecords:
    def __init__(self) -> None:
        self._answers: dict[str, bytes] = {}

    async def get(self, scope: str, key: str) -> CommandOutcome | None:
        value = self._answers.get(_key(scope, key))
        return _recalled(value) if value is not None else None

    async def put(self, scope: str, key: str, outcome: CommandOutcome) -> None:
        self._answers[_key(scope, key)] = _remembered(outcome)


def _key(scope: str, key: str) -> str:
    # KV keys are subject tokens; a client's key may hold anything, so store its digest.
    return f"{scope}.{hashlib.sha256(key.encode()).hexdigest()}"


def _remembered(outcome: CommandOutcome) -> bytes:
    remembered = asdict(outcome)
    del remembered["decided"], remembered["replayed"]
    return json.dumps(remembered).encode()


def _recalled(value: bytes) -> CommandOutcome:
    raw = json.loads(value)
    raw["events"] = tuple(raw["events"])
    return CommandOutcome(**{**raw, "replayed": True})
