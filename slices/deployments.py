"""Deployments run step by step by deploy agents, at most N at once (seed: deployment service)."""

from __future__ import annotations

from api import deploy_agents
from api import deployments as http
from domain.deployment_slots import DEPLOYMENT_SLOTS
from domain.deployments import DEPLOYMENT
from handlers.deployment_webhooks import deployment_payload
from handlers.deployments import expire_deployments, reclaim_slots, start_slot_releaser
from handlers.webhooks import WebhookSource, callback_url
from projections.deployments import DEPLOYMENTS
from slices.slice import Slice

SLICE = Slice(
    name="deployments",
    aggregates=(DEPLOYMENT, DEPLOYMENT_SLOTS),
    projections=(DEPLOYMENTS,),
    routes=(*http.ROUTES, *deploy_agents.ROUTES),
    timers=(
        lambda rt, now: expire_deployments(rt.commands, rt.sessions, now),
        lambda rt, now: reclaim_slots(rt.commands, now, rt.settings.deployment_reservation_s),
    ),
    process_managers=(lambda rt: start_slot_releaser(rt.store, rt.commands),),
    webhooks=(WebhookSource(DEPLOYMENT, callback_url, deployment_payload),),
)
