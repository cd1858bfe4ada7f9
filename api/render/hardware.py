"""The hardware configurations render jobs run on (by default the bundled
``jetflow_defaults/hardware_configs.json``), and the smallest one that fits a job's needs."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.params import JSONBody
from pydantic import ConfigDict, Field

from api.answers import Answer
from api.errors import ApiError
from api.http import READ
from api.render.envelope import READ_REFUSALS, SeedController, SeedEnvelope, ok
from domain.hardware import HardwareConfig, match
from handlers.wire import WireModel


class HardwareNeeds(WireModel):
    """The seed's render API ignored unknown fields here, so its clients may send them."""

    model_config = ConfigDict(extra="ignore")

    ram: Annotated[int, Field(ge=0, le=4096)] | None = None
    gpu_count: Annotated[int, Field(ge=0, le=64)] = 0


class HardwareMatch(Answer):
    recommended: HardwareConfig
    alternatives: list[HardwareConfig]


class HardwareController(SeedController):
    @get("/hardware-configs", opt=READ, summary="Hardware configurations", responses=READ_REFUSALS)
    async def hardware(
        self, request: Request[Any, Any, Any]
    ) -> Response[SeedEnvelope[list[HardwareConfig]]]:
        return ok(list(request.app.state.hardware_configs))

    @post(
        "/hardware-configs/match",
        opt=READ,
        status_code=200,
        summary="The smallest config that fits, and alternatives",
        responses=READ_REFUSALS,
    )
    async def match_hardware(
        self, request: Request[Any, Any, Any], data: JSONBody[HardwareNeeds]
    ) -> Response[SeedEnvelope[HardwareMatch]]:
        recommended, alternatives = match(
            request.app.state.hardware_configs, data.ram, data.gpu_count
        )
        if recommended is None:
            raise ApiError(
                404, "no_matching_hardware_config", "No available hardware config fits these needs"
            )
        return ok(HardwareMatch(recommended=recommended, alternatives=alternatives))
