"""Scene analyses: what an analyser found in a scene file, kept by the file's content hash.

The analyser itself is outside jetflow; it submits its findings, and a later submission for the
same hash replaces the earlier one (the history stays in the stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.base import Aggregate, Command, Event, Invalid

SceneHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{16,128}$")]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Sampling(Frozen):
    camera: int | None = None
    diffuse: int | None = None
    specular: int | None = None


class SceneInfo(Frozen):
    renderer: str | None = None
    start_frame: int | None = None
    end_frame: int | None = None
    width: Annotated[int, Field(gt=0)] | None = None
    height: Annotated[int, Field(gt=0)] | None = None
    image_format: str | None = None
    render_camera: list[str] = []
    sampling: Sampling | None = None


class Asset(Frozen):
    path: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    size: Annotated[int, Field(ge=0)] | None = None
    type: str = "file"
    exists: bool


class MissingAsset(Frozen):
    node: str | None = None
    path: str
    reason: Literal["file_not_found", "permission_denied", "unknown"] = "file_not_found"


class SceneAnalysis(Frozen):
    scene_file: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    scene_file_size: Annotated[int, Field(ge=0)] | None = None
    scene_info: SceneInfo = SceneInfo()
    assets: Annotated[list[Asset], Field(max_length=10_000)] = []
    missing: Annotated[list[MissingAsset], Field(max_length=10_000)] = []


class RecordSceneAnalysis(Command):
    scene_file_hash: SceneHash
    analysis: SceneAnalysis


class SceneAnalysed(Event):
    scene_file_hash: str
    scene_file: str
    analysis: SceneAnalysis


@dataclass(frozen=True)
class SceneState:
    analyses: int = 0


def decide(state: SceneState, command: Command) -> list[Event]:
    if isinstance(command, RecordSceneAnalysis):
        return [
            SceneAnalysed(
                scene_file_hash=command.scene_file_hash.lower(),
                scene_file=command.analysis.scene_file,
                analysis=command.analysis,
            )
        ]
    raise Invalid("unknown_command", f"Scenes do not handle {type(command).__name__}")


def evolve(state: SceneState, event: Event) -> SceneState:
    return SceneState(analyses=state.analyses + 1)


SCENE = Aggregate[SceneState](
    name="scene",
    initial=SceneState,
    decide=decide,
    evolve=evolve,
    events=(SceneAnalysed,),
)
