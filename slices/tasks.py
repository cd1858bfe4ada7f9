"""Compute tasks pulled by worker nodes (seed: idle-compute scheduler)."""

from __future__ import annotations

from api import nats_tasks
from api import tasks as http
from domain.nodes import NODE
from domain.tasks import TASK
from handlers.process_managers import expire_leases, mark_silent_nodes, start_node_offline_requeuer
from handlers.webhooks import WebhookSource, callback_url, generic_payload
from projections.tasks import NODES, TASKS
from slices.slice import Slice

SLICE = Slice(
    name="tasks",
    aggregates=(TASK, NODE),
    projections=(TASKS, NODES),
    routes=http.ROUTES,
    subjects=(nats_tasks.subscribe,),
    timers=(
        lambda rt, now: expire_leases(rt.commands, rt.sessions, now),
        lambda rt, now: mark_silent_nodes(
            rt.commands, rt.sessions, now, rt.settings.node_silence_s
        ),
    ),
    process_managers=(lambda rt: start_node_offline_requeuer(rt.store, rt.commands, rt.sessions),),
    # A task's code is the submitter's: its notifications leave it out.
    webhooks=(WebhookSource(TASK, callback_url, generic_payload("task_id", frozenset({"code"}))),),
)
