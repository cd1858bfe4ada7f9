"""The files jetflow reads when nothing else is configured, shipped inside the package.

``nats.conf`` (the embedded nats-server's configuration), ``hardware_configs.json`` (render
hardware), ``violations.csv`` (the violation catalogue seeded at start) and
``deploy-plan.example.toml`` (a plan for ``jetflow deploy-agent``). They live in a package so that
a wheel carries them: read relative to the checkout they were missing from every ``pip``,
``pipx`` or ``uv tool`` install. They are looked up with ``importlib.resources``, which finds them
in an editable install (the checkout's ``./dev``) and in an installed wheel alike.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def bundled(name: str) -> Path:
    """A bundled file as a path on disk.

    A path, not just something readable: nats-server is handed ``nats.conf`` by name (and
    includes it from a generated file), so the file must exist as a file for as long as the
    service runs. Installed packages are unpacked files; an installation that keeps jetflow in
    a zip archive cannot run the embedded server and is refused here, by name.
    """
    resource = files(__name__).joinpath(name)
    if not isinstance(resource, Path):
        raise RuntimeError(
            f"jetflow's bundled {name} is not a file on disk ({resource!r}): install jetflow "
            "unpacked (pip, pipx or uv install it so)"
        )
    if not resource.is_file():
        raise FileNotFoundError(f"jetflow's bundled {name} is missing from {resource.parent}")
    return resource
