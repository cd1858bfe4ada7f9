"""Remembered answers to commands sent with an idempotency key.

JetStream's ``Nats-Msg-Id`` stops a second *append*, but the server checks the expected sequence
first, and a resent command may no longer pass ``decide`` (a second cancel). So the first answer is
kept in a JetStream key-value bucket and handed back before deciding anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from domain.base import Event


@dataclass(frozen=True)
class CommandOutcome:
    """What a write answers: where its events went and the sequence a reader can wait for."""

    aggregate: str
    aggregate_id: str
    first_seq: int
    last_seq: int
    events: tuple[str, ...]
    replayed: bool = False
    # The decided events themselves, for the caller that just appended them; not remembered.
    decided: tuple[Event, ...] = field(default=(), compare=False, repr=False)


class IdempotencyRecords:
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
    ) -> IdempotencyRecords:
        config = KeyValueConfig(
            bucket=bucket, ttl=ttl_s, storage=StorageType.FILE, history=1, replicas=replicas
        )
        return cls(await js.create_key_value(config))

    @staticmethod
    def _key(scope: str, key: str) -> str:
        # KV keys are subject tokens; a client's key may hold anything, so store its digest.
        return f"{scope}.{hashlib.sha256(key.encode()).hexdigest()}"

    async def get(self, scope: str, key: str) -> CommandOutcome | None:
        try:
            entry = await self.kv.get(self._key(scope, key))
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        raw = json.loads(entry.value)
        raw["events"] = tuple(raw["events"])
        return CommandOutcome(**{**raw, "replayed": True})

    async def put(self, scope: str, key: str, outcome: CommandOutcome) -> None:
        remembered = asdict(outcome)
        del remembered["decided"], remembered["replayed"]
        await self.kv.put(self._key(scope, key), json.dumps(remembered).encode())
