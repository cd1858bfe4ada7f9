"""The base of every request body, over HTTP or NATS: one place decides how strict they are."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class WireModel(BaseModel):
    """A request body. An unknown field is refused rather than ignored: a misspelt option would
    otherwise be accepted and silently have no effect."""

    model_config = ConfigDict(extra="forbid")
