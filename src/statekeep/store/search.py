"""Full-text search over context items: the text candidates a relevance ranker starts from.

What is indexed: an item's key (weighted above the rest), and the *string
values* of its JSON value with its type -- not the JSON's keys, numbers or
punctuation, so ``{"lines": 3}`` is not found by "lines".

* SQLite: the FTS5 table ``context_fts`` (porter stemming, unicode61 tokens),
  ranked by bm25. Triggers on ``context`` queue the rows a write changed, and
  :meth:`SearchStore.sync_search` indexes the queue in one set-based pass --
  before every search and every snapshot, so a search always sees every
  committed write, while a write pays only for queueing (see the 0003
  migration for why the index is not written row by row).
* PostgreSQL: the generated ``context.search_vector`` column with a GIN index,
  ranked by ``ts_rank_cd``.

User text never reaches a query parser raw. On SQLite each word becomes a
quoted FTS5 string, the words ANDed (a trailing ``*`` keeps a word a prefix
query), so quotes, parentheses, NEAR, AND/OR/NOT, ``-`` and ``column:``
filters are all plain text. PostgreSQL's ``websearch_to_tsquery`` accepts any
text by design.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from statekeep.errors import ValidationError
from statekeep.ids import validate_id
from statekeep.models import ContextItem
from statekeep.store.base import Connection
from statekeep.store.context import CONTEXT_COLS, ContextStore

__all__ = ["MAX_QUERY_LENGTH", "SearchHit", "SearchStore", "fts5_query"]

MAX_QUERY_LENGTH = 1000
_MAX_CANDIDATES = 10_000
#: bm25 column weights (key, body): a word in the key outweighs the same word in the body.
_KEY_WEIGHT = 10.0
_BODY_WEIGHT = 1.0
_COLS = ", ".join(f"c.{col.strip()}" for col in CONTEXT_COLS.split(","))
_SURROGATE = re.compile("[\ud800-\udfff]")


def _body(alias: str) -> str:
    """The indexed body of a context row: its JSON's string values, then its type.

    The one expression for indexing and un-indexing: FTS5's 'delete' must be
    given exactly the terms a row was indexed with.
    """
    return (f"COALESCE((SELECT group_concat(j.value, ' ') FROM json_tree({alias}.context_value)"
            f" AS j WHERE j.type = 'text'), '') || ' ' || {alias}.context_type")


_SYNC = (
    "INSERT INTO context_fts (context_fts, rowid, key, body)"
    f" SELECT 'delete', g.item_rowid, g.context_key, {_body('g')} FROM context_fts_gone g",
    "DELETE FROM context_fts_gone",
    "INSERT INTO context_fts (rowid, key, body)"
    f" SELECT c.rowid, c.context_key, {_body('c')}"
    " FROM context_fts_pending p JOIN context c ON c.rowid = p.item_rowid",
    "DELETE FROM context_fts_pending",
)
_QUEUED = ("SELECT EXISTS (SELECT 1 FROM context_fts_pending)"
           " OR EXISTS (SELECT 1 FROM context_fts_gone)")


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A context item that matches a text query."""

    item: ContextItem
    #: Higher is better, normalised to (0, 1] within one result set (the best is 1).
    text_rank: float


def fts5_query(text: str) -> str | None:
    """User text as an FTS5 query of quoted words ANDed together; None when no
    word has a character the tokenizer keeps (nothing can match).

    Inside double quotes FTS5 reads everything as text (a quote is doubled),
    so no operator, column filter or parenthesis survives; a trailing ``*``
    outside the quotes keeps a word a prefix query.
    """
    terms: list[str] = []
    for raw in text.split():
        word = raw.rstrip("*")
        if not any(ch.isalnum() for ch in word):
            continue  # only separators: the tokenizer would keep nothing
        terms.append('"' + word.replace('"', '""') + '"' + ("*" if raw != word else ""))
    return " ".join(terms) or None


def _check_query(query: object) -> str:
    if not isinstance(query, str):
        raise ValidationError(f"query must be a string, not {type(query).__name__}",
                              field="query")
    if len(query) > MAX_QUERY_LENGTH:
        raise ValidationError(f"query is {len(query)} characters long; the limit is"
                              f" {MAX_QUERY_LENGTH}", field="query")
    if "\x00" in query:
        raise ValidationError("query contains a NUL character", field="query")
    if _SURROGATE.search(query):
        raise ValidationError("query contains a lone surrogate, which is not text",
                              field="query")
    if not query.strip():
        raise ValidationError("query must not be empty", field="query")
    return query


def _count(value: object, field: str) -> int:
    if (not isinstance(value, int) or isinstance(value, bool)
            or not 1 <= value <= _MAX_CANDIDATES):
        raise ValidationError(f"{field} must be an integer from 1 to {_MAX_CANDIDATES}",
                              field=field)
    return value


class SearchStore(ContextStore):
    """Text search over context items, and the SQLite index's upkeep."""

    def _has_search_queue(self, conn: Connection) -> bool:
        """Whether this database has the index queues (schema 3 or later)."""
        if self.__dict__.get("_search_queue"):
            return True
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                             " AND name = 'context_fts_pending'").fetchone() is not None
        if found:  # a database only ever gains the tables: remember that only
            self.__dict__["_search_queue"] = True
        return found

    def _apply_queue(self, conn: Connection) -> int:
        """Apply the queued index changes in the caller's write transaction;
        returns how many items were (re)indexed."""
        if not self._has_search_queue(conn) or not conn.execute(_QUEUED).fetchone()[0]:
            return 0
        conn.execute(_SYNC[0])
        conn.execute(_SYNC[1])
        indexed = conn.execute(_SYNC[2]).rowcount
        conn.execute(_SYNC[3])
        return max(int(indexed), 0)

    def sync_search(self) -> int:
        """Bring SQLite's full-text index up to date with the context table now;
        returns how many items were (re)indexed.

        Writes only queue their rows (see the 0003 migration: indexing them as
        they are written made a 100,000-item batch 2.2 times as slow and
        halved the rate of one-item writes); the index catches up here, in one
        set-based pass (about 1 s per 100,000 items). :meth:`search_context`
        and :meth:`snapshot` call this first, so a search always sees every
        committed write; maintenance (the archive tier after deleting
        sessions) calls it to empty the queue of removed rows. Inside a write
        transaction it runs in place; inside a read-only snapshot it cannot
        write and does nothing. PostgreSQL's index is a generated column,
        always current: 0.
        """
        if self.dialect != "sqlite":
            return 0
        st = self._tx
        if st.conn is not None:
            return self._apply_queue(st.conn) if st.depth else 0
        with self.reading() as conn:
            queued = self._has_search_queue(conn) and conn.execute(_QUEUED).fetchone()[0]
        if not queued:
            return 0
        with self.atomic() as conn:
            return self._apply_queue(conn)

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """:meth:`StoreCore.snapshot`, with SQLite's search index brought up to
        date first: a read-only snapshot cannot catch it up itself, and a search
        inside one must see the items the snapshot sees. Free when nothing is
        queued (one indexed probe), and on PostgreSQL."""
        if self._tx.conn is None:
            self.sync_search()
        with super().snapshot() as conn:
            yield conn

    def search_context(self, query: str, *, session_id: str | None = None, limit: int = 20,
                       candidates: int = 200) -> list[SearchHit]:
        """Live (unexpired) items matching ``query``, best text match first.

        Up to ``max(limit, candidates)`` hits: the caller re-ranks them (by
        relevance, recency, relations) and keeps ``limit``, so it needs more
        candidates than it will show. ``text_rank`` is the text score
        normalised within this result set: 1 for the best, down towards 0.
        Ranking is bm25 on SQLite and ts_rank_cd on PostgreSQL, with the key
        weighted above the body on both. Every word must match (on SQLite a
        trailing ``*`` makes a word a prefix; on PostgreSQL the web-search
        syntax applies: ``"phrase"``, ``or``, ``-word``).
        """
        text = _check_query(query)
        if session_id is not None:
            validate_id(session_id, "session_id")
        fetch = max(_count(limit, "limit"), _count(candidates, "candidates"))
        now = self.ts(self.now())
        params: list[Any]
        if self.dialect == "sqlite":
            match = fts5_query(text)
            if match is None:
                return []
            self.sync_search()
            sql = (f"SELECT {_COLS}, bm25(context_fts, {_KEY_WEIGHT}, {_BODY_WEIGHT})"
                   " FROM context_fts JOIN context c ON c.rowid = context_fts.rowid"
                   " WHERE context_fts MATCH ? AND (c.expires_at IS NULL OR c.expires_at > ?)"
                   # Terms of a row changed since the last catch-up (possible only
                   # in a snapshot that began meanwhile) are stale: never a hit.
                   " AND NOT EXISTS (SELECT 1 FROM context_fts_gone g"
                   " WHERE g.item_rowid = c.rowid)")
            params = [match, now]
            order = " ORDER BY 12, c.id LIMIT ?"  # bm25: lower (more negative) is better
        else:
            # The query twice: as written, and with path punctuation turned into
            # spaces as the key was indexed ("main.py" -> main & py).
            sql = (f"SELECT {_COLS}, ts_rank_cd(c.search_vector, q.q)"
                   " FROM context c, (SELECT websearch_to_tsquery('english', ?)"
                   " || websearch_to_tsquery('english', translate(?, '/._:', '    ')) AS q) q"
                   " WHERE c.search_vector @@ q.q"
                   " AND (c.expires_at IS NULL OR c.expires_at > ?)")
            params = [text, text, now]
            order = " ORDER BY 12 DESC, c.id LIMIT ?"
        if session_id is not None:
            sql += " AND c.session_id = ?"
            params.append(session_id)
        params.append(fetch)
        with self.reading() as conn:
            rows = conn.execute(sql + order, params).fetchall()
        if not rows:
            return []
        scores = [(-float(r[11]) if self.dialect == "sqlite" else float(r[11])) for r in rows]
        best = max(scores)
        return [SearchHit(self.context_row(r), _normalise(s, best))
                for r, s in zip(rows, scores, strict=True)]

    def reindex_search(self) -> int:
        """Rebuild the full-text index from the context table; returns the items indexed.

        SQLite's index is keyed by the context rows' rowids, and a full VACUUM
        may renumber those (the table has no INTEGER PRIMARY KEY): run this
        after one, or the index would point search hits at the wrong items.
        PostgreSQL's index is a generated column that cannot drift: nothing to
        do, the count is returned.
        """
        if self.dialect != "sqlite":
            row = self.query_one("SELECT COUNT(*) FROM context", ())
            return int(row[0])
        with self.atomic() as conn:
            conn.execute("INSERT INTO context_fts (context_fts) VALUES ('delete-all')")
            conn.execute("DELETE FROM context_fts_gone")
            conn.execute("DELETE FROM context_fts_pending")
            cur = conn.execute("INSERT INTO context_fts (rowid, key, body)"
                               f" SELECT c.rowid, c.context_key, {_body('c')} FROM context c")
            count = cur.rowcount
        return int(count)


def _normalise(score: float, best: float) -> float:
    """``score`` as a share of the best score, kept inside (0, 1]."""
    if best <= 0.0:
        return 1.0
    return min(1.0, max(score / best, 1e-9))
