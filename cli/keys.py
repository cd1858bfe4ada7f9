"""``jetflow keys``: create, list and revoke API keys (the secret is printed once, at creation)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from adapters.idempotency import KeyValueIdempotencyRecords
from adapters.live_feed import FeedFilter
from api.settings import Settings
from cli.joined_store import joined_event_store
from domain.access import Role
from domain.base import DomainError
from handlers.access import issue_api_key, revoke_api_key
from handlers.audit import EventQuery, find_events
from handlers.commands import CommandService


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    verbs = keys.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="create a key and print it (only this once)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--user", required=True, help="the user the key acts for")
    create.add_argument("--label", default="", help="a note on what the key is for")
    verbs.add_parser("list", help="every key with its user, role and state (never the secret)")
    revoke = verbs.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")


def main(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    async with joined_event_store(settings) as store:
        idempotency = await KeyValueIdempotencyRecords.open(
            store.js, f"{settings.stream}_idempotency", replicas=settings.stream_replicas
        )
        commands = CommandService(store, idempotency)
        try:
            if args.verb == "create":
                token, _ = await issue_api_key(
                    commands, Role(args.role), args.user, args.label, actor="cli:keys"
                )
                print(token)
            elif args.verb == "revoke":
                await revoke_api_key(commands, args.key_id, actor="cli:keys")
                print(f"revoked {args.key_id}")
            else:
                query = EventQuery(FeedFilter("apikey"))
                async for event in find_events(store, query):
                    p = event.payload
                    if event.type == "ApiKeyCreated":
                        print(f"{p['key_id']}  {p['user']:<20} {p['role']:<9} {p['label']}")
                    else:
                        print(f"{p['key_id']}  revoked at {p['revoked_at']}")
        except (DomainError, ValueError) as refused:
            print(f"jetflow keys: {refused}", file=sys.stderr)
            return 1
    return 0
