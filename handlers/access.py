"""Issuing and revoking API keys: the secret is made here, shown once, and only its digest kept."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.credentials import new_api_key
from adapters.envelope import Metadata, events_of
from domain.access import API_KEY, CreateApiKey, RevokeApiKey, Role
from domain.base import StateConflict
from handlers.commands import CommandContext, CommandService
from handlers.outcome import CommandOutcome

# The first admin key of a new installation: a fixed id, so that it can be made only once.
BOOTSTRAP_KEY_ID = "bootstrapadmin00"
BOOTSTRAP_USER = "admin"
BOOTSTRAP_ACTOR = "system:bootstrap"


async def issue_api_key(
    commands: CommandService,
    role: Role,
    user: str,
    label: str = "",
    actor: str = "cli",
    key_id: str | None = None,
) -> tuple[str, CommandOutcome]:
    """A new key for ``user`` with ``role``: the token to hand over, and the recorded outcome."""
    issued = new_api_key(key_id)
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


async def issue_bootstrap_key(commands: CommandService) -> tuple[str, CommandOutcome] | None:
    """An admin key for a log that has never held a key (its token and the recorded outcome),
    or None when it has one.

    Asked of the event log, not of the ``api_keys`` read model: a projection that is behind or
    being rebuilt would call a log with keys empty, and a write must not rest on a read model.
    The key's id is fixed, so two services starting on one empty log at once cannot both make
    one: the aggregate refuses the second ``CreateApiKey`` (``key_exists``). A log whose keys
    were all revoked still held keys, and gets none: the way in then is ``jetflow keys create``.
    """
    if await commands.store.first(events_of(API_KEY)) is not None:
        return None
    try:
        return await issue_api_key(
            commands,
            Role.admin,
            BOOTSTRAP_USER,
            label="bootstrap: the first start's admin key",
            actor=BOOTSTRAP_ACTOR,
            key_id=BOOTSTRAP_KEY_ID,
        )
    except StateConflict:
        return None  # another service made it a moment ago
