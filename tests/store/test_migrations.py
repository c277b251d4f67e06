"""Schema migrations on every backend: versions, read-only queries, atomic failure."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from statekeep import Migration, MigrationError, MigrationRegistry, StateMigrationSystem, Store
from statekeep.store.migrations import MIGRATIONS_TABLE, split_sql


def _migrations(store: Store, tmp_path: Path,
                registry: MigrationRegistry | None = None) -> StateMigrationSystem:
    return StateMigrationSystem(store, registry, backup_dir=tmp_path / "backups")


def _fill(store: Store) -> None:
    s = store.create_session("alice", metadata={"m": 1})
    t = store.create_task(s.id, "x")
    store.set_context(s.id, "f", "k", [1, 2])
    store.record_decision("plan", "go", session_id=s.id, task_id=t.id)
    store.set_preference("alice", "style", "indent", 4)


def _state(store: Store, schema_objects) -> tuple[object, object, object]:
    with store.reading() as conn:
        applied = conn.execute(
            f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} ORDER BY version"
        ).fetchall()
    return store.dump(), schema_objects(store), [tuple(r) for r in applied]


def test_fresh_store_is_at_latest(store: Store, tmp_path: Path) -> None:
    ms = _migrations(store, tmp_path)
    assert ms.registry.latest >= 1
    assert ms.current_version() == ms.registry.latest
    assert ms.pending() == []
    assert ms.verify() == []
    assert all(st.applied_at is not None and st.checksum_ok for st in ms.status())


def test_empty_database_pending_is_read_only(make_store, tmp_path: Path,
                                             schema_objects) -> None:
    store = make_store(auto_migrate=False)
    ms = _migrations(store, tmp_path)
    before = schema_objects(store)
    assert ms.current_version() == 0
    pending = ms.pending()
    assert [m.version for m in pending] == list(range(1, ms.registry.latest + 1))
    assert pending[0].name == "initial"
    assert ms.verify() == []
    assert all(st.applied_at is None and st.checksum_ok is None for st in ms.status())
    # Asking did not create anything, not even the version table.
    assert schema_objects(store) == before
    assert not any(name == MIGRATIONS_TABLE for _, name in before)


def test_dry_run_changes_nothing(make_store, tmp_path: Path, schema_objects) -> None:
    store = make_store(auto_migrate=False)
    ms = _migrations(store, tmp_path)
    before = schema_objects(store)
    result = ms.migrate(dry_run=True)
    assert result.dry_run and result.success
    assert result.completed_migrations == [f"{m.version:04d}_{m.name}"
                                           for m in ms.registry.all()]
    assert schema_objects(store) == before
    assert ms.current_version() == 0
    assert not (tmp_path / "backups").exists()
    # A real run then applies everything.
    real = ms.migrate()
    assert real.success and not real.dry_run
    assert ms.current_version() == ms.registry.latest
    assert ms.pending() == []


def test_dry_run_of_a_new_step_on_a_filled_store(store: Store, tmp_path: Path,
                                                 schema_objects) -> None:
    _fill(store)
    reg = MigrationRegistry(store.dialect)
    reg.register(Migration(reg.latest + 1, "add_probe", "CREATE TABLE probe (id INTEGER);"))
    ms = _migrations(store, tmp_path, reg)
    before = _state(store, schema_objects)
    assert [m.name for m in ms.pending()] == ["add_probe"]
    assert ms.migrate(dry_run=True).completed_migrations == [f"{reg.latest:04d}_add_probe"]
    assert _state(store, schema_objects) == before


def test_new_migration_applies_and_is_recorded(store: Store, tmp_path: Path,
                                               schema_objects) -> None:
    _fill(store)
    reg = MigrationRegistry(store.dialect)
    v = reg.latest + 1
    reg.register(Migration(v, "add_probe", "CREATE TABLE probe (id INTEGER PRIMARY KEY);"))
    ms = _migrations(store, tmp_path, reg)
    dump = store.dump()
    result = ms.migrate()
    assert result.success
    assert result.completed_migrations == [f"{v:04d}_add_probe"]
    assert ms.current_version() == v
    assert ("table", "probe") in schema_objects(store)
    assert store.dump() == dump  # user data untouched
    if store.dialect == "sqlite":
        assert result.backup_path is not None and Path(result.backup_path).is_file()
    # Running again is a no-op.
    again = ms.migrate()
    assert again.success and again.completed_migrations == []


def _failing_execute(conn) -> None:
    conn.execute("CREATE TABLE half_done (id INTEGER)")
    conn.execute("INSERT INTO half_done (id) VALUES (1)")
    conn.execute("DELETE FROM user_preferences")
    raise RuntimeError("step exploded half-way")


def _failing_validate(conn) -> None:
    raise RuntimeError("validation found a problem")


@pytest.mark.parametrize("how", ["execute", "validate", "sql", "pre_check"])
def test_failing_migration_rolls_everything_back(store: Store, tmp_path: Path,
                                                 schema_objects, how: str) -> None:
    _fill(store)
    reg = MigrationRegistry(store.dialect)
    base = reg.latest
    # A good step first, so that the failure must also undo a completed step.
    reg.register(Migration(base + 1, "good_step",
                           "CREATE TABLE good_step (id INTEGER);"
                           " CREATE INDEX idx_good_step ON good_step(id);"))
    if how == "execute":
        bad = Migration(base + 2, "bad_step", execute=_failing_execute)
    elif how == "validate":
        bad = Migration(base + 2, "bad_step", "CREATE TABLE bad_step (id INTEGER);"
                        " UPDATE sessions SET metadata = NULL;",
                        validate=_failing_validate)
    elif how == "pre_check":
        bad = Migration(base + 2, "bad_step", "CREATE TABLE bad_step (id INTEGER);",
                        pre_check=_failing_validate)
    else:
        bad = Migration(base + 2, "bad_step",
                        "CREATE TABLE bad_step (id INTEGER);"
                        " DELETE FROM context;"
                        " INSERT INTO no_such_table VALUES (1);")
    reg.register(bad)
    ms = _migrations(store, tmp_path, reg)
    before = _state(store, schema_objects)
    with pytest.raises(MigrationError) as info:
        ms.migrate()
    assert "bad_step" in str(info.value)
    assert _state(store, schema_objects) == before
    assert ms.current_version() == base
    assert [m.name for m in ms.pending()] == ["good_step", "bad_step"]
    # The store still works normally afterwards.
    s = store.create_session("bob")
    assert store.get_session(s.id) == s


def test_failing_first_migration_leaves_empty_database(make_store, tmp_path: Path,
                                                       schema_objects) -> None:
    store = make_store(auto_migrate=False)
    reg = MigrationRegistry(store.dialect)
    reg.register(Migration(reg.latest + 1, "bad_step", execute=_failing_execute))
    ms = _migrations(store, tmp_path, reg)
    before = schema_objects(store)
    with pytest.raises(MigrationError):
        ms.migrate()
    assert schema_objects(store) == before
    assert ms.current_version() == 0


def test_verify_reports_an_edited_migration(store: Store, tmp_path: Path) -> None:
    reg = MigrationRegistry(store.dialect)
    v = reg.latest + 1
    reg.register(Migration(v, "add_probe", "CREATE TABLE probe (id INTEGER);"))
    _migrations(store, tmp_path, reg).migrate()

    edited = MigrationRegistry(store.dialect)
    edited.register(Migration(v, "add_probe", "CREATE TABLE probe (id BIGINT);"))
    ms = _migrations(store, tmp_path, edited)
    problems = ms.verify()
    assert len(problems) == 1
    assert f"migration {v} (add_probe) changed" in problems[0]
    by_version = {st.version: st for st in ms.status()}
    assert by_version[v].checksum_ok is False
    assert all(st.checksum_ok for ver, st in by_version.items() if ver != v)

    # A registry that never heard of the step reports it as unknown.
    builtin = _migrations(store, tmp_path, MigrationRegistry(store.dialect))
    unknown = builtin.verify()
    assert len(unknown) == 1 and "unknown" in unknown[0]


def test_open_refuses_a_newer_database(make_store, store: Store, tmp_path: Path) -> None:
    reg = MigrationRegistry(store.dialect)
    reg.register(Migration(reg.latest + 1, "from_the_future", "CREATE TABLE future (id INTEGER);"))
    _migrations(store, tmp_path, reg).migrate()
    with pytest.raises(MigrationError):
        make_store()


def test_registry_rules() -> None:
    reg = MigrationRegistry("sqlite", load_builtin=False)
    assert reg.latest == 0
    reg.register(Migration(1, "one", "SELECT 1;"))
    with pytest.raises(MigrationError):
        reg.register(Migration(1, "again", "SELECT 1;"))
    with pytest.raises(MigrationError):
        reg.register(Migration(0, "zero", "SELECT 1;"))
    reg.register(Migration(3, "three", "SELECT 1;"))
    with pytest.raises(MigrationError):
        reg.get_path(0, 3)  # 2 is missing
    with pytest.raises(MigrationError):
        reg.get_path(1, 0)  # no downgrades
    with pytest.raises(MigrationError):
        reg.get_path(0, 4)  # beyond the latest
    assert [m.version for m in reg.get_path(0, 1)] == [1]


def test_migrate_from_wrong_version_is_refused(store: Store, tmp_path: Path) -> None:
    ms = _migrations(store, tmp_path)
    with pytest.raises(MigrationError):
        ms.migrate(from_version=0)


def test_checksum_changes_with_text() -> None:
    a = Migration(1, "x", "CREATE TABLE a (id INTEGER);")
    b = Migration(1, "x", "CREATE TABLE a (id BIGINT);")
    assert a.checksum != b.checksum
    assert a.checksum == Migration(1, "x", "CREATE TABLE a (id INTEGER);").checksum


def test_migration_files_match_across_dialects() -> None:
    from statekeep.store.postgres import PostgresStore
    from statekeep.store.sqlite import SQLiteStore

    root = resources.files("statekeep.store") / "sql"
    names = {d.name: sorted(e.name for e in d.iterdir() if e.name.endswith(".sql"))
             for d in root.iterdir() if d.is_dir() and not d.name.startswith("_")}
    # One folder per backend, named after the backend's dialect (which is how
    # the registry finds it), and nothing else.
    assert set(names) == {SQLiteStore.dialect, PostgresStore.dialect}
    first, *others = names.values()
    for other in others:
        assert other == first, "migration numbers or names differ between dialects"
    pattern = re.compile(r"\d{4}_[a-z0-9_]+\.sql")
    assert first and all(pattern.fullmatch(n) for n in first)
    numbers = [int(n[:4]) for n in first]
    assert numbers == list(range(1, len(numbers) + 1))  # no gaps, no repeats
    for dialect, files in names.items():
        reg = MigrationRegistry(dialect)
        assert [f"{m.version:04d}_{m.name}.sql" for m in reg.all()] == files


def test_split_sql() -> None:
    script = (
        "-- leading comment; with a semicolon\n"
        "CREATE TABLE a (x TEXT DEFAULT ';'); CREATE INDEX i ON a(x);\n"
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n"
        "  UPDATE a SET x = 'y;z';\n"
        "END;\n"
        "/* block; comment */ INSERT INTO a VALUES ('--not a comment');\n"
        "-- trailing comment\n"
    )
    out = split_sql(script)
    assert len(out) == 4
    assert out[0].endswith("CREATE TABLE a (x TEXT DEFAULT ';');")
    assert out[1] == "CREATE INDEX i ON a(x);"
    assert out[2].startswith("CREATE TRIGGER t") and out[2].endswith("END;")
    assert out[3].endswith("INSERT INTO a VALUES ('--not a comment');")
    with pytest.raises(MigrationError):
        split_sql("CREATE TABLE a (x INTEGER);\nCREATE TABLE b (")
    assert split_sql("-- only a comment\n\n") == []


def test_split_sql_dollar_quoted_bodies() -> None:
    """PostgreSQL function bodies: ';' and quotes inside $$ or $tag$ are the body's."""
    script = (
        "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "  UPDATE t SET x = 'it''s; fine' WHERE y = 1;\n"
        "  RAISE NOTICE 'unbalanced '' quote; and -- not a comment';\n"
        "  RETURN NULL;\n"
        "END\n"
        "$$;\n"
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $body$ SELECT 1; SELECT $$x;$$::int"
        " $body$;\n"
        "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();\n"
        "CREATE TRIGGER tr2 AFTER UPDATE OF x ON t FOR EACH ROW\n"
        "    WHEN (OLD.x IS DISTINCT FROM NEW.x) EXECUTE PROCEDURE f();\n"
        "SELECT a$b$c, $1, 'a $$ b', \"q$$\" FROM t; -- $$ in a comment\n"
        "SELECT 2;\n"
    )
    out = split_sql(script)
    assert len(out) == 6, out
    assert out[0].startswith("CREATE FUNCTION f()") and out[0].endswith("$$;")
    assert "RETURN NULL;" in out[0]
    assert out[1].endswith("$body$;")
    assert out[2].startswith("CREATE TRIGGER tr ") and out[2].endswith("f();")
    assert out[3].startswith("CREATE TRIGGER tr2") and out[3].endswith("PROCEDURE f();")
    assert out[4].startswith("SELECT a$b$c") and out[4].endswith("FROM t;")
    assert out[5].endswith("SELECT 2;")
    # An unterminated dollar quote is an incomplete statement, not a split point.
    with pytest.raises(MigrationError):
        split_sql("CREATE FUNCTION f() AS $$ BEGIN; END;")
    with pytest.raises(MigrationError):
        split_sql("CREATE FUNCTION f() AS $a$ x; $b$;")
    # SQLite trigger bodies still end at END.
    assert len(split_sql("CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; SELECT 2; END;"
                         " SELECT 3;")) == 2


def test_builtin_migrations_split_into_whole_statements() -> None:
    for dialect in ("sqlite", "postgresql"):
        for m in MigrationRegistry(dialect).all():
            for stmt in split_sql(m.sql):
                body = "\n".join(ln for ln in stmt.splitlines()
                                 if not ln.strip().startswith("--"))
                assert body.rstrip().endswith(";"), (dialect, m.name, stmt[-80:])
