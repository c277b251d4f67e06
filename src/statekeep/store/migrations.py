"""Schema migrations (seed section 11): registry, path, backup, run, rollback.

Migrations are numbered identically on every dialect (``sql/<dialect>/NNNN_name.sql``,
checked by a test) and recorded in ``statekeep_migrations`` with a checksum of
their text, so an applied migration edited later is reported by :meth:`verify`.

A whole migration path runs in one transaction. SQLite and PostgreSQL both
have transactional DDL, so a failure anywhere -- pre-check, execute or
validate of any step -- rolls the database back to exactly what it was. On
SQLite an online backup (the backup API, safe while others write) is also
taken first, as a copy a person can restore by hand if everything else fails.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from statekeep.errors import MigrationError, StatekeepError
from statekeep.store.base import Connection, StoreCore

__all__ = [
    "MIGRATIONS_TABLE",
    "Migration",
    "MigrationRegistry",
    "MigrationResult",
    "MigrationStatus",
    "StateMigrationSystem",
    "split_sql",
]

log = logging.getLogger("statekeep.migrations")

MIGRATIONS_TABLE = "statekeep_migrations"
_FILE_RE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

Step = Callable[[Connection], None]


# What can hide a ';' in SQL text: strings, quoted identifiers and comments
# (each possibly unterminated at the end of a chunk), and the opening of a
# PostgreSQL dollar quote -- '$$' or '$tag$', not preceded by a word character
# (``a$b`` is an identifier, ``$1`` a parameter).
_SQL_TOKEN = re.compile(
    r"'(?:[^']|'')*(?:'|\Z)"
    r'|"(?:[^"]|"")*(?:"|\Z)'
    r"|--[^\n]*"
    r"|/\*.*?(?:\*/|\Z)"
    r"|(?<![\w$])\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$",
    re.S)
# A PostgreSQL trigger runs a function; a SQLite one has a BEGIN ... END body.
_PG_TRIGGER = re.compile(r"\bEXECUTE\s+(?:FUNCTION|PROCEDURE)\b", re.I)
_TRIGGER = re.compile(r"\bTRIGGER\b", re.I)


def _skeleton(chunk: str) -> str | None:
    """``chunk`` with its strings, quoted identifiers, comments and dollar-quoted
    bodies blanked out, or None while one of them is still open (the chunk's
    last ';' is inside it).

    sqlite3.complete_statement knows SQLite's trigger bodies but not
    PostgreSQL's dollar-quoted function bodies, whose ';' (and unbalanced
    quotes) it would take at face value; blanked, a body is one string.
    """
    out: list[str] = []
    pos = 0
    while (m := _SQL_TOKEN.search(chunk, pos)) is not None:
        token = m.group()
        out.append(chunk[pos:m.start()])
        end = m.end()
        if token.startswith("$"):
            close = chunk.find(token, end)
            if close < 0:
                return None
            end = close + len(token)
            out.append("''")
        elif token.startswith(("'", '"')):
            if not _closed(token):
                return None
            out.append(token[0] * 2)
        elif token.startswith("/*"):
            if not token.endswith("*/") or len(token) < 4:
                return None
            out.append(" ")
        else:  # -- comment to the end of its line
            if end == len(chunk):
                return None
            out.append(" ")
        pos = end
    out.append(chunk[pos:])
    return "".join(out)


def _closed(token: str) -> bool:
    """A quoted token ends with its closing quote, not with a doubled (escaped) one."""
    body = token[1:]
    run = len(body) - len(body.rstrip(token[0]))
    return run % 2 == 1


def _complete(chunk: str) -> bool:
    """Whether ``chunk`` (cut just after a ';') is one or more whole statements."""
    skeleton = _skeleton(chunk)
    if skeleton is None:
        return False
    if _PG_TRIGGER.search(skeleton):
        # complete_statement would wait for the END of a SQLite trigger body.
        skeleton = _TRIGGER.sub("TRIGGER_", skeleton, count=1)
    return sqlite3.complete_statement(skeleton)


def split_sql(text: str) -> list[str]:
    """Split a script into complete statements.

    Aware of comments, strings, SQLite trigger bodies (``BEGIN ... END;``) and
    PostgreSQL dollar-quoted bodies (``$$ ... $$``, ``$tag$ ... $tag$``).
    """
    statements: list[str] = []
    buf: list[str] = []
    # Cut after every ';' (not every line): two statements may share a line, and
    # complete_statement() keeps a ';' inside a string, comment or trigger body.
    for piece in re.split(r"(?<=;)", text):
        buf.append(piece)
        chunk = "".join(buf)
        if _complete(chunk):
            stmt = chunk.strip()
            body = "\n".join(ln for ln in stmt.splitlines()
                             if not ln.strip().startswith("--")).strip()
            if body and body != ";":
                statements.append(stmt)
            buf = []
    rest = "".join(buf).strip()
    if rest and any(not ln.strip().startswith("--") for ln in rest.splitlines() if ln.strip()):
        raise MigrationError(f"incomplete SQL statement at end of script: {rest[:80]!r}")
    return statements


@dataclass(frozen=True)
class Migration:
    """One numbered schema step: optional pre-check, SQL and/or code, validation."""

    version: int
    name: str
    sql: str = ""
    execute: Step | None = None
    pre_check: Step | None = None
    validate: Step | None = None

    @property
    def checksum(self) -> str:
        code = "" if self.execute is None else getattr(self.execute, "__qualname__", "")
        return hashlib.sha256((self.sql + code).encode()).hexdigest()[:16]

    def run(self, conn: Connection) -> None:
        if self.pre_check is not None:
            self.pre_check(conn)
        for stmt in split_sql(self.sql):
            conn.execute(stmt)
        if self.execute is not None:
            self.execute(conn)
        if self.validate is not None:
            self.validate(conn)


class MigrationRegistry:
    """The known migrations of one dialect, in version order."""

    def __init__(self, dialect: str, *, load_builtin: bool = True) -> None:
        self.dialect = dialect
        self._migrations: dict[int, Migration] = {}
        if load_builtin:
            folder = resources.files("statekeep.store") / "sql" / dialect
            for entry in sorted(folder.iterdir(), key=lambda e: e.name):
                m = _FILE_RE.fullmatch(entry.name)
                if m:
                    self.register(Migration(int(m.group(1)), m.group(2), entry.read_text()))

    def register(self, migration: Migration) -> None:
        """Add a migration; versions are unique."""
        if migration.version in self._migrations:
            raise MigrationError(f"migration {migration.version} is already registered")
        if migration.version < 1:
            raise MigrationError("migration versions start at 1")
        self._migrations[migration.version] = migration

    @property
    def latest(self) -> int:
        return max(self._migrations, default=0)

    def all(self) -> list[Migration]:
        return [self._migrations[v] for v in sorted(self._migrations)]

    def get_path(self, from_version: int, to_version: int) -> list[Migration]:
        """The migrations that lead from one version to another, in order."""
        if to_version < from_version:
            raise MigrationError(
                f"No migration path from {from_version} to {to_version}: downgrades are done"
                " by restoring the pre-migration backup")
        if to_version > self.latest:
            raise MigrationError(
                f"No migration path from {from_version} to {to_version}:"
                f" the latest known version is {self.latest}")
        path = [m for v, m in sorted(self._migrations.items()) if from_version < v <= to_version]
        expected = list(range(from_version + 1, to_version + 1))
        if [m.version for m in path] != expected:
            raise MigrationError(
                f"No migration path from {from_version} to {to_version}: versions missing")
        return path


@dataclass
class MigrationResult:
    """What :meth:`StateMigrationSystem.migrate` did."""

    from_version: int
    to_version: int
    completed_migrations: list[str] = field(default_factory=list)
    failed_migration: str | None = None
    error: str | None = None
    backup_path: str | None = None
    dry_run: bool = False
    success: bool = False


@dataclass(frozen=True)
class MigrationStatus:
    """One row of ``statekeep migrate status``."""

    version: int
    name: str
    applied_at: str | None
    checksum_ok: bool | None


class StateMigrationSystem:
    """Applies a registry's migrations to a store."""

    def __init__(self, store: StoreCore, registry: MigrationRegistry | None = None,
                 *, backup_dir: Path | None = None) -> None:
        self.store = store
        self.registry = registry or MigrationRegistry(store.dialect)
        self.backup_dir = backup_dir

    def _ensure_table(self, conn: Connection) -> None:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)")

    def _applied(self, conn: Connection) -> dict[int, tuple[str, str, str]]:
        rows = conn.execute(
            f"SELECT version, name, checksum, applied_at FROM {MIGRATIONS_TABLE}").fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def _table_exists(self, conn: Connection) -> bool:
        if self.store.dialect == "sqlite":
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            sql = ("SELECT 1 FROM information_schema.tables WHERE table_name = ?"
                   " AND table_schema = current_schema()")
        return conn.execute(sql, (MIGRATIONS_TABLE,)).fetchone() is not None

    def current_version(self) -> int:
        """The highest applied version (0 for an empty database). Read-only."""
        with self.store.reading() as conn:
            if not self._table_exists(conn):
                return 0
            row = conn.execute(f"SELECT MAX(version) FROM {MIGRATIONS_TABLE}").fetchone()
            return int(row[0] or 0)

    def pending(self) -> list[Migration]:
        """Migrations not yet applied. Read-only."""
        current = self.current_version()
        return [m for m in self.registry.all() if m.version > current]

    def status(self) -> list[MigrationStatus]:
        """Every known migration with when it was applied and whether it still matches."""
        with self.store.reading() as conn:
            applied = self._applied(conn) if self._table_exists(conn) else {}
        out = []
        for m in self.registry.all():
            row = applied.get(m.version)
            out.append(MigrationStatus(m.version, m.name, None if row is None else row[2],
                                       None if row is None else row[1] == m.checksum))
        return out

    def verify(self) -> list[str]:
        """Problems with applied migrations (edited after applying, unknown). Read-only."""
        problems = []
        with self.store.reading() as conn:
            applied = self._applied(conn) if self._table_exists(conn) else {}
        known = {m.version: m for m in self.registry.all()}
        for version, (name, checksum, _) in sorted(applied.items()):
            m = known.get(version)
            if m is None:
                problems.append(f"applied migration {version} ({name}) is unknown to this"
                                " version of statekeep")
            elif m.checksum != checksum:
                problems.append(f"migration {version} ({name}) changed since it was applied")
        return problems

    def migrate(self, from_version: int | None = None, to_version: int | None = None,
                *, dry_run: bool = False) -> MigrationResult:
        """Bring the schema from ``from_version`` (default: current) to ``to_version``
        (default: latest). All steps commit together or not at all.
        """
        current = self.current_version()
        start = current if from_version is None else from_version
        if start != current:
            raise MigrationError(
                f"database is at version {current}, not {from_version} as the caller expects")
        target = self.registry.latest if to_version is None else to_version
        path = self.registry.get_path(start, target)
        result = MigrationResult(from_version=start, to_version=target, dry_run=dry_run)
        if dry_run or not path:
            result.completed_migrations = [f"{m.version:04d}_{m.name}" for m in path]
            result.success = True
            return result
        if start > 0:
            result.backup_path = self._backup(start, target)
        try:
            with self.store.atomic() as conn:
                self._lock(conn)
                self._ensure_table(conn)
                done = self._applied(conn)
                for m in path:
                    label = f"{m.version:04d}_{m.name}"
                    if m.version in done:  # another process got here first
                        continue
                    result.failed_migration = label
                    log.info("executing migration %s", label)
                    m.run(conn)
                    conn.execute(
                        f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, applied_at)"
                        " VALUES (?, ?, ?, ?)",
                        (m.version, m.name, m.checksum, datetime.now(UTC).isoformat()))
                    result.completed_migrations.append(label)
                    result.failed_migration = None
        except Exception as exc:
            result.error = str(exc)
            result.completed_migrations = []
            err = exc if isinstance(exc, StatekeepError) else self.store._translate(exc)
            raise MigrationError(
                f"migration {result.failed_migration or '?'} failed and everything was rolled"
                f" back to version {start}: {err}") from exc
        result.success = True
        return result

    def _lock(self, conn: Connection) -> None:
        # SQLite's BEGIN IMMEDIATE already serialises migrators; PostgreSQL
        # needs an explicit lock so two processes never run the same step.
        if self.store.dialect == "postgresql":
            conn.execute("SELECT pg_advisory_xact_lock(7364529812)")

    def _backup(self, start: int, target: int) -> str | None:
        backup = getattr(self.store, "backup_to", None)
        if backup is None:
            return None  # PostgreSQL: transactional DDL is the safety net
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"pre-migrate-{start}-to-{target}-{stamp}.db"
        path: str | None = backup(name, self.backup_dir)
        return path
