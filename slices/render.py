"""Render jobs with frames leased by render nodes (seed: render-farm task API)."""

from __future__ import annotations

from api import nats_render
from api import render as http
from domain.render import RENDER_JOB
from domain.scenes import SCENE
from handlers.render import expire_render_jobs, time_out_frames
from handlers.webhooks import WebhookSource, callback_url, generic_payload
from projections.render import RENDER, SCENES
from slices.slice import Slice

SLICE = Slice(
    name="render",
    aggregates=(RENDER_JOB, SCENE),
    projections=(RENDER, SCENES),
    routes=http.ROUTES,
    subjects=(nats_render.subscribe,),
    timers=(
        lambda rt, now: time_out_frames(rt.commands, rt.sessions, now),
        lambda rt, now: expire_render_jobs(rt.commands, rt.sessions, now),
    ),
    webhooks=(WebhookSource(RENDER_JOB, callback_url, generic_payload("job_id")),),
)
