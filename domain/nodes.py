"""Worker nodes: they announce themselves by heartbeat and are declared offline when they go quiet.

A node that is declared offline gives up its tasks (a process manager requeues them); a heartbeat
from an offline or unknown node makes it join again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from domain.base import (
    Aggregate,
    Command,
    Event,
    Instant,
    Invalid,
    NotFound,
    PositiveSeconds,
    StateConflict,
)
from domain.tasks import NodeId


class NodeStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class NodeResources(Command):
    cpu_cores: Annotated[int, Field(ge=0)] = 0
    memory_mb: Annotated[int, Field(ge=0)] = 0


class NodeLoad(Command):
    cpu_percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    memory_percent: Annotated[float, Field(ge=0, le=100)] = 0.0


class RecordHeartbeat(Command):
    node_id: NodeId
    at: Instant
    resources: NodeResources | None = None
    current_load: NodeLoad | None = None


class MarkNodeOffline(Command):
    node_id: NodeId
    at: Instant
    silence_s: PositiveSeconds


class NodeJoined(Event):
    node_id: str


class NodeHeartbeat(Event):
    """``None`` resources or load mean "not reported this time", not zero."""

    node_id: str
    at: datetime
    resources: NodeResources | None
    current_load: NodeLoad | None


class NodeWentOffline(Event):
    node_id: str
    last_heartbeat_at: datetime


@dataclass(frozen=True)
class NodeState:
    exists: bool = False
    status: NodeStatus = NodeStatus.OFFLINE
    last_heartbeat_at: datetime | None = None


def decide(state: NodeState, command: Command) -> list[Event]:
    match command:
        case RecordHeartbeat():
            heartbeat = NodeHeartbeat(
                node_id=command.node_id,
                at=command.at,
                resources=command.resources,
                current_load=command.current_load,
            )
            if state.status is NodeStatus.ONLINE:
                return [heartbeat]
            return [NodeJoined(node_id=command.node_id), heartbeat]
        case MarkNodeOffline():
            if not state.exists:
                raise NotFound("node_not_found", f"Node {command.node_id} not found")
            if state.status is NodeStatus.OFFLINE:
                raise StateConflict("node_offline", f"Node {command.node_id} is already offline")
            assert state.last_heartbeat_at is not None
            if command.at - state.last_heartbeat_at < timedelta(seconds=command.silence_s):
                raise StateConflict("node_alive", f"Node {command.node_id} sent a heartbeat")
            return [
                NodeWentOffline(node_id=command.node_id, last_heartbeat_at=state.last_heartbeat_at)
            ]
    raise Invalid("unknown_command", f"Nodes do not handle {type(command).__name__}")


def evolve(state: NodeState, event: Event) -> NodeState:
    match event:
        case NodeJoined():
            return replace(state, exists=True, status=NodeStatus.ONLINE)
        case NodeHeartbeat():
            return replace(state, last_heartbeat_at=event.at)
        case NodeWentOffline():
            return replace(state, status=NodeStatus.OFFLINE)
    return state


NODE = Aggregate[NodeState](
    name="node",
    initial=NodeState,
    decide=decide,
    evolve=evolve,
    events=(NodeJoined, NodeHeartbeat, NodeWentOffline),
)
