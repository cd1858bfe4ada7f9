"""Big-file uploads over tus 1.0.0, in resumable parallel chunks."""

from __future__ import annotations

from api import uploads as http
from domain.uploads import UPLOAD
from handlers.uploads import expire_uploads
from projections.uploads import UPLOADS
from slices.slice import Slice

SLICE = Slice(
    name="uploads",
    aggregates=(UPLOAD,),
    projections=(UPLOADS,),
    routes=http.ROUTES,
    timers=(lambda rt, now: expire_uploads(rt.commands, rt.sessions, rt.blobs, now),),
)
