"""The SQL engine behind the projections: SQLite (aiosqlite, WAL) by default, PostgreSQL by URL.

Projection code is dialect-neutral except for "insert unless present", which both dialects spell
``ON CONFLICT DO NOTHING`` through their own ``insert`` construct: ``insert_ignoring`` picks it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import Insert


def default_sqlite_path(data_dir: Path) -> Path:
    return data_dir / "projections.db"


def default_sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{default_sqlite_path(data_dir)}"


def readable_sqlite(path: Path) -> bool:
    """Whether a SQLite file opens and passes SQLite's own quick check (a missing file does)."""
    if not path.exists():
        return True
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return bool(db.execute("PRAGMA quick_check").fetchone() == ("ok",))
    except sqlite3.DatabaseError:
        return False


def set_aside(path: Path) -> Path:
    """Move an unreadable database (and its WAL files) out of the way, kept for inspection."""
    aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(aside.with_name(aside.name + suffix))
    return aside


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10)


def _tune_sqlite(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """WAL lets the API read while the projector writes; NORMAL sync is safe under WAL because
    the event stream, not SQLite, is the source of truth."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def insert_ignoring(session: AsyncSession, table: Table, values: dict[str, Any]) -> Insert:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    if dialect == "postgresql":
        return postgresql.insert(table).values(**values).on_conflict_do_nothing()
    return sqlite.insert(table).values(**values).on_conflict_do_nothing()


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
