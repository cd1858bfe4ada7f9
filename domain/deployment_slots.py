"""The limits on how many deployments are active at once, as an aggregate of its own.

The limits span deployments, so no single deployment can hold them: every start reserves a slot
here first, and two racing starts are ordered by this aggregate's optimistic concurrency, so they
cannot both take the last slot (overall, or of one user). A process manager gives the slot back
when a deployment ends; a starter that dies between its reservation and the deployment's
acceptance leaves a reservation with no deployment, which a timer reclaims once it is older than
any start could take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import Field

from domain.base import Aggregate, Command, Event, Instant, Invalid, StateConflict
from domain.deployments import DeploymentId

SLOTS_ID = "global"

# ---------------------------------------------------------------- commands


class ReserveSlot(Command):
    deployment_id: DeploymentId
    limit: Annotated[int, Field(ge=1)]
    owner: Annotated[str, Field(min_length=1, max_length=256)]
    # None: this owner is not held to a share of the slots (admins, who can cancel any of them).
    per_user_limit: Annotated[int, Field(ge=1)] | None = None
    at: Instant


class ReleaseSlot(Command):
    deployment_id: DeploymentId


class ReclaimSlot(Command):
    """Give back a reservation that never became a deployment, if it was made before a cutoff."""

    deployment_id: DeploymentId
    reserved_before: Instant


# ---------------------------------------------------------------- events


class DeploymentSlotReserved(Event):
    schema_version: ClassVar[int] = 2

    deployment_id: str
    limit: int
    owner: str | None
    reserved_at: datetime | None

    @classmethod
    def upcast_v1(cls, payload: dict[str, Any]) -> dict[str, Any]:
        """Version 1 recorded neither: such a reservation is as old, and as ownerless, as can be."""
        return {**payload, "owner": None, "reserved_at": None}


class DeploymentSlotReleased(Event):
    deployment_id: str


class DeploymentSlotReclaimed(Event):
    deployment_id: str


# ---------------------------------------------------------------- aggregate


@dataclass(frozen=True)
class Reservation:
    owner: str | None
    reserved_at: datetime | None


@dataclass(frozen=True)
class SlotsState:
    reservations: Mapping[str, Reservation] = field(default_factory=dict)

    @property
    def active(self) -> frozenset[str]:
        return frozenset(self.reservations)

    def held_by(self, owner: str) -> int:
        return sum(1 for r in self.reservations.values() if r.owner == owner)


def decide(state: SlotsState, command: Command) -> list[Event]:
    match command:
        case ReserveSlot():
            return _reserve(state, command)
        case ReleaseSlot():
            if command.deployment_id not in state.reservations:
                return []
            return [DeploymentSlotReleased(deployment_id=command.deployment_id)]
        case ReclaimSlot():
            reservation = state.reservations.get(command.deployment_id)
            if reservation is None:
                return []
            made = reservation.reserved_at
            if made is not None and made >= command.reserved_before:
                raise StateConflict(
                    "reservation_too_recent",
                    f"The slot of {command.deployment_id} was reserved at {made.isoformat()}, "
                    "too recently to tell a crashed start from a slow one",
                )
            return [DeploymentSlotReclaimed(deployment_id=command.deployment_id)]
    raise Invalid("unknown_command", f"Deployment slots do not handle {type(command).__name__}")


def _reserve(state: SlotsState, command: ReserveSlot) -> list[Event]:
    if command.deployment_id in state.reservations:
        return []
    if len(state.reservations) >= command.limit:
        raise StateConflict(
            "deployment_limit_reached",
            f"At most {command.limit} deployments may be active at once; "
            f"{len(state.reservations)} are running. Try again when one has finished.",
        )
    held = state.held_by(command.owner)
    if command.per_user_limit is not None and held >= command.per_user_limit:
        raise StateConflict(
            "deployment_user_limit_reached",
            f"At most {command.per_user_limit} of one user's deployments may be active at once; "
            f"{held} of yours are. Try again when one has finished.",
        )
    return [
        DeploymentSlotReserved(
            deployment_id=command.deployment_id,
            limit=command.limit,
            owner=command.owner,
            reserved_at=command.at,
        )
    ]


def evolve(state: SlotsState, event: Event) -> SlotsState:
    match event:
        case DeploymentSlotReserved():
            reservation = Reservation(owner=event.owner, reserved_at=event.reserved_at)
            return SlotsState({**state.reservations, event.deployment_id: reservation})
        case DeploymentSlotReleased() | DeploymentSlotReclaimed():
            kept = {k: v for k, v in state.reservations.items() if k != event.deployment_id}
            return SlotsState(kept)
    return state


DEPLOYMENT_SLOTS = Aggregate[SlotsState](
    name="deployslots",
    initial=SlotsState,
    decide=decide,
    evolve=evolve,
    events=(DeploymentSlotReserved, DeploymentSlotReleased, DeploymentSlotReclaimed),
)
