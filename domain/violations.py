"""The catalogue of violation categories that comments and recommendations may cite.

One aggregate instance, ``catalogue``, holds every entry. Loading a file of entries is one
command that records only what is missing or changed, so loading the same file twice appends
nothing; the API adds, changes and removes single entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import StringConstraints

from domain.base import Aggregate, Command, Event, Invalid, NotFound, StateConflict

CATALOGUE_ID = "catalogue"
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4_000)]


class ViolationEntry(Command):
    code: Code
    name: Name
    description: Description = ""


class LoadViolations(Command):
    entries: list[ViolationEntry]


class AddViolation(Command):
    entry: ViolationEntry


class ChangeViolation(Command):
    entry: ViolationEntry


class RemoveViolation(Command):
    code: Code


class ViolationDefined(Event):
    code: str
    name: str
    description: str


class ViolationRemoved(Event):
    code: str


@dataclass(frozen=True)
class CatalogueState:
    entries: tuple[tuple[str, str, str], ...] = ()

    def get(self, code: str) -> tuple[str, str] | None:
        return next(((n, d) for c, n, d in self.entries if c == code), None)

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(c for c, _, _ in self.entries)


def _defined(entry: ViolationEntry) -> ViolationDefined:
    return ViolationDefined(code=entry.code, name=entry.name, description=entry.description)


def decide(state: CatalogueState, command: Command) -> list[Event]:
    match command:
        case LoadViolations():
            codes = [e.code for e in command.entries]
            if len(codes) != len(set(codes)):
                raise Invalid("duplicate_violation_code", "A code appears twice in the file")
            return [
                _defined(e) for e in command.entries if state.get(e.code) != (e.name, e.description)
            ]
        case AddViolation():
            if state.get(command.entry.code) is not None:
                raise StateConflict(
                    "violation_exists", f"Violation {command.entry.code} already exists"
                )
            return [_defined(command.entry)]
        case ChangeViolation():
            known = state.get(command.entry.code)
            if known is None:
                raise NotFound("violation_not_found", f"Violation {command.entry.code} not found")
            if known == (command.entry.name, command.entry.description):
                return []
            return [_defined(command.entry)]
        case RemoveViolation():
            if state.get(command.code) is None:
                raise NotFound("violation_not_found", f"Violation {command.code} not found")
            return [ViolationRemoved(code=command.code)]
    raise Invalid("unknown_command", f"The catalogue does not handle {type(command).__name__}")


def evolve(state: CatalogueState, event: Event) -> CatalogueState:
    match event:
        case ViolationDefined():
            kept = tuple(e for e in state.entries if e[0] != event.code)
            return CatalogueState((*kept, (event.code, event.name, event.description)))
        case ViolationRemoved():
            return CatalogueState(tuple(e for e in state.entries if e[0] != event.code))
    return state


VIOLATIONS = Aggregate[CatalogueState](
    name="violations",
    initial=CatalogueState,
    decide=decide,
    evolve=evolve,
    events=(ViolationDefined, ViolationRemoved),
)
