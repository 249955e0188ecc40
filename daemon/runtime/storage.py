"""The daemon's store, chosen by `runbookd.store`, and what holds it for one daemon."""

from __future__ import annotations

from pathlib import Path

from daemon.config.settings import DaemonSettings
from daemon.config.store import PostgresStoreSettings
from daemon.store.protocol import Store
from daemon.store.sqlite.lock import StateDirLock
from daemon.store.sqlite.repository import SqliteStore

DB_FILE = "runbookd.db"


def build_store(settings: DaemonSettings) -> tuple[Store, StateDirLock | None]:
    """The store, not yet open, and for SQLite the state directory's lock, not yet taken (the
    daemon takes it before opening the store: one daemon per directory)."""
    chosen = settings.store
    if isinstance(chosen, PostgresStoreSettings):
        # Imported here: asyncpg is loaded only by a daemon that uses it.
        from daemon.store.postgres.repository import PostgresStore

        store = PostgresStore(
            chosen.dsn.get_secret_value(),
            pool_size=chosen.pool_size,
            connect_timeout=chosen.connect_timeout,
            # A leader idle that long mid-transaction has lost its lease anyway.
            idle_limit=chosen.lease_ttl,
        )
        return store, None
    state_dir = Path(settings.state_dir)
    return SqliteStore(state_dir / DB_FILE), StateDirLock(state_dir)


def describe(store: Store) -> str:
    """Where the store keeps its data, for log lines; never a password."""
    if isinstance(store, SqliteStore):
        return f"sqlite {store.path}"
    where = getattr(store, "where", None)  # PostgresStore: user@host:port/database
    return f"postgres {where}" if isinstance(where, str) else type(store).__name__
