"""Refer keys: the capability to download a file. A download by key counts its authenticated
user towards the key's holder limit; any role may use a key, and the file's owner need not be
the downloader."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath
from litestar.response import Stream
from pydantic import TypeAdapter

from api import consistency
from api.auth import principal_of
from api.dependencies import AppSettings, Blobs, Commands, Sessions
from api.errors import ApiError
from api.files.files import RangeHeader, file_row, stream_file
from api.files.views import HolderReleased, ReferKeyReissued, download_url
from api.http import AUTHENTICATED, OPERATE, Rt, caller, command_context, path_id
from domain.access import Role
from domain.files import FILE, HolderLimitReached, ReferKeyIssued, UserId
from handlers.commands import CommandContext
from handlers.refer_keys import file_of_key, issue_refer_key, release_holder, use_refer_key
from projections.files import FILES

_USER: TypeAdapter[str] = TypeAdapter(UserId)


def _by_key(request: Request[Any, Any, Any]) -> CommandContext:
    """Holding a refer key is the permission: its holders need not own the file."""
    return replace(command_context(request, None), owner_scope=None)


class ReferKeyController(Controller):
    path = "/"
    tags = ["files"]

    @post(
        "/files/{file_id:str}/refer-key",
        opt=OPERATE,
        status_code=202,
        summary="Issue a new refer key after the last one expired (409 while one is live)",
    )
    async def reissue(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        settings: AppSettings,
        file_id: FromPath[str],
    ) -> Response[ReferKeyReissued]:
        outcome = await issue_refer_key(
            commands,
            path_id(file_id),
            command_context(request, None),
            rotate_s=settings.refer_rotate_s,
            max_s=settings.refer_max_s,
        )
        issued = next(
            e for e in await commands.decided_events(FILE, outcome) if isinstance(e, ReferKeyIssued)
        )
        return ReferKeyReissued.of(
            outcome,
            file_id=file_id,
            refer_key=issued.refer_key,
            download_url=download_url(issued.refer_key),
            expires_at=issued.expires_at,
        )

    @delete(
        "/files/{file_id:str}/refer-key/holders/{user:str}",
        opt=AUTHENTICATED,
        status_code=202,
        summary="A user lets go of the refer key, freeing a holder slot",
    )
    async def release(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        file_id: FromPath[str],
        user: FromPath[str],
    ) -> Response[HolderReleased]:
        principal = principal_of(request)
        if principal is not None and principal.role is not Role.admin and user != principal.user:
            raise ApiError(403, "forbidden", "Only the holder (or an admin) releases a holder slot")
        outcome = await release_holder(
            commands, path_id(file_id), _USER.validate_python(user), _by_key(request)
        )
        return HolderReleased.of(outcome, file_id=file_id, user=user, released=True)

    @get(
        "/download/{refer_key:str}",
        opt=AUTHENTICATED,
        summary="Download by refer key (410 when expired or superseded, 429 past the holder limit)",
    )
    async def download_by_key(
        self,
        request: Request[Any, Any, Any],
        runtime: Rt,
        commands: Commands,
        sessions: Sessions,
        blobs: Blobs,
        settings: AppSettings,
        refer_key: FromPath[str],
        range_header: RangeHeader = None,
    ) -> Stream:
        user = caller(request)
        file_id = await file_of_key(sessions, refer_key)
        if file_id is None:  # issued a moment ago? let the projection catch up once
            await consistency.wait_for_seq(runtime, (FILES,), await runtime.store.last_seq())
            file_id = await file_of_key(sessions, refer_key)
        if file_id is None:
            raise ApiError(404, "refer_key_not_found", "Unknown refer key")
        try:
            await use_refer_key(
                commands,
                file_id,
                refer_key,
                user,
                _by_key(request),
                max_holders=settings.refer_max_holders,
            )
        except HolderLimitReached as full:
            raise ApiError(429, full.code, full.message) from full
        return stream_file(blobs, await file_row(sessions, file_id, None), range_header)
