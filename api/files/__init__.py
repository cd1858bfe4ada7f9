"""HTTP routes of files (seed: file upload with refer keys; check-hashes from the render seed),
under the /api/v1 router: the files themselves, their refer keys, and what is said about them."""

from __future__ import annotations

from api.files.comments import CommentController
from api.files.files import FileController
from api.files.refer_keys import ReferKeyController

# What the catalogue mounts for this slice under /api/v1.
ROUTES = (FileController, ReferKeyController, CommentController)
