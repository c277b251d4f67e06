"""Capture into the store, derived relations, reconstruction and its ranking,
explanations, search and the brief -- on both backends, on a real workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from statekeep import StateSystem
from statekeep.errors import (
    CaptureError,
    NotFoundError,
    PathEscapeError,
    StatekeepError,
    ValidationError,
)


def _dump(sk: StateSystem) -> dict[str, list[tuple[object, ...]]]:
    out = {}
    with sk.store.reading() as conn:
        for table in ("context", "context_relations", "context_content", "content_blobs",
                      "audit_log"):
            out[table] = sorted(tuple(str(v) for v in r) for r in conn.execute(
                f"SELECT * FROM {table}").fetchall())
    return out


def _keys(sk: StateSystem, sid: str, ctype: str) -> set[str]:
    return {c.context_key for c in sk.list_context(sid, context_type=ctype)}


def _edges(sk: StateSystem, sid: str) -> set[tuple[str, str, str]]:
    by_id = {c.id: c.context_key for c in sk.list_context(sid)}
    return {(by_id[r.source_id], r.relation_type, by_id[r.target_id])
            for r in sk.relations(sid)}


def test_capture_directory_honours_gitignore_and_finds_imports(system: StateSystem,
                                                               workspace: Path) -> None:
    sid = system.create_session("alice").id
    report = system.capture_paths(sid, [workspace], environment=True, git=True)
    files = _keys(system, sid, "file")
    assert "src/shop/checkout.py" in files and "web/index.ts" in files
    assert "build/out.txt" not in files and "debug.log" not in files
    assert not any(k.startswith(".git/") for k in files)
    assert report.written == len(report.keys) and report.unchanged == 0
    edges = _edges(system, sid)
    assert ("src/shop/checkout.py", "dependency", "src/shop/pricing.py") in edges
    assert ("src/shop/checkout.py", "dependency", "src/shop/models.py") in edges
    assert ("src/shop/pricing.py", "dependency", "src/shop/models.py") in edges
    assert ("web/index.ts", "dependency", "web/util.ts") in edges
    assert ("src/shop/checkout.py", "calls", "src/shop/pricing.py") in edges
    git = system.get_context(sid, "git", "git")
    assert git is not None and git.context_value["branch"] == "main"
    env = system.get_context(sid, "environment", "env")
    assert env is not None and env.context_value["cwd"] == str(workspace.resolve())


def test_file_content_is_kept_deduplicated_and_binary_by_hash(system: StateSystem,
                                                              workspace: Path) -> None:
    sid = system.create_session("alice").id
    other = system.create_session("bob").id
    system.capture_paths(sid, [workspace / "src"])
    system.capture_paths(other, [workspace / "src", workspace / "logo.png"])
    item = system.get_context(sid, "file", "src/shop/models.py")
    assert item is not None and item.context_value["content"] == "blob"
    assert system.item_content(item.id) == (workspace / "src/shop/models.py").read_bytes()
    blob = item.context_value["sha256"]
    assert system.store.blob_refs(blob) == 2  # two sessions, one copy
    logo = system.get_context(other, "file", "logo.png")
    assert logo is not None and logo.context_value["binary"] is True
    assert system.item_content(logo.id) is None


def test_recapture_of_unchanged_files_writes_nothing(system: StateSystem,
                                                     workspace: Path) -> None:
    sid = system.create_session("alice").id
    system.capture_paths(sid, [workspace])
    before = _dump(system)
    again = system.capture_paths(sid, [workspace])
    assert again.written == 0 and again.unchanged == len(again.keys)
    assert _dump(system) == before


def test_recapture_after_an_edit_updates_item_relations_and_content(
        system: StateSystem, workspace: Path) -> None:
    sid = system.create_session("alice").id
    system.capture_paths(sid, [workspace])
    checkout = workspace / "src/shop/checkout.py"
    checkout.write_text("import json\n\ndef checkout(cart):\n    return json.dumps(cart)\n")
    os.utime(checkout, (1, 1))
    report = system.capture_paths(sid, [workspace])
    assert report.written == 1
    edges = _edges(system, sid)
    assert not any(src == "src/shop/checkout.py" for src, _, _ in edges)
    assert report.relations_removed >= 2
    item = system.get_context(sid, "file", "src/shop/checkout.py")
    assert item is not None
    assert system.item_content(item.id) == checkout.read_bytes()


def test_a_new_file_gains_incoming_relations(system: StateSystem, workspace: Path) -> None:
    sid = system.create_session("alice").id
    (workspace / "src/shop/tax.py").unlink(missing_ok=True)
    (workspace / "src/shop/invoice.py").write_text("from shop.tax import rate\n")
    system.capture_paths(sid, [workspace / "src"])
    assert not any(t == "src/shop/tax.py" for _, _, t in _edges(system, sid))
    (workspace / "src/shop/tax.py").write_text("def rate():\n    return 0.2\n")
    system.capture_paths(sid, [workspace / "src/shop/tax.py"])
    assert ("src/shop/invoice.py", "dependency", "src/shop/tax.py") in _edges(system, sid)


@pytest.mark.parametrize("bad", ["../outside.txt", "/etc/passwd"])
def test_escaping_paths_are_refused_and_nothing_is_written(system: StateSystem,
                                                           workspace: Path, bad: str) -> None:
    sid = system.create_session("alice").id
    (workspace.parent / "outside.txt").write_text("secret")
    before = _dump(system)
    with pytest.raises(PathEscapeError):
        system.capture_paths(sid, [workspace / "src", bad])
    assert _dump(system) == before


def test_symlink_escaping_the_workspace_is_skipped_with_a_reason(system: StateSystem,
                                                                 workspace: Path) -> None:
    sid = system.create_session("alice").id
    (workspace.parent / "secret.txt").write_text("do not read")
    (workspace / "src/leak.txt").symlink_to(workspace.parent / "secret.txt")
    report = system.capture_paths(sid, [workspace / "src"])
    assert any(s.path == "src/leak.txt" for s in report.skipped)
    assert "src/leak.txt" not in _keys(system, sid, "file")


def test_missing_session_and_missing_paths(system: StateSystem, workspace: Path) -> None:
    with pytest.raises(NotFoundError):
        system.capture_paths("sess_" + "0" * 32, [workspace])
    sid = system.create_session("alice").id
    report = system.capture_paths(sid, [workspace / "src", workspace / "nope.py"])
    assert any(s.reason == "not found" for s in report.skipped)
    with pytest.raises(ValidationError):
        system.capture_paths(sid, [])


def test_too_many_files_refused_up_front(db_url: str, workspace: Path) -> None:
    from statekeep import StateConfig
    with StateSystem(StateConfig(db=db_url, workspace_root=str(workspace),
                                 capture_max_files=3)) as sk:
        sid = sk.create_session("alice").id
        before = _dump(sk)
        with pytest.raises(CaptureError):
            sk.capture_paths(sid, [workspace])
        assert _dump(sk) == before


def test_seed_capture_context_with_snippets_task_and_environment(
        system: StateSystem, workspace: Path) -> None:
    sid = system.create_session("alice").id
    task = system.create_task(sid, "fix", description="Fix rounding in pricing.py")
    system.start_task(task.id)
    report = system.capture_context(sid, "code", {
        "files": ["src/shop/pricing.py", "src/shop/models.py"],
        "code_snippets": [
            {"id": "snip-discount", "language": "python", "function_name": "apply_discount",
             "path": "src/shop/pricing.py",
             "code": "def helper(c):\n    return apply_discount(c, 0.2)\n"},
            {"id": "snip-broken", "language": "python", "code": "def broken(:\n"},
        ],
        "task": {"id": task.id},
        "environment": {"packages": {"orjson": "3.10"}},
    })
    assert ("task", task.id) in report.keys
    broken = system.get_context(sid, "code", "snip-broken")
    assert broken is not None and broken.context_value["parse_error"]
    env = system.get_context(sid, "environment", "env")
    assert env is not None and env.context_value["packages"] == {"orjson": "3.10"}
    edges = _edges(system, sid)
    assert (task.id, "references", "src/shop/pricing.py") in edges
    assert ("src/shop/pricing.py", "defines", "snip-discount") in edges
    assert ("snip-discount", "calls", "src/shop/pricing.py") in edges
    with pytest.raises(ValidationError):
        system.capture_context(sid, "telepathy", {})
    with pytest.raises(ValidationError):
        system.capture_context(sid, "code", {"code_snippets": [{"code": "x"}]})
    with pytest.raises(ValidationError):
        system.capture_context(sid, "code", {"mystery": 1})


def test_environment_capture_redacts_secrets(system: StateSystem,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_API_TOKEN", "tok-very-secret-value")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2@db.internal/shop")
    monkeypatch.setenv("UPSTREAM", "https://app:s3cr3t-pw@mirror.internal/shop")
    sid = system.create_session("alice").id
    system.capture_context(sid, "environment", {"environment": {}})
    env = system.get_context(sid, "environment", "env")
    assert env is not None
    text = str(env.context_value)
    assert "tok-very-secret-value" not in text and "hunter2" not in text
    assert "s3cr3t-pw" not in text
    # a secret name hides the whole value; elsewhere only a URL's password goes
    assert env.context_value["env_vars"]["DATABASE_URL"] == "[redacted]"
    assert "mirror.internal" in env.context_value["env_vars"]["UPSTREAM"]


def test_reconstruction_ranks_what_the_active_task_names_first(system: StateSystem,
                                                               workspace: Path) -> None:
    sid = system.create_session("alice").id
    system.capture_paths(sid, [workspace])
    task = system.create_task(sid, "fix", description="Rounding bug in pricing.py",
                              parameters={"see": "web/util.ts"})
    system.start_task(task.id)
    done = system.create_task(sid, "old", description="Touch README.md")
    system.start_task(done.id)
    system.complete_task(done.id)
    ctx = system.reconstruct_context(sid)
    assert ctx.session.id == sid
    ranked = [r.item.context_key for r in ctx.recent_context]
    top_two = set(ranked[:2])
    assert top_two == {"src/shop/pricing.py", "web/util.ts"}
    reasons = {r.item.context_key: r.reason for r in ctx.recent_context}
    assert "named by active task" in reasons["src/shop/pricing.py"]
    # one relation away from pricing.py: checkout.py imports it, it imports models.py
    assert reasons["src/shop/models.py"].startswith("one relation away")
    assert [t.task.id for t in ctx.active_tasks] == [task.id]
    assert ctx.total_items == len(system.list_context(sid))
    assert ctx.context_graph.edges
    scores = [r.score for r in ctx.recent_context]
    assert scores == sorted(scores, reverse=True)


def test_explain_matches_the_ranking(system: StateSystem, workspace: Path) -> None:
    sid = system.create_session("alice").id
    system.capture_paths(sid, [workspace / "src"])
    t = system.create_task(sid, "fix", description="look at checkout.py")
    system.start_task(t.id)
    ctx = system.reconstruct_context(sid)
    for ranked in ctx.recent_context[:5]:
        why = system.explain_relevance(sid, ranked.item.context_type, ranked.item.context_key)
        assert why.score == pytest.approx(ranked.score)
        assert why.task_reason == ranked.reason
    with pytest.raises(NotFoundError):
        system.explain_relevance(sid, "file", "nope.py")


def test_reconstruction_is_cached_and_invalidated_by_changes(system: StateSystem,
                                                             workspace: Path) -> None:
    sid = system.create_session("alice").id
    system.capture_paths(sid, [workspace / "src"])
    first = system.reconstruct_context(sid)
    assert system.reconstruct_context(sid) is first  # served from the hot tier
    system.set_context(sid, "note", "todo", "ship it")
    second = system.reconstruct_context(sid)
    assert second is not first
    assert "todo" in {r.item.context_key for r in second.recent_context}
    system.set_preference("alice", "style", "tabs", False)
    third = system.reconstruct_context(sid)
    assert third is not second and len(third.preferences) == 1
    task = system.create_task(sid, "x", description="y")
    fourth = system.reconstruct_context(sid)
    assert [t.task.id for t in fourth.active_tasks] == [task.id]


def test_reconstruction_round_trips_through_its_dict(system: StateSystem,
                                                     workspace: Path) -> None:
    from statekeep.context.reconstruct import SessionContext

    sid = system.create_session("alice").id
    system.capture_paths(sid, [workspace])
    t = system.create_task(sid, "fix", description="pricing.py")
    system.create_task(sid, "sub", description="part", parent_task_id=t.id)
    system.set_preference("alice", "style", "quotes", "double")
    ctx = system.context.reconstruct_context(sid)
    assert SessionContext.from_dict(ctx.to_dict()) == ctx


def test_expired_items_are_not_reconstructed(system: StateSystem) -> None:
    sid = system.create_session("alice").id
    system.set_context(sid, "note", "live", 1)
    system.set_context(sid, "note", "brief", 2, ttl_seconds=0.001)
    import time
    time.sleep(0.01)
    keys = {r.item.context_key for r in system.context.reconstruct_context(sid).recent_context}
    assert keys == {"live"}


def test_search_blends_text_and_relevance(system: StateSystem, workspace: Path) -> None:
    sid = system.create_session("alice").id
    system.capture_context(sid, "code", {"code_snippets": [
        {"id": "a", "language": "python", "code": "def discount_total(): pass"},
        {"id": "b", "language": "python", "code": "def discount_rate(): pass"},
    ]})
    system.set_context(sid, "note", "plan", "the discount must round half up")
    results = system.search_context("discount", session_id=sid)
    assert {r.item.context_key for r in results} >= {"a", "b", "plan"}
    for r in results:
        assert r.score == pytest.approx(0.6 * r.text_rank + 0.4 * r.relevance)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    assert system.search_context("zebra-unicorn", session_id=sid) == []
    with pytest.raises(StatekeepError):
        system.search_context("   ")


def test_resume_brief_respects_budget_and_is_deterministic(system: StateSystem,
                                                           workspace: Path) -> None:
    sid = system.create_session("alice").id
    system.capture_paths(sid, [workspace])
    t = system.create_task(sid, "fix", description="Rounding bug in pricing.py")
    system.start_task(t.id)
    system.record_decision("approach", "round half up", confidence=0.7, session_id=sid)
    big = system.resume_brief(sid, budget_tokens=5000)
    assert "# Resuming session" in big.text and "pricing.py" in big.text
    assert "## Active tasks" in big.text and "Rounding bug" in big.text
    assert "round half up" in big.text
    assert big.text.index("src/shop/pricing.py") < big.text.index("README.md")
    assert big.omitted == {}
    small = system.resume_brief(sid, budget_tokens=120)
    assert small.tokens <= 120 and small.omitted
    assert "Left out to fit 120 tokens" in small.text
    assert system.resume_brief(sid, budget_tokens=120).text == small.text
    with pytest.raises(ValidationError):
        system.resume_brief(sid, budget_tokens=5)


def test_brief_reports_files_changed_on_disk(system: StateSystem, workspace: Path) -> None:
    sid = system.create_session("alice").id
    system.capture_paths(sid, [workspace / "src"])
    (workspace / "src/shop/models.py").write_text("# rewritten\n")
    (workspace / "src/shop/pricing.py").unlink()
    drift = {d.path: d.state for d in system.analyzer.drift(sid)}
    assert drift == {"src/shop/models.py": "modified", "src/shop/pricing.py": "deleted"}
    text = system.resume_brief(sid, budget_tokens=4000).text
    assert "## Changed on disk since capture" in text and "deleted" in text


def test_analyzer_touched_stale_and_clusters(system: StateSystem, workspace: Path) -> None:
    sid = system.create_session("alice").id
    system.capture_paths(sid, [workspace])
    for _ in range(3):
        system.store.get_context(sid, "file", "web/util.ts")
    system.store.access_log.flush()
    top = system.analyzer.most_touched(sid, 1)
    assert top[0].context_key == "web/util.ts" and top[0].accesses == 3
    clusters = system.analyzer.clusters(sid)
    keys = [{k for _t, k in c.keys} for c in clusters]
    assert {"web/index.ts", "web/util.ts"} in keys
    assert any({"src/shop/checkout.py", "src/shop/pricing.py"} <= k for k in keys)
    assert system.analyzer.stale(sid, older_than_hours=1) == []
