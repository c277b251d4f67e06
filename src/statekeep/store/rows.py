"""The registry of the store's tables, and the one portable form of their rows.

Archive files, snapshot images, point-in-time replay and recovery all move
rows out of one database and into another -- possibly of the other dialect.
They share this module so that a column added to a table is added once, and
so that a row travels in exactly one form everywhere:

* timestamps as ISO-8601 UTC strings (``datetime.isoformat()`` of the aware
  UTC value, the form ``to_dict()`` gives them too);
* JSON columns as their JSON *text* (SQLite keeps the text as written, which is
  the state; PostgreSQL hands the value decoded and it is re-encoded);
* binary columns as base64;
* boolean columns as JSON booleans (SQLite stores 0/1).

Table and column names reach SQL only from here, never from input.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from statekeep import codec
from statekeep.store.base import StoreCore
from statekeep.store.context import CONTEXT_COLS
from statekeep.store.learning import DECISION_COLS, PREFERENCE_COLS
from statekeep.store.relations import RELATION_COLS
from statekeep.store.sessions import SESSION_COLS
from statekeep.store.tasks import TASK_COLS

__all__ = [
    "ARCHIVE_INDEX",
    "BLOBS",
    "CONTENT",
    "CONTEXT",
    "DECISIONS",
    "IMAGE_TABLES",
    "MEMORY",
    "PREFERENCES",
    "RECOVERY_POINTS",
    "RELATIONS",
    "SESSIONS",
    "SESSION_TABLES",
    "SNAPSHOTS",
    "SYNC_CONFLICTS",
    "SYNC_SEEN",
    "SYNC_STATE",
    "TABLES",
    "TASKS",
    "Table",
    "by_entity",
    "cols",
    "entity_row",
    "key_params",
    "norm_ts",
    "row_in",
    "row_key",
    "row_out",
    "select_rows",
    "table",
]


def cols(text: str) -> tuple[str, ...]:
    """A column list constant (``"a, b, c"``) as a tuple."""
    return tuple(c.strip() for c in text.split(","))


@dataclass(frozen=True)
class Table:
    """How one table's rows travel, and what recovery needs to know about it."""

    name: str
    cols: tuple[str, ...]
    #: Primary-key columns.
    pk: tuple[str, ...]
    ts: frozenset[str] = frozenset()
    json: frozenset[str] = frozenset()
    binary: frozenset[str] = frozenset()
    bools: frozenset[str] = frozenset()
    #: JSON columns that are NOT NULL: a JSON null is the text 'null' there,
    #: where a nullable JSON column holds SQL NULL for None.
    json_notnull: frozenset[str] = frozenset()
    #: The audit log's entity type for this table's rows.
    entity: str = ""
    #: The column naming the session a row belongs to (None: not session-bound).
    session_col: str | None = None
    #: A second, human key a selective recovery may name (context_key, ...).
    natural_key: str | None = None
    #: (column, parent table, parent column) foreign keys, for the orphan scan.
    fks: tuple[tuple[str, str, str], ...] = ()

    @property
    def order(self) -> str:
        return ", ".join(self.pk)

    @property
    def col_list(self) -> str:
        return ", ".join(self.cols)

    def insert_sql(self) -> str:
        return (f"INSERT INTO {self.name} ({self.col_list})"
                f" VALUES ({', '.join('?' * len(self.cols))})")

    def update_sql(self) -> str:
        """UPDATE of every non-key column, parameters: values then key."""
        sets = ", ".join(f"{c} = ?" for c in self.cols if c not in self.pk)
        return f"UPDATE {self.name} SET {sets} WHERE {self.pk_where()}"

    def pk_where(self) -> str:
        return " AND ".join(f"{c} = ?" for c in self.pk)


_TS = frozenset({"created_at", "updated_at"})

SESSIONS = Table("sessions", cols(SESSION_COLS), ("id",), _TS | {"start_time", "end_time"},
                 frozenset({"context_snapshot", "metadata"}), entity="session",
                 session_col="id")
TASKS = Table("tasks", cols(TASK_COLS), ("id",), _TS | {"started_at", "completed_at"},
              frozenset({"parameters", "result", "error_details"}), entity="task",
              session_col="session_id",
              fks=(("session_id", "sessions", "id"), ("parent_task_id", "tasks", "id")))
CONTEXT = Table("context", cols(CONTEXT_COLS), ("id",),
                _TS | {"last_accessed", "expires_at"}, frozenset({"context_value"}),
                json_notnull=frozenset({"context_value"}), entity="context",
                session_col="session_id", natural_key="context_key",
                fks=(("session_id", "sessions", "id"),))
SNAPSHOTS = Table(
    "state_snapshots",
    cols("id, session_id, snapshot_type, state_data, compression_type, checksum, size_bytes,"
         " created_at, audit_id, scope_session_id"),
    ("id",), frozenset({"created_at"}), binary=frozenset({"state_data"}), entity="snapshot",
    session_col="session_id", fks=(("session_id", "sessions", "id"),))
DECISIONS = Table("decisions", cols(DECISION_COLS), ("id",), frozenset({"created_at"}),
                  frozenset({"reasoning", "context"}),
                  bools=frozenset({"autonomous", "user_override"}), entity="decision",
                  session_col="session_id",
                  fks=(("session_id", "sessions", "id"), ("task_id", "tasks", "id")))
PREFERENCES = Table("user_preferences", cols(PREFERENCE_COLS), ("id",),
                    _TS | {"last_observed"}, frozenset({"preference_value"}),
                    json_notnull=frozenset({"preference_value"}), entity="preference",
                    natural_key="preference_key")
RECOVERY_POINTS = Table(
    "recovery_points",
    cols("id, name, description, state_snapshot_id, recovery_metadata, created_at"),
    ("id",), frozenset({"created_at"}), frozenset({"recovery_metadata"}),
    entity="recovery_point", fks=(("state_snapshot_id", "state_snapshots", "id"),))
BLOBS = Table("content_blobs",
              cols("hash, data, size_bytes, stored_bytes, ref_count, created_at"), ("hash",),
              frozenset({"created_at"}), binary=frozenset({"data"}), entity="blob")
MEMORY = Table(
    "memory_entries",
    cols("key, value, blob_hash, importance, size_bytes, access_count, last_accessed,"
         " created_at, updated_at"),
    ("key",), _TS | {"last_accessed"}, binary=frozenset({"value"}), entity="memory",
    natural_key="key", fks=(("blob_hash", "content_blobs", "hash"),))
RELATIONS = Table("context_relations", cols(RELATION_COLS), ("id",), frozenset({"created_at"}),
                  frozenset({"metadata"}), entity="relation", session_col="session_id",
                  fks=(("session_id", "sessions", "id"), ("source_id", "context", "id"),
                       ("target_id", "context", "id")))
CONTENT = Table("context_content", ("context_id", "session_id", "blob_hash"), ("context_id",),
                entity="content", session_col="session_id",
                fks=(("context_id", "context", "id"), ("session_id", "sessions", "id"),
                     ("blob_hash", "content_blobs", "hash")))
SYNC_STATE = Table("sync_state", cols("scope, key, value, version, component, updated_at"),
                   ("scope", "key"), frozenset({"updated_at"}), frozenset({"value"}),
                   json_notnull=frozenset({"value"}), entity="sync", natural_key="key")
SYNC_SEEN = Table("sync_seen", cols("scope, component, key, version"),
                  ("scope", "component", "key"), entity="sync_seen", natural_key="key")
SYNC_CONFLICTS = Table(
    "sync_conflicts",
    cols("id, scope, key, component, base_version, current_version, current_value,"
         " proposed_value, status, resolution, resolved_value, resolved_by, created_at,"
         " resolved_at"),
    ("id",), frozenset({"created_at", "resolved_at"}),
    frozenset({"current_value", "proposed_value", "resolved_value"}),
    json_notnull=frozenset({"current_value", "proposed_value"}), entity="sync_conflict",
    natural_key="key")
ARCHIVE_INDEX = Table(
    "archive_index",
    cols("session_id, user_id, path, checksum, size_bytes, item_counts, last_activity,"
         " archived_at, expires_at"),
    ("session_id",), frozenset({"last_activity", "archived_at", "expires_at"}),
    frozenset({"item_counts"}), entity="archive")

#: What a whole-store image holds, parents before children. The audit log,
#: snapshots and recovery points are the recovery machinery's own records and
#: never part of an image; archived sessions live in their files.
IMAGE_TABLES: tuple[Table, ...] = (
    SESSIONS, TASKS, CONTEXT, BLOBS, CONTENT, RELATIONS, DECISIONS, PREFERENCES, MEMORY,
    SYNC_STATE, SYNC_SEEN, SYNC_CONFLICTS,
)
#: What a one-session image holds (its blobs are the ones its content links use).
SESSION_TABLES: tuple[Table, ...] = (SESSIONS, TASKS, CONTEXT, BLOBS, CONTENT, RELATIONS,
                                     DECISIONS)
#: Every table in the registry.
TABLES: tuple[Table, ...] = (*IMAGE_TABLES, SNAPSHOTS, RECOVERY_POINTS, ARCHIVE_INDEX)
_BY_NAME = {t.name: t for t in TABLES}
_BY_ENTITY = {t.entity: t for t in TABLES}


def by_entity(entity: str) -> Table | None:
    """The table whose rows the audit log calls ``entity`` (None if unknown)."""
    return _BY_ENTITY.get(entity)


def table(name: str) -> Table:
    return _BY_NAME[name]


def norm_ts(value: str) -> str:
    """An ISO timestamp in the one form rows carry (aware UTC ``isoformat``)."""
    return datetime.fromisoformat(value).astimezone(UTC).isoformat()


def row_out(store: StoreCore, t: Table, row: Sequence[Any]) -> dict[str, Any]:
    """A database row (columns in ``t.cols`` order) in portable form."""
    out: dict[str, Any] = {}
    sqlite = store.dialect == "sqlite"
    for col, value in zip(t.cols, row, strict=True):
        if value is None:
            out[col] = None
        elif col in t.ts:
            out[col] = store.ts_out(value).isoformat()
        elif col in t.json:
            # SQLite keeps the JSON text as written; PostgreSQL hands it decoded.
            out[col] = value if sqlite else codec.dumps_trusted(value).decode()
        elif col in t.binary:
            out[col] = base64.b64encode(bytes(value)).decode("ascii")
        elif col in t.bools:
            out[col] = bool(value)
        else:
            out[col] = value
    return out


def row_in(store: StoreCore, t: Table, row: dict[str, Any]) -> list[Any]:
    """Query parameters (``t.cols`` order) for a portable row; a column the row
    lacks (written by an older format) is NULL."""
    values: list[Any] = []
    for col in t.cols:
        value = row.get(col)
        if value is None:
            values.append(None)
        elif col in t.ts:
            values.append(store.ts(datetime.fromisoformat(value)))
        elif col in t.json:
            values.append(store.json_in(value.encode()))
        elif col in t.binary:
            values.append(base64.b64decode(value))
        elif col in t.bools:
            values.append(bool(value))
        else:
            values.append(value)
    return values


def entity_row(t: Table, entity: dict[str, Any]) -> dict[str, Any]:
    """An entity's ``to_dict()`` form (as the audit log keeps it) in portable row form."""
    out: dict[str, Any] = {}
    for col in t.cols:
        value = entity.get(col)
        if col in t.json:
            if value is None and col not in t.json_notnull:
                out[col] = None
            else:
                out[col] = codec.dumps_trusted(value).decode()
        elif value is None:
            out[col] = None
        elif col in t.ts:
            out[col] = norm_ts(value)
        elif col in t.bools:
            out[col] = bool(value)
        else:
            out[col] = value
    return out


def row_key(t: Table, row: dict[str, Any]) -> Any:
    """A row's primary key: the value, or a tuple for a composite key."""
    if len(t.pk) == 1:
        return row[t.pk[0]]
    return tuple(row[c] for c in t.pk)


def key_params(t: Table, key: Any) -> list[Any]:
    """A primary key (from :func:`row_key`) as query parameters."""
    return [key] if len(t.pk) == 1 else list(key)


def select_rows(store: StoreCore, conn: Any, t: Table, where: str = "",
                params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """Rows of ``t`` (optionally filtered by a fixed ``where`` clause) in portable
    form, ordered by primary key."""
    sql = f"SELECT {t.col_list} FROM {t.name}"
    if where:
        sql += f" WHERE {where}"
    sql += f" ORDER BY {t.order}"
    return [row_out(store, t, r) for r in conn.execute(sql, list(params)).fetchall()]
