"""``jetflow parked``: list, retry and skip the events projections parked, from a second terminal.

It joins the running service's event store (``cli.joined_store``). ``list`` folds the parking
events of the log itself, so it needs no database; ``retry`` applies the event to the projection
database the service uses (``JETFLOW_DB_URL`` or the data folder's SQLite file).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from adapters.idempotency import KeyValueIdempotencyRecords
from adapters.live_feed import FeedFilter
from adapters.sql import create_engine, default_sqlite_url, session_factory
from api.settings import Settings
from cli.joined_store import joined_event_store
from domain.base import DomainError
from domain.parking import PARKING
from handlers.audit import EventQuery, find_events
from handlers.commands import CommandService
from handlers.parking import retry_parked, skip_parked
from handlers.ports import EventStore

ACTOR = "cli:parked"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parked = sub.add_parser("parked", help="list, retry and skip parked events")
    verbs = parked.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="events still parked: projection, sequence, type, error")
    for verb, text in (
        ("retry", "apply a parked event again and unpark it"),
        ("skip", "resolve a parked event without applying it"),
    ):
        command = verbs.add_parser(verb, help=text)
        command.add_argument("projection")
        command.add_argument("seq", type=int)


def main(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))


async def _list(store: EventStore) -> None:
    """One line per event still parked, in the order they were parked."""
    latest: dict[str, tuple[str, dict[str, object]]] = {}
    async for event in find_events(store, EventQuery(FeedFilter(PARKING.name))):
        latest[event.aggregate_id] = (event.type, event.payload)
    for kind, p in latest.values():
        if kind == "EventParked":
            print(
                f"{p['projection']}  {p['seq']}  {p['event_type']}  "
                f"attempts={p['attempts']}  {p['error']}"
            )


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    async with joined_event_store(settings) as store:
        idempotency = await KeyValueIdempotencyRecords.open(
            store.js, f"{settings.stream}_idempotency", replicas=settings.stream_replicas
        )
        commands = CommandService(store, idempotency)
        try:
            if args.verb == "list":
                await _list(store)
            elif args.verb == "skip":
                await skip_parked(commands, args.projection, args.seq, ACTOR)
                print(f"skipped {args.projection} {args.seq}")
            else:
                # Imported here: the catalogue brings every slice's routes (see joined_store).
                from slices.catalogue import CATALOGUE

                url = settings.db_url or default_sqlite_url(settings.data_dir.resolve())
                engine = create_engine(url)
                try:
                    await retry_parked(
                        store,
                        commands,
                        session_factory(engine),
                        {p.name: p for p in CATALOGUE.projections},
                        args.projection,
                        args.seq,
                        ACTOR,
                    )
                finally:
                    await engine.dispose()
                print(f"retried {args.projection} {args.seq}")
        except (DomainError, ValueError) as refused:
            print(f"jetflow parked: {refused}", file=sys.stderr)
            return 1
    return 0
