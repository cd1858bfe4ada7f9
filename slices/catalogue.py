"""Every slice of jetflow, one line each: the one list the service, the app and readers iterate.

Adding a slice: its own domain, handlers, projections and api modules, a ``slices/<name>.py``
declaring them, and one line here.
"""

from __future__ import annotations

from slices import (
    access,
    deployments,
    files,
    operations,
    pipelines,
    render,
    seed_idle_compute,
    tasks,
    uploads,
    violations,
    webhooks,
)
from slices.slice import Catalogue

CATALOGUE = Catalogue(
    (
        tasks.SLICE,
        render.SLICE,
        deployments.SLICE,
        pipelines.SLICE,
        uploads.SLICE,
        files.SLICE,
        violations.SLICE,
        webhooks.SLICE,
        access.SLICE,
        operations.SLICE,
        seed_idle_compute.SLICE,
    )
)
