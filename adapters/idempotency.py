"""Remembered answers to commands sent with an idempotency key.

JetStream's ``Nats-Msg-Id`` stops a second *append*, but the server checks the expected sequence
first, and a resent command may no longer pass ``decide`` (a second cancel). So the first answer is
kept in a JetStream key-value bucket and handed back before deciding anything.

The in-memory records keep the same bytes under the same keys, so the fast test tier goes through
the real encoding of an answer; they never expire (a test lives far less than the bucket's TTL).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from handlers.outcome import CommandOutcome


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
        await self.kv.put(_key(scope, key), _remembered(outcome))


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
