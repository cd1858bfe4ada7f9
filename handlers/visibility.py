"""Which recorded events a non-admin reader may see on a live feed: those of its own aggregates.

An aggregate is owned when its type declares ``owner_of``; the owner is read from the payload of
its first event (the creating one carries ``owner``), once per aggregate and feed. Node events
are operational facts every reader sees; everything else (keys, catalogues, contents) is not
shown to non-admins.
"""

from __future__ import annotations

from collections import OrderedDict

from adapters.envelope import RecordedEvent, aggregate_filter
from handlers.ports import EventStore

SHARED = frozenset({"node"})
_REMEMBERED = 10_000


class OwnedEvents:
    def __init__(self, store: EventStore, user: str) -> None:
        self.store = store
        self.user = user
        self._owners: OrderedDict[tuple[str, str], str | None] = OrderedDict()

    async def visible(self, event: RecordedEvent) -> bool:
        if event.aggregate in SHARED:
            return True
        aggregate = self.store.aggregates.get(event.aggregate)
        if aggregate is None or aggregate.owner_of is None:
            return False
        return await self._owner(event) == self.user

    async def _owner(self, event: RecordedEvent) -> str | None:
        key = (event.aggregate, event.aggregate_id)
        if key in self._owners:
            self._owners.move_to_end(key)
            return self._owners[key]
        owner = event.payload.get("owner")
        if owner is None:
            first = await self.store.first(aggregate_filter(event.aggregate, event.aggregate_id))
            owner = first.payload.get("owner") if first else None
        self._owners[key] = owner
        if len(self._owners) > _REMEMBERED:
            self._owners.popitem(last=False)
        return owner
