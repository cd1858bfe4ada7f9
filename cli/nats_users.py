"""``jetflow nats-users``: create, list and revoke the NATS identities of producers and nodes.

The seed is printed (or written to ``--seed-file``) once, at creation; only the public key is
recorded. Every change regenerates the server's users list and, when a service runs on this
data folder, makes its embedded nats-server reload it before the command returns.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from adapters.nats_auth import AUTH_DIR_NAME, NatsAuthDir, NatsAuthError, NatsRole, write_private
from adapters.nats_server import LOG_NAME, NatsServerReloadError, serving_pid, signal_reload
from api.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("nats-users", help="create, list and revoke NATS users (nkeys)")
    verbs = users.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="create a user and print its seed (only this once)")
    create.add_argument("--role", required=True, choices=[r.value for r in NatsRole])
    create.add_argument("--user", required=True, help="its name, the last token of its subjects")
    create.add_argument("--seed-file", type=Path, help="write the seed here (0600) instead")
    verbs.add_parser("list", help="every user with its role, public key and state")
    revoke = verbs.add_parser("revoke", help="revoke a user: its connections are closed")
    revoke.add_argument("user")


def main(args: argparse.Namespace, settings: Settings) -> int:
    auth = NatsAuthDir(settings.data_dir / AUTH_DIR_NAME, settings.nats_seed_file)
    try:
        if args.verb == "list":
            for user in auth.users().values():
                state = f"revoked {user.revoked_at}" if user.revoked_at else "active"
                print(f"{user.name:<20} {user.role:<9} {user.public_key}  {state}")
            return 0
        if args.verb == "create":
            seed = auth.create(args.user, NatsRole(args.role))
            if args.seed_file is not None:
                write_private(args.seed_file, seed + b"\n")
                print(f"seed of {args.user} written to {args.seed_file}")
            else:
                print(seed.decode())
        else:
            auth.revoke(args.user)
            print(f"revoked {args.user}")
        print(asyncio.run(_apply(settings, auth)), file=sys.stderr)
    except (NatsAuthError, NatsServerReloadError) as refused:
        print(f"jetflow nats-users: {refused}", file=sys.stderr)
        return 1
    return 0


async def _apply(settings: Settings, auth: NatsAuthDir) -> str:
    """Make the server in charge use the regenerated users list, or say who must."""
    if settings.nats_url:
        return (
            f"NATS_URL is set: that server must include {auth.authorization_file} "
            "and be reloaded (nats-server --signal reload)"
        )
    store_dir = (settings.data_dir / "nats").resolve()
    pid = serving_pid(store_dir)
    if pid is None:
        return "no service is running: the embedded server uses it when it starts"
    await signal_reload(pid, store_dir / LOG_NAME)
    return f"the running nats-server (pid {pid}) reloaded its users"
