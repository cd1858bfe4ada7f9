"""Use cases of deployments, the process manager that frees a slot when one ends, and the timer
that reclaims a slot whose start died before the deployment was accepted."""

from __future__ import annotations

import asyncio
import secrets as random_tokens
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from nats.aio.msg import Msg
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.blob_store import LocalBlobStore
from adapters.envelope import Metadata, events_of
from adapters.event_store import JetStreamEventStore
from adapters.secrets import SecretBox
from adapters.sql import as_utc
from domain.base import DomainError
from domain.deployment_slots import (
    DEPLOYMENT_SLOTS,
    SLOTS_ID,
    ReclaimSlot,
    ReleaseSlot,
    ReserveSlot,
)
from domain.deployments import (
    DEPLOYMENT,
    TERMINAL,
    AcknowledgeCancel,
    CancelDeployment,
    ClaimDeployment,
    ConcreteMode,
    DeploymentAccepted,
    DeploymentCancelled,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentId,
    DeploymentStarted,
    DeploymentStatus,
    DeploymentTimedOut,
    ExpireDeployment,
    FinishStep,
    Mode,
    PackageRequirement,
    SecretValue,
    StartDeployment,
    StartStep,
)
from handlers.commands import CommandContext, CommandService
from handlers.consumer import consume, ensure_durable
from handlers.outcome import CommandOutcome
from handlers.wire import WireModel
from projections.deployments import deployments

SLOT_RELEASER = "pm-deployment-slots"
ENDED = frozenset(
    e.type_name()
    for e in (DeploymentCompleted, DeploymentFailed, DeploymentCancelled, DeploymentTimedOut)
)
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
# The config rides in the DeploymentAccepted event (its variables sealed, about 4/3 of their
# size): bounded here, so an oversized one is refused before a slot is reserved for it.
CONFIG_MAX_BYTES = 256 * 1024


class DeploymentConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    environment_variables: dict[EnvName, Annotated[str, StringConstraints(max_length=8192)]] = {}
    package: PackageRequirement | None = Field(
        default=None, description="PEP 508 requirement to install, e.g. 'name>=1' or 'name @ url'"
    )


class StartDeploymentRequest(WireModel):
    mode: Mode = "auto"
    config: DeploymentConfig = DeploymentConfig()
    environment: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "dev"
    timeout: Annotated[int, Field(gt=0, le=86_400)] = 300
    force_rebuild: bool = False
    skip_health_check: bool = False
    callback_url: AnyHttpUrl | None = None
    # At most 100 entries: the metadata rides in the DeploymentAccepted event, which must stay
    # far below the event log's message size.
    metadata: Annotated[
        dict[
            Annotated[str, StringConstraints(max_length=100)],
            Annotated[str, StringConstraints(max_length=1000)],
        ],
        Field(max_length=100),
    ] = {}

    @field_validator("config")
    @classmethod
    def _config_fits_an_event(cls, config: DeploymentConfig) -> DeploymentConfig:
        if len(config.model_dump_json().encode()) > CONFIG_MAX_BYTES:
            raise ValueError(f"the config must stay within {CONFIG_MAX_BYTES} bytes as JSON")
        return config


class ClaimRequest(WireModel):
    available: dict[ConcreteMode, bool]
    total_steps: Annotated[int, Field(ge=1, le=1000)]


class StepStartRequest(WireModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class StepFinishRequest(WireModel):
    succeeded: bool
    duration_s: Annotated[float, Field(ge=0)]
    log: Annotated[str, StringConstraints(max_length=10_000_000)] = ""
    error: Annotated[str, StringConstraints(max_length=4_000)] | None = None


@dataclass(frozen=True)
class Claimed:
    deployment_id: str
    mode: str
    environment: str
    environment_variables: dict[str, str]
    config: dict[str, Any]
    timeout: int
    force_rebuild: bool
    skip_health_check: bool
    outcome: CommandOutcome


def _now() -> datetime:
    return datetime.now(UTC)


def new_deployment_id(mode: str, at: datetime) -> str:
    return f"{mode}_{at:%Y%m%d_%H%M%S}_{random_tokens.token_hex(4)}"


async def start_deployment(
    commands: CommandService,
    box: SecretBox,
    request: StartDeploymentRequest,
    context: CommandContext,
    *,
    limit: int,
    per_user_limit: int,
    owner: str,
) -> CommandOutcome:
    """Reserve a slot, then accept the deployment; give the slot back if acceptance fails.

    Callers scoped to their own deployments are held to ``per_user_limit`` of the slots; admins
    (unscoped) are not, as they can cancel anyone's deployment anyway.
    """
    now = _now()
    deployment_id = new_deployment_id(request.mode, now)
    config = request.config.model_dump(exclude_unset=True)
    sealed = [
        SecretValue(name=name, ciphertext=box.seal(value))
        for name, value in sorted(config.pop("environment_variables", {}).items())
    ]
    command = StartDeployment(
        deployment_id=deployment_id,
        mode=request.mode,
        environment=request.environment,
        environment_variables=sealed,
        config=config,
        timeout=request.timeout,
        force_rebuild=request.force_rebuild,
        skip_health_check=request.skip_health_check,
        callback_url=request.callback_url,
        metadata=request.metadata,
        owner=owner,
        at=now,
    )
    commands.check_callback(command)  # before taking a slot for a deployment that would be refused
    reserve = ReserveSlot(
        deployment_id=deployment_id,
        limit=limit,
        owner=owner,
        per_user_limit=per_user_limit if context.owner_scope is not None else None,
        at=now,
    )
    await commands.execute(DEPLOYMENT_SLOTS, SLOTS_ID, reserve, context)
    try:
        return await commands.execute(DEPLOYMENT, deployment_id, command, context, at=now)
    except Exception:
        release = ReleaseSlot(deployment_id=deployment_id)
        await commands.execute(DEPLOYMENT_SLOTS, SLOTS_ID, release, context)
        raise


async def claim_next(
    commands: CommandService,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    agent_id: str,
    request: ClaimRequest,
    context: CommandContext,
) -> Claimed | None:
    """Hand the oldest waiting deployment to an agent, with its secrets opened for it."""
    async with sessions() as session:
        waiting = (
            await session.scalars(
                select(deployments.c.deployment_id)
                .where(deployments.c.status == DeploymentStatus.ACCEPTED)
                .order_by(deployments.c.accepted_at, deployments.c.deployment_id)
                .limit(16)
            )
        ).all()
    for deployment_id in waiting:
        now = _now()
        command = ClaimDeployment(
            deployment_id=deployment_id,
            agent_id=agent_id,
            available=request.available,
            total_steps=request.total_steps,
            at=now,
        )
        try:
            outcome = await commands.execute(DEPLOYMENT, deployment_id, command, context, at=now)
        except DomainError:
            continue
        started = next(
            (
                e
                for e in await commands.decided_events(DEPLOYMENT, outcome)
                if isinstance(e, DeploymentStarted)
            ),
            None,
        )
        if started is None:  # the requested mode is not available here: recorded as failed
            continue
        [recorded] = await commands.store.read_subject(
            f"ev.deployment.{deployment_id}.DeploymentAccepted"
        )
        accepted = DeploymentAccepted.model_validate(recorded.payload)
        return Claimed(
            deployment_id=deployment_id,
            mode=started.mode,
            environment=accepted.environment,
            environment_variables={
                v.name: box.open(v.ciphertext) for v in accepted.environment_variables
            },
            config=accepted.config,
            timeout=accepted.timeout,
            force_rebuild=accepted.force_rebuild,
            skip_health_check=accepted.skip_health_check,
            outcome=outcome,
        )
    return None


async def start_step(
    commands: CommandService,
    deployment_id: DeploymentId,
    index: int,
    request: StepStartRequest,
    context: CommandContext,
) -> CommandOutcome:
    now = _now()
    command = StartStep(deployment_id=deployment_id, index=index, name=request.name, at=now)
    return await commands.execute(DEPLOYMENT, deployment_id, command, context, at=now)


async def finish_step(
    commands: CommandService,
    blobs: LocalBlobStore,
    deployment_id: DeploymentId,
    index: int,
    request: StepFinishRequest,
    context: CommandContext,
) -> CommandOutcome:
    """Logs go to the blob store; the event carries only their hash and size."""
    now = _now()
    stored = blobs.put_bytes(request.log.encode()) if request.log else None
    command = FinishStep(
        deployment_id=deployment_id,
        index=index,
        succeeded=request.succeeded,
        duration_s=request.duration_s,
        log_hash=stored.digest if stored else None,
        log_size=stored.size if stored else 0,
        error=request.error,
        at=now,
    )
    return await commands.execute(DEPLOYMENT, deployment_id, command, context, at=now)


async def cancel_deployment(
    commands: CommandService, deployment_id: DeploymentId, context: CommandContext
) -> CommandOutcome:
    now = _now()
    command = CancelDeployment(deployment_id=deployment_id, at=now)
    return await commands.execute(DEPLOYMENT, deployment_id, command, context, at=now)


async def acknowledge_cancel(
    commands: CommandService, deployment_id: DeploymentId, context: CommandContext
) -> CommandOutcome:
    now = _now()
    command = AcknowledgeCancel(deployment_id=deployment_id, at=now)
    return await commands.execute(DEPLOYMENT, deployment_id, command, context, at=now)


async def expire_deployments(
    commands: CommandService, sessions: async_sessionmaker[AsyncSession], now: datetime
) -> int:
    async with sessions() as session:
        active = (
            await session.execute(
                select(
                    deployments.c.deployment_id, deployments.c.accepted_at, deployments.c.timeout
                ).where(deployments.c.status.notin_(TERMINAL))
            )
        ).all()
    context = CommandContext(Metadata(actor="system:timer"))
    return await commands.execute_each(
        DEPLOYMENT,
        (
            (deployment_id, ExpireDeployment(deployment_id=deployment_id, at=now))
            for deployment_id, accepted_at, timeout in active
            if (now - as_utc(accepted_at)).total_seconds() >= timeout
        ),
        context,
        at=now,
    )


async def reclaim_slots(commands: CommandService, now: datetime, after_s: float) -> int:
    """Give back the slots of reservations older than ``after_s`` whose deployment is not active.

    A start that dies between its reservation and the deployment's acceptance leaves a slot held
    by no deployment; three such crashes would block deployments for good. Whether the
    deployment exists is read from its aggregate, not from a projection that may lag behind it,
    and the slots aggregate checks the reservation's age again. A reservation whose deployment
    ended is released too, in case the releaser missed the end.
    """
    slots, _ = await commands.repository.load(DEPLOYMENT_SLOTS, SLOTS_ID)
    cutoff = now - timedelta(seconds=after_s)
    stale = [
        deployment_id
        for deployment_id, reservation in slots.reservations.items()
        if reservation.reserved_at is None or reservation.reserved_at < cutoff
    ]
    due: list[tuple[str, ReclaimSlot | ReleaseSlot]] = []
    for deployment_id in stale:
        deployment, _ = await commands.repository.load(DEPLOYMENT, deployment_id)
        if not deployment.exists:
            due.append((SLOTS_ID, ReclaimSlot(deployment_id=deployment_id, reserved_before=cutoff)))
        elif deployment.status in TERMINAL:
            due.append((SLOTS_ID, ReleaseSlot(deployment_id=deployment_id)))
    context = CommandContext(Metadata(actor="system:deployment-slots"))
    return await commands.execute_each(DEPLOYMENT_SLOTS, due, context, at=now)


async def start_slot_releaser(
    store: JetStreamEventStore, commands: CommandService
) -> asyncio.Task[None]:
    """Give a deployment's slot back when it ends, whoever ended it."""
    await ensure_durable(store.js, store.stream, SLOT_RELEASER, events_of(DEPLOYMENT))
    context = CommandContext(Metadata(actor="system:deployment-slots"))

    async def handle(msgs: list[Msg]) -> None:
        for msg in msgs:
            recorded = store.decode(msg)
            if recorded.type in ENDED:
                release = ReleaseSlot(deployment_id=recorded.aggregate_id)
                await commands.execute(DEPLOYMENT_SLOTS, SLOTS_ID, release, context)
            await msg.ack()

    return asyncio.create_task(
        consume(store.js, store.stream, SLOT_RELEASER, handle, batch_size=1), name=SLOT_RELEASER
    )
