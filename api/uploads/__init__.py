"""The tus 1.0.0 resumable upload protocol under ``/api/v1/uploads/``, written by hand on Litestar.

Extensions: creation, creation-with-upload, creation-defer-length, termination, checksum (sha1,
xxh3), concatenation and expiration. The maintained Python tus servers (litestar-tus, tussi,
asgi-tus) keep an upload's state in their own files; here the upload is an event-sourced
aggregate and its bytes go to the project's blob store, so the protocol is implemented directly:
``tus`` holds what its headers say and what its answers carry, ``routes`` the routes.

HEAD answers from the aggregate (the write side, through the repository), not from the uploads
projection: the offset is the precondition of the next PATCH, a tus client HEADs right after a
cut-off PATCH to learn where to resume, and it cannot ask for read-your-writes (it never sees a
stream sequence). Loading an upload reads only the events after the cached version, so it costs
one direct-get round trip. ``GET /uploads/{id}`` is the read model's view, with ``wait_for_seq``.

Every answer carries ``Tus-Resumable``; refusals use the project's error envelope with the
statuses tus fixes (409 offset, 410 expired or terminated, 412 version, 413 too long, 415 media
type, 460 checksum).
"""

from __future__ import annotations

from api.uploads.routes import UploadController

# What the catalogue mounts for this slice under /api/v1.
ROUTES = (UploadController,)
