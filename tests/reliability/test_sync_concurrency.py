"""Sync with real processes: several components, each its own process with its
own store on one database, sync the same keys at once for thousands of rounds.

The workers (``sync_worker.py``) report what the store acknowledged. The test
then proves, on SQLite and on PostgreSQL:

* no lost update: every token any process merged into a list is in the final
  list exactly once, and every acknowledged increment of the ``keep_current``
  counter counts;
* the audit log holds every version of every key, each written on top of the
  one before it (no two writers ever based a write on the same version
  unnoticed), and replaying it -- applying each resolution's strategy to the
  values it records, in commit order -- gives exactly the final state;
* every conflict the workers met was either resolved by its strategy (one
  audit row each) or is a pending/superseded conflict a person can resolve.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from statekeep import StateConfig, Store, open_store
from statekeep.models import ConflictStatus
from statekeep.sync.manager import SyncManager
from statekeep.sync.merge import merge_states

WORKER = Path(__file__).with_name("sync_worker.py")
RULES = ("counter.keep=keep_current", "counter.lww=last_write_wins")
pytestmark = pytest.mark.slow


def run_workers(db: str, workers: int, rounds: int, seed: int) -> list[dict[str, Any]]:
    """Start every worker, release them together, and collect their summaries."""
    procs = [subprocess.Popen(
        [sys.executable, str(WORKER), db, str(w), str(rounds), str(seed)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(workers)]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line != "ready\n":
                pytest.fail(f"worker did not start (got {line!r}): {p.stderr.read()}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        summaries = []
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err
            summaries.append(json.loads(out.strip().splitlines()[-1]))
        return summaries
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def all_audit(store: Store, entity_type: str) -> list[Any]:
    rows: list[Any] = []
    after = 0
    while True:
        page = store.audit(entity_type=entity_type, after_id=after, limit=10_000)
        if not page:
            return rows
        rows += page
        after = page[-1].id


def replay(store: Store) -> tuple[dict[str, Any], Counter[str]]:
    """The state rebuilt from the audit log, checking each write on the way.

    Per key, rows in id order are commit order (a key's writers hold its row
    lock until commit, and each takes its audit id after getting it).
    """
    model: dict[str, tuple[Any, int]] = {}
    strategies: Counter[str] = Counter()
    for row in all_audit(store, "sync"):
        entry = row.new_value
        key, meta = entry["key"], row.change_metadata
        before = model.get(key)
        # Every version, once, each on top of the previous one.
        assert entry["version"] == (1 if before is None else before[1] + 1), (key, entry)
        if before is None:
            assert row.old_value is None
        else:
            assert (row.old_value["value"], row.old_value["version"]) == before
        if "strategy" in meta:
            strategies[f"{meta['strategy']}/write"] += 1
            c = meta["conflict"]
            assert (c["current_value"], c["current_version"]) == before, (key, c)
            assert c["base_version"] < c["current_version"]
            if meta["strategy"] == "merge":
                expected = merge_states(c["current_value"], c["proposed_value"])
            elif meta["strategy"] == "last_write_wins" or meta.get("rule", "").endswith(
                    "=last_write_wins"):
                expected = c["proposed_value"]
            else:
                raise AssertionError(f"unexpected strategy in {meta}")
            assert c["resolved_value"] == expected == entry["value"]
        model[key] = (entry["value"], entry["version"])
    for row in all_audit(store, "sync_resolution"):
        meta = row.change_metadata
        strategies[f"{meta['strategy']}/keep"] += 1
        c = meta["conflict"]
        assert c["resolved_value"] == c["current_value"]
    for row in all_audit(store, "sync_conflict"):
        if row.event_type == "create":
            strategies[f"{row.change_metadata['strategy']}/pending"] += 1
    return {k: v for k, v in model.items()}, strategies


def check(db: str, summaries: list[dict[str, Any]]) -> None:
    store = open_store(StateConfig(db=db, sync_rules=RULES))
    try:
        m = SyncManager(store)
        final = m.get_state()

        # No lost update: every merged token, exactly once, in every list.
        for key in ("list.0", "list.1"):
            acked = [t for s in summaries for t in s["tokens"][key]]
            assert acked, f"no worker merged into {key}"
            got = final[key].value
            assert len(got) == len(set(got)), f"{key} holds a token twice"
            assert sorted(got) == sorted(acked), f"{key} lost or invented tokens"

        # Every acknowledged keep_current increment counts, one version each.
        keeps = sum(s["keep_acks"] for s in summaries)
        assert keeps > 0
        assert (final["counter.keep"].value, final["counter.keep"].version) == (keeps, keeps)

        # The final state is the audit log replayed in commit order.
        model, strategies = replay(store)
        assert model == {k: (e.value, e.version) for k, e in final.items()}

        # Every conflict a worker met is one audit row of its resolution.
        reported: Counter[str] = Counter()
        for s in summaries:
            reported.update(s["resolutions"])
        assert reported == strategies
        assert reported["merge/write"] > 0, "the workers never met a conflict on a list"
        assert reported["rule_based/keep"] > 0 and reported["rule_based/write"] > 0
        assert reported["user_decides/pending"] > 0

        # ... and each one left to a person is pending, or superseded by a newer
        # proposal of its component; at most one pending per component.
        conflicts = m.conflicts(status=None, limit=100_000)
        assert {c.id for c in conflicts} == {cid for s in summaries for cid in s["pending"]}
        assert all(c.status is not ConflictStatus.RESOLVED for c in conflicts)
        pending = [c for c in conflicts if c.status is ConflictStatus.PENDING]
        per_component = defaultdict(int)
        for c in pending:
            per_component[(c.key, c.component)] += 1
        assert set(per_component.values()) <= {1}
        # A person settles them all; none is left.
        for c in pending:
            m.resolve_conflict(c.id, "current", resolved_by="reviewer")
        assert m.conflicts() == []
        assert m.get_state()["critical.flag"] == final["critical.flag"]  # "current" keeps it
        assert store.integrity_problems() == []
    finally:
        store.close()


def test_processes_syncing_on_sqlite(tmp_path: Path) -> None:
    db = str(tmp_path / "sync.db")
    open_store(StateConfig(db=db)).close()  # migrated before the workers race to it
    summaries = run_workers(db, workers=4, rounds=2000, seed=1)
    check(db, summaries)


@pytest.mark.postgres
def test_processes_syncing_on_postgresql(pg_schema_url: str) -> None:
    open_store(StateConfig(db=pg_schema_url)).close()
    summaries = run_workers(pg_schema_url, workers=4, rounds=600, seed=2)
    check(pg_schema_url, summaries)
