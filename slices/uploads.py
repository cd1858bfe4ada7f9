"""Big-file uploads over tus 1.0.0, in resumable parallel chunks, held to each owner's quota."""

from __future__ import annotations

from api import uploads as http
from domain.storage import STORAGE
from domain.uploads import UPLOAD
from handlers.uploads import expire_uploads
from projections.uploads import UPLOADS
from slices.slice import Slice

SLICE = Slice(
    name="uploads",
    aggregates=(UPLOAD, STORAGE),
    projections=(UPLOADS,),
    routes=http.ROUTES,
    timers=(lambda rt, now: expire_uploads(rt.commands, rt.sessions, rt.blobs, now),),
)
