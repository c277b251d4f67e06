"""Storage backends behind one interface, chosen by the location's URL scheme.

``open_store("path/to/file.db")`` or ``open_store("postgresql://...")``; the
backend module is imported only when its scheme is used, so the SQLite path
never imports psycopg.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from statekeep.config import StateConfig
from statekeep.errors import ConfigError, MigrationError
from statekeep.store.base import utcnow
from statekeep.store.migrations import StateMigrationSystem
from statekeep.store.protocol import Store

__all__ = ["Store", "open_store"]


def _backend(location: str) -> type[Store]:
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    if scheme in ("postgres", "postgresql"):
        from statekeep.store.postgres import PostgresStore
        return PostgresStore
    if scheme in ("", "sqlite", "file"):
        from statekeep.store.sqlite import SQLiteStore
        return SQLiteStore
    raise ConfigError(f"unknown store URL scheme {scheme!r}: use a file path, sqlite:///path"
                      " or postgresql://...")


def open_store(config: StateConfig | str | None = None, *,
               clock: Callable[[], datetime] = utcnow) -> Store:
    """Open (and, with ``auto_migrate``, bring up to date) the configured store."""
    if config is None:
        config = StateConfig.load()
    elif isinstance(config, str):
        config = StateConfig.load(db=config)
    store = _backend(config.db)(config, clock=clock)
    try:
        migrations = StateMigrationSystem(store)
        current = migrations.current_version()
        latest = migrations.registry.latest
        if current > latest:
            raise MigrationError(
                f"the database is at schema version {current}, newer than this statekeep"
                f" knows ({latest}); upgrade statekeep")
        if config.auto_migrate and current < latest:
            migrations.migrate()
    except BaseException:
        store.close()
        raise
    return store
