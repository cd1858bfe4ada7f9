"""What people and analysers say about a file: comments, and the combined recommendation
(status ``db_ready``); both cite categories of the violation catalogue."""

from __future__ import annotations

import json
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, JSONBody
from sqlalchemy import select

from api.dependencies import Commands, ReadAfter, read_after
from api.files.files import file_row
from api.files.views import CommentAccepted, CommentView, RecommendationAccepted
from api.http import CONTRIBUTE, READ, command_context, path_id
from domain.files import FILE, CommentAdded
from handlers.files import CommentRequest, RecommendationRequest, add_comment, save_recommendation
from projections.files import FILES, file_comments


class CommentController(Controller):
    path = "/files/{file_id:str}"
    tags = ["files"]
    dependencies = {"read_after": read_after(FILES)}

    @post("/comments", opt=CONTRIBUTE, status_code=202, summary="Comment on a file")
    async def comment(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        file_id: FromPath[str],
        data: JSONBody[CommentRequest],
    ) -> Response[CommentAccepted]:
        ctx = command_context(request, None)
        outcome = await add_comment(commands, path_id(file_id), data, ctx)
        added = next(
            e for e in await commands.decided_events(FILE, outcome) if isinstance(e, CommentAdded)
        )
        return CommentAccepted.of(outcome, file_id=file_id, comment_id=added.comment_id)

    @get("/comments", opt=READ, summary="A file's comments, oldest first")
    async def comments(
        self, request: Request[Any, Any, Any], read_after: ReadAfter, file_id: FromPath[str]
    ) -> list[CommentView]:
        await file_row(read_after, file_id, request)
        async with read_after() as session:
            rows = (
                await session.execute(
                    select(file_comments)
                    .where(file_comments.c.file_id == file_id)
                    .order_by(file_comments.c.seq)
                )
            ).all()
        return [
            CommentView(
                comment_id=r.comment_id,
                author_kind=r.author_kind,
                author=r.author,
                text=r.text,
                violation_severity=r.severity,
                violation_categories=json.loads(r.categories),
                added_at=r.added_at,
                seq=r.seq,
            )
            for r in rows
        ]

    @post(
        "/recommendations",
        opt=CONTRIBUTE,
        status_code=202,
        summary="Save the file's combined recommendation (replaces the last; status db_ready)",
    )
    async def recommend(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        file_id: FromPath[str],
        data: JSONBody[RecommendationRequest],
    ) -> Response[RecommendationAccepted]:
        outcome = await save_recommendation(
            commands, path_id(file_id), data, command_context(request, None)
        )
        return RecommendationAccepted.of(outcome, file_id=file_id, status="db_ready")
