"""Deployments (seed: deployment service API).

A deployment is accepted, claimed by a deploy agent (which resolves ``auto`` to a concrete mode
from what it can run), walks its steps, and ends ``completed``, ``failed``, ``cancelled`` or
``timed_out``. A cancel on a running deployment is recorded at once and honoured by the agent
at the next step boundary.

The concurrency limit spans deployments, so it lives in its own aggregate
(``domain.deployment_slots``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
)

from domain.base import (
    AGGREGATE_ID_PATTERN,
    Aggregate,
    Command,
    Event,
    Instant,
    Invalid,
    JsonObject,
    NotFound,
    StateConflict,
)

DeploymentId = Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
Mode = Literal["docker", "uv", "fallback", "auto"]
ConcreteMode = Literal["docker", "uv", "fallback"]
MODE_PREFERENCE: tuple[ConcreteMode, ...] = ("docker", "uv", "fallback")


class DeploymentStatus(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


TERMINAL = frozenset(
    {
        DeploymentStatus.COMPLETED,
        DeploymentStatus.FAILED,
        DeploymentStatus.CANCELLED,
        DeploymentStatus.TIMED_OUT,
    }
)


def _requirement(value: str) -> str:
    """A package to install must be a PEP 508 requirement (a name, or ``name @ url``), never
    something an installer could read as an option (``-r /proc/self/environ``)."""
    try:
        return str(Requirement(value))
    except InvalidRequirement as refused:
        raise ValueError(f"not a PEP 508 requirement: {refused}") from None


PackageRequirement = Annotated[
    str, StringConstraints(min_length=1, max_length=2_000), AfterValidator(_requirement)
]
_PACKAGE: TypeAdapter[str] = TypeAdapter(PackageRequirement)


class SecretValue(Command):
    """An environment variable as stored: its name and a ciphertext, never the clear value."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
    ciphertext: str


# ---------------------------------------------------------------- commands


class StartDeployment(Command):
    deployment_id: DeploymentId
    mode: Mode
    environment: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "dev"
    environment_variables: list[SecretValue] = []
    config: JsonObject = {}
    timeout: Annotated[int, Field(gt=0, le=86_400)] = 300
    force_rebuild: bool = False
    skip_health_check: bool = False
    callback_url: AnyHttpUrl | None = None
    metadata: dict[str, str] = {}
    owner: str = "anonymous"
    at: Instant

    @field_validator("config")
    @classmethod
    def _package_is_a_requirement(cls, config: dict[str, Any]) -> dict[str, Any]:
        if config.get("package") is None:
            return config
        return {**config, "package": _PACKAGE.validate_python(config["package"])}


class ClaimDeployment(Command):
    deployment_id: DeploymentId
    agent_id: Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
    available: dict[ConcreteMode, bool]
    total_steps: Annotated[int, Field(ge=1, le=1000)]
    at: Instant


class StartStep(Command):
    deployment_id: DeploymentId
    index: Annotated[int, Field(ge=0)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    at: Instant


class FinishStep(Command):
    deployment_id: DeploymentId
    index: Annotated[int, Field(ge=0)]
    succeeded: bool
    duration_s: Annotated[float, Field(ge=0)]
    log_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = None
    log_size: Annotated[int, Field(ge=0)] = 0
    error: Annotated[str, StringConstraints(max_length=4_000)] | None = None
    at: Instant


class CancelDeployment(Command):
    deployment_id: DeploymentId
    at: Instant


class AcknowledgeCancel(Command):
    """The agent stopped at a step boundary after a cancel."""

    deployment_id: DeploymentId
    at: Instant


class ExpireDeployment(Command):
    deployment_id: DeploymentId
    at: Instant


# ---------------------------------------------------------------- events


class DeploymentAccepted(Event):
    deployment_id: str
    mode: str
    environment: str
    environment_variables: list[SecretValue]
    config: dict[str, Any]
    timeout: int
    force_rebuild: bool
    skip_health_check: bool
    callback_url: str | None
    metadata: dict[str, str]
    owner: str
    accepted_at: datetime


class DeploymentModeResolved(Event):
    deployment_id: str
    requested: str
    resolved: str
    available: dict[str, bool]


class DeploymentStarted(Event):
    deployment_id: str
    agent_id: str
    mode: str
    total_steps: int
    started_at: datetime


class DeploymentStepStarted(Event):
    deployment_id: str
    index: int
    name: str
    total: int


class DeploymentStepCompleted(Event):
    deployment_id: str
    index: int
    name: str
    total: int
    duration_s: float
    log_hash: str | None
    log_size: int


class DeploymentStepFailed(Event):
    deployment_id: str
    index: int
    name: str
    total: int
    duration_s: float
    log_hash: str | None
    log_size: int
    error: str


class DeploymentCancelRequested(Event):
    deployment_id: str


class DeploymentCompleted(Event):
    deployment_id: str


class DeploymentFailed(Event):
    deployment_id: str
    reason: str


class DeploymentCancelled(Event):
    deployment_id: str


class DeploymentTimedOut(Event):
    deployment_id: str


# ---------------------------------------------------------------- deployment


@dataclass(frozen=True)
class DeploymentState:
    exists: bool = False
    owner: str | None = None
    status: DeploymentStatus = DeploymentStatus.ACCEPTED
    requested_mode: str = "auto"
    callback_url: str | None = None
    timeout: int = 0
    accepted_at: datetime | None = None
    total_steps: int = 0
    current_step: int | None = None
    step_names: tuple[str, ...] = ()


def decide(state: DeploymentState, command: Command) -> list[Event]:
    if isinstance(command, StartDeployment):
        if state.exists:
            raise StateConflict("deployment_exists", f"Deployment {command.deployment_id} exists")
        return [
            DeploymentAccepted(
                deployment_id=command.deployment_id,
                mode=command.mode,
                environment=command.environment,
                environment_variables=command.environment_variables,
                config=command.config,
                timeout=command.timeout,
                force_rebuild=command.force_rebuild,
                skip_health_check=command.skip_health_check,
                callback_url=str(command.callback_url) if command.callback_url else None,
                metadata=command.metadata,
                owner=command.owner,
                accepted_at=command.at,
            )
        ]
    if not state.exists:
        deployment_id = getattr(command, "deployment_id", "?")
        raise NotFound("deployment_not_found", f"Deployment {deployment_id} not found")
    match command:
        case ClaimDeployment():
            return _claim(state, command)
        case StartStep():
            _require(state, DeploymentStatus.RUNNING)
            if command.index != _next_step(state) or command.index >= state.total_steps:
                raise StateConflict(
                    "step_out_of_order", f"Step {command.index} is not the next step"
                )
            return [
                DeploymentStepStarted(
                    deployment_id=command.deployment_id,
                    index=command.index,
                    name=command.name,
                    total=state.total_steps,
                )
            ]
        case FinishStep():
            if state.status not in (DeploymentStatus.RUNNING, DeploymentStatus.CANCELLING):
                raise StateConflict("deployment_not_running", f"Deployment is {state.status}")
            if state.current_step != command.index:
                raise StateConflict("step_not_started", f"Step {command.index} is not running")
            common = {
                "deployment_id": command.deployment_id,
                "index": command.index,
                "name": state.step_names[command.index],
                "total": state.total_steps,
                "duration_s": command.duration_s,
                "log_hash": command.log_hash,
                "log_size": command.log_size,
            }
            if not command.succeeded:
                error = command.error or "step failed"
                return [
                    DeploymentStepFailed(**common, error=error),
                    DeploymentFailed(deployment_id=command.deployment_id, reason=error),
                ]
            events: list[Event] = [DeploymentStepCompleted(**common)]
            if command.index == state.total_steps - 1:
                events.append(DeploymentCompleted(deployment_id=command.deployment_id))
            return events
        case CancelDeployment():
            if state.status in TERMINAL:
                raise StateConflict("deployment_finished", f"Deployment is already {state.status}")
            if state.status is DeploymentStatus.CANCELLING:
                raise StateConflict("deployment_cancelling", "A cancel is already pending")
            if state.status is DeploymentStatus.ACCEPTED:
                return [DeploymentCancelled(deployment_id=command.deployment_id)]
            return [DeploymentCancelRequested(deployment_id=command.deployment_id)]
        case AcknowledgeCancel():
            _require(state, DeploymentStatus.CANCELLING)
            return [DeploymentCancelled(deployment_id=command.deployment_id)]
        case ExpireDeployment():
            if state.status in TERMINAL or state.accepted_at is None:
                raise StateConflict("deployment_finished", f"Deployment is {state.status}")
            if command.at < state.accepted_at + timedelta(seconds=state.timeout):
                raise StateConflict("deployment_on_time", "The deployment is within its timeout")
            return [DeploymentTimedOut(deployment_id=command.deployment_id)]
    raise Invalid("unknown_command", f"Deployments do not handle {type(command).__name__}")


def _claim(state: DeploymentState, command: ClaimDeployment) -> list[Event]:
    if state.status is not DeploymentStatus.ACCEPTED:
        raise StateConflict("deployment_not_waiting", f"Deployment is {state.status}")
    wanted = MODE_PREFERENCE if state.requested_mode == "auto" else (state.requested_mode,)
    resolved = next((m for m in wanted if command.available.get(m)), None)  # type: ignore[call-overload]
    events: list[Event] = [
        DeploymentModeResolved(
            deployment_id=command.deployment_id,
            requested=state.requested_mode,
            resolved=resolved or "none",
            available=dict(command.available),
        )
    ]
    if resolved is None:
        reason = f"{state.requested_mode} mode is not available on agent {command.agent_id}"
        return [*events, DeploymentFailed(deployment_id=command.deployment_id, reason=reason)]
    started = DeploymentStarted(
        deployment_id=command.deployment_id,
        agent_id=command.agent_id,
        mode=resolved,
        total_steps=command.total_steps,
        started_at=command.at,
    )
    return [*events, started]


def _next_step(state: DeploymentState) -> int:
    return len(state.step_names)


def _require(state: DeploymentState, status: DeploymentStatus) -> None:
    if state.status is DeploymentStatus.CANCELLING and status is DeploymentStatus.RUNNING:
        raise StateConflict("deployment_cancelling", "The deployment was cancelled; stop here")
    if state.status is not status:
        raise StateConflict(f"deployment_not_{status.value}", f"Deployment is {state.status}")


def evolve(state: DeploymentState, event: Event) -> DeploymentState:
    match event:
        case DeploymentAccepted():
            return DeploymentState(
                exists=True,
                owner=event.owner,
                requested_mode=event.mode,
                callback_url=event.callback_url,
                timeout=event.timeout,
                accepted_at=event.accepted_at,
            )
        case DeploymentStarted():
            return replace(state, status=DeploymentStatus.RUNNING, total_steps=event.total_steps)
        case DeploymentStepStarted():
            return replace(
                state, current_step=event.index, step_names=(*state.step_names, event.name)
            )
        case DeploymentStepCompleted() | DeploymentStepFailed():
            return replace(state, current_step=None)
        case DeploymentCancelRequested():
            return replace(state, status=DeploymentStatus.CANCELLING)
        case DeploymentCompleted():
            return replace(state, status=DeploymentStatus.COMPLETED)
        case DeploymentFailed():
            return replace(state, status=DeploymentStatus.FAILED)
        case DeploymentCancelled():
            return replace(state, status=DeploymentStatus.CANCELLED)
        case DeploymentTimedOut():
            return replace(state, status=DeploymentStatus.TIMED_OUT)
    return state


DEPLOYMENT = Aggregate[DeploymentState](
    name="deployment",
    initial=DeploymentState,
    decide=decide,
    evolve=evolve,
    events=(
        DeploymentAccepted,
        DeploymentModeResolved,
        DeploymentStarted,
        DeploymentStepStarted,
        DeploymentStepCompleted,
        DeploymentStepFailed,
        DeploymentCancelRequested,
        DeploymentCompleted,
        DeploymentFailed,
        DeploymentCancelled,
        DeploymentTimedOut,
    ),
    creates=(StartDeployment,),
    owner_of=lambda state: state.owner,
)
