"""The rows one batch of events touches: read once, changed in memory, written back in bulk.

Applying events one statement at a time costs a database round trip per event; a batch instead
costs one SELECT of the rows it touches, one multi-row INSERT and one multi-row UPDATE, whatever
its length. Event appliers stay plain functions over dicts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

_CHUNK = 500
_KEY_PARAM = "row_key"


class RowBatch:
    def __init__(self, table: Table) -> None:
        [key] = table.primary_key.columns
        self.table = table
        self.key = key
        self.rows: dict[Any, dict[str, Any]] = {}
        self.new: set[Any] = set()
        self.dirty: set[Any] = set()

    async def load(self, session: AsyncSession, keys: Iterable[Any]) -> None:
        wanted = sorted(set(keys) - self.rows.keys())
        for start in range(0, len(wanted), _CHUNK):
            query = select(self.table).where(self.key.in_(wanted[start : start + _CHUNK]))
            for row in await session.execute(query):
                self.rows[row._mapping[self.key.name]] = dict(row._mapping)

    def get(self, key: Any) -> dict[str, Any] | None:
        return self.rows.get(key)

    def insert(self, row: dict[str, Any]) -> None:
        complete = {column.name: None for column in self.table.columns} | row
        key = complete[self.key.name]
        self.rows[key] = complete
        self.new.add(key)

    def update(self, key: Any, **values: Any) -> None:
        row = self.rows.get(key)
        if row is None:
            return  # an event for a row this projection never created: nothing to change
        row.update(values)
        if key not in self.new:
            self.dirty.add(key)

    async def flush(self, session: AsyncSession) -> None:
        if self.new:
            await session.execute(self.table.insert(), [self.rows[k] for k in sorted(self.new)])
        if self.dirty:
            columns = [c.name for c in self.table.columns if c is not self.key]
            statement = (
                update(self.table)
                .where(self.key == bindparam(_KEY_PARAM))
                .values({name: bindparam(name) for name in columns})
            )
            params = [
                {_KEY_PARAM: k, **{name: self.rows[k][name] for name in columns}}
                for k in sorted(self.dirty)
            ]
            await session.execute(statement, params)
        self.new.clear()
        self.dirty.clear()
