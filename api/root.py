"""GET /: what someone who opens the service's address learns about getting in.

A new user's first request goes to the bare address, and a 404 there says nothing. This small
public document points at the API, its OpenAPI description and the way to a credential; it names
no path on the server's disk. One handler outside ``/api/v1``, so that it is easy to give ``/``
another answer later.
"""

from __future__ import annotations

from litestar import get

from api.answers import Answer
from api.health import VERSION
from api.http import PUBLIC
from api.routing import API_V1

SCHEMA = "/schema"


class ServiceDocument(Answer):
    service: str
    version: str
    api: str
    openapi: str
    docs: str
    health: str
    authentication: str


def jetflow_document() -> ServiceDocument:
    """jetflow's own answer at ``/``; a seed adapter served at the root carries it in its own."""
    return ServiceDocument(
        service="jetflow",
        version=VERSION,
        api=API_V1,
        openapi=f"{SCHEMA}/openapi.json",
        docs=f"{SCHEMA}/swagger",
        health=f"{API_V1}/health",
        authentication=(
            "Every route but health and the schema needs an API key (X-API-Key header, or "
            "Authorization: Bearer). `jetflow keys create --role ROLE --user NAME` makes one; "
            "a first start with no key at all writes an admin key to bootstrap-admin-key in "
            "the service's data folder."
        ),
    )


@get("/", opt=PUBLIC, tags=["system"], summary="Where the API, its description and keys are")
async def service_document() -> ServiceDocument:
    return jetflow_document()


ROUTES = (service_document,)
