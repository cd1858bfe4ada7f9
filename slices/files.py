"""Files made from finished uploads: shared content, refer keys, comments (seed: file upload)."""

from __future__ import annotations

from api import files as http
from domain.contents import CONTENT
from domain.files import FILE
from handlers.files import start_file_tracker
from handlers.refer_keys import advance_refer_keys
from projections.files import CONTENTS, FILES
from slices.slice import Slice

SLICE = Slice(
    name="files",
    aggregates=(FILE, CONTENT),
    projections=(FILES, CONTENTS),
    routes=http.ROUTES,
    timers=(
        lambda rt, now: advance_refer_keys(
            rt.commands, rt.sessions, now, rt.settings.refer_rotate_s
        ),
    ),
    process_managers=(
        lambda rt: start_file_tracker(
            rt.store,
            rt.commands,
            rt.blobs,
            rotate_s=rt.settings.refer_rotate_s,
            max_s=rt.settings.refer_max_s,
        ),
    ),
)
