"""The limit on how many deployments are active at once, as an aggregate of its own.

The limit spans deployments, so no single deployment can hold it: every start reserves a slot
here first, and two racing starts are ordered by this aggregate's optimistic concurrency, so they
cannot both take the last slot. A process manager gives the slot back when a deployment ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field

from domain.base import Aggregate, Command, Event, Invalid, StateConflict
from domain.deployments import DeploymentId

SLOTS_ID = "global"

# ---------------------------------------------------------------- commands


class ReserveSlot(Command):
    deployment_id: DeploymentId
    limit: Annotated[int, Field(ge=1)]


class ReleaseSlot(Command):
    deployment_id: DeploymentId


# ---------------------------------------------------------------- events


class DeploymentSlotReserved(Event):
    deployment_id: str
    limit: int


class DeploymentSlotReleased(Event):
    deployment_id: str


# ---------------------------------------------------------------- aggregate


@dataclass(frozen=True)
class SlotsState:
    active: frozenset[str] = field(default_factory=frozenset)


def decide(state: SlotsState, command: Command) -> list[Event]:
    match command:
        case ReserveSlot():
            if command.deployment_id in state.active:
                return []
            if len(state.active) >= command.limit:
                raise StateConflict(
                    "deployment_limit_reached",
                    f"At most {command.limit} deployments may be active at once; "
                    f"{len(state.active)} are running. Try again when one has finished.",
                )
            return [
                DeploymentSlotReserved(deployment_id=command.deployment_id, limit=command.limit)
            ]
        case ReleaseSlot():
            if command.deployment_id not in state.active:
                return []
            return [DeploymentSlotReleased(deployment_id=command.deployment_id)]
    raise Invalid("unknown_command", f"Deployment slots do not handle {type(command).__name__}")


def evolve(state: SlotsState, event: Event) -> SlotsState:
    match event:
        case DeploymentSlotReserved():
            return SlotsState(active=state.active | {event.deployment_id})
        case DeploymentSlotReleased():
            return SlotsState(active=state.active - {event.deployment_id})
    return state


DEPLOYMENT_SLOTS = Aggregate[SlotsState](
    name="deployslots",
    initial=SlotsState,
    decide=decide,
    evolve=evolve,
    events=(DeploymentSlotReserved, DeploymentSlotReleased),
)
