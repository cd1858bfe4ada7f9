"""Issuing and revoking API keys: the secret is made here, shown once, and only its digest kept."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.credentials import new_api_key
from adapters.envelope import Metadata
from domain.access import API_KEY, CreateApiKey, RevokeApiKey, Role
from handlers.commands import CommandContext, CommandService
from handlers.outcome import CommandOutcome


async def issue_api_key(
    commands: CommandService, role: Role, user: str, label: str = "", actor: str = "cli"
) -> tuple[str, CommandOutcome]:
    """A new key for ``user`` with ``role``: the token to hand over, and the recorded outcome."""
    issued = new_api_key()
    command = CreateApiKey(
        key_id=issued.key_id,
        user=user,
        role=role,
        digest=issued.digest,
        label=label,
        at=datetime.now(UTC),
    )
    context = CommandContext(Metadata(actor=actor))
    outcome = await commands.execute(API_KEY, issued.key_id, command, context)
    return issued.token, outcome


async def revoke_api_key(commands: CommandService, key_id: str, actor: str = "cli") -> None:
    command = RevokeApiKey(key_id=key_id, at=datetime.now(UTC))
    await commands.execute(API_KEY, key_id, command, CommandContext(Metadata(actor=actor)))
