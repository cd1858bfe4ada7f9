"""Scene analyses, kept by the scene file's content hash, and the assets of a job's scene
(read from the analysis of the hash the job names)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.dependencies import Commands, ReadAfter, read_after
from api.http import READ, WORK, command_context
from api.render.envelope import (
    READ_REFUSALS,
    WRITE_REFUSALS,
    SeedController,
    SeedEnvelope,
    ok,
    written,
)
from api.render.jobs import job_row
from api.render.views import (
    AssetSummary,
    JobAsset,
    JobAssets,
    SceneAnalysisRecorded,
    SceneAnalysisView,
)
from domain.base import NotFound
from domain.scenes import SceneAnalysis
from handlers.render import SceneAnalysisRequest, record_scene_analysis
from projections.render import RENDER, SCENES, scene_analyses


async def _analysis(
    sessions: async_sessionmaker[AsyncSession], scene_hash: str
) -> SceneAnalysis | None:
    async with sessions() as session:
        raw = await session.scalar(
            select(scene_analyses.c.analysis).where(
                scene_analyses.c.scene_file_hash == scene_hash.lower()
            )
        )
    return SceneAnalysis.model_validate_json(raw) if raw else None


class SceneController(SeedController):
    dependencies = {"read_after": read_after(SCENES)}

    @post(
        "/scene/analyse",
        opt=WORK,
        status_code=HTTP_201_CREATED,
        summary="Record a scene analysis by file hash",
        responses=WRITE_REFUSALS,
    )
    async def analyse(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        data: JSONBody[SceneAnalysisRequest],
    ) -> Response[SeedEnvelope[SceneAnalysisRecorded]]:
        outcome = await record_scene_analysis(commands, data, command_context(request, None))
        recorded = SceneAnalysisRecorded(
            **(dict(data) | {"scene_file_hash": outcome.aggregate_id}),
            asset_summary=AssetSummary.of(data.assets),
            seq=outcome.last_seq,
        )
        return written(outcome, recorded, "Scene analysis recorded", status=HTTP_201_CREATED)

    @get(
        "/scene/analyse/{scene_hash:str}",
        opt=READ,
        summary="A recorded scene analysis by file hash",
        responses=READ_REFUSALS,
    )
    async def get_analysis(
        self, read_after: ReadAfter, scene_hash: FromPath[str]
    ) -> Response[SeedEnvelope[SceneAnalysisView]]:
        async with read_after() as session:
            row = (
                await session.execute(
                    select(scene_analyses).where(
                        scene_analyses.c.scene_file_hash == scene_hash.lower()
                    )
                )
            ).first()
        if row is None:
            raise NotFound("scene_analysis_not_found", f"No analysis for scene {scene_hash}")
        analysis = SceneAnalysis.model_validate_json(row.analysis)
        return ok(
            SceneAnalysisView(
                **dict(analysis),
                scene_file_hash=row.scene_file_hash,
                asset_summary=AssetSummary.of(analysis.assets),
                analyzed_at=row.analysed_at,
            )
        )

    @get(
        "/render-jobs/{job_id:str}/assets",
        opt=READ,
        summary="Assets of a job's scene, from its analysis",
        responses=READ_REFUSALS,
        dependencies={"read_after": read_after(RENDER, SCENES)},
    )
    async def assets(
        self, request: Request[Any, Any, Any], read_after: ReadAfter, job_id: FromPath[str]
    ) -> Response[SeedEnvelope[JobAssets]]:
        job = await job_row(read_after, job_id, request)
        scene_hash = job.scene_file_hash
        analysis = await _analysis(read_after, scene_hash) if scene_hash else None
        listed = [
            JobAsset(file_path=a.path, file_size=a.size, file_type=a.type, is_missing=not a.exists)
            for a in (analysis.assets if analysis else [])
        ]
        return ok(
            JobAssets(
                task_id=job_id,
                scene_file_hash=job.scene_file_hash,
                assets=listed,
                total_count=len(listed),
                missing_count=sum(a.is_missing for a in listed),
            )
        )
