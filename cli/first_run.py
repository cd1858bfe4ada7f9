"""The first run of ``jetflow serve``: a way in for a new user, and a banner that says where it is.

Every route but health needs a key, and a fresh installation has none, so a new user used to
meet nothing but 401s. As Jenkins does with its initial password, the first start on a log with
no key at all makes an admin key and writes it to ``<data dir>/bootstrap-admin-key`` (0600), and
every start prints where the API, its description and that file are, and how to make more keys.
The key itself is never logged or printed: only the file holds it.
"""

from __future__ import annotations

import logging
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

from adapters.nats_auth import write_private
from api.consistency import wait_for_seq
from api.errors import ApiError
from api.runtime import Runtime
from api.settings import Settings
from handlers.access import BOOTSTRAP_KEY_ID, BOOTSTRAP_USER, issue_bootstrap_key
from projections.access import API_KEYS

KEY_FILE_NAME = "bootstrap-admin-key"

log = logging.getLogger("jetflow")


def key_file(settings: Settings) -> Path:
    return settings.data_dir.resolve() / KEY_FILE_NAME


async def bootstrap_admin_key(runtime: Runtime) -> None:
    """Make the first admin key, into its file, if the log has never held one.

    The file is written after the key is recorded (a file naming a key that was never recorded
    would be worse than none), and the key is usable by the time this returns, unless the
    ``api_keys`` projection is slower than ``JETFLOW_WAIT_MAX_S``, which is logged.
    """
    issued = await issue_bootstrap_key(runtime.commands)
    if issued is None:
        return
    token, outcome = issued
    path = key_file(runtime.settings)
    try:
        write_private(path, f"{token}\n".encode())
    except OSError as error:
        log.error(
            "first start: made the admin key %s but could not write it to %s (%s); revoke it "
            "with `jetflow keys revoke %s` and make one with `jetflow keys create`",
            BOOTSTRAP_KEY_ID,
            path,
            error.strerror,
            BOOTSTRAP_KEY_ID,
        )
        return
    log.info(
        "first start: made the admin key %s (user %s); it is in %s, readable by this user only",
        BOOTSTRAP_KEY_ID,
        BOOTSTRAP_USER,
        path,
    )
    try:
        await wait_for_seq(runtime, (API_KEYS,), outcome.last_seq)
    except ApiError:
        log.warning("the bootstrap key works once the api_keys projection has applied it")


def banner(base_url: str, settings: Settings) -> str:
    """What to open and how to get in; printed once the HTTP server listens."""
    lines = [
        f"jetflow {version('jetflow')} is serving {base_url}",
        f"  API:         {base_url}/api/v1 (every route but health needs an API key)",
        f"  API browser: {base_url}/schema/swagger",
    ]
    path = key_file(settings)
    if path.is_file():
        lines.append(
            f"  admin key:   in {path} (made at the first start; keep it elsewhere, then delete "
            "the file)"
        )
    lines.append(
        f"  more keys:   {_program()} keys create --role admin|operator|worker|viewer --user NAME"
        + _same_environment(settings)
    )
    return "\n".join(lines)


def _program() -> str:
    """This program as the user can run it again: ``jetflow`` when PATH finds this very one
    (pipx, uv tool), else the path it was started by (``.venv/bin/jetflow`` under ``./dev``)."""
    started = Path(sys.argv[0])
    if started.name != "jetflow":
        return "jetflow"
    found = shutil.which("jetflow")
    if found is not None and Path(found).resolve() == started.resolve():
        return "jetflow"
    return str(started)


def _same_environment(settings: Settings) -> str:
    """``jetflow keys`` finds the service through these settings: name the ones not at their
    defaults (never their values: a NATS URL may carry credentials)."""
    differing = [
        name
        for name, differs in (
            ("JETFLOW_DATA_DIR", settings.data_dir != Settings.data_dir),
            ("NATS_URL", settings.nats_url is not None),
            ("JETFLOW_STREAM", settings.stream != Settings.stream),
        )
        if differs
    ]
    return f" (with this service's {', '.join(differing)})" if differing else ""
