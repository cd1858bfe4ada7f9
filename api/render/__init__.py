"""HTTP routes of render jobs (seed: render-farm API), under the /api/v1 router, in the seed's
envelopes (``envelope``): jobs, their frames and the render nodes' side, hardware configs and
scenes."""

from __future__ import annotations

from api.render.frames import FrameController
from api.render.hardware import HardwareController
from api.render.jobs import RenderJobController
from api.render.scenes import SceneController

# What the catalogue mounts for this slice under /api/v1.
ROUTES = (RenderJobController, FrameController, HardwareController, SceneController)
