"""Hostile names never reach DDL: tables, columns, JSON paths and partial-index
columns outside the allow-list -- quotes, semicolons, comments, wrong types --
are refused with a ValidationError that names them, before anything runs, and
the schema is exactly what it was."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from statekeep import Store
from statekeep.errors import ValidationError
from statekeep.query import IndexKey, IndexSpec, IndexSuggestion, QueryOptimizer

HOSTILE_TABLES = [
    "context; DROP TABLE sessions",
    'context"; DROP TABLE sessions; --',
    "context(id)",
    "sqlite_master",
    "pg_catalog.pg_class",
    "Context",
    "",
]
HOSTILE_COLUMNS = [
    "session_id) WHERE 1=1; DROP TABLE sessions; --",
    'session_id"',
    "session_id, id",
    "lower(session_id)",
    "context_value",  # a JSON column is indexed by an allowed path only
    "id; --",
]
HOSTILE_PATHS = [
    "$.path'); DROP TABLE sessions; --",
    "$.pa'th",
    "$.path' || '",
    "$.unknown",
    "$",
    "path",
    "$.path.",
]


@pytest.fixture
def opt(store: Store) -> QueryOptimizer:
    return QueryOptimizer(store)


def refused(schema_objects: Callable[[Store], set[tuple[str, str]]], store: Store,
            call: Callable[[], Any], named: str, field: str) -> None:
    before = schema_objects(store)
    with pytest.raises(ValidationError) as info:
        call()
    assert repr(named) in str(info.value) or named in str(info.value), str(info.value)
    assert info.value.field == field
    assert schema_objects(store) == before


@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_hostile_tables(opt: QueryOptimizer, store: Store, table: str,
                        schema_objects: Callable[[Store], set[tuple[str, str]]]) -> None:
    refused(schema_objects, store,
            lambda: opt.create_index(table, ["session_id"], confirm=True), table, "table")


@pytest.mark.parametrize("column", HOSTILE_COLUMNS)
def test_hostile_columns(opt: QueryOptimizer, store: Store, column: str,
                         schema_objects: Callable[[Store], set[tuple[str, str]]]) -> None:
    refused(schema_objects, store,
            lambda: opt.create_index("context", [column], confirm=True), column, "columns")


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_json_paths(opt: QueryOptimizer, store: Store, path: str,
                            schema_objects: Callable[[Store], set[tuple[str, str]]]) -> None:
    refused(schema_objects, store,
            lambda: opt.create_index("context", json_paths=[("context_value", path)],
                                     confirm=True), path, "json_paths")


def test_hostile_json_column_and_partial_predicate(
        opt: QueryOptimizer, store: Store,
        schema_objects: Callable[[Store], set[tuple[str, str]]]) -> None:
    refused(schema_objects, store,
            lambda: opt.create_index("context", json_paths=[("metadata; --", "$.path")],
                                     confirm=True), "metadata; --", "json_paths")
    refused(schema_objects, store,
            lambda: opt.create_index("context", ["session_id"],
                                     where_not_null="1=1) OR (1=1", confirm=True),
            "1=1) OR (1=1", "where_not_null")


def test_wrong_types_are_refused(opt: QueryOptimizer, store: Store,
                                 schema_objects: Callable[[Store], set[tuple[str, str]]]
                                 ) -> None:
    before = schema_objects(store)
    for call in (lambda: opt.create_index(42, ["session_id"], confirm=True),  # type: ignore[arg-type]
                 lambda: opt.create_index("context", [1], confirm=True),  # type: ignore[list-item]
                 lambda: opt.create_index("context", "session_id", confirm=True),
                 lambda: opt.create_index("context", json_paths=["$.path"],  # type: ignore[list-item]
                                          confirm=True)):
        with pytest.raises(ValidationError):
            call()
    assert schema_objects(store) == before


def test_forged_specs_and_suggestions_cannot_be_built(store: Store) -> None:
    with pytest.raises(ValidationError, match="sessions; --"):
        IndexSpec("sessions; --", (IndexKey("user_id"),))
    with pytest.raises(ValidationError, match="user_id\\) --"):
        IndexSpec("sessions", (IndexKey("user_id) --"),))
    with pytest.raises(ValidationError, match="style"):
        IndexSpec("context", (IndexKey("context_value", "$.path", "raw'sql"),))
    with pytest.raises(ValidationError):
        IndexSuggestion(IndexSpec("evil", ()), "", (), 0, "", store.dialect)  # type: ignore[arg-type]


def test_a_spec_changed_after_validation_is_checked_again(
        opt: QueryOptimizer, store: Store,
        schema_objects: Callable[[Store], set[tuple[str, str]]]) -> None:
    spec = IndexSpec("context", (IndexKey("session_id"),))
    object.__setattr__(spec, "table", "context; DROP TABLE sessions")  # frozen, but Python
    refused(schema_objects, store, lambda: opt.advisor.apply([spec], confirm=True),
            "context; DROP TABLE sessions", "table")


def test_the_store_refuses_names_it_did_not_generate(
        store: Store, schema_objects: Callable[[Store], set[tuple[str, str]]]) -> None:
    refused(schema_objects, store,
            lambda: store.create_index_ddl(name='x"; DROP TABLE sessions; --', table="context",
                                           keys_sql='"session_id"', where_sql=None),
            'x"; DROP TABLE sessions; --', "name")
    refused(schema_objects, store,
            lambda: store.create_index_ddl(name="sk_ok", table="sessions; --",
                                           keys_sql='"id"', where_sql=None),
            "sessions; --", "name")


def test_generated_ddl_quotes_everything(store: Store) -> None:
    spec = IndexSpec.build("context", ["session_id"], [("context_value", "$.source.tool")],
                           where_not_null="expires_at",
                           style="json_extract" if store.dialect == "sqlite" else "pg")
    ddl = spec.ddl(store.dialect)
    assert spec.name == "sk_context_session_id_j_source_tool_nn_expires_at"
    assert '"context"' in ddl and '"session_id"' in ddl and '"expires_at" IS NOT NULL' in ddl
    assert ("'$.source.tool'" if store.dialect == "sqlite" else "'{source,tool}'") in ddl
    [done] = QueryOptimizer(store).advisor.apply([spec], confirm=True)
    assert done.created
    assert spec.name in {i.name for i in store.list_indexes()}
