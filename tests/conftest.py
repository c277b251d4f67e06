"""Shared fixtures: every store test runs against SQLite *and* PostgreSQL.

``--backend sqlite|postgres|all`` (default all) is the one switch. PostgreSQL
tests each get a schema of their own, created before and dropped after. When a
server is missing the test skips with the reason -- except under CI=true,
where a missing server is a failure, so that CI can never go green by
skipping.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services import PG_URL, require_redis, service_missing
from statekeep import StateConfig, Store, open_store


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", default="all", choices=["all", "sqlite", "postgres"],
                     help="which store backends the shared suite runs against")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        choice = metafunc.config.getoption("--backend")
        backends = ["sqlite", "postgres"] if choice == "all" else [choice]
        metafunc.parametrize("backend", backends)


@pytest.fixture
def redis_url() -> str:
    """The shared Redis server (skips locally, fails under CI, when it is down)."""
    return require_redis()


def _pg_admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_missing(f"PostgreSQL at {PG_URL}", str(exc).strip().splitlines()[0])


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose ``schema`` parameter names a fresh, private schema."""
    schema = "sk_test_" + secrets.token_hex(6)
    admin = _pg_admin()
    try:
        admin.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in PG_URL else "?"
        yield f"{PG_URL}{sep}schema={schema}"
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The location of an empty store for the parametrised backend."""
    if backend == "postgres":
        url: str = request.getfixturevalue("pg_schema_url")
        return url
    return str(tmp_path / "statekeep.db")


@pytest.fixture
def make_store(db_url: str) -> Iterator[Callable[..., Store]]:
    """Open (more) stores on the test's database; all are closed at teardown."""
    opened: list[Store] = []

    def factory(**overrides: Any) -> Store:
        clock = overrides.pop("clock", None)
        config = StateConfig(db=db_url, **overrides)
        store = open_store(config) if clock is None else open_store(config, clock=clock)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    """A fresh, migrated store on the parametrised backend."""
    return make_store()


# --- shared helpers for the store battery ------------------------------------


class FakeClock:
    """A clock for ``make_store(clock=...)`` that moves only when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """A fresh :class:`FakeClock` starting at a fixed instant."""
    return FakeClock()


def list_schema_objects(store: Store) -> set[tuple[str, str]]:
    """Every table and index of the store's database as (kind, name) pairs."""
    with store.reading() as conn:
        if store.dialect == "sqlite":
            rows = conn.execute(
                "SELECT type, name FROM sqlite_master"
                " WHERE type IN ('table', 'index', 'trigger', 'view')"
                " AND name NOT LIKE 'sqlite_%'").fetchall()
        else:
            rows = conn.execute(
                "SELECT 'table', table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
                " UNION ALL SELECT 'index', indexname FROM pg_indexes"
                " WHERE schemaname = current_schema()").fetchall()
    return {(str(r[0]), str(r[1])) for r in rows}


@pytest.fixture
def schema_objects() -> Callable[[Store], set[tuple[str, str]]]:
    """``schema_objects(store)``: the (kind, name) set of its tables and indexes."""
    return list_schema_objects
