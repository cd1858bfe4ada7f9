"""The one command path: load the aggregate, decide, append; HTTP and NATS both come through here.

A concurrency conflict means another writer got in first: the state is reloaded and the command
decided again, a bounded number of times. A command with an idempotency key answers what its first
delivery from the same sender answered, without deciding again: from the remembered answer, or,
when that is missing (a record that found no room), from the log within its duplicate window. A
command naming a callback URL is checked against the egress policy here, whichever edge it came
by, so no slice can forget to. Every command is one span (its append a child of it), counted by
how it ended, and what it recorded is noted for the log.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters import log_context
from adapters.egress_policy import EgressPolicy
from adapters.envelope import Metadata, to_domain
from adapters.metrics import Metrics
from adapters.tracing import NO_TRACING, Tracing
from domain.base import Aggregate, Command, DomainError, Event, Invalid, NotFound
from handlers.outcome import CommandOutcome
from handlers.ports import (
    AppendResult,
    ConcurrencyConflict,
    DuplicateAppend,
    EventStore,
    IdempotencyRecords,
    StoreFull,
)
from handlers.repository import AggregateRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandContext:
    """Who sent a command and how to recognise it if it is sent again."""

    metadata: Metadata = field(default_factory=Metadata)
    idempotency_key: str | None = None
    # The only owner whose aggregates this sender may act on; None for admins and the system.
    owner_scope: str | None = None


class TooManyConflicts(ConcurrencyConflict):
    """Every retry lost the race; the client may try again."""


class CommandService:
    def __init__(
        self,
        store: EventStore,
        idempotency: IdempotencyRecords,
        *,
        max_retries: int = 8,
        egress: EgressPolicy | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.store = store
        self.repository = AggregateRepository(store)
        self.idempotency = idempotency
        self.max_retries = max_retries
        self.egress = egress or EgressPolicy()
        # The service's instruments (``api.runtime``); a command-line tool's go unread.
        self.metrics = metrics or Metrics()
        self.tracing = tracing

    async def execute(
        self,
        aggregate: Aggregate[Any],
        aggregate_id: str,
        command: Command,
        context: CommandContext | None = None,
        *,
        at: datetime | None = None,
    ) -> CommandOutcome:
        """Decide and record ``command``, counted by how it ended (``adapters.metrics``)."""
        ctx = context or CommandContext()
        name = type(command).__name__
        try:
            if self.tracing.enabled:
                outcome = await self._traced(aggregate, aggregate_id, command, ctx, at)
            else:  # the benchmarked path: not even a span's attributes are built
                outcome = await self._execute(aggregate, aggregate_id, command, ctx, at)
        except DomainError as refused:
            self.metrics.command_refused(aggregate.name, name, refused.code)
            raise
        except TooManyConflicts:
            self.metrics.command_conflicted(aggregate.name, name)
            raise
        self.metrics.command_done(aggregate.name, name, outcome)
        log_context.note(aggregate=aggregate.name, aggregate_id=aggregate_id, seq=outcome.last_seq)
        return outcome

    async def _traced(
        self,
        aggregate: Aggregate[Any],
        aggregate_id: str,
        command: Command,
        ctx: CommandContext,
        at: datetime | None,
    ) -> CommandOutcome:
        """The command as a span; the store's append span is its child."""
        attributes = {
            "jetflow.aggregate": aggregate.name,
            "jetflow.aggregate_id": aggregate_id,
            "jetflow.command": type(command).__name__,
            "jetflow.actor": ctx.metadata.actor,
        }
        name = f"{aggregate.name} {type(command).__name__}"
        with self.tracing.span(name, attributes) as span:
            outcome = await self._execute(aggregate, aggregate_id, command, ctx, at)
            span.set_attribute("jetflow.seq", outcome.last_seq)
        return outcome

    async def _execute(
        self,
        aggregate: Aggregate[Any],
        aggregate_id: str,
        command: Command,
        ctx: CommandContext,
        at: datetime | None,
    ) -> CommandOutcome:
        self.check_callback(command)
        scope = f"{aggregate.name}.{type(command).__name__}"
        # A key belongs to its sender: the same key from another caller must not hand that
        # caller the first sender's answer (a replayed lease would name a task it never won).
        key = None if ctx.idempotency_key is None else f"{ctx.metadata.actor}:{ctx.idempotency_key}"
        async with self.repository.exclusive(aggregate, aggregate_id):
            for attempt in range(self.max_retries):
                if key is not None and (known := await self.idempotency.get(scope, key)):
                    return known
                known = self.repository.cached(aggregate, aggregate_id) if attempt == 0 else None
                if known is not None:
                    state, version = known
                elif attempt == 0 and isinstance(command, aggregate.creates):
                    state, version = aggregate.initial(), 0
                else:
                    state, version = await self.repository.load(aggregate, aggregate_id)
                try:
                    state, version, events = await self._decided(
                        aggregate, aggregate_id, command, ctx, state, version, known is not None
                    )
                except DomainError:
                    # A resend whose first answer was not remembered is decided on the state
                    # its first delivery made: the log still says what that appended.
                    if key is not None and (
                        first := await self._logged_answer(scope, key, aggregate, aggregate_id)
                    ):
                        return first
                    raise
                if not events:  # nothing to record: the command is already satisfied
                    if key is not None and (
                        first := await self._logged_answer(scope, key, aggregate, aggregate_id)
                    ):
                        return first
                    return CommandOutcome(aggregate.name, aggregate_id, version, version, ())
                try:
                    result = await self.store.append(
                        aggregate.name,
                        aggregate_id,
                        events,
                        version,
                        metadata=ctx.metadata,
                        idempotency_key=f"{scope}:{key}" if key is not None else None,
                        occurred_at=at,
                    )
                except ConcurrencyConflict:
                    self.metrics.conflict_retry(aggregate.name)
                    # Another process got in first; spread the retries of a burst.
                    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                    continue
                except DuplicateAppend:
                    assert key is not None
                    if first := await self._logged_answer(scope, key, aggregate, aggregate_id):
                        return first
                    raise
                if result.duplicate and key is not None:
                    return await self._duplicate_answer(scope, key, result)
                # The expected-sequence check proves nothing came between ``version`` and us.
                self.repository.applied(aggregate, aggregate_id, state, events, result.last_seq)
                outcome = CommandOutcome(
                    aggregate=aggregate.name,
                    aggregate_id=aggregate_id,
                    first_seq=result.first_seq,
                    last_seq=result.last_seq,
                    events=tuple(e.type_name() for e in events),
                    decided=tuple(events),
                )
                if key is not None:
                    await self._remember(scope, key, outcome)
                return outcome
        raise TooManyConflicts(
            f"{aggregate.name} {aggregate_id} changed {self.max_retries} times while deciding"
        )

    def check_callback(self, command: Command) -> None:
        """Refuse a callback URL that shows a refused target by itself (a loopback, private,
        link-local or metadata address, in any spelling, or ``localhost``), before anything is
        recorded. Names are checked again, on every address they resolve to, at delivery."""
        url = getattr(command, "callback_url", None)
        if url is not None and self.egress.refused_at_sight(str(url)):
            raise Invalid(
                "callback_url_refused",
                "Webhooks may not reach loopback, private, link-local or metadata addresses",
                field="callback_url",
            )

    @staticmethod
    def _decide(
        aggregate: Aggregate[Any], state: Any, command: Command, ctx: CommandContext
    ) -> list[Event]:
        """Decide, as if the aggregate did not exist when it belongs to someone else.

        Deciding on the initial state gives exactly the refusal an unknown id gets, so a
        caller cannot tell another user's aggregate from a missing one.
        """
        owner = aggregate.owner_of(state) if aggregate.owner_of is not None else None
        foreign = ctx.owner_scope is not None and owner is not None and owner != ctx.owner_scope
        if foreign and not isinstance(command, aggregate.creates):
            aggregate.decide(aggregate.initial(), command)
            raise NotFound("not_found", f"There is no such {aggregate.name}")
        return aggregate.decide(state, command)

    async def execute_each(
        self,
        aggregate: Aggregate[Any],
        commands: Iterable[tuple[str, Command]],
        context: CommandContext,
        *,
        at: datetime | None = None,
    ) -> int:
        """Send commands picked from a projection; count those the aggregates accepted.

        A projection can be behind the stream, so a refusal only means the aggregate already
        moved on (another timer, a late report): it is logged, not raised.
        """
        accepted = 0
        for aggregate_id, command in commands:
            try:
                await self.execute(aggregate, aggregate_id, command, context, at=at)
            except DomainError as refused:
                log.debug("%s %s refused %s: %s", aggregate.name, aggregate_id, command, refused)
                continue
            accepted += 1
        return accepted

    async def decided_events(
        self, aggregate: Aggregate[Any], outcome: CommandOutcome
    ) -> tuple[Event, ...]:
        """The events behind an outcome, read back from the stream when it was a replay."""
        if outcome.decided:
            return outcome.decided
        seqs = range(outcome.first_seq, outcome.last_seq + 1)
        # A list first: a generator holding ``await`` is an async generator, which tuple() refuses.
        return tuple([to_domain(aggregate, await self.store.get(seq)) for seq in seqs])

    async def _decided(
        self,
        aggregate: Aggregate[Any],
        aggregate_id: str,
        command: Command,
        ctx: CommandContext,
        state: Any,
        version: int,
        cached: bool,
    ) -> tuple[Any, int, list[Event]]:
        """The events ``command`` decides on ``state``, with the state and version decided on."""
        try:
            return state, version, self._decide(aggregate, state, command, ctx)
        except DomainError:
            if not cached:
                raise
        # The cached state may be behind another process's writes: read, decide again.
        state, version = await self.repository.load(aggregate, aggregate_id)
        return state, version, self._decide(aggregate, state, command, ctx)

    async def _remember(self, scope: str, key: str, outcome: CommandOutcome) -> None:
        """Keep the answer for resends. A store with no room for the record has just taken the
        command's events (the write that crosses a limit is stored, the next is refused): the
        client is told what was appended all the same, and a resend within the duplicate window
        finds it in the log."""
        try:
            await self.idempotency.put(scope, key, outcome)
        except StoreFull as full:
            log.warning(
                "%s %s appended at %d..%d; its answer was not remembered: %s",
                outcome.aggregate,
                outcome.aggregate_id,
                outcome.first_seq,
                outcome.last_seq,
                full,
            )

    async def _logged_answer(
        self, scope: str, key: str, aggregate: Aggregate[Any], aggregate_id: str
    ) -> CommandOutcome | None:
        """The first answer, from the aggregate's history, if an append with this key is in it."""
        found = await self.store.appended(aggregate.name, aggregate_id, f"{scope}:{key}")
        return None if found is None else await self._answer_from_log(scope, key, found)

    async def _duplicate_answer(
        self, scope: str, key: str, duplicate: AppendResult
    ) -> CommandOutcome:
        """The stream told a resend's append apart as a duplicate: the remembered answer, or
        (missing) the first append read back. The ack names that append's first event; its
        aggregate's history says how many events the append had."""
        if known := await self.idempotency.get(scope, key):
            return known
        first = await self.store.get(duplicate.first_seq)
        found = await self.store.appended(first.aggregate, first.aggregate_id, f"{scope}:{key}")
        return await self._answer_from_log(scope, key, found or duplicate)

    async def _answer_from_log(self, scope: str, key: str, found: AppendResult) -> CommandOutcome:
        """The stream already holds this command's events: answer as the first delivery did.

        Its remembered answer may be missing (it died between its append and the record, or
        the record found no room) or not written yet; the events themselves say the same.
        """
        seqs = range(found.first_seq, found.last_seq + 1)
        recorded = [await self.store.get(seq) for seq in seqs]
        outcome = CommandOutcome(
            aggregate=recorded[0].aggregate,
            aggregate_id=recorded[0].aggregate_id,
            first_seq=found.first_seq,
            last_seq=found.last_seq,
            events=tuple(r.type for r in recorded),
            replayed=True,
        )
        await self._remember(scope, key, outcome)
        return outcome
