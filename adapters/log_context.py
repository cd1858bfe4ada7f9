"""What a log line is about: the request, its actor, the aggregate and sequence a command wrote.

Two layers, both in contextvars, so concurrent requests and background loops never see each
other's fields:

- a request's own fields: the HTTP layer opens one mapping per request (``request``) holding its
  request id; authentication adds the actor and the command path the aggregate and sequence it
  recorded (``note``). The access log line, written when the answer starts, after the command,
  shows them all;
- fields bound for the length of a block (``bound``): a command's aggregate, a projection batch,
  a webhook delivery; undone on leaving it, so a loop's next iteration starts clean.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType

Value = str | int
_EMPTY: Mapping[str, Value] = MappingProxyType({})

_request: ContextVar[dict[str, Value] | None] = ContextVar("jetflow_log_request", default=None)
_bound: ContextVar[Mapping[str, Value]] = ContextVar("jetflow_log_bound", default=_EMPTY)


class request:  # lower case: used like a function, ``with request(request_id):``
    """The fields of one HTTP request, from its first line of log to its access log line."""

    __slots__ = ("_fields", "_token")

    def __init__(self, request_id: str) -> None:
        self._fields: dict[str, Value] = {"request_id": request_id}
        self._token: Token[dict[str, Value] | None] | None = None

    def __enter__(self) -> None:
        self._token = _request.set(self._fields)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._token is not None
        _request.reset(self._token)


class bound:  # lower case: used like a function, ``with bound(aggregate="task"):``
    """Fields on every line logged inside the block (a class, not a generator: it is on the
    command path, where a contextmanager's generator would cost more than the binding)."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Value) -> None:
        self._fields = fields
        self._token: Token[Mapping[str, Value]] | None = None

    def __enter__(self) -> None:
        self._token = _bound.set({**_bound.get(), **self._fields})

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._token is not None
        _bound.reset(self._token)


def note(**fields: Value) -> None:
    """Add to the current request's fields (its actor, what its command recorded); outside an
    HTTP request there is nothing to add to, and the call does nothing."""
    fields_of_request = _request.get()
    if fields_of_request is not None:
        fields_of_request.update(fields)


def request_id() -> str | None:
    fields_of_request = _request.get()
    return None if fields_of_request is None else str(fields_of_request["request_id"])


def current() -> dict[str, Value]:
    """Every field known where a line is logged; a block's bindings win over the request's."""
    fields_of_request = _request.get()
    if fields_of_request is None:
        return dict(_bound.get())
    return {**fields_of_request, **_bound.get()}
