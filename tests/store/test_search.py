"""Full-text search over context items, on both backends: what is indexed, how
hits rank, that the index follows every write, and that no user text can
reach the query parser as syntax."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from statekeep import ContextInput, InvalidIdError, Store, ValidationError
from statekeep.store.search import MAX_QUERY_LENGTH, SearchHit, fts5_query


def keys(hits: list[SearchHit]) -> list[str]:
    return [h.item.context_key for h in hits]


@pytest.fixture
def sid(store: Store) -> str:
    return store.create_session("alice").id


def test_key_match_ranks_above_body_match(store: Store, sid: str) -> None:
    store.set_context(sid, "note", "other", {"text": "the tokenizer splits the parser input"})
    store.set_context(sid, "file", "src/parser.py", {"text": "reads tokens"})
    store.set_context(sid, "note", "unrelated", {"text": "nothing to see"})
    hits = store.search_context("parser", session_id=sid)
    assert keys(hits) == ["src/parser.py", "other"]
    assert hits[0].text_rank == 1.0
    assert 0.0 < hits[1].text_rank < 1.0
    assert hits[0].item == store.get_context(sid, "file", "src/parser.py")
    # A whole path finds its item too.
    assert keys(store.search_context("src/parser.py", session_id=sid))[0] == "src/parser.py"
    assert keys(store.search_context("parser.py", session_id=sid))[0] == "src/parser.py"


def test_only_string_values_are_indexed(store: Store, sid: str) -> None:
    store.set_context(sid, "note", "n1", {"zebrafield": "apricot orchard", "count": 424242,
                                          "nested": {"deeper": ["walnut", 7, True, None]}})
    assert keys(store.search_context("apricot", session_id=sid)) == ["n1"]
    assert keys(store.search_context("walnut", session_id=sid)) == ["n1"]
    assert store.search_context("zebrafield", session_id=sid) == []  # a JSON key
    assert store.search_context("deeper", session_id=sid) == []
    assert store.search_context("424242", session_id=sid) == []  # a number
    assert store.search_context("true", session_id=sid) == []
    store.set_context(sid, "note", "plain", "a bare string value about kiwis")
    assert keys(store.search_context("kiwis", session_id=sid)) == ["plain"]


def test_every_word_must_match_and_stemming_applies(store: Store, sid: str) -> None:
    store.set_context(sid, "note", "a", "running the migrations nightly")
    store.set_context(sid, "note", "b", "running tests")
    assert keys(store.search_context("runs migration", session_id=sid)) == ["a"]
    assert sorted(keys(store.search_context("run", session_id=sid))) == ["a", "b"]


def test_session_filter_and_expiry(store: Store, make_store: Callable[..., Store],
                                   clock: Any) -> None:
    st = make_store(clock=clock)
    s1 = st.create_session("alice").id
    s2 = st.create_session("bob").id
    st.set_context(s1, "note", "mine", "shared pelican word")
    st.set_context(s2, "note", "theirs", "shared pelican word")
    st.set_context(s1, "note", "brief", "pelican soon gone", ttl_seconds=60)
    assert sorted(keys(st.search_context("pelican"))) == ["brief", "mine", "theirs"]
    assert sorted(keys(st.search_context("pelican", session_id=s1))) == ["brief", "mine"]
    assert keys(st.search_context("pelican", session_id=s2)) == ["theirs"]
    clock.advance(seconds=61)
    assert sorted(keys(st.search_context("pelican"))) == ["mine", "theirs"]
    assert st.search_context("pelican", session_id="ses_nobody") == []


def test_updates_and_deletes_are_reflected(store: Store, sid: str) -> None:
    store.set_context(sid, "note", "k", "original walrus")
    store.set_context(sid, "note", "gone", "walrus to delete")
    store.set_context(sid, "note", "k", "replaced narwhal")
    assert store.search_context("original", session_id=sid) == []
    assert keys(store.search_context("narwhal", session_id=sid)) == ["k"]
    store.delete_context(sid, "note", "gone")
    assert store.search_context("walrus", session_id=sid) == []
    store.set_context_many(sid, [ContextInput("note", "k", "batch beluga"),
                                 ContextInput("note", "new", "batch beluga too")])
    assert sorted(keys(store.search_context("beluga", session_id=sid))) == ["k", "new"]
    assert store.search_context("narwhal", session_id=sid) == []
    # Every 'delete' was given exactly the terms its row was indexed with: the
    # index holds what a rebuild from scratch holds, and nothing once all is gone.
    terms = index_terms(store)
    store.reindex_search()
    assert index_terms(store) == terms
    store.delete_session(sid)
    assert store.search_context("beluga") == []
    assert index_terms(store) == []
    assert store.integrity_problems() == []


def index_terms(store: Store) -> list[tuple[Any, ...]]:
    """(term, documents, occurrences) of SQLite's index; [] on PostgreSQL."""
    if store.dialect != "sqlite":
        return []
    with store.atomic() as conn:
        conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_terms"
                     " USING fts5vocab(main, context_fts, 'row')")
        return [tuple(r) for r in conn.execute("SELECT * FROM temp.fts_terms ORDER BY term")]


def test_access_counts_do_not_touch_the_index(make_store: Callable[..., Store]) -> None:
    st = make_store(access_flush_interval=0)
    sid = st.create_session("alice").id
    st.set_context(sid, "note", "k", "heron")
    st.search_context("heron")
    for _ in range(3):
        st.get_context(sid, "note", "k")
    assert st.access_log.flush() == 1
    if st.dialect == "sqlite":
        with st.reading() as conn:
            assert conn.execute("SELECT COUNT(*) FROM context_fts_pending").fetchone()[0] == 0
    assert keys(st.search_context("heron")) == ["k"]


def test_writes_outside_the_store_api_are_found(store: Store, sid: str) -> None:
    """Raw SQL (another program) bypasses the store's code but not the triggers."""
    with store.atomic() as conn:
        conn.execute("INSERT INTO context (id, session_id, context_type, context_key,"
                     " context_value, created_at, updated_at, last_accessed)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     ("ctx_raw", sid, "note", "raw", store.json_in(b'{"t": "osprey"}'),
                      store.ts(store.now()), store.ts(store.now()), store.ts(store.now())))
    assert keys(store.search_context("osprey")) == ["raw"]
    with store.atomic() as conn:
        conn.execute("UPDATE context SET context_value = ? WHERE id = ?",
                     (store.json_in(b'{"t": "kestrel"}'), "ctx_raw"))
    assert store.search_context("osprey") == []
    assert keys(store.search_context("kestrel")) == ["raw"]


def test_search_inside_transactions_and_snapshots(store: Store, sid: str) -> None:
    store.set_context(sid, "note", "before", "albatross")
    with store.atomic():
        store.set_context(sid, "note", "inside", "albatross")
        assert sorted(keys(store.search_context("albatross"))) == ["before", "inside"]
    store.set_context(sid, "note", "later", "albatross")
    with store.snapshot():
        assert sorted(keys(store.search_context("albatross"))) == ["before", "inside", "later"]


def test_prefix_word_on_sqlite(store: Store, sid: str) -> None:
    if store.dialect != "sqlite":
        pytest.skip("websearch_to_tsquery has no prefix syntax")
    store.set_context(sid, "file", "src/orchestra.py", "x")
    assert keys(store.search_context("orch*")) == ["src/orchestra.py"]
    assert store.search_context("orch") == []


def test_unicode_text(store: Store, sid: str) -> None:
    store.set_context(sid, "note", "fr", {"t": "une approche naïve du problème"})
    store.set_context(sid, "note", "ja", {"t": "東京 タワー"})
    assert keys(store.search_context("naïve")) == ["fr"]
    assert keys(store.search_context("problème")) == ["fr"]
    assert keys(store.search_context("東京")) == ["ja"]


HOSTILE = ['"', '""', "'", "NEAR(", "NEAR(a b)", "a OR", "OR", "AND", "NOT", "a NOT",
           "*", "**", "a*", "*a", "-x", "--", "col:val", "key:parser", "body:x", ")))",
           "(((", "{a b}", "^a", "a + b", ":", "a:", "\\", "%", "_", "x'; DROP TABLE context;--",
           "\u202e", "🤖", "a\tb\nc", "NEAR/3", "a AND (b OR", '"unterminated']


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_are_plain_text(store: Store, sid: str, query: str) -> None:
    store.set_context(sid, "note", "x", {"t": "parser key body col val a b c x"})
    before = store.dump()
    hits = store.search_context(query)
    assert isinstance(hits, list)
    assert all(isinstance(h, SearchHit) for h in hits)
    assert store.search_context(query, session_id=sid, candidates=1) == hits[:1]
    assert store.dump() == before


def test_operators_are_words_on_sqlite(store: Store, sid: str) -> None:
    if store.dialect != "sqlite":
        pytest.skip("PostgreSQL's web-search syntax gives or/- their meaning on purpose")
    store.set_context(sid, "note", "x", "alpha beta")
    assert store.search_context("alpha OR gamma") == []  # OR is a word that must match
    assert keys(store.search_context("alpha -beta")) == ["x"]  # '-beta' is the word beta
    # Not a filter on a column "alpha" (there is none: FTS5 would fail), a phrase.
    assert keys(store.search_context("alpha:beta")) == ["x"]
    assert fts5_query('say "hi" NEAR(a) x:y pre* *') == '"say" """hi""" "NEAR(a)" "x:y" "pre"*'
    assert fts5_query("* ) (") is None


@pytest.mark.parametrize(("query", "error"), [
    ("", ValidationError), ("   ", ValidationError), ("\n\t ", ValidationError),
    ("\x1f\u3000", ValidationError),  # separators count as blank
    ("x" * (MAX_QUERY_LENGTH + 1), ValidationError), ("a\x00b", ValidationError),
    ("\ud800", ValidationError), (None, ValidationError), (b"bytes", ValidationError),
    (42, ValidationError),
])
def test_bad_queries_are_refused(store: Store, query: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        store.search_context(query)


def test_limits_are_validated_and_candidates_bound_the_result(store: Store, sid: str) -> None:
    store.set_context_many(sid, [ContextInput("note", f"k{i}", f"gannet {'gannet ' * (i % 5)}")
                                 for i in range(30)])
    assert len(store.search_context("gannet")) == 30
    assert len(store.search_context("gannet", limit=3, candidates=5)) == 5
    assert len(store.search_context("gannet", limit=8, candidates=5)) == 8
    hits = store.search_context("gannet", candidates=30)
    ranks = [h.text_rank for h in hits]
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[0] == 1.0 and all(0.0 < r <= 1.0 for r in ranks)
    bad: Any
    for bad in (0, -1, True, 10_001, 2.5, "5"):
        with pytest.raises(ValidationError):
            store.search_context("gannet", limit=bad)
        with pytest.raises(ValidationError):
            store.search_context("gannet", candidates=bad)
    with pytest.raises(InvalidIdError):
        store.search_context("gannet", session_id="no such; id")
    assert len(store.search_context("gannet", candidates=MAX_QUERY_LENGTH)) == 30
    assert len(store.search_context("gannet " * 100)) == 30  # long but legal query


def test_reindex_gives_the_same_results(store: Store, sid: str) -> None:
    store.set_context_many(sid, [ContextInput("file", f"src/m{i}.py", {"doc": f"module {i} puffin"})
                                 for i in range(20)])
    store.set_context(sid, "file", "src/m3.py", {"doc": "rewritten"})
    store.delete_context(sid, "file", "src/m4.py")
    before = [(h.item.id, h.text_rank) for h in store.search_context("puffin module")]
    assert len(before) == 18
    assert store.reindex_search() == 19
    after = [(h.item.id, h.text_rank) for h in store.search_context("puffin module")]
    assert after == before
    assert store.sync_search() == 0  # nothing queued


def test_batch_is_indexed_in_one_pass_before_the_next_search(store: Store, sid: str) -> None:
    store.set_context_many(sid, [ContextInput("note", f"k{i}", {"t": f"cormorant {i}"})
                                 for i in range(500)])
    if store.dialect == "sqlite":
        with store.reading() as conn:
            assert conn.execute("SELECT COUNT(*) FROM context_fts_pending").fetchone()[0] == 500
        assert store.sync_search() == 500
        with store.reading() as conn:
            assert conn.execute("SELECT COUNT(*) FROM context_fts_pending").fetchone()[0] == 0
    else:
        assert store.sync_search() == 0
    assert len(store.search_context("cormorant", candidates=1000)) == 500
    assert keys(store.search_context("cormorant 417")) == ["k417"]


def test_upgrade_indexes_the_items_already_stored(make_store: Callable[..., Store],
                                                  tmp_path: Any) -> None:
    from statekeep import StateMigrationSystem

    st = make_store(auto_migrate=False)
    ms = StateMigrationSystem(st, backup_dir=tmp_path / "backups")
    ms.migrate(to_version=2)
    sid = st.create_session("alice").id
    st.set_context(sid, "file", "src/legacy.py", {"doc": "written before search existed"})
    ms.migrate()
    assert ms.current_version() == ms.registry.latest
    assert [h.item.context_key for h in st.search_context("legacy")] == ["src/legacy.py"]
    assert [h.item.context_key for h in st.search_context("existed")] == ["src/legacy.py"]
