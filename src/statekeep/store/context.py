"""Context items: upsert by (session, type, key), expiry, batched access counts.

Reads must not turn into writes: ``access_count`` and ``last_accessed`` are
gathered in memory by :class:`AccessLog` and flushed in one short transaction
every ``access_flush_interval`` seconds and at close. A process killed with
-9 loses at most that interval of access counts -- bookkeeping for relevance,
never user data -- and no audit row is written for them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from statekeep import codec
from statekeep.errors import ConflictError, NotFoundError, ValidationError
from statekeep.ids import new_id, validate_id, validate_key, validate_name
from statekeep.models import ContextItem
from statekeep.store.base import AUDIT_INSERT, Connection, StoreCore
from statekeep.store.tasks import TaskStore

__all__ = ["AccessLog", "ContextInput", "ContextStore"]

log = logging.getLogger("statekeep.store")

CONTEXT_COLS = (
    "id, session_id, context_type, context_key, context_value, relevance_score,"
    " access_count, last_accessed, expires_at, created_at, updated_at"
)
_LOOKUP_CHUNK = 400
_MAX_TTL = 1000 * 365 * 86400  # far beyond any retention, well inside datetime's range


@dataclass(frozen=True, slots=True)
class ContextInput:
    """One item for :meth:`ContextStore.set_context_many`."""

    context_type: str
    context_key: str
    context_value: Any
    relevance_score: float | None = None
    expires_at: datetime | None = None


def _check_score(score: object) -> float:
    if (not isinstance(score, int | float) or isinstance(score, bool)
            or not 0.0 <= score <= 1.0):  # compared before float(): a huge int overflows
        raise ValidationError("relevance_score must be a number from 0 to 1",
                              field="relevance_score")
    return float(score)


def _item_json(item_id: str, session_id: str, ctype: str, key: str, data: bytes,
               score: float, accesses: int, last_accessed: str, expires_at: str | None,
               created_at: str, updated_at: str) -> bytes:
    """The audit form of an item (``ContextItem.to_dict``'s shape, timestamps as ISO
    text), embedding its already-encoded value as is: batches write it 100,000 times."""
    return codec.dumps_trusted({
        "id": item_id, "session_id": session_id, "context_type": ctype,
        "context_key": key, "context_value": orjson.Fragment(data),
        "relevance_score": score, "access_count": accesses, "last_accessed": last_accessed,
        "expires_at": expires_at, "created_at": created_at, "updated_at": updated_at,
    })


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class AccessLog:
    """Access counts gathered in memory and written in batches."""

    def __init__(self, store: StoreCore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, datetime]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, item_id: str, at: datetime) -> None:
        with self._lock:
            count, _ = self._pending.get(item_id, (0, at))
            self._pending[item_id] = (count + 1, at)
            if self._thread is None and self._interval > 0:
                self._thread = threading.Thread(target=self._run, name="statekeep-access",
                                                daemon=True)
                self._thread.start()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _run(self) -> None:
        while not self._wake.wait(self._interval):
            try:
                self.flush()
            except Exception:
                log.warning("flushing access counts failed; will retry", exc_info=True)

    def flush(self) -> int:
        """Write the gathered counts; returns how many items were touched."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        store = self._store
        rows = [(n, store.ts(at), store.ts(at), item_id) for item_id, (n, at) in batch.items()]
        try:
            with store.atomic() as conn:
                conn.executemany(
                    "UPDATE context SET access_count = access_count + ?,"
                    " last_accessed = CASE WHEN last_accessed IS NULL OR last_accessed < ?"
                    " THEN ? ELSE last_accessed END WHERE id = ?",
                    rows,
                )
        except Exception:
            with self._lock:  # put them back so nothing is lost on a transient failure
                for item_id, (n, at) in batch.items():
                    count, last = self._pending.get(item_id, (0, at))
                    self._pending[item_id] = (count + n, max(last, at))
            raise
        return len(batch)

    def stop(self) -> None:
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._wake = threading.Event()


class ContextStore(TaskStore):
    """Context item storage."""

    access_log: AccessLog

    def context_row(self, row: Any) -> ContextItem:
        return ContextItem(
            id=row[0],
            session_id=row[1],
            context_type=row[2],
            context_key=row[3],
            context_value=self.json_out(row[4]),
            relevance_score=row[5],
            access_count=row[6],
            last_accessed=self.ts_out(row[7]),
            expires_at=self.ts_col(row[8]),
            created_at=self.ts_out(row[9]),
            updated_at=self.ts_out(row[10]),
        )

    def _expiry(self, expires_at: datetime | None, ttl_seconds: float | None,
                now: datetime) -> datetime | None:
        if ttl_seconds is not None:
            if expires_at is not None:
                raise ValidationError("give expires_at or ttl_seconds, not both",
                                      field="ttl_seconds")
            if (not isinstance(ttl_seconds, int | float) or isinstance(ttl_seconds, bool)
                    or not 0 < ttl_seconds < _MAX_TTL):  # also refuses NaN
                raise ValidationError("ttl_seconds must be a positive number of seconds"
                                      " below 1000 years", field="ttl_seconds")
            return now + timedelta(seconds=ttl_seconds)
        return self.ts_arg(expires_at, "expires_at")

    def set_context(
        self,
        session_id: str,
        context_type: str,
        context_key: str,
        value: Any,
        *,
        relevance_score: float | None = None,
        expires_at: datetime | None = None,
        ttl_seconds: float | None = None,
    ) -> ContextItem:
        """Insert or replace the item at (session, type, key).

        An update keeps the item's id, creation time and access statistics;
        ``relevance_score`` is kept too unless given.
        """
        validate_id(session_id, "session_id")
        validate_name(context_type, "context_type")
        validate_key(context_key, "context_key")
        score = None if relevance_score is None else _check_score(relevance_score)
        data = codec.dumps(value, field="value", max_bytes=self.config.max_value_bytes)
        now = self.now()
        exp = self._expiry(expires_at, ttl_seconds, now)
        ts_now = self.ts(now)
        exp_p = None if exp is None else self.ts(exp)
        json_p = self.json_in(data)
        with self.atomic() as conn:
            user = self.session_user(conn, session_id)
            # Insert first: a new key (the common case) costs one statement, and
            # two writers of one new key cannot both miss it. Only an existing
            # key pays for reading its old row (locked) for the audit.
            item_id = new_id("ctx")
            while True:
                score_v = 1.0 if score is None else score
                cur = conn.execute(
                    f"INSERT INTO context ({CONTEXT_COLS})"
                    " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"
                    " ON CONFLICT (session_id, context_type, context_key) DO NOTHING",
                    (item_id, session_id, context_type, context_key, json_p, score_v, ts_now,
                     exp_p, ts_now, ts_now))
                if cur.rowcount == 1:
                    old = None
                    item = ContextItem(item_id, session_id, context_type, context_key,
                                       orjson.loads(data), score_v, 0, now, exp, now, now)
                    break
                old = self._item_at(conn, session_id, context_type, context_key, lock=True)
                if old is None:  # deleted by another writer in between: insert again
                    continue
                score_v = old.relevance_score if score is None else score
                conn.execute(
                    "UPDATE context SET context_value = ?, relevance_score = ?, expires_at = ?,"
                    " updated_at = ? WHERE id = ?", (json_p, score_v, exp_p, ts_now, old.id))
                item = ContextItem(old.id, session_id, context_type, context_key,
                                   orjson.loads(data), score_v, old.access_count,
                                   old.last_accessed, exp, old.created_at, now)
                break
            now_iso = now.isoformat()
            new_json = _item_json(
                item.id, session_id, context_type, context_key, data, item.relevance_score,
                item.access_count, item.last_accessed.isoformat(), _iso(exp),
                item.created_at.isoformat(), now_iso)
            self.audit_row(conn, "update" if old else "create", "context", item.id,
                           None if old is None else old.to_dict(), new_json,
                           user_id=user, session_id=session_id, at=now, notify=False)
            self.changed("update" if old else "create", "context", (item.id,), session_id,
                         ((context_type, context_key),))
        return item

    def _item_at(self, conn: Connection, session_id: str, ctype: str, key: str, *,
                 lock: bool = False) -> ContextItem | None:
        row = conn.execute(
            f"SELECT {CONTEXT_COLS} FROM context"
            " WHERE session_id = ? AND context_type = ? AND context_key = ?"
            f"{self.row_lock if lock else ''}", (session_id, ctype, key)).fetchone()
        return None if row is None else self.context_row(row)

    def set_context_many(self, session_id: str, items: Iterable[ContextInput]) -> int:
        """Upsert many items in one transaction, with their audit rows.

        Every item is validated before anything is written, so one bad item
        rejects the whole batch and leaves the store untouched.
        """
        validate_id(session_id, "session_id")
        cap = self.config.max_value_bytes
        prepared: dict[tuple[str, str], tuple[bytes, float | None, datetime | None]] = {}
        if isinstance(items, str | bytes) or not isinstance(items, Iterable):
            raise ValidationError(f"items must be an iterable of ContextInput, not "
                                  f"{type(items).__name__}", field="items")
        types_ok: set[str] = set()  # a batch has few types: check each once
        for i, it in enumerate(items):
            if not isinstance(it, ContextInput):
                raise ValidationError(f"item {i} must be a ContextInput, not "
                                      f"{type(it).__name__}", field="items")
            if it.context_type not in types_ok:
                types_ok.add(validate_name(it.context_type, f"items[{i}].context_type"))
            validate_key(it.context_key, f"items[{i}].context_key")
            score = None if it.relevance_score is None else _check_score(it.relevance_score)
            data = codec.dumps(it.context_value, field=f"items[{i}].context_value",
                               max_bytes=cap)
            prepared[(it.context_type, it.context_key)] = (
                data, score, self.ts_arg(it.expires_at, f"items[{i}].expires_at"))
        if not prepared:
            return 0
        now = self.now()
        ts_now = self.ts(now)
        now_iso = now.isoformat()
        with self.atomic() as conn:
            user = self.session_user(conn, session_id)
            # Insert every item whose key is free (ON CONFLICT skips the rest),
            # then read the batch's keys back, locked: a row whose id is not the
            # one we proposed existed before and is updated instead.
            proposed = {k: new_id("ctx") for k in prepared}
            inserts = [
                (proposed[(ctype, key)], session_id, ctype, key, self.json_in(data),
                 1.0 if score is None else score, ts_now,
                 None if exp is None else self.ts(exp), ts_now, ts_now)
                for (ctype, key), (data, score, exp) in prepared.items()
            ]
            cur = conn.executemany(
                f"INSERT INTO context ({CONTEXT_COLS}) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"
                " ON CONFLICT (session_id, context_type, context_key) DO NOTHING", inserts)
            # Both drivers count only the rows actually inserted: when all went
            # in, every proposed id is the stored one and nothing needs reading.
            stored = (proposed if cur.rowcount == len(inserts)
                      else self._stored_ids(conn, session_id, list(prepared)))
            updates: list[tuple[Any, ...]] = []
            audits: list[tuple[Any, ...]] = []
            for ckey, (data, score, exp) in prepared.items():
                ctype, key = ckey
                stored_id = stored.get(ckey)
                if stored_id is None:
                    raise ConflictError(f"context item ({ctype!r}, {key!r}) was deleted by"
                                        " another writer during the batch; retry")
                old = (None if stored_id == proposed[ckey]
                       else self._item_at(conn, session_id, ctype, key))
                if old is None:
                    new_json = _item_json(stored_id, session_id, ctype, key, data,
                                          1.0 if score is None else score, 0, now_iso,
                                          _iso(exp), now_iso, now_iso)
                    audits.append(("create", "context", stored_id, None,
                                   self.json_in(new_json), None, user, session_id, ts_now))
                    continue
                score_v = old.relevance_score if score is None else score
                updates.append((self.json_in(data), score_v,
                                None if exp is None else self.ts(exp), ts_now, old.id))
                new_json = _item_json(old.id, session_id, ctype, key, data, score_v,
                                      old.access_count, old.last_accessed.isoformat(),
                                      _iso(exp), old.created_at.isoformat(), now_iso)
                audits.append(("update", "context", old.id,
                               self.json_in(codec.dumps_trusted(old.to_dict())),
                               self.json_in(new_json), None, user, session_id, ts_now))
            if updates:
                conn.executemany(
                    "UPDATE context SET context_value = ?, relevance_score = ?,"
                    " expires_at = ?, updated_at = ? WHERE id = ?", updates)
            conn.executemany(AUDIT_INSERT, audits)
            self.changed("upsert", "context", [a[2] for a in audits], session_id,
                         list(prepared))
        return len(prepared)

    def _stored_ids(self, conn: Connection, session_id: str,
                    keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The ids now stored at ``keys`` (locked on backends that lock rows)."""
        found: dict[tuple[str, str], str] = {}
        lock = f"{self.row_lock} OF c" if self.row_lock else ""
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start:start + _LOOKUP_CHUNK]
            marks = ", ".join(["(?, ?)"] * len(chunk))
            params: list[Any] = []
            for ctype, key in chunk:
                params += [ctype, key]
            params.append(session_id)
            # A join from the key list probes the unique index once per key;
            # a row-value IN would walk the whole session for every chunk.
            rows = conn.execute(
                f"SELECT c.id, c.context_type, c.context_key FROM (VALUES {marks}) AS v"
                " JOIN context c ON c.session_id = ? AND c.context_type = v.column1"
                f" AND c.context_key = v.column2{lock}", params).fetchall()
            for row in rows:
                found[(row[1], row[2])] = row[0]
        return found

    def get_context(self, session_id: str, context_type: str,
                    context_key: str) -> ContextItem | None:
        """The live item at (session, type, key), or None if absent or expired."""
        validate_id(session_id, "session_id")
        validate_name(context_type, "context_type")
        validate_key(context_key, "context_key")
        row = self.query_one(
            f"SELECT {CONTEXT_COLS} FROM context"
            " WHERE session_id = ? AND context_type = ? AND context_key = ?",
            (session_id, context_type, context_key))
        if row is None:
            return None
        item = self.context_row(row)
        now = self.now()
        # Expiry is checked here rather than in SQL: most items never expire,
        # and this spares formatting "now" for every read.
        if item.expires_at is not None and item.expires_at <= now:
            return None
        self.access_log.record(item.id, now)
        return item

    def list_context(
        self,
        session_id: str,
        *,
        context_type: str | None = None,
        limit: int | None = None,
        order: str = "relevance",
    ) -> list[ContextItem]:
        """Live items of a session: by relevance (default), most recent, or key."""
        validate_id(session_id, "session_id")
        orders = {
            "relevance": "relevance_score DESC, updated_at DESC, id",
            "recent": "updated_at DESC, id",
            "key": "context_type, context_key",
        }
        if order not in orders:
            raise ValidationError(f"order must be one of {', '.join(orders)}", field="order")
        sql = (f"SELECT {CONTEXT_COLS} FROM context WHERE session_id = ?"
               " AND (expires_at IS NULL OR expires_at > ?)")
        params: list[Any] = [session_id, self.ts(self.now())]
        if context_type is not None:
            sql += " AND context_type = ?"
            params.append(validate_name(context_type, "context_type"))
        sql += f" ORDER BY {orders[order]}"
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise ValidationError("limit must be a positive integer", field="limit")
            sql += " LIMIT ?"
            params.append(limit)
        with self.reading() as conn:
            return [self.context_row(r) for r in conn.execute(sql, params).fetchall()]

    def delete_context(self, session_id: str, context_type: str, context_key: str) -> bool:
        """Remove an item; False if there was none."""
        validate_id(session_id, "session_id")
        validate_name(context_type, "context_type")
        validate_key(context_key, "context_key")
        with self.atomic() as conn:
            old = self._item_at(conn, session_id, context_type, context_key, lock=True)
            if old is None:
                return False
            conn.execute("DELETE FROM context WHERE id = ?", (old.id,))
            self.changed("delete", "context", (old.id,), session_id,
                         ((context_type, context_key),))
            self.audit_row(conn, "delete", "context", old.id, old.to_dict(), None, notify=False,
                           user_id=self.session_user(conn, session_id), session_id=session_id)
        return True

    def get_context_by_id(self, item_id: str) -> ContextItem:
        """An item by its id (expired ones included), or NotFoundError."""
        validate_id(item_id, "item_id")
        with self.reading() as conn:
            row = conn.execute(f"SELECT {CONTEXT_COLS} FROM context WHERE id = ?",
                               (item_id,)).fetchone()
        if row is None:
            raise NotFoundError("context item", item_id)
        return self.context_row(row)
