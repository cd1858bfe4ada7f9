"""Live subscriptions: every recorded event as Server-Sent Events or over a WebSocket.

Both are read from JetStream (one ordered consumer per client, ``adapters.live_feed``), never
from the database. Each message carries its stream sequence; a client resumes with SSE's
``Last-Event-ID`` or the WebSocket's ``from_seq`` and gets no gap and no duplicate. A client that
falls behind is told why and disconnected, and resumes from the sequence it was given.
Admission, the caps and the credential checks are ``api.live``'s.

WebSocket close codes: 1001 service shutting down, 4008 fell behind (reason: where to resume),
4401 the credential ended (key revoked, token expired), 4429 too many live feeds open (this
credential's or the service's); each reason starts with the stable error code where there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, Any, Literal

import pydantic_core
from litestar import Controller, Request, WebSocket, get, websocket
from litestar.connection import ASGIConnection
from litestar.exceptions import WebSocketDisconnect
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from adapters.envelope import RecordedEvent
from adapters.event_store import JetStreamEventStore
from adapters.live_feed import FeedClosed, FeedEnded, FeedFilter, FeedOverflow, LiveFeed
from api.auth import principal_of
from api.dependencies import Live
from api.http import LIVE_READ, MAX_SEQ
from api.live import (
    CREDENTIAL_CLOSE_CODE,
    LIMIT_CLOSE_CODE,
    AdmittedFeed,
    CredentialEnded,
    LiveFeedRefused,
    close_reason,
)
from domain.access import Role
from handlers.visibility import OwnedEvents

KEEPALIVE_S = 15.0
TOKEN = r"^[A-Za-z0-9_-]{1,128}$"
OVERFLOW_CLOSE_CODE = 4008  # application range: "policy", with the resume sequence as reason

AggregateName = Annotated[str | None, QueryParameter(pattern=TOKEN, required=False)]
AggregateId = Annotated[str | None, QueryParameter(pattern=TOKEN, required=False)]
EventType = Annotated[
    str | None, QueryParameter(name="type", pattern=r"^[A-Za-z0-9_]{1,128}$", required=False)
]
FromSeq = Annotated[int | None, QueryParameter(ge=1, le=MAX_SEQ, required=False)]

# The seed's compact WebSocket feed of the compute-task slice.
NAMED: dict[str, str] = {
    "TaskSubmitted": "task_created",
    "TaskAssigned": "task_started",
    "TaskCompleted": "task_completed",
    "TaskFailed": "task_failed",
    "TaskTimedOut": "task_failed",
    "NodeJoined": "node_joined",
    "NodeWentOffline": "node_left",
}
_STATUS = {
    "task_created": "pending",
    "task_started": "assigned",
    "task_completed": "completed",
    "task_failed": "failed",
    "node_joined": "online",
    "node_left": "offline",
}


def named(event: RecordedEvent) -> dict[str, Any] | None:
    """The seed's ``{"event": "task_started", "data": {...}}`` form, or None if not in it."""
    name = NAMED.get(event.type)
    if name is None:
        return None
    data: dict[str, Any] = {"status": _STATUS[name]}
    for key in ("task_id", "node_id", "attempt", "error", "exit_code"):
        if key in event.payload:
            data[key] = event.payload[key]
    return {"event": name, "seq": event.seq, "at": event.occurred_at.isoformat(), "data": data}


def _visibility(
    store: JetStreamEventStore, connection: ASGIConnection[Any, Any, Any, Any]
) -> OwnedEvents | None:
    """None when the caller sees every event (admin); else the filter to its own aggregates."""
    principal = principal_of(connection)
    if principal is None or principal.role is Role.admin:
        return None
    return OwnedEvents(store, principal.user)


def sse_stream(
    admitted: AdmittedFeed,
    render: Callable[[RecordedEvent], Awaitable[ServerSentEventMessage | None]],
) -> ServerSentEvent:
    """A live feed as Server-Sent Events: ``render`` turns an event into a message or skips it;
    keep-alives while idle, an ``overflow`` event when the client fell behind, an ``error``
    event (the error envelope) when its credential ended."""

    async def messages() -> AsyncGenerator[ServerSentEventMessage, None]:
        async with admitted as feed:
            while True:
                try:
                    event = await feed.next(KEEPALIVE_S)
                except FeedOverflow as overflow:
                    yield ServerSentEventMessage(
                        event="overflow", data=str(overflow), id=str(overflow.last_seq)
                    )
                    return
                except CredentialEnded as ended:
                    yield ServerSentEventMessage(event="error", data=ended.envelope())
                    return
                except FeedEnded:
                    return
                if event is None:
                    yield ServerSentEventMessage(comment="keep-alive")
                elif (message := await render(event)) is not None:
                    yield message

    return ServerSentEvent(messages())


class EventFeedController(Controller):
    path = "/events"
    tags = ["live"]

    @get(
        "/stream",
        opt=LIVE_READ,
        summary="Live events as Server-Sent Events",
        description=(
            "Each message's id is its stream sequence. Reconnect with `Last-Event-ID` (or "
            "`from_seq`) to resume right after it. Without either, the feed starts with the next "
            "event recorded. A client that falls behind gets an `overflow` event naming the "
            "sequence to resume from, and the stream ends; one whose credential ends (a revoked "
            "key, an expired token) gets an `error` event and the stream ends. 429 "
            "`live_feed_key_limit_reached` / `live_feed_limit_reached` when the credential or "
            "the service has as many live feeds open as it may."
        ),
    )
    async def stream(
        self,
        request: Request[Any, Any, Any],
        live: Live,
        aggregate: AggregateName = None,
        aggregate_id: AggregateId = None,
        event_type: EventType = None,
        from_seq: FromSeq = None,
        last_event_id: Annotated[
            int | None, HeaderParameter(name="Last-Event-ID", ge=0, le=MAX_SEQ, required=False)
        ] = None,
    ) -> ServerSentEvent:
        start = last_event_id + 1 if last_event_id is not None else from_seq
        feed = live.open(request, FeedFilter(aggregate, aggregate_id, event_type), start)
        shown = _visibility(live.store, request)

        async def render(event: RecordedEvent) -> ServerSentEventMessage | None:
            if shown is not None and not await shown.visible(event):
                return None
            return ServerSentEventMessage(
                id=str(event.seq), event=event.type, data=_json(event.as_dict())
            )

        return sse_stream(feed, render)

    @websocket("/ws", opt=LIVE_READ, name="events_ws")
    async def ws(
        self,
        socket: WebSocket[Any, Any, Any],
        live: Live,
        aggregate: AggregateName = None,
        aggregate_id: AggregateId = None,
        event_type: EventType = None,
        from_seq: FromSeq = None,
        feed: Annotated[Literal["events", "named"], QueryParameter(required=False)] = "events",
    ) -> None:
        """Live events as JSON messages, each with ``seq``; ``feed=named`` gives the seed's
        compact task/node events. Resume with ``from_seq`` = last seen + 1. A client that falls
        behind is closed with code 4008 and a reason naming the sequence to resume from; one
        whose credential ends with 4401; one past the live-feed caps with 4429."""
        render = _named if feed == "named" else _whole
        await serve_websocket(
            socket, live, FeedFilter(aggregate, aggregate_id, event_type), from_seq, render
        )


async def _named(event: RecordedEvent) -> dict[str, Any] | None:
    return named(event)


async def _whole(event: RecordedEvent) -> dict[str, Any] | None:
    return event.as_dict()


async def serve_websocket(
    socket: WebSocket[Any, Any, Any],
    live: Live,
    feed_filter: FeedFilter,
    from_seq: int | None,
    render: Callable[[RecordedEvent], Awaitable[dict[str, Any] | None]],
) -> None:
    """A live feed over a WebSocket, admitted and ended as every feed is; ``render`` turns each
    event the caller may see into a JSON message, or skips it (None). A seed's feed renders its
    own messages through the same admission, visibility and close codes."""
    await socket.accept()
    try:
        admitted = live.open(socket, feed_filter, from_seq)
    except LiveFeedRefused as refused:
        await socket.close(code=LIMIT_CLOSE_CODE, reason=close_reason(refused.body))
        return
    shown = _visibility(live.store, socket)
    try:
        async with admitted as events:
            gone = asyncio.ensure_future(_until_disconnected(socket, events))
            try:
                await _forward(socket, events, shown, render)
            finally:
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gone
    except WebSocketDisconnect:
        return


async def _forward(
    socket: WebSocket[Any, Any, Any],
    events: LiveFeed,
    shown: OwnedEvents | None,
    render: Callable[[RecordedEvent], Awaitable[dict[str, Any] | None]],
) -> None:
    """Send the feed's visible events until it ends, closing with the code that says why."""
    while True:
        try:
            event = await events.next(KEEPALIVE_S)
        except FeedOverflow as overflow:
            await socket.close(code=OVERFLOW_CLOSE_CODE, reason=str(overflow)[:120])
            return
        except FeedClosed:
            await socket.close(code=1001, reason="service shutting down")
            return
        except CredentialEnded as ended:
            await socket.close(code=CREDENTIAL_CLOSE_CODE, reason=close_reason(ended.body))
            return
        except FeedEnded:  # the client went
            return
        if event is None:
            continue
        if shown is not None and not await shown.visible(event):
            continue
        message = await render(event)
        if message is not None:
            await socket.send_json(message)


class _ClientGone(FeedEnded):
    """The WebSocket client disconnected: its feed ends now, not at the next keep-alive."""


async def _until_disconnected(socket: WebSocket[Any, Any, Any], feed: LiveFeed) -> None:
    """Drain what the client sends (nothing is expected) until it goes away, then end its feed
    so that the consumer and the slot go at once."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await socket.receive_data(mode="text")
    feed.end(_ClientGone())


def _json(value: dict[str, Any]) -> str:
    return pydantic_core.to_json(value).decode()


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (EventFeedController,)
