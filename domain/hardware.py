"""Hardware configurations and the rule that picks one for a job's needs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HardwareConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    config_name: str
    ram: int = Field(ge=1)
    cpu_cores: int = Field(ge=1)
    gpu_count: int = Field(ge=0)
    gpu_model: str | None = None
    price_per_hour: float = Field(ge=0)
    is_available: bool = True


def match(
    configs: list[HardwareConfig], ram: int | None, gpu_count: int
) -> tuple[HardwareConfig | None, list[HardwareConfig]]:
    """The smallest available config that satisfies the needs, and the other ones that do.

    Smallest means cheapest, then least RAM, then fewest GPUs: the user pays for what they use.
    """
    fitting = sorted(
        (c for c in configs if c.is_available and c.ram >= (ram or 0) and c.gpu_count >= gpu_count),
        key=lambda c: (c.price_per_hour, c.ram, c.gpu_count, c.id),
    )
    if not fitting:
        return None, []
    return fitting[0], fitting[1:]
