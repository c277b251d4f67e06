"""Statement statistics, the result cache, and the catalog SQL of query optimisation.

The store owns the pieces that must exist before its first connection: the
statement observer that its connections call (``sqlite.py``, ``postgres.py``),
the per-shape statistics it feeds (``store.query_stats``), the per-table write
generations, and the result cache those generations keep honest
(``store.query_cache``, used through :meth:`IndexStore.cached_query`). The
catalog reads and the index DDL of :mod:`statekeep.query` live here too,
because they are dialect SQL and the store is where dialects live.

Catalog reads go straight to the driver, past the observer: they are the
optimiser looking at the database, not the application's workload, and must
not show up in the statistics they are used to judge.

Which other processes' writes the result cache notices (docs/query.md):

* SQLite: every lookup first reads ``PRAGMA data_version`` on the thread's
  connection; it changes when any *other* connection committed, and then the
  whole cache is treated as stale (the pragma does not say which tables).
  Writes through this store's own connections are tracked per table.
* PostgreSQL: there is no such cheap signal, so entries live at most
  :data:`PG_RESULT_TTL` seconds; within that, another process's write may be
  invisible to cached reads. Writes through this store are tracked per table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import logging
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from statekeep.config import StateConfig
from statekeep.errors import ValidationError
from statekeep.query import sqltext
from statekeep.query.cache import QueryCache
from statekeep.query.catalog import Catalog, IndexInfo, dependency_map
from statekeep.query.observer import StatementObserver, TableGenerations
from statekeep.query.stats import QueryStatistics
from statekeep.store.base import Change, StoreCore, utcnow

__all__ = ["PG_RESULT_TTL", "SQLITE_RESULT_TTL", "IndexStore"]

log = logging.getLogger("statekeep.query")

#: Seconds a cached result may be served on PostgreSQL: the bound on how long
#: another process's write can go unnoticed by cached reads.
PG_RESULT_TTL = 1.0
#: On SQLite entries are checked against data_version at every lookup; the TTL
#: only returns the memory of entries nobody asks for again.
SQLITE_RESULT_TTL = 3600.0
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: Parameter types whose equality is value equality (so they can key the cache).
_KEY_TYPES = (type(None), bool, int, float, str, bytes, dt.datetime, dt.date, dt.time,
              decimal.Decimal, uuid.UUID)


@dataclass(frozen=True, slots=True)
class _CachePlan:
    shape: str
    deps: tuple[str, ...]


def _param_key(params: Sequence[Any]) -> tuple[Any, ...]:
    """The parameters as part of a cache key: typed, because ``1 == True == 1.0``
    in Python but not for the database."""
    out = []
    for p in params:
        if not isinstance(p, _KEY_TYPES):
            raise TypeError(type(p).__name__)
        out.append((type(p), p))
    return tuple(out)


def _quote(name: str) -> str:
    """A catalog-supplied name as a quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


class _SeenVersion(threading.local):
    conn: Any = None
    version: int = -1


class IndexStore(StoreCore):
    """Statement statistics, the result cache, and catalog access for the optimiser."""

    def __init__(self, config: StateConfig, *, clock: Callable[[], dt.datetime] = utcnow
                 ) -> None:
        super().__init__(config, clock=clock)
        #: Per-shape statement statistics of this process (``.snapshot()``).
        self.query_stats = QueryStatistics(enabled=config.query_stats)
        #: Per-table write counters, bumped after each commit that wrote the table.
        self.table_generations = TableGenerations()
        # The connections' hook: needed for statistics and for the cache's write
        # tracking; with both off, connections are plain and pay nothing.
        self._observer: StatementObserver | None = None
        if config.query_stats or config.query_cache_bytes > 0:
            self._observer = StatementObserver(self.query_stats, self.table_generations)
        #: Rows of deterministic reads (None when query_cache_bytes is 0).
        self.query_cache: QueryCache | None = None
        if config.query_cache_bytes > 0:
            ttl = SQLITE_RESULT_TTL if self.dialect == "sqlite" else PG_RESULT_TTL
            self.query_cache = QueryCache(config.query_cache_bytes, ttl_seconds=ttl,
                                          generations=self.table_generations)
        self._catalog_data: Catalog | None = None
        self._catalog_epoch = -1
        self._schema_mark: Any = None
        self._cache_plans: dict[tuple[str, frozenset[str] | None], _CachePlan | str] = {}
        self._seen = _SeenVersion()
        self._listening = False

    # -- the result cache ---------------------------------------------------

    def cached_query(self, sql: str, params: Sequence[Any] = (), *,
                     tables: Iterable[str] | None = None) -> list[Any]:
        """All rows of a read, from the result cache when an equal read's rows are
        still valid there.

        Only a SELECT whose result depends on nothing but its parameters and the
        tables it reads is cached: one that reads the clock, a random generator
        or a sequence runs every time (a ``?`` bound to "now" is a parameter, so
        it is correct -- and useless to cache). The tables are found in the text
        (every table of this store it names); ``tables`` adds more, for reads
        through functions the text does not show. Inside a transaction the cache
        is bypassed: the transaction's own uncommitted writes must be seen.

        The rows are shared with the cache: treat them as read-only.
        """
        cache = self.query_cache
        if cache is None or self._tx.conn is not None:
            if cache is not None:
                cache.bypassed += 1
            return self._fetch_all(sql, params)
        plan = self._cache_plan(sql, tables)
        try:
            if isinstance(plan, str):
                raise TypeError(plan)
            key = (plan.shape, _param_key(params))
        except TypeError:
            cache.bypassed += 1
            return self._fetch_all(sql, params)
        if self.dialect == "sqlite":
            self._notice_foreign_commits()
        rows = cache.get(key)
        if rows is not None:
            return list(rows)
        if not self._listening:
            self._listening = True
            self.add_change_listener(self._on_change)
        stamp = self.table_generations.stamp(plan.deps)
        fetched = tuple(self._fetch_all(sql, params))
        cache.put(key, plan.deps, stamp, fetched)
        self.query_stats.note_rows(sql, len(fetched))
        return list(fetched)

    def cacheability(self, sql: str, *, tables: Iterable[str] | None = None) -> str | None:
        """Why :meth:`cached_query` would not cache this statement, or None."""
        plan = self._cache_plan(sql, tables)
        if isinstance(plan, str):
            return plan
        return None if self.query_cache is not None else "the result cache is off"

    def query_dependencies(self, sql: str) -> tuple[str, ...]:
        """The tables whose writes invalidate a cached result of ``sql``."""
        plan = self._cache_plan(sql, None)
        return () if isinstance(plan, str) else plan.deps

    def _fetch_all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.reading() as conn:
            return list(conn.execute(sql, params).fetchall())

    def _on_change(self, change: Change) -> None:
        if change.entity_type == "store" and self.query_cache is not None:
            self.query_cache.clear()  # a recovery or restore rewrote rows of any table

    def _cache_plan(self, sql: str, tables: Iterable[str] | None) -> _CachePlan | str:
        given = None if tables is None else frozenset(t.lower() for t in tables)
        catalog = self.catalog()
        found = self._cache_plans.get((sql, given))
        if found is not None:
            return found
        text = sqltext.parse(sql)
        if text.kind != "select":
            raise ValidationError(f"cached_query runs reads only, not {text.kind} statements:"
                                  f" {text.shape[:120]}", field="sql")
        plan: _CachePlan | str
        known = catalog.tables | set(catalog.views)
        for t in given or ():
            if t not in known:
                raise ValidationError(f"tables names {t!r}, which is not a table or view of"
                                      " this store", field="tables")
        reason = sqltext.nondeterministic_reason(sql)
        if reason is None and re.search(r"\bFOR\s+(?:NO\s+KEY\s+)?(?:UPDATE|SHARE)\b",
                                        sql, re.I):
            reason = "it locks rows (FOR UPDATE / FOR SHARE)"
        read = sqltext.mentioned(sql, known) | (given or frozenset())
        if reason is not None:
            plan = f"not deterministic: {reason}"
        elif not read:
            plan = "it reads no table of this store"
        else:
            plan = _CachePlan(text.shape, catalog.dependencies(read))
        if len(self._cache_plans) >= 4096:
            self._cache_plans.clear()
        self._cache_plans[(sql, given)] = plan
        return plan

    def _notice_foreign_commits(self) -> None:
        """Treat the whole cache as stale when another connection committed since
        this thread last looked (``PRAGMA data_version``; SQLite only)."""
        self._check_open()
        conn = self._acquire()
        try:
            version = sqlite3.Connection.execute(
                conn, "PRAGMA data_version").fetchone()[0]  # type: ignore[arg-type]
        except sqlite3.Error as exc:
            self._reraise(exc)
        finally:
            self._release(conn)
        seen = self._seen
        if seen.conn is not conn or seen.version != version:
            self.table_generations.bump_all()
            seen.conn, seen.version = conn, version

    # -- catalog --------------------------------------------------------------

    def _raw_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a catalog query, unobserved (``?`` on SQLite, ``%s`` on PostgreSQL)."""
        self._check_open()
        conn = self._acquire()
        try:
            if self.dialect == "sqlite":
                cur = sqlite3.Connection.execute(conn, sql, params)  # type: ignore[arg-type]
            else:
                cur = conn.raw.execute(sql, params)  # type: ignore[attr-defined]
            return [tuple(r) for r in cur.fetchall()]
        except self.driver_errors as exc:
            self._reraise(exc)
        finally:
            self._release(conn)

    def catalog(self) -> Catalog:
        """Tables, views and write dependencies (read once; again after DDL)."""
        epoch = self.table_generations.epoch
        found = self._catalog_data
        if found is not None and (self._catalog_epoch == epoch or not self._ddl_since()):
            self._catalog_epoch = epoch
            return found
        self._schema_mark = self._schema_version()
        catalog = self._read_catalog()
        self._catalog_data, self._catalog_epoch = catalog, epoch
        self._cache_plans.clear()
        return catalog

    def _ddl_since(self) -> bool:
        return bool(self._schema_mark != self._schema_version())

    def _schema_version(self) -> Any:
        if self.dialect == "sqlite":
            return self._raw_rows("PRAGMA schema_version")[0][0]
        return self._raw_rows(
            "SELECT count(*), COALESCE(max(c.oid::int8), 0),"
            " (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = ANY(array_agg(c.oid))),"
            " (SELECT count(*) FROM pg_constraint k WHERE k.conrelid = ANY(array_agg(c.oid)))"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema()")[0]

    def _read_catalog(self) -> Catalog:
        affects: dict[str, set[str]] = {}
        views: dict[str, frozenset[str]] = {}
        if self.dialect == "sqlite":
            objects = self._raw_rows(
                "SELECT type, lower(name), lower(tbl_name), sql FROM sqlite_master"
                " WHERE type IN ('table', 'view', 'trigger')")
            tables = {name for kind, name, _, _ in objects if kind == "table"}
            for kind, _name, on, sql in objects:
                if kind == "trigger" and sql:
                    affects.setdefault(on, set()).update(sqltext.write_targets(sql))
            for t in sorted(tables):
                for row in self._raw_rows(f"PRAGMA foreign_key_list({_quote(t)})"):
                    parent, on_update, on_delete = str(row[2]).lower(), row[5], row[6]
                    if {on_update, on_delete} & {"CASCADE", "SET NULL", "SET DEFAULT"}:
                        affects.setdefault(parent, set()).add(t)
            view_sql = {name: sql for kind, name, _, sql in objects if kind == "view"}
        else:
            tables = {str(r[0]) for r in self._raw_rows(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm', 'f')")}
            for child, parent in self._raw_rows(
                    "SELECT ch.relname, pa.relname FROM pg_constraint con"
                    " JOIN pg_class ch ON ch.oid = con.conrelid"
                    " JOIN pg_class pa ON pa.oid = con.confrelid"
                    " JOIN pg_namespace n ON n.oid = con.connamespace"
                    " WHERE con.contype = 'f' AND n.nspname = current_schema()"
                    " AND (con.confdeltype IN ('c', 'n', 'd')"
                    " OR con.confupdtype IN ('c', 'n', 'd'))"):
                affects.setdefault(str(parent), set()).add(str(child))
            for on, source in self._raw_rows(
                    "SELECT c.relname, p.prosrc FROM pg_trigger t"
                    " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE NOT t.tgisinternal AND n.nspname = current_schema()"):
                targets = sqltext.write_targets(str(source or ""))
                if re.search(r"\bEXECUTE\b", str(source or ""), re.I):
                    targets.add(sqltext.ALL_TABLES)  # dynamic SQL: could write anything
                affects.setdefault(str(on), set()).update(targets)
            view_sql = {str(n): str(d) for n, d in self._raw_rows(
                "SELECT viewname, definition FROM pg_views WHERE schemaname = current_schema()")}
        for name, sql in view_sql.items():
            views[name] = frozenset(sqltext.mentioned(sql or "", tables) or tables)
        return Catalog(tables=frozenset(tables), views=views,
                       depends=dependency_map(tables, affects))

    # -- plans ----------------------------------------------------------------

    def explain_raw(self, sql: str) -> Any:
        """The database's plan for one statement, parameters unbound: SQLite's
        ``EXPLAIN QUERY PLAN`` rows, or PostgreSQL's ``EXPLAIN (FORMAT JSON)`` of
        the generic plan (the one a prepared statement uses whatever the values).

        Nothing is executed; only single SELECT/INSERT/UPDATE/DELETE statements
        are accepted (the text may come from saved statistics or a command line).
        """
        text = sqltext.parse(sql)
        if text.kind not in ("select", "insert", "update", "delete"):
            raise ValidationError(f"only SELECT, INSERT, UPDATE and DELETE statements can be"
                                  f" explained, not {text.kind}: {text.shape[:120]}",
                                  field="sql")
        if not sqltext.single_statement(sql):
            raise ValidationError("the statement to explain holds more than one statement",
                                  field="sql")
        n = sqltext.count_params(sql)
        if self.dialect == "sqlite":
            return self._raw_rows(f"EXPLAIN QUERY PLAN {sql}", (None,) * n)
        return self._pg_explain(sqltext.numbered_params(sql), n)

    def _pg_explain(self, numbered: str, n: int) -> Any:
        self._check_open()
        conn = self._acquire()
        raw = conn.raw  # type: ignore[attr-defined]
        try:
            if n == 0:
                return raw.execute(f"EXPLAIN (FORMAT JSON) {numbered}").fetchone()[0]
            raw.execute("BEGIN")
            try:
                # Deallocated inside the transaction: psycopg answers a ROLLBACK
                # by deallocating everything, or not, depending on its own cache.
                if raw.execute("SELECT 1 FROM pg_prepared_statements"
                               " WHERE name = 'sk_explain'").fetchone():
                    raw.execute("DEALLOCATE sk_explain")
                raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                raw.execute(f"PREPARE sk_explain AS {numbered}")
                nulls = ", ".join(["NULL"] * n)
                plan = raw.execute(
                    f"EXPLAIN (FORMAT JSON) EXECUTE sk_explain({nulls})").fetchone()[0]
                raw.execute("DEALLOCATE sk_explain")
                return plan
            finally:
                raw.execute("ROLLBACK")
        except self.driver_errors as exc:
            self._reraise(exc)
        finally:
            self._release(conn)

    def table_rows(self, table: str) -> int:
        """Rows in ``table``: PostgreSQL's estimate (reltuples) when it has one, else a count."""
        if table not in self.catalog().tables:
            raise ValidationError(f"{table!r} is not a table of this store", field="table")
        if self.dialect == "sqlite":  # a count is cheap at the sizes SQLite holds
            return int(self._raw_rows(f"SELECT count(*) FROM {_quote(table)}")[0][0])
        row = self._raw_rows("SELECT c.reltuples FROM pg_class c JOIN pg_namespace n"
                             " ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"
                             " AND c.relname = %s", (table,))
        if row and row[0][0] is not None and float(row[0][0]) >= 0:
            return int(float(row[0][0]))
        return int(self._raw_rows(f"SELECT count(*) FROM {_quote(table)}")[0][0])

    # -- indexes ----------------------------------------------------------------

    def list_indexes(self) -> list[IndexInfo]:
        """Every index of the store's tables, with what the database knows of its use."""
        return self._sqlite_indexes() if self.dialect == "sqlite" else self._pg_indexes()

    def _sqlite_indexes(self) -> list[IndexInfo]:
        sizes: dict[str, int] = {}
        try:
            sizes = {str(n): int(s) for n, s in self._raw_rows(
                "SELECT name, pgsize FROM dbstat WHERE aggregate = TRUE")}
        except Exception:  # dbstat not compiled in, or too old for aggregate
            log.debug("dbstat is not available; index sizes unknown", exc_info=True)
        stats: dict[str, str] = {}
        with contextlib.suppress(Exception):  # no sqlite_stat1 until ANALYZE ran
            stats = {str(i): str(s) for _, i, s in self._raw_rows(
                "SELECT tbl, idx, stat FROM sqlite_stat1 WHERE idx IS NOT NULL")}
        defs = {str(n): (str(t), s) for n, t, s in self._raw_rows(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'")}
        table_names = sorted({t for t, _ in defs.values()})
        out: list[IndexInfo] = []
        rows_of: dict[str, int | None] = {}
        for table in table_names:
            for _, name, unique, origin, partial in self._raw_rows(
                    f"PRAGMA index_list({_quote(table)})"):
                cols = tuple(
                    "<expr>" if cid == -2 else str(col)
                    for _, cid, col, _, _, key in self._raw_rows(
                        f"PRAGMA index_xinfo({_quote(name)})") if key)
                stat = stats.get(name)
                if table not in rows_of:
                    rows_of[table] = int(stat.split()[0]) if stat else None
                out.append(IndexInfo(
                    name=str(name), table=table, columns=cols, unique=bool(unique),
                    constraint=origin in ("pk", "u"), partial=bool(partial),
                    definition=defs.get(name, (table, None))[1], size_bytes=sizes.get(name),
                    table_rows=rows_of[table], stat=stat))
        return out

    def _pg_indexes(self) -> list[IndexInfo]:
        out = []
        for (name, table, scans, read, fetched, size, unique, primary, constraint, definition,
             partial, reltuples, cols) in self._raw_rows(
                "SELECT s.indexrelname, s.relname, s.idx_scan, s.idx_tup_read, s.idx_tup_fetch,"
                " pg_relation_size(s.indexrelid), i.indisunique, i.indisprimary,"
                " EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = s.indexrelid),"
                " pg_get_indexdef(s.indexrelid), i.indpred IS NOT NULL, c.reltuples,"
                " ARRAY(SELECT pg_get_indexdef(s.indexrelid, k, true)"
                "       FROM generate_series(1, i.indnkeyatts) AS k)"
                " FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid"
                " JOIN pg_class c ON c.oid = s.relid"
                " WHERE s.schemaname = current_schema() ORDER BY s.relname, s.indexrelname"):
            out.append(IndexInfo(
                name=str(name), table=str(table), columns=tuple(str(c) for c in cols),
                unique=bool(unique), constraint=bool(primary or constraint),
                partial=bool(partial), definition=str(definition), size_bytes=int(size),
                scans=int(scans or 0), tuples_read=int(read or 0),
                tuples_fetched=int(fetched or 0),
                table_rows=None if reltuples is None or float(reltuples) < 0
                else int(float(reltuples))))
        return out

    def index_stats_since(self) -> dt.datetime | None:
        """When PostgreSQL's index counters were last reset (None: never, or SQLite)."""
        if self.dialect == "sqlite":
            return None
        row = self._raw_rows("SELECT stats_reset FROM pg_stat_database"
                             " WHERE datname = current_database()")
        value = row[0][0] if row else None
        return value if isinstance(value, dt.datetime) else None

    def foreign_key_columns(self) -> set[tuple[str, str]]:
        """(table, column) of every foreign key's first column: an index leading with
        one serves the referential checks and cascades plans do not show."""
        out: set[tuple[str, str]] = set()
        if self.dialect == "sqlite":
            for t in sorted(self.catalog().tables):
                out |= {(t, str(r[3]).lower()) for r in self._raw_rows(
                    f"PRAGMA foreign_key_list({_quote(t)})") if r[1] == 0}
            return out
        for table, col in self._raw_rows(
                "SELECT c.relname, a.attname FROM pg_constraint k"
                " JOIN pg_class c ON c.oid = k.conrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]"
                " WHERE k.contype = 'f' AND n.nspname = current_schema()"):
            out.add((str(table), str(col)))
        return out

    def analyze(self) -> None:
        """Refresh the planner's statistics (SQLite: sqlite_stat1; PostgreSQL: ANALYZE)."""
        self._check_open()
        conn = self._acquire()
        try:
            if self.dialect == "sqlite":
                sqlite3.Connection.execute(conn, "ANALYZE")  # type: ignore[arg-type]
            else:
                conn.raw.execute("ANALYZE")  # type: ignore[attr-defined]
        except self.driver_errors as exc:
            self._reraise(exc)
        finally:
            self._release(conn)

    def create_index_ddl(self, *, name: str, table: str, keys_sql: str,
                         where_sql: str | None) -> str:
        """Create one index, if absent, and return the DDL that ran.

        Callers pass parts the index advisor generated and validated against its
        allow-list (statekeep.query.advisor); the name and table are checked here
        once more. On PostgreSQL the index is built ``CONCURRENTLY`` outside any
        transaction (writers are not blocked), a failed build's invalid leftover
        is dropped, and the table is analysed so the planner knows the new key.
        """
        if not _NAME.fullmatch(name) or table not in self.catalog().tables:
            raise ValidationError(f"refusing index {name!r} on {table!r}: not a generated"
                                  " name on a table of this store", field="name")
        if self._tx.conn is not None:
            raise ValidationError("indexes are not created inside a transaction",
                                  field="name")
        where = f" WHERE {where_sql}" if where_sql else ""
        if self.dialect == "sqlite":
            ddl = (f"CREATE INDEX IF NOT EXISTS {_quote(name)} ON {_quote(table)}"
                   f" ({keys_sql}){where}")
            with self.atomic() as conn:
                conn.execute(ddl)
            return ddl
        ddl = (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_quote(name)} ON {_quote(table)}"
               f" ({keys_sql}){where}")
        self._check_open()
        conn = self._acquire()
        raw = conn.raw  # type: ignore[attr-defined]
        try:
            try:
                raw.execute(ddl)
            except self.driver_errors:
                with contextlib.suppress(*self.driver_errors):
                    raw.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_quote(name)}")
                raise
            valid = raw.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c"
                                " ON c.oid = i.indexrelid JOIN pg_namespace n"
                                " ON n.oid = c.relnamespace WHERE c.relname = %s"
                                " AND n.nspname = current_schema()", (name,)).fetchone()
            if valid is not None and not valid[0]:  # an earlier interrupted build
                raw.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_quote(name)}")
                raw.execute(ddl)
            raw.execute(f"ANALYZE {_quote(table)}")
        except self.driver_errors as exc:
            self._reraise(exc)
        finally:
            self._release(conn)
        self.table_generations.bump_all()  # plans changed; the catalog is re-read
        return ddl

    # -- saved notes (statekeep_meta) -------------------------------------------

    def meta_get(self, key: str) -> Any:
        """A JSON value kept in ``statekeep_meta`` under ``key``, or None."""
        row = self.query_one("SELECT value FROM statekeep_meta WHERE key = ?", (key,))
        if row is None:
            return None
        try:
            return orjson.loads(row[0])
        except orjson.JSONDecodeError:
            return None

    def meta_update(self, key: str, update: Callable[[Any], Any]) -> Any:
        """Replace the JSON value under ``key`` with ``update(old)`` in one write
        transaction (two processes merging never lose each other's update)."""
        with self.atomic() as conn:
            conn.execute("INSERT INTO statekeep_meta (key, value) VALUES (?, 'null')"
                         " ON CONFLICT (key) DO NOTHING", (key,))
            row = conn.execute(f"SELECT value FROM statekeep_meta WHERE key = ?{self.row_lock}",
                               (key,)).fetchone()
            try:
                old = orjson.loads(row[0])
            except orjson.JSONDecodeError:
                old = None
            new = update(old)
            conn.execute("UPDATE statekeep_meta SET value = ? WHERE key = ?",
                         (orjson.dumps(new).decode(), key))
        return new

    def meta_items(self, prefix: str) -> dict[str, Any]:
        """Every JSON value whose key starts with ``prefix``, by key."""
        with self.reading() as conn:
            rows = conn.execute("SELECT key, value FROM statekeep_meta"
                                " WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)).fetchall()
        out: dict[str, Any] = {}
        for key, value in rows:
            with contextlib.suppress(orjson.JSONDecodeError):
                out[str(key)] = orjson.loads(value)
        return out
