"""Pipeline executions with steps (seed: CI/CD pipeline service)."""

from __future__ import annotations

from api import executions as http
from domain.pipelines import EXECUTION
from handlers.webhooks import WebhookSource, callback_url, generic_payload
from projections.pipelines import EXECUTIONS
from slices.slice import Slice

SLICE = Slice(
    name="pipelines",
    aggregates=(EXECUTION,),
    projections=(EXECUTIONS,),
    routes=http.ROUTES,
    webhooks=(WebhookSource(EXECUTION, callback_url, generic_payload("execution_id")),),
)
