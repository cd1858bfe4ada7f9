"""HTTP routes of render jobs (seed: render-farm API), under /api/v1, in the seed's envelopes
(``envelope``): jobs, their frames and the render nodes' side, hardware configs, scenes."""

from __future__ import annotations

from litestar import Router

from api.render.frames import FrameController
from api.render.hardware import HardwareController
from api.render.jobs import RenderJobController
from api.render.scenes import SceneController

# What the catalogue mounts for this slice under /api/v1.
ROUTES = (RenderJobController, FrameController, HardwareController, SceneController)
# ``api.app`` mounts this slice by this name until it mounts every slice's ROUTES.
RenderController = Router("/", route_handlers=list(ROUTES))
