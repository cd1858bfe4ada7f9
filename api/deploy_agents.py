"""HTTP routes of the deploy agents: claim a deployment, report each step, confirm a cancel.

An agent (``jetflow deploy-agent``, worker role) drives a deployment its user started through
``api.deployments``; only the claim answer carries the environment variables, opened for it.
The reports take an ``Idempotency-Key``: an agent resends a report whose answer it did not get,
and the resend answers like the first instead of 409 (the step already moved on).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from api.dependencies import Blobs, Commands, Secrets, Sessions
from api.deployment_answers import Claimed, DeploymentAccepted, StepReported, StepStarted
from api.http import WORK, IdempotencyKey, command_context, path_id
from handlers.deployments import (
    ClaimRequest,
    StepFinishRequest,
    StepStartRequest,
    acknowledge_cancel,
    claim_next,
    finish_step,
    start_step,
)


class DeployAgentController(Controller):
    path = "/"
    tags = ["deployments"]

    @post(
        "/deploy-agents/{agent_id:str}/claim",
        opt=WORK,
        status_code=200,
        summary="Claim a deployment",
    )
    async def claim(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        sessions: Sessions,
        secrets: Secrets,
        agent_id: FromPath[str],
        data: JSONBody[ClaimRequest],
    ) -> Response[Claimed | None]:
        claimed = await claim_next(
            commands,
            sessions,
            secrets,
            path_id(agent_id),
            data,
            command_context(request, None),
        )
        if claimed is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        return Response(
            Claimed(
                deployment_id=claimed.deployment_id,
                mode=claimed.mode,
                environment=claimed.environment,
                environment_variables=claimed.environment_variables,
                config=claimed.config,
                timeout=claimed.timeout,
                force_rebuild=claimed.force_rebuild,
                skip_health_check=claimed.skip_health_check,
                seq=claimed.outcome.last_seq,
            )
        )

    @post(
        "/deployments/{deployment_id:str}/steps/{index:int}/start",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="The agent starts a step (409 deployment_cancelling: stop here)",
    )
    async def step_start(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        deployment_id: FromPath[str],
        index: FromPath[int],
        data: JSONBody[StepStartRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[StepStarted]:
        outcome = await start_step(
            commands,
            path_id(deployment_id),
            index,
            data,
            command_context(request, idempotency_key),
        )
        return StepStarted.of(outcome, deployment_id=deployment_id, step=index, status="running")

    @post(
        "/deployments/{deployment_id:str}/steps/{index:int}/finish",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="The agent reports a step's result and log",
    )
    async def step_finish(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        blobs: Blobs,
        deployment_id: FromPath[str],
        index: FromPath[int],
        data: JSONBody[StepFinishRequest],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[StepReported]:
        outcome = await finish_step(
            commands,
            blobs,
            path_id(deployment_id),
            index,
            data,
            command_context(request, idempotency_key),
        )
        return StepReported.of(outcome, deployment_id=deployment_id, step=index)

    @post(
        "/deployments/{deployment_id:str}/cancel-ack",
        opt=WORK,
        status_code=HTTP_202_ACCEPTED,
        summary="The agent confirms it stopped after a cancel",
    )
    async def cancel_ack(
        self,
        request: Request[Any, Any, Any],
        commands: Commands,
        deployment_id: FromPath[str],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[DeploymentAccepted]:
        outcome = await acknowledge_cancel(
            commands, path_id(deployment_id), command_context(request, idempotency_key)
        )
        return DeploymentAccepted.of(outcome, deployment_id=deployment_id, status="cancelled")


# What the catalogue mounts for this slice under /api/v1.
ROUTES = (DeployAgentController,)
