"""``jetflow events``: list, tail, history, state-as-of and JSON Lines export of the event log.

It joins the NATS server of a running ``jetflow serve`` (see ``cli.joined_store``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from adapters.envelope import RecordedEvent
from adapters.event_store import JetStreamEventStore
from adapters.live_feed import FeedClosed, FeedFilter, FeedOverflow, LiveFeed
from api.settings import Settings
from cli.joined_store import joined_event_store
from domain.base import DomainError
from handlers.audit import EventQuery, audit_aggregate, find_events


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = sub.add_parser("events", help="list, tail, audit and export recorded events")
    verbs = events.add_subparsers(dest="verb", required=True)

    def filtered(name: str, help_text: str) -> argparse.ArgumentParser:
        verb = verbs.add_parser(name, help=help_text)
        verb.add_argument("--aggregate", help="aggregate type, e.g. task, render, deployment")
        verb.add_argument("--id", dest="aggregate_id", help="aggregate id")
        verb.add_argument("--type", dest="event_type", help="event type, e.g. TaskSubmitted")
        verb.add_argument("--actor", help="only events recorded for this actor")
        verb.add_argument("--since", type=datetime.fromisoformat, help="ISO time, inclusive")
        verb.add_argument("--until", type=datetime.fromisoformat, help="ISO time, inclusive")
        verb.add_argument("--from-seq", type=int, default=1, help="first stream sequence")
        return verb

    listing = filtered("list", "print matching events, one line each")
    listing.add_argument("--limit", type=int, help="stop after N events")
    listing.add_argument("--json", action="store_true", help="JSON Lines instead of a table")
    filtered("tail", "print matching events as they are recorded (Ctrl-C to stop)").add_argument(
        "--json", action="store_true", help="JSON Lines instead of a table"
    )
    export = filtered("export", "write matching events as JSON Lines")
    export.add_argument("output", help="file to write, or - for standard output")

    history = verbs.add_parser("history", help="one aggregate's full history")
    history.add_argument("aggregate")
    history.add_argument("aggregate_id")
    state = verbs.add_parser("state", help="an aggregate's state now, or as of a sequence/time")
    state.add_argument("aggregate")
    state.add_argument("aggregate_id")
    state.add_argument("--as-of-seq", type=int, help="state after the events up to this sequence")
    state.add_argument("--as-of-time", type=datetime.fromisoformat, help="state at this instant")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    async with joined_event_store(settings) as store:
        try:
            return await _VERBS[args.verb](args, store)
        except DomainError as refused:
            print(f"jetflow events: {refused.message}", file=sys.stderr)
            return 1


def _query(args: argparse.Namespace) -> EventQuery:
    return EventQuery(
        FeedFilter(args.aggregate, args.aggregate_id, args.event_type),
        actor=args.actor,
        since=args.since,
        until=args.until,
        from_seq=args.from_seq,
    )


def _line(event: RecordedEvent) -> str:
    return (
        f"{event.seq:>8}  {event.occurred_at.isoformat(timespec='milliseconds')}  "
        f"{event.aggregate}/{event.aggregate_id}  {event.type}  by {event.actor}  "
        f"{json.dumps(event.payload, default=str)}"
    )


def _print(event: RecordedEvent, as_json: bool, out: TextIO = sys.stdout) -> None:
    print(json.dumps(event.as_dict(), default=str) if as_json else _line(event), file=out)


async def _list(args: argparse.Namespace, store: JetStreamEventStore) -> int:
    async for event in find_events(store, _query(args), args.limit):
        _print(event, args.json)
    return 0


async def _tail(args: argparse.Namespace, store: JetStreamEventStore) -> int:
    query = _query(args)
    async with LiveFeed(store, query.wanted, from_seq=args.from_seq) as feed:
        while True:
            try:
                event = await feed.next(timeout=60)
            except (FeedOverflow, FeedClosed) as ended:
                print(f"jetflow events: {ended}", file=sys.stderr)
                return 1
            if event is not None and query.matches(event):
                _print(event, args.json)
                sys.stdout.flush()


async def _export(args: argparse.Namespace, store: JetStreamEventStore) -> int:
    count = 0
    with _output(args.output) as out:
        async for event in find_events(store, _query(args)):
            _print(event, True, out)
            count += 1
    print(f"exported {count} events", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _output(name: str) -> Iterator[TextIO]:
    if name == "-":
        yield sys.stdout
        return
    with Path(name).open("w") as out:
        yield out


async def _history(args: argparse.Namespace, store: JetStreamEventStore) -> int:
    audit = await audit_aggregate(store, args.aggregate, args.aggregate_id)
    for event in audit.events:
        _print(event, False)
    return 0


async def _state(args: argparse.Namespace, store: JetStreamEventStore) -> int:
    audit = await audit_aggregate(
        store,
        args.aggregate,
        args.aggregate_id,
        as_of_seq=args.as_of_seq,
        as_of_time=args.as_of_time,
    )
    view: dict[str, Any] = audit.as_dict()
    del view["events"]
    print(json.dumps(view, indent=2, default=str))
    return 0


_VERBS = {
    "list": _list,
    "tail": _tail,
    "export": _export,
    "history": _history,
    "state": _state,
}


def main(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(run(args, settings))
