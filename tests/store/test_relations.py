"""Relations between context items, on both backends: validation that changes
nothing, upsert, cascades, the recursive walk, per-item statistics, and query
plans that read one session's edges through the indexes."""

from __future__ import annotations

import math
from typing import Any

import pytest

from statekeep import (
    ContextInput,
    InvalidIdError,
    NotFoundError,
    NotJSONError,
    StatekeepError,
    Store,
    ValidationError,
)
from statekeep.store.base import Change
from statekeep.store.relations import _STATS_SQL, Relation, _neighbours_sql

TABLES = ("sessions", "context", "context_relations", "context_content", "content_blobs",
          "audit_log")


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a relation write may touch, in a stable order."""
    out = {}
    with store.reading() as conn:
        for table in TABLES:
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


def items(store: Store, session_id: str, *keys: str) -> dict[str, str]:
    """Create one 'file' item per key; key -> item id."""
    store.set_context_many(session_id, [ContextInput("file", k, {"path": k}) for k in keys])
    return {k: store.get_context(session_id, "file", k).id for k in keys}  # type: ignore[union-attr]


@pytest.fixture
def two(store: Store) -> tuple[str, str, dict[str, str], dict[str, str]]:
    s1 = store.create_session("alice").id
    s2 = store.create_session("bob").id
    return s1, s2, items(store, s1, "a", "b", "c", "d", "e", "f"), items(store, s2, "x", "y")


def test_relate_defaults_upserts_and_audits(store: Store, two: Any) -> None:
    s1, _, it, _ = two
    changes: list[Change] = []
    store.add_change_listener(changes.append)
    rel = store.relate(s1, it["a"], it["b"], "dependency")
    assert isinstance(rel, Relation)
    assert (rel.session_id, rel.source_id, rel.target_id) == (s1, it["a"], it["b"])
    assert rel.strength == 0.8 and rel.metadata is None
    assert store.relate(s1, it["a"], it["b"], "calls").strength == 0.9
    assert store.relate(s1, it["b"], it["a"], "related").strength == 0.5

    again = store.relate(s1, it["a"], it["b"], "dependency", 0.25, {"line": 12, "why": "é"})
    assert again.id == rel.id and again.created_at == rel.created_at
    assert (again.strength, again.metadata) == (0.25, {"line": 12, "why": "é"})
    stored = [r for r in store.relations(s1) if r.id == rel.id]
    assert stored == [again]
    assert len(store.relations(s1)) == 3

    events = [(e.event_type, e.entity_id) for e in store.audit(entity_type="relation")]
    assert events[0] == ("create", rel.id) and events[-1] == ("update", rel.id)
    last = store.audit(entity_type="relation")[-1]
    assert last.old_value["strength"] == 0.8 and last.new_value["strength"] == 0.25
    assert changes[-1] == Change("upsert", "relation", (rel.id,), s1)


def test_strength_zero_and_one_are_allowed(store: Store, two: Any) -> None:
    s1, _, it, _ = two
    assert store.relate(s1, it["a"], it["b"], "related", 0).strength == 0.0
    assert store.relate(s1, it["a"], it["c"], "related", 1).strength == 1.0


@pytest.mark.parametrize(("case", "error"), [
    ("unknown type", ValidationError),
    ("type wrong case", ValidationError),
    ("strength above 1", ValidationError),
    ("strength below 0", ValidationError),
    ("strength NaN", ValidationError),
    ("strength inf", ValidationError),
    ("strength bool", ValidationError),
    ("strength text", ValidationError),
    ("self relation", ValidationError),
    ("cross-session target", ValidationError),
    ("cross-session source", ValidationError),
    ("missing target", NotFoundError),
    ("missing session", NotFoundError),
    ("hostile id", InvalidIdError),
    ("metadata not JSON", NotJSONError),
])
def test_relate_rejections_change_nothing(store: Store, two: Any, case: str,
                                          error: type[StatekeepError]) -> None:
    s1, _, it, other = two
    store.relate(s1, it["a"], it["b"], "dependency")  # an edge the failures must not touch
    a, b = it["a"], it["b"]
    calls = {
        "unknown type": lambda: store.relate(s1, a, b, "imports"),
        "type wrong case": lambda: store.relate(s1, a, b, "Calls"),
        "strength above 1": lambda: store.relate(s1, a, b, "calls", 1.5),
        "strength below 0": lambda: store.relate(s1, a, b, "calls", -0.1),
        "strength NaN": lambda: store.relate(s1, a, b, "calls", math.nan),
        "strength inf": lambda: store.relate(s1, a, b, "calls", math.inf),
        "strength bool": lambda: store.relate(s1, a, b, "calls", True),
        "strength text": lambda: store.relate(s1, a, b, "calls", "0.5"),  # type: ignore[arg-type]
        "self relation": lambda: store.relate(s1, a, a, "calls"),
        "cross-session target": lambda: store.relate(s1, a, other["x"], "calls"),
        "cross-session source": lambda: store.relate(s1, other["x"], a, "calls"),
        "missing target": lambda: store.relate(s1, a, "ctx_nope", "calls"),
        "missing session": lambda: store.relate("ses_nope", a, b, "calls"),
        "hostile id": lambda: store.relate(s1, a, "x'; DROP TABLE context;--", "calls"),
        "metadata not JSON": lambda: store.relate(s1, a, b, "calls", 0.5, {"s": {1, 2}}),
    }
    before = snapshot(store)
    with pytest.raises(StatekeepError) as info:
        calls[case]()
    assert type(info.value) is error, f"{case}: {type(info.value).__name__}: {info.value}"
    assert snapshot(store) == before


def test_unrelate(store: Store, two: Any) -> None:
    s1, _, it, _ = two
    rel = store.relate(s1, it["a"], it["b"], "calls")
    assert store.unrelate(rel.id) is True
    assert store.relations(s1) == []
    assert store.unrelate(rel.id) is False
    assert [e.event_type for e in store.audit(entity_id=rel.id)] == ["create", "delete"]
    with pytest.raises(InvalidIdError):
        store.unrelate("bad id")


def test_edges_go_with_their_items_and_session(store: Store, two: Any) -> None:
    s1, s2, it, other = two
    store.relate(s1, it["a"], it["b"], "calls")
    store.relate(s1, it["c"], it["a"], "dependency")
    store.relate(s1, it["c"], it["d"], "dependency")
    store.relate(s2, other["x"], other["y"], "related")
    store.delete_context(s1, "file", "a")  # either end: both edges go
    assert [(r.source_id, r.target_id) for r in store.relations(s1)] == [(it["c"], it["d"])]
    store.delete_session(s1)
    with store.reading() as conn:
        left = conn.execute("SELECT session_id FROM context_relations").fetchall()
    assert [r[0] for r in left] == [s2]


def test_relations_filter_order_and_limit(store: Store, two: Any) -> None:
    s1, _, it, _ = two
    for src, dst, kind in [("d", "a", "calls"), ("a", "b", "calls"), ("a", "b", "dependency"),
                           ("b", "c", "related"), ("e", "f", "calls")]:
        store.relate(s1, it[src], it[dst], kind)
    everything = store.relations(s1)
    assert everything == sorted(everything,
                                key=lambda r: (r.source_id, r.target_id, r.relation_type))
    touching_a = store.relations(s1, item_ids=[it["a"]])
    assert {(r.source_id, r.target_id, r.relation_type) for r in touching_a} == {
        (it["d"], it["a"], "calls"), (it["a"], it["b"], "calls"),
        (it["a"], it["b"], "dependency")}
    assert len(store.relations(s1, item_ids=[it["a"], it["c"]])) == 4
    assert store.relations(s1, item_ids=[]) == []
    assert store.relations(s1, limit=2) == everything[:2]
    for bad in (0, -1, True, "2"):
        with pytest.raises(ValidationError):
            store.relations(s1, limit=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.relations(s1, item_ids=it["a"])  # a string is not a list of ids


def test_replace_relations(store: Store, two: Any) -> None:
    s1, s2, it, other = two
    store.relate(s1, it["a"], it["b"], "dependency")
    store.relate(s1, it["a"], it["c"], "related")  # another type: kept
    store.relate(s1, it["b"], it["c"], "dependency")  # another source: kept
    store.relate(s2, other["x"], other["y"], "dependency")  # another session: kept
    changes: list[Change] = []
    store.add_change_listener(changes.append)
    with store.atomic() as conn:
        n = store.replace_relations(conn, s1, [it["a"], it["d"]], ["dependency", "calls"], [
            (it["a"], it["d"], "dependency", 0.7, {"import": "d"}),
            (it["a"], it["e"], "calls", 0.9, None),
            (it["a"], it["e"], "calls", 0.4, None),  # repeated: the last wins
            (it["d"], it["a"], "calls", 1.0, None),
        ])
    assert n == 3
    got = {(r.source_id, r.target_id, r.relation_type): (r.strength, r.metadata)
           for r in store.relations(s1)}
    assert got == {
        (it["a"], it["c"], "related"): (0.5, None),
        (it["b"], it["c"], "dependency"): (0.8, None),
        (it["a"], it["d"], "dependency"): (0.7, {"import": "d"}),
        (it["a"], it["e"], "calls"): (0.4, None),
        (it["d"], it["a"], "calls"): (1.0, None),
    }
    assert len(store.relations(s2)) == 1
    summary = store.audit(entity_type="relation")[-1]
    assert summary.event_type == "replace" and summary.entity_id == s1
    assert summary.change_metadata == {"sources": 2, "relation_types": ["dependency", "calls"],
                                       "deleted": 1, "inserted": 3}
    assert changes[-1].event == "replace" and len(changes[-1].entity_ids) == 3
    # Replacing with nothing removes the sources' edges of those types.
    with store.atomic() as conn:
        assert store.replace_relations(conn, s1, [it["a"]], ["calls"], []) == 0
    assert (it["a"], it["e"], "calls") not in {
        (r.source_id, r.target_id, r.relation_type) for r in store.relations(s1)}


@pytest.mark.parametrize("case", ["source not replaced", "type not replaced",
                                  "unknown type", "self", "cross-session target",
                                  "missing target", "bad strength", "not a tuple"])
def test_replace_relations_rejections_roll_back(store: Store, two: Any, case: str) -> None:
    s1, _, it, other = two
    store.relate(s1, it["a"], it["b"], "dependency")
    a, b = it["a"], it["b"]
    rows: dict[str, Any] = {
        "source not replaced": (b, a, "dependency", 0.5, None),
        "type not replaced": (a, b, "calls", 0.5, None),
        "unknown type": (a, b, "imports", 0.5, None),
        "self": (a, a, "dependency", 0.5, None),
        "cross-session target": (a, other["x"], "dependency", 0.5, None),
        "missing target": (a, "ctx_missing", "dependency", 0.5, None),
        "bad strength": (a, b, "dependency", math.nan, None),
        "not a tuple": [a, b, "dependency", 0.5, None],
    }
    before = snapshot(store)
    with pytest.raises(StatekeepError), store.atomic() as conn:
        store.set_context(s1, "note", "written first", 1)  # rolled back with the rest
        store.replace_relations(conn, s1, [a], ["dependency"],
                                [(a, it["c"], "dependency", 0.5, None), rows[case]])
    assert snapshot(store) == before


def graph(store: Store) -> tuple[str, dict[str, str], str, dict[str, str]]:
    """Session 1: a cycle a->b->c->a, c->d, e->d (pointing in), d->g, and f alone.
    Session 2: its own chain, plus a stray row claiming session 2 that joins
    session 1's items (the walk must follow only its own session's rows)."""
    s1 = store.create_session("alice").id
    s2 = store.create_session("bob").id
    it = items(store, s1, "a", "b", "c", "d", "e", "f", "g")
    ot = items(store, s2, "x", "y", "z")
    for src, dst in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("e", "d"), ("d", "g")]:
        store.relate(s1, it[src], it[dst], "dependency")
    store.relate(s2, ot["x"], ot["y"], "calls")
    store.relate(s2, ot["y"], ot["z"], "calls")
    with store.atomic() as conn:
        conn.execute("INSERT INTO context_relations (id, session_id, source_id, target_id,"
                     " relation_type, strength, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     ("rel_stray", s2, it["a"], it["f"], "related", 0.5, store.ts(store.now())))
    return s1, it, s2, ot


def test_neighbours_by_depth_both_directions_with_cycles(store: Store) -> None:
    s1, it, s2, ot = graph(store)

    def names(found: dict[str, int]) -> dict[str, int]:
        back = {v: k for k, v in {**it, **ot}.items()}
        return {back[i]: hops for i, hops in found.items()}

    assert names(store.neighbours(s1, [it["a"]], 0)) == {"a": 0}
    assert names(store.neighbours(s1, [it["a"]], 1)) == {"a": 0, "b": 1, "c": 1}
    assert names(store.neighbours(s1, [it["a"]], 2)) == {"a": 0, "b": 1, "c": 1, "d": 2}
    assert names(store.neighbours(s1, [it["a"]], 3)) == {
        "a": 0, "b": 1, "c": 1, "d": 2, "e": 3, "g": 3}
    # Against the arrows: g reaches d, then c and e.
    assert names(store.neighbours(s1, [it["g"]], 2)) == {"g": 0, "d": 1, "c": 2, "e": 2}
    assert names(store.neighbours(s1, [it["e"], it["b"]], 1)) == {
        "e": 0, "b": 0, "d": 1, "a": 1, "c": 1}
    assert names(store.neighbours(s1, [it["f"]], 10)) == {"f": 0}  # the stray row is s2's
    assert names(store.neighbours(s2, [ot["x"]], 10)) == {"x": 0, "y": 1, "z": 2}
    # Seeds of another session, or unknown, are left out.
    assert store.neighbours(s1, [ot["x"], "ctx_unknown"], 3) == {}
    assert store.neighbours(s1, [], 3) == {}


@pytest.mark.parametrize("depth", [-1, 11, True, 2.0, "2", None])
def test_neighbours_depth_is_validated(store: Store, depth: Any) -> None:
    s1, it, _, _ = graph(store)
    with pytest.raises(ValidationError):
        store.neighbours(s1, [it["a"]], depth)


def test_neighbours_ids_are_validated(store: Store) -> None:
    s1, _, _, _ = graph(store)
    with pytest.raises(InvalidIdError):
        store.neighbours(s1, ["ok", "not ok"], 1)
    with pytest.raises(ValidationError):
        store.neighbours(s1, "ctx_a", 1)
    with pytest.raises(InvalidIdError):
        store.neighbours("bad session", ["ctx_a"], 1)


def test_relation_stats(store: Store) -> None:
    s1, it, s2, ot = graph(store)
    store.relate(s1, it["a"], it["b"], "calls", 0.2)  # a second a-b edge
    stats = store.relation_stats(s1)
    assert set(stats) == {it[k] for k in "abcdeg"}  # f has no edge of s1
    count, mean = stats[it["a"]]
    assert count == 3 and mean == pytest.approx((0.8 + 0.8 + 0.2) / 3)
    assert stats[it["d"]][0] == 3 and stats[it["d"]][1] == pytest.approx(0.8)
    assert stats[it["g"]][0] == 1 and stats[it["g"]][1] == pytest.approx(0.8)
    y = store.relation_stats(s2)[ot["y"]]
    assert y[0] == 2 and y[1] == pytest.approx(0.9)
    assert store.relation_stats(store.create_session("carol").id) == {}


def _plan(store: Store, sql: str, params: list[Any]) -> str:
    with store.reading() as conn:
        if store.dialect == "sqlite":
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            return "\n".join(str(r[3]) for r in rows)
        return "\n".join(str(r[0]) for r in conn.execute("EXPLAIN " + sql, params).fetchall())


def test_graph_queries_read_one_session_through_the_indexes(store: Store) -> None:
    """The cost of a walk follows the session's graph, not the store's: with many
    sessions in the store, every read of context_relations is an index search."""
    sessions = []
    for _ in range(25):
        sid = store.create_session("u").id
        keys = [f"f{i}" for i in range(40)]
        ids = list(items(store, sid, *keys).values())
        rows = [(ids[i], ids[(i * 7 + 3) % 40], "dependency", 0.5, None) for i in range(40)]
        rows += [(ids[i], ids[(i + 1) % 40], "calls", 0.9, None) for i in range(40)]
        with store.atomic() as conn:
            store.replace_relations(conn, sid, ids, ["dependency", "calls"],
                                    [r for r in rows if r[0] != r[1]])
        sessions.append((sid, ids))
    with store.atomic() as conn:
        conn.execute("ANALYZE")
    sid, ids = sessions[7]
    assert len(store.neighbours(sid, ids[:2], 3)) > 2
    plans = {
        "neighbours": _plan(store, _neighbours_sql(2), [sid, sid, sid, ids[0], ids[1], 3]),
        "relation_stats": _plan(store, _STATS_SQL, [sid, sid]),
        "relations(item_ids)": _plan(
            store, "SELECT id FROM context_relations WHERE session_id = ?"
                   " AND (source_id IN (?) OR target_id IN (?))", [sid, ids[0], ids[0]]),
    }
    for name, plan in plans.items():
        assert "context_relations" in plan or "idx_relations" in plan, (name, plan)
        if store.dialect == "sqlite":
            assert "SCAN context_relations" not in plan, (name, plan)
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (name, plan)
        else:
            assert "Seq Scan on context_relations" not in plan, (name, plan)
            assert "Index" in plan, (name, plan)


def test_schema_objects_and_delete_rules(store: Store, schema_objects: Any) -> None:
    objects = schema_objects(store)
    for name in ("context_relations", "context_content"):
        assert ("table", name) in objects
    for name in ("idx_relations_session", "idx_relations_target", "idx_context_content_blob"):
        assert ("index", name) in objects
    if store.dialect == "sqlite":
        assert {("table", "context_fts"), ("table", "context_fts_pending"),
                ("table", "context_fts_gone")} <= objects
        assert {("trigger", f"context_fts_{op}") for op in ("ai", "ad", "au")} <= objects
        assert {("trigger", f"context_content_{op}") for op in ("ai", "ad", "au")} <= objects
        with store.reading() as conn:
            fks = {(table, r[3]): (r[2], r[6]) for table in ("context_relations",
                                                             "context_content")
                   for r in conn.execute(f"PRAGMA foreign_key_list({table})").fetchall()}
        assert fks == {
            ("context_relations", "session_id"): ("sessions", "CASCADE"),
            ("context_relations", "source_id"): ("context", "CASCADE"),
            ("context_relations", "target_id"): ("context", "CASCADE"),
            ("context_content", "context_id"): ("context", "CASCADE"),
            ("context_content", "session_id"): ("sessions", "CASCADE"),
            ("context_content", "blob_hash"): ("content_blobs", "NO ACTION"),
        }
    else:
        assert ("index", "idx_context_search") in objects
    assert store.integrity_problems() == []
