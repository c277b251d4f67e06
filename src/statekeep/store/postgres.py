"""The PostgreSQL backend (psycopg 3 + psycopg_pool): the store for many machines.

Pooled connections run in autocommit mode because :class:`StoreCore` issues
``BEGIN``/``COMMIT``/``SAVEPOINT`` itself, so a read outside a transaction is
one round trip. Session settings ride in the startup packet: ``TimeZone=UTC``,
``lock_timeout`` = ``busy_timeout_ms`` (a lock wait fails like SQLite's busy
timeout instead of hanging) and ``search_path`` for a ``?schema=NAME`` URL.

READ COMMITTED lets two writers read one row and both act on it (two
``complete``/``fail`` calls on a task would both pass the state machine), which
SQLite's single writer rules out. ``row_lock`` restores that per row: the
entity modules append it to the reads a write transaction makes of rows it is
about to change, and ``FOR NO KEY UPDATE`` is a lock that foreign-key checks
and plain reads pass. Upserts insert first (``ON CONFLICT DO NOTHING``), so
two writers of one new key never both miss it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import errors as pge
from psycopg.adapt import AdaptersMap
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from statekeep import errors as err
from statekeep.config import StateConfig
from statekeep.store.base import Connection, utcnow
from statekeep.store.protocol import Store

__all__ = ["CONNECT_TIMEOUT", "PostgresStore"]

log = logging.getLogger("statekeep.store")

RawConnection = psycopg.Connection[TupleRow]

#: Seconds to wait for the server when the URL sets no ``connect_timeout``.
CONNECT_TIMEOUT = 5
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|[?%]")
_EXPONENT = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?e\+\d+')
#: Transaction states in which a statement's writes are not committed yet.
_IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR,
                   TransactionStatus.ACTIVE)


def _parse_url(url: str) -> tuple[dict[str, Any], str | None]:
    """libpq parameters of a URL, and its ``schema`` (ours, so libpq never sees it)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    if len(schemas) > 1:
        raise err.ConfigError("the PostgreSQL URL names more than one schema")
    schema = schemas[0] if schemas else None
    if schema is not None and not _SCHEMA_RE.fullmatch(schema):  # it goes into search_path
        raise err.ConfigError(f"schema {schema!r} in the PostgreSQL URL is not a valid name: use"
                              " lowercase letters, digits and _, not starting with a digit,"
                              " at most 63 characters")
    rest = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
    try:
        return conninfo_to_dict(urlunsplit(parts._replace(query=rest))), schema
    except psycopg.Error as exc:
        raise err.ConfigError(f"invalid PostgreSQL URL: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    """The server's message and detail, without psycopg's multi-line decoration."""
    diag = getattr(exc, "diag", None)
    if diag is not None and diag.message_primary:
        detail = f" ({diag.message_detail})" if diag.message_detail else ""
        return f"{diag.message_primary}{detail}"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _plain(m: re.Match[bytes]) -> bytes:
    """``1e+16`` as ``10000000000000000.0``: jsonb keeps numbers as decimals and would
    give the float back as an integer; a written fraction digit keeps it a float."""
    token = m.group()
    return token if token[:1] == b'"' else format(Decimal(token.decode()), "f").encode() + b".0"


def _encoded(data: bytes) -> bytes:
    """The jsonb ``dumps``: values reach the driver already encoded by codec.dumps."""
    return data


def _compile(sql: str) -> str:
    """The shared SQL's ``?`` placeholders as ``%s``, with literal ``%`` escaped."""
    return _TOKEN.sub(lambda m: "%s" if m.group() == "?" else m.group().replace("%", "%%"), sql)


class _PgConnection:
    """A pooled psycopg connection that speaks the shared SQL's ``?`` placeholders."""

    __slots__ = ("_store", "raw")

    def __init__(self, raw: RawConnection, store: PostgresStore) -> None:
        self.raw = raw
        self._store = store

    def execute(self, sql: str, params: Sequence[Any] | None = None, /) -> psycopg.Cursor[Any]:
        observer = self._store._observer
        if observer is None:
            return self._run(sql, params)
        cur: psycopg.Cursor[Any] = observer.observe(self._run, sql, params, id(self.raw),
                                                    self._in_transaction)
        return cur

    def _in_transaction(self) -> bool:
        return self.raw.info.transaction_status in _IN_TRANSACTION

    def _run(self, sql: str, params: Sequence[Any] | None = None, /) -> psycopg.Cursor[Any]:
        raw = self.raw
        status = raw.info.transaction_status
        if params is None:  # BEGIN/COMMIT/SAVEPOINT and migration DDL go verbatim
            if sql == "COMMIT" and status is TransactionStatus.INERROR:
                # The server would answer this COMMIT with a silent ROLLBACK.
                raise err.StoreError("the transaction was aborted by an earlier error and has"
                                     " been rolled back; nothing was written")
            return raw.execute(sql)
        text = self._store._stmt(sql)
        try:
            return raw.execute(text, params)
        except psycopg.OperationalError:
            if status is not TransactionStatus.IDLE or not raw.broken:
                raise
            self._store._replace(self)  # a read on a dead pooled connection: retry once
            return self.raw.execute(text, params)

    def executemany(self, sql: str, seq: Any, /) -> psycopg.Cursor[Any]:
        observer = self._store._observer
        if observer is None:
            return self._run_many(sql, seq)
        cur: psycopg.Cursor[Any] = observer.observe(self._run_many, sql, seq, id(self.raw),
                                                    self._in_transaction)
        return cur

    def _run_many(self, sql: str, seq: Any) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor()
        cur.executemany(self._store._stmt(sql), seq)
        return cur


class PostgresStore(Store):
    """Store on a PostgreSQL database, or on one schema of it."""

    dialect = "postgresql"
    row_lock = " FOR NO KEY UPDATE"
    driver_errors = (psycopg.Error, PoolTimeout)

    def __init__(self, config: StateConfig, *, clock: Any = utcnow) -> None:
        super().__init__(config, clock=clock)
        params, self.schema = _parse_url(config.db)
        host = params.get("host") or "localhost"
        port = f":{params['port']}" if params.get("port") else ""
        user = f"{params['user']}@" if params.get("user") else ""
        self.location = f"postgresql://{user}{host}{port}/{params.get('dbname', '')}" + (
            f"?schema={self.schema}" if self.schema else "")
        options = [params.pop("options", ""), "-c TimeZone=UTC",
                   f"-c lock_timeout={int(config.busy_timeout_ms)}",
                   f"-c search_path={self.schema}" if self.schema else ""]
        params["options"] = " ".join(o for o in options if o)
        params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        params.setdefault("application_name", "statekeep")
        self._connect_timeout = float(params["connect_timeout"])
        self._conninfo = make_conninfo("", **params)
        self._adapters = AdaptersMap(psycopg.adapters)
        set_json_loads(orjson.loads, self._adapters)
        set_json_dumps(_encoded, self._adapters)
        self._stmts: dict[str, str] = {}
        self._orphans: list[ConnectionPool[RawConnection]] = []
        self._prepare_schema()
        self._pid = os.getpid()
        self._pool = self._new_pool()

    # -- connections ----------------------------------------------------

    def _prepare_schema(self) -> None:
        """Fail fast with the server's own reason, and create a missing schema."""
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as probe:
                if self.schema and probe.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                                 (self.schema,)).fetchone() is None:
                    probe.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        except psycopg.OperationalError as exc:
            raise err.StoreUnavailableError(
                f"cannot connect to PostgreSQL at {self.location}: {_describe(exc)}") from None
        except psycopg.Error as exc:
            raise err.ConfigError(f"schema {self.schema!r} does not exist on {self.location} and"
                                  f" cannot be created: {_describe(exc)}") from None

    @property
    def conninfo(self) -> str:
        """The connection parameters the pool uses (host, credentials, schema), for
        the few components that need a connection of their own (LISTEN/NOTIFY)."""
        return self._conninfo

    def _new_pool(self) -> ConnectionPool[RawConnection]:
        return ConnectionPool(self._conninfo, open=True, name="statekeep", num_workers=1,
                              min_size=self.config.pool_min_size,
                              max_size=self.config.pool_max_size,
                              kwargs={"autocommit": True, "context": self._adapters})

    def _acquire(self) -> Connection:
        if self._pid != os.getpid():
            # The parent's sockets must never be used (or closed) by a child:
            # keep the inherited pool alive but untouched and start afresh.
            self._orphans.append(self._pool)
            self._pool, self._pid = self._new_pool(), os.getpid()
        try:
            return _PgConnection(self._pool.getconn(), self)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    def _release(self, conn: Connection) -> None:
        self._pool.putconn(cast(_PgConnection, conn).raw)

    def _replace(self, conn: _PgConnection) -> None:
        """Swap a connection the server dropped (restart, idle kill) for a live one."""
        log.warning("PostgreSQL connection to %s was lost; reconnecting", self.location)
        self._pool.check()  # its idle siblings probably died too
        fresh = self._pool.getconn(timeout=self._connect_timeout + 1)
        self._pool.putconn(conn.raw)
        conn.raw = fresh

    snapshot_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    hours_since_sql = "EXTRACT(EPOCH FROM (?::timestamptz - {col}))::float8 / 3600.0"

    def _begin(self, conn: Connection) -> None:
        pg = cast(_PgConnection, conn)
        try:
            pg.raw.execute("BEGIN")
        except psycopg.OperationalError:
            if not pg.raw.broken:
                raise
            self._replace(pg)  # nothing ran yet, so starting over is safe
            pg.raw.execute("BEGIN")

    def _stmt(self, sql: str) -> str:
        if (stmt := self._stmts.get(sql)) is None:
            if len(self._stmts) >= 4096:  # dynamic SQL (IN lists) must not grow it forever
                self._stmts.clear()
            stmt = self._stmts[sql] = _compile(sql)
        return stmt

    # -- values -----------------------------------------------------------

    def ts(self, value: datetime) -> datetime:
        return value

    def ts_out(self, value: Any) -> datetime:
        # Sessions run with TimeZone=UTC, so this is normally already UTC.
        return value if value.tzinfo is UTC else cast(datetime, value.astimezone(UTC))

    def json_in(self, data: bytes) -> Jsonb:
        if b"e+" in data:  # rare: only then can a float turn into an integer (see _plain)
            data = _EXPONENT.sub(_plain, data)
        return Jsonb(data)  # sent byte for byte: these connections' jsonb dumps is _encoded

    def json_out(self, value: Any) -> Any:
        return value  # json/jsonb columns arrive decoded (orjson loader)

    # -- errors -----------------------------------------------------------

    def _translate(self, exc: Exception) -> err.StatekeepError:
        if isinstance(exc, err.StatekeepError):
            return exc
        msg, where = _describe(exc), self.location
        state: str = getattr(exc, "sqlstate", None) or ""
        if state == "23505":
            return err.DuplicateError(f"already exists: {msg}")
        if state == "23503":
            return err.ConflictError(f"breaks a reference between entities: {msg}")
        if state == "22P05":
            return err.ValidationError(f"PostgreSQL cannot store NUL (\\u0000) in text: {msg}")
        if state[:2] in ("22", "23") or isinstance(exc, psycopg.DataError):
            return err.ValidationError(f"rejected by the schema: {msg}")
        if state[:2] == "40":  # serialization failure, deadlock
            return err.ConflictError(f"lost a race with a concurrent write; retry: {msg}")
        if state in ("55P03", "57014"):  # lock_timeout, statement_timeout
            wait = self.config.busy_timeout_ms
            return err.StoreError(f"{where} stayed locked for more than {wait} ms: {msg}")
        if isinstance(exc, PoolTimeout):
            return err.StoreUnavailableError(f"no connection to {where} became free: {msg}")
        if isinstance(exc, psycopg.OperationalError):
            return err.StoreUnavailableError(f"PostgreSQL at {where} is unreachable: {msg}")
        if isinstance(exc, psycopg.Error):
            return err.StoreError(f"PostgreSQL error on {where}: {msg}")
        return err.StoreError(f"unexpected error on {where}: {type(exc).__name__}: {msg}")

    # -- maintenance ------------------------------------------------------

    def integrity_problems(self) -> list[str]:
        """Orphans, invalid indexes, amcheck findings (own connection: a failed check
        must not poison the caller's transaction)."""
        self._check_open()
        conn = cast(_PgConnection, self._acquire())
        try:
            raw = conn.raw
            indexes = raw.execute(_INDEXES).fetchall()
            problems = _orphans(raw)
            problems += [f"index {name} is invalid (an interrupted CREATE INDEX CONCURRENTLY"
                         " or REINDEX); rebuild it with REINDEX"
                         for name, valid, _, _ in indexes if not valid]
            problems += _amcheck(raw, [i for i, valid, btree, _ in indexes if valid and btree],
                                 sorted({table for *_, table in indexes}))
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        finally:
            self._release(conn)
        return problems

    def _close_connections(self) -> None:
        if self._pid == os.getpid():  # an inherited pool's sockets are the parent's
            self._pool.close()


_FOREIGN_KEYS = """
SELECT con.conname, con.conrelid::regclass::text, con.confrelid::regclass::text,
  ARRAY(SELECT quote_ident(a.attname) FROM unnest(con.conkey) WITH ORDINALITY AS k(n, i)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
  ARRAY(SELECT quote_ident(a.attname) FROM unnest(con.confkey) WITH ORDINALITY AS k(n, i)
        JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint con JOIN pg_namespace ns ON ns.oid = con.connamespace
WHERE con.contype = 'f' AND ns.nspname = current_schema() ORDER BY 1
"""
_INDEXES = """
SELECT c.oid::regclass::text, i.indisvalid, am.amname = 'btree' AND i.indisready,
       i.indrelid::regclass::text
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() ORDER BY 1
"""
_AMCHECK = "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'amcheck'"


def _orphans(raw: RawConnection) -> list[str]:
    """Rows whose foreign key points nowhere: ``foreign_key_check`` over declared keys."""
    problems: list[str] = []
    for name, child, parent, ccols, pcols in raw.execute(_FOREIGN_KEYS).fetchall():
        match = " AND ".join(f"p.{p} = c.{c}" for c, p in zip(ccols, pcols, strict=True))
        present = " AND ".join(f"c.{c} IS NOT NULL" for c in ccols)
        sql = (f"SELECT {', '.join(f'c.{c}' for c in ccols)} FROM {child} c WHERE {present}"
               f" AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match}) LIMIT 100")
        problems += [f"foreign key {name}: {child} row with ({', '.join(ccols)}) = {row!r}"
                     f" refers to missing {parent}" for row in raw.execute(sql).fetchall()]
    return problems


def _amcheck(raw: RawConnection, indexes: list[str], tables: list[str]) -> list[str]:
    """B-tree and heap verification with the amcheck extension, when it can be had."""
    if raw.execute(_AMCHECK).fetchone() is None:
        with contextlib.suppress(psycopg.Error):  # not shipped with the server, or no privilege
            raw.execute("CREATE EXTENSION IF NOT EXISTS amcheck WITH SCHEMA public")
    if (row := raw.execute(_AMCHECK).fetchone()) is None:
        return []
    ns, problems = row[0], []
    try:
        for index in indexes:
            try:
                raw.execute(f"SELECT {ns}.bt_index_check(%s::regclass)", (index,))
            except (pge.IndexCorrupted, pge.DataCorrupted) as exc:
                problems.append(f"index {index} is corrupt: {_describe(exc)}")
        heap = f"SELECT blkno, offnum, msg FROM {ns}.verify_heapam(%s::regclass)"
        for table in tables:
            problems += [f"table {table} block {blk} item {off}: {msg}"
                         for blk, off, msg in raw.execute(heap, (table,)).fetchall()]
    except (pge.InsufficientPrivilege, pge.UndefinedFunction):
        pass  # an older amcheck, or checks we may not run: skip the rest
    return problems
