"""Who may do what: roles, the policy each route declares, and API keys as an aggregate.

The rules are data here so that the HTTP guard, the live feeds and the tests read one table.
An API key's secret is never recorded: its events carry a digest, and the key id names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints

from domain.base import Aggregate, Command, Event, Instant, Invalid, NotFound, StateConflict


class Role(StrEnum):
    admin = "admin"
    operator = "operator"
    worker = "worker"
    viewer = "viewer"


class Policy(StrEnum):
    """What a route does, as far as access goes; every route declares exactly one."""

    public = "public"  # health and the API description: no credentials
    read = "read"  # read projections and live feeds (own aggregates unless admin)
    operate = "operate"  # start, cancel, pause, resume, deploy, upload (own aggregates)
    work = "work"  # what worker nodes, render nodes and deploy agents report
    contribute = "contribute"  # analysis results: owners (operators) and analysers (workers)
    authenticated = "authenticated"  # any valid credential (downloads by refer key)
    metrics = "metrics"  # service-wide counts and rates (/metrics): who runs the service
    admin = "admin"  # keys, catalogues, anything across users


ALLOWED: dict[Policy, frozenset[Role]] = {
    Policy.public: frozenset(Role),
    Policy.read: frozenset({Role.admin, Role.operator, Role.viewer}),
    Policy.operate: frozenset({Role.admin, Role.operator}),
    Policy.work: frozenset({Role.admin, Role.worker}),
    Policy.contribute: frozenset({Role.admin, Role.operator, Role.worker}),
    Policy.authenticated: frozenset(Role),
    Policy.metrics: frozenset({Role.admin, Role.operator}),
    Policy.admin: frozenset({Role.admin}),
}

# Roles that see every owner's aggregates; the others see only their own.
UNRESTRICTED: frozenset[Role] = frozenset({Role.admin, Role.worker})


def allowed(role: Role, policy: Policy) -> bool:
    return role in ALLOWED[policy]


def sees_everything(role: Role) -> bool:
    return role in UNRESTRICTED


UserName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{1,100}$")]
KeyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{8,64}$")]
Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class CreateApiKey(Command):
    key_id: KeyId
    user: UserName
    role: Role
    digest: Digest
    label: Annotated[str, StringConstraints(max_length=200)] = ""
    at: Instant


class RevokeApiKey(Command):
    key_id: KeyId
    at: Instant


class ApiKeyCreated(Event):
    key_id: str
    user: str
    role: Role
    digest: str
    label: str
    created_at: datetime


class ApiKeyRevoked(Event):
    key_id: str
    revoked_at: datetime


@dataclass(frozen=True)
class ApiKeyState:
    exists: bool = False
    revoked: bool = False


def decide(state: ApiKeyState, command: Command) -> list[Event]:
    match command:
        case CreateApiKey():
            if state.exists:
                raise StateConflict("key_exists", f"API key {command.key_id} already exists")
            return [
                ApiKeyCreated(
                    key_id=command.key_id,
                    user=command.user,
                    role=command.role,
                    digest=command.digest,
                    label=command.label,
                    created_at=command.at,
                )
            ]
        case RevokeApiKey():
            if not state.exists:
                raise NotFound("key_not_found", f"There is no API key {command.key_id}")
            if state.revoked:
                return []
            return [ApiKeyRevoked(key_id=command.key_id, revoked_at=command.at)]
    raise Invalid("unknown_command", f"API keys do not handle {type(command).__name__}")


def evolve(state: ApiKeyState, event: Event) -> ApiKeyState:
    match event:
        case ApiKeyCreated():
            return ApiKeyState(exists=True)
        case ApiKeyRevoked():
            return ApiKeyState(exists=True, revoked=True)
    return state


API_KEY = Aggregate[ApiKeyState](
    name="apikey",
    initial=ApiKeyState,
    decide=decide,
    evolve=evolve,
    events=(ApiKeyCreated, ApiKeyRevoked),
    creates=(CreateApiKey,),
)
