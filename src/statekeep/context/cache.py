"""How a reconstructed context travels through the warm tier.

A reconstruction is the most expensive read statekeep serves (several
queries and a ranking of every item in the session), which is exactly what
the warm tier is for: one process builds it, every process on the store
reuses it. Entries are invalidated by key after any committed change in the
session. Preferences belong to a user, not a session, so a change to them
cannot name the entries to drop; each entry carries instead a stamp of the
user's preferences (how many, the latest change) that is checked against the
store -- one indexed query -- before the entry is used.
"""

from __future__ import annotations

from typing import Any

from statekeep import codec
from statekeep.context.reconstruct import SessionContext
from statekeep.store.protocol import Store

__all__ = ["decode", "encode", "preference_stamp", "warm_key"]


def warm_key(session_id: str) -> str:
    return f"recon:{session_id}"


def preference_stamp(store: Store, user_id: str) -> list[Any]:
    row = store.query_one(
        "SELECT COUNT(*), MAX(updated_at) FROM user_preferences WHERE user_id = ?", (user_id,))
    latest = row[1]
    return [int(row[0]), None if latest is None else store.ts_out(latest).isoformat()]


def encode(ctx: SessionContext, stamp: list[Any]) -> tuple[bytes, int]:
    """The compressed warm-tier entry, and the size of its JSON (the hot tier's
    measure of the entry)."""
    raw = codec.dumps_trusted({"stamp": stamp, "ctx": ctx.to_dict()})
    return codec.compress(raw), len(raw)


def decode(store: Store, data: bytes) -> tuple[SessionContext, int] | None:
    """The context from a warm entry, or None when it is damaged or its
    preferences stamp no longer matches the store."""
    try:
        raw = codec.decompress(data)
        doc = codec.loads(raw)
        ctx = SessionContext.from_dict(doc["ctx"])
    except (codec.CorruptDataError, ValueError, KeyError, TypeError):
        return None
    if doc.get("stamp") != preference_stamp(store, ctx.session.user_id):
        return None
    return ctx, len(raw)
