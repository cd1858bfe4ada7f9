"""Pipeline executions (seed: the CI/CD pipeline service): a run of a pipeline's stages and
steps, each with a status, driven by the runner that executes it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from domain.base import (
    AGGREGATE_ID_PATTERN,
    Aggregate,
    CallbackUrl,
    Command,
    Event,
    Invalid,
    NotFound,
    StateConflict,
)

ExecutionId = Annotated[str, StringConstraints(pattern=AGGREGATE_ID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
StepStatus = Literal["pending", "running", "success", "failed", "skipped"]
Trigger = Literal["manual", "push", "schedule", "webhook", "api"]
FINISHED = ("success", "failed", "cancelled")


class StageSpec(Command):
    name: Name
    steps: Annotated[list[Name], Field(min_length=1, max_length=100)]


class StartExecution(Command):
    execution_id: ExecutionId
    pipeline: Name
    trigger: Trigger = "manual"
    stages: Annotated[list[StageSpec], Field(min_length=1, max_length=50)]
    triggered_by: str = "anonymous"
    callback_url: CallbackUrl | None = None


class UpdateStep(Command):
    execution_id: ExecutionId
    stage: Name
    step: Name
    status: StepStatus
    log: Annotated[str, StringConstraints(max_length=65_536)] = ""


class CancelExecution(Command):
    execution_id: ExecutionId


class ExecutionStarted(Event):
    execution_id: str
    pipeline: str
    trigger: str
    stages: list[StageSpec]
    triggered_by: str
    callback_url: str | None = None


class ExecutionStepUpdated(Event):
    execution_id: str
    stage: str
    step: str
    status: str
    log: str


class ExecutionFinished(Event):
    execution_id: str
    status: Literal["success", "failed", "cancelled"]


@dataclass(frozen=True)
class ExecutionState:
    exists: bool = False
    status: str = "pending"
    callback_url: str | None = None
    steps: dict[tuple[str, str], str] = field(default_factory=dict)


def decide(state: ExecutionState, command: Command) -> list[Event]:
    if isinstance(command, StartExecution):
        if state.exists:
            raise StateConflict("execution_exists", f"Execution {command.execution_id} exists")
        url = str(command.callback_url) if command.callback_url else None
        fields = command.model_dump(exclude={"callback_url"})
        return [ExecutionStarted(**fields, callback_url=url)]
    if not state.exists:
        raise NotFound(
            "execution_not_found", f"Execution {getattr(command, 'execution_id', '?')} not found"
        )
    if state.status in FINISHED:
        raise StateConflict("execution_finished", f"The execution is already {state.status}")
    match command:
        case UpdateStep():
            key = (command.stage, command.step)
            if key not in state.steps:
                raise NotFound("step_not_found", f"No step {command.step} in stage {command.stage}")
            updated = ExecutionStepUpdated(
                execution_id=command.execution_id,
                stage=command.stage,
                step=command.step,
                status=command.status,
                log=command.log,
            )
            after = {**state.steps, key: command.status}
            if command.status == "failed":
                return [
                    updated,
                    ExecutionFinished(execution_id=command.execution_id, status="failed"),
                ]
            if all(s in ("success", "skipped") for s in after.values()):
                return [
                    updated,
                    ExecutionFinished(execution_id=command.execution_id, status="success"),
                ]
            return [updated]
        case CancelExecution():
            return [ExecutionFinished(execution_id=command.execution_id, status="cancelled")]
    raise Invalid("unknown_command", f"Executions do not handle {type(command).__name__}")


def evolve(state: ExecutionState, event: Event) -> ExecutionState:
    match event:
        case ExecutionStarted():
            steps = {
                (stage.name, step): "pending" for stage in event.stages for step in stage.steps
            }
            return ExecutionState(
                exists=True, status="running", steps=steps, callback_url=event.callback_url
            )
        case ExecutionStepUpdated():
            return replace(state, steps={**state.steps, (event.stage, event.step): event.status})
        case ExecutionFinished():
            return replace(state, status=event.status)
    return state


EXECUTION = Aggregate[ExecutionState](
    name="execution",
    initial=ExecutionState,
    decide=decide,
    evolve=evolve,
    events=(ExecutionStarted, ExecutionStepUpdated, ExecutionFinished),
    creates=(StartExecution,),
)
