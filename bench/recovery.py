"""Snapshots, recovery points and point-in-time recovery against the tools they stand in for.

Figures (the recovery issue's targets; docs/recovery.md has the design):

1. **Snapshot create and restore** of a ~100 MB SQLite store (quick: ~10 MB),
   in MB/s = *the store's database file bytes* (after a WAL checkpoint, before
   any snapshot; 1 MB = 10^6 bytes) / seconds -- the same numerator for every
   side, so each ratio is a ratio of times. Measured in the same rounds:

   * create: ``SnapshotManager.create()`` of the whole store (consistent read,
     rows to their portable form, JSON, zstd -3, sha256, one insert) against

     - the ``zstd -3`` command line compressing the store's **uncompressed JSON
       image** (the exact bytes statekeep compresses, taken from the snapshot
       itself), file to file. This is the baseline the target applies to: the
       same logical content, ending as the same kind of artefact (a compressed,
       self-contained image of the state), so the ratio is what turning rows
       into an image costs beyond the compression itself (target >= 0.5);
     - SQLite's backup API (``sqlite3.Connection.backup``) of the database into
       a new file: the page-level copy a SQLite user would take (target >= 0.5);
     - and, for information, ``zstd -3`` of the database file itself. It is the
       other reading of "the same bytes", but not the same work: the file also
       holds the audit log (about half of it), the indexes and the full-text
       index, none of which an image carries, so zstd reads ~3x the bytes.

   * restore: a copy of the store in which 5 % of the context items were
     rewritten, 2 % of the sessions deleted (with their tasks and items) and
     one new session of tasks and items added, brought back by
     ``RecoveryManager.restore_snapshot(snapshot_id)`` (verify and decode the
     image, read and compare every live row, write only the difference with an
     audit row each, integrity_check and consistency checks, one transaction)
     against ``zstd -d`` of the compressed JSON image (target >= 0.5) and the
     backup API copying the backup taken of the same state into the live file
     (target >= 0.5); for information ``recover(point_id, "full")`` to a point
     made right after the snapshot (the same work plus the point's bookkeeping),
     and ``zstd -d`` of the compressed database file.

2. **Recovery point latency at task-boundary cadence**: an agent loop on the
   same store (with its base image in place) that creates and starts a task,
   writes three context items with ``set_context``, completes the task, then
   calls ``create_recovery_point()``; the median and p95 of that call beside
   one durable ``set_context`` (a ``kind="time"`` figure, per-round medians,
   no target).

3. **Point-in-time recovery time vs the audit history replayed**: the same
   store with 1k / 10k / 50k (quick: 1k / 5k) audit events of agent work
   written after the base image (real clock, a 2 ms pause at each mark so the
   instant falls between two events), ``recover_to_time(at, dry_run=True)``
   for each, and for 0 events (the fixed part: the image decoded, every live
   row read and compared), plus a real recovery to the largest mark (which
   undoes the events written after it). Printed as notes: seconds and
   events/s.

Run: ``cd bench && python recovery.py [--quick]``.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from _harness import Bench, Prepare, Run
from statekeep import ContextInput, StateConfig, Store, open_store
from statekeep.recovery.manager import RecoveryManager
from statekeep.recovery.snapshots import SnapshotManager

MB = 1_000_000
ITEMS_PER_SESSION = 250
TASKS_PER_SESSION = 10
TYPES = ("file", "note", "tool_output")
WORDS = [
    "the", "agent", "task", "file", "function", "error", "result", "test", "build",
    "deploy", "session", "context", "user", "query", "plan", "step", "review", "patch",
    "code", "module", "import", "value", "config", "path", "status", "retry",
]


# -- the store ----------------------------------------------------------------------


def item_key(i: int) -> tuple[str, str]:
    return TYPES[i % len(TYPES)], f"item{i:05d}"


def item_value(rng: random.Random, i: int, version: int = 0) -> dict[str, Any]:
    """A context value shaped like an agent's captured state (~0.7 KB of JSON)."""
    return {
        "path": f"src/pkg/mod{i}.py", "version": version,
        "summary": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(20, 60))),
        "lines": rng.randrange(2000), "sha256": f"{rng.getrandbits(256):064x}",
        "symbols": [f"fn_{rng.getrandbits(20):05x}" for _ in range(rng.randrange(3, 12))],
        "flags": {"binary": False, "generated": rng.random() < 0.1},
    }


def add_session(store: Store, rng: random.Random, user: str) -> str:
    """A session with its tasks (6 completed, 2 in progress, 2 pending) and items."""
    sid = store.create_session(user).id
    for t in range(TASKS_PER_SESSION):
        task = store.create_task(sid, "step", description=f"step {t}",
                                 parameters={"n": t})
        if t < 8:
            store.start_task(task.id)
        if t < 6:
            store.complete_task(task.id, result={"ok": True, "files": t})
    store.set_context_many(sid, [ContextInput(*item_key(i), item_value(rng, i))
                                 for i in range(ITEMS_PER_SESSION)])
    return sid


def close_clean(store: Store) -> None:
    """Checkpoint the WAL into the main file and close: the file alone is the store."""
    store.sync_search()
    with store.reading() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def copy_db(src: Path, stack: ExitStack, root: Path) -> Path:
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=root)))
    dst = folder / src.name
    shutil.copyfile(src, dst)
    return dst


def opened(stack: ExitStack, path: Path) -> Store:
    store = open_store(StateConfig(db=str(path)))
    stack.callback(store.close)
    return store


def audit_hwm(store: Store) -> int:
    return int(store.query_one("SELECT COALESCE(MAX(id), 0) FROM audit_log", ())[0])


@dataclass
class Fixture:
    """The files every figure starts from, built once per run (untimed)."""

    root: Path
    base: Path  # the store, no snapshot: its size is the numerator
    db_bytes: int
    sessions: list[str]
    snap: Path  # base + whole-store snapshot + a recovery point right after it
    snapshot_id: str
    point_id: str
    image_json: Path  # the snapshot's uncompressed JSON
    image_zst: Path  # zstd -3 of it (CLI), for zstd -d
    base_zst: Path | None  # zstd -3 of the database file (CLI)
    backup: Path  # SQLite backup-API copy of base
    mutated: Path  # snap with 5 % items rewritten, 2 % sessions deleted, one added
    mutation: str = ""
    built_s: float = 0.0
    layout: dict[str, int] = field(default_factory=dict)


def build_fixture(bench: Bench, root: Path, zstd: str | None) -> Fixture:
    started = time.perf_counter()
    rng = random.Random(42)
    n_sessions = bench.size(142, 14)
    base = root / "base.db"
    store = open_store(StateConfig(db=str(base)))
    sessions = [add_session(store, rng, f"user{s % 7}") for s in range(n_sessions)]
    close_clean(store)
    db_bytes = base.stat().st_size
    conn = sqlite3.connect(base)
    try:
        layout = {str(r[0]): int(r[1]) for r in conn.execute(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")}
    except sqlite3.OperationalError:  # SQLite built without dbstat
        layout = {}
    conn.close()

    snap = root / "snap.db"
    shutil.copyfile(base, snap)
    store = open_store(StateConfig(db=str(snap)))
    snapshot = SnapshotManager(store).create()
    point = RecoveryManager(store).create_recovery_point("bench base")
    data = store.query_one("SELECT state_data FROM state_snapshots WHERE id = ?",
                           (snapshot.id,))[0]
    close_clean(store)
    image_json = root / "image.json"
    image_json.write_bytes(zstandard.ZstdDecompressor().decompress(bytes(data)))
    image_zst = root / "image.json.zst"
    base_zst = None
    if zstd is not None:
        subprocess.run([zstd, "-3", "-q", "-f", str(image_json), "-o", str(image_zst)],
                       check=True)
        base_zst = root / "base.db.zst"
        subprocess.run([zstd, "-3", "-q", "-f", str(base), "-o", str(base_zst)], check=True)

    backup = root / "backup.db"
    src, dst = sqlite3.connect(base), sqlite3.connect(backup)
    src.backup(dst)
    dst.close()
    src.close()

    mutated = root / "mutated.db"
    shutil.copyfile(snap, mutated)
    store = open_store(StateConfig(db=str(mutated)))
    n_items = n_sessions * ITEMS_PER_SESSION
    rewritten = rng.sample(range(n_items), n_items // 20)
    by_session: dict[int, list[int]] = {}
    for x in rewritten:
        by_session.setdefault(x // ITEMS_PER_SESSION, []).append(x % ITEMS_PER_SESSION)
    for s, items in by_session.items():
        store.set_context_many(sessions[s], [ContextInput(*item_key(i), item_value(rng, i, 1))
                                             for i in items])
    gone = rng.sample(sessions, max(1, round(n_sessions * 0.02)))
    for sid in gone:
        store.delete_session(sid)
    add_session(store, rng, "user-new")
    close_clean(store)
    mutation = (f"{len(rewritten):,} of {n_items:,} items rewritten (5 %), {len(gone)} of"
                f" {n_sessions} sessions deleted with their {len(gone) * TASKS_PER_SESSION}"
                f" tasks and {len(gone) * ITEMS_PER_SESSION:,} items, one session of"
                f" {TASKS_PER_SESSION} tasks and {ITEMS_PER_SESSION} items added")
    return Fixture(root=root, base=base, db_bytes=db_bytes, sessions=sessions, snap=snap,
                   snapshot_id=snapshot.id, point_id=point.id, image_json=image_json,
                   image_zst=image_zst, base_zst=base_zst, backup=backup, mutated=mutated,
                   mutation=mutation, built_s=time.perf_counter() - started, layout=layout)


def describe(bench: Bench, fx: Fixture) -> None:
    layout = fx.layout
    total = sum(layout.values()) or 1

    def share(*names: str) -> str:
        return f"{sum(v for k, v in layout.items() if k.startswith(names)) / total:.0%}"

    n_items = len(fx.sessions) * ITEMS_PER_SESSION
    bench.note(f"store: {len(fx.sessions)} sessions, {len(fx.sessions) * TASKS_PER_SESSION:,}"
               f" tasks, {n_items:,} context items (~0.7 KB JSON each), built and"
               f" snapshotted in {fx.built_s:.1f} s (untimed)")
    if layout:
        audit = share("audit_log", "idx_audit")
        context = share("context", "sqlite_autoindex_context", "idx_context")
        bench.note(f"database file {fx.db_bytes / MB:.1f} MB = the MB/s numerator for every"
                   f" side: audit log + its indexes {audit}, context + its indexes"
                   f" {context} (of which full-text index {share('context_fts')}), the rest"
                   " sessions, tasks, schema")
    zst = f", zstd -3 CLI {fx.image_zst.stat().st_size / MB:.2f} MB" \
        if fx.image_zst.exists() else ""
    bench.note(f"image: {fx.image_json.stat().st_size / MB:.1f} MB of JSON (no audit log,"
               f" no indexes), stored {_snapshot_bytes(fx) / MB:.2f} MB{zst}")


def _snapshot_bytes(fx: Fixture) -> int:
    conn = sqlite3.connect(fx.snap)
    try:
        return int(conn.execute("SELECT size_bytes FROM state_snapshots WHERE id = ?",
                                (fx.snapshot_id,)).fetchone()[0])
    finally:
        conn.close()


# -- 1. snapshot create and restore --------------------------------------------------


def _cli(*args: str) -> Run:
    def run() -> int:
        subprocess.run(list(args), check=True)
        return 1
    return run


def _backup(src: Path, dst: Path) -> None:
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        b.close()
        a.close()


def _report(bench: Bench, fx: Fixture, samples: dict[str, list[float]],
            figures: Sequence[tuple[str, str, float | None, str]]) -> None:
    for name, label, target, note in figures:
        if label in samples:
            # Every run returned 1: samples are runs/s; the harness wants bytes/s.
            ours = [r * fx.db_bytes for r in samples["ours"]]
            base = [r * fx.db_bytes for r in samples[label]]
            bench.report(name, ours, base, target=target, ops={"bytes": fx.db_bytes},
                         note=note)


def snapshot_create(bench: Bench, fx: Fixture, zstd: str | None) -> None:
    names = {"zstd": "snapshot create vs zstd -3 CLI (JSON image)",
             "backup": "snapshot create vs SQLite backup API",
             "zstd_db": "snapshot create vs zstd -3 CLI (db file)"}
    if not any(bench.wants(n) for n in names.values()):
        return
    sizes: list[int] = []

    def ours(stack: ExitStack) -> Run:
        store = opened(stack, copy_db(fx.base, stack, fx.root))
        manager = SnapshotManager(store)

        def run() -> int:
            sizes.append(manager.create().size_bytes)
            return 1
        return run

    def out(stack: ExitStack, name: str) -> Path:
        return Path(stack.enter_context(tempfile.TemporaryDirectory(dir=fx.root))) / name

    def backup(stack: ExitStack) -> Run:
        copy = out(stack, "copy.db")

        def run() -> int:
            _backup(fx.base, copy)
            return 1
        return run

    cases: dict[str, Prepare] = {"ours": ours, "backup": backup}
    if zstd is None:
        bench.skip(names["zstd"], "the zstd command line is not installed")
    else:
        cases["zstd"] = lambda stack: _cli(zstd, "-3", "-q", "-f", str(fx.image_json), "-o",
                                           str(out(stack, "image.json.zst")))
        cases["zstd_db"] = lambda stack: _cli(zstd, "-3", "-q", "-f", str(fx.base), "-o",
                                              str(out(stack, "base.db.zst")))
    if bench.profiling:
        bench.profile("snapshot create", ours)
        return
    samples = bench.interleave(cases, rounds=bench.rounds_for(5))
    _report(bench, fx, samples, [
        (names["zstd"], "zstd", 0.5, "MB/s of database file; zstd compresses the image's"
         " JSON, file to file, one thread, the process start included"),
        (names["backup"], "backup", 0.5, "backup API of the whole file into a new one"
         " (rollback journal, synchronous=FULL: it fsyncs; ours commits in WAL, NORMAL)"),
        (names["zstd_db"], "zstd_db", None, "zstd of the database file: ~3x the bytes of"
         " the image (audit log, indexes, FTS)"),
    ])
    bench.note(f"snapshot create: each run images {fx.db_bytes / MB:.1f} MB of database into"
               f" {statistics.median(sizes) / MB:.2f} MB stored (one insert, WAL commit)")


def snapshot_restore(bench: Bench, fx: Fixture, zstd: str | None) -> None:
    names = {"zstd": "snapshot restore vs zstd -d CLI (JSON image)",
             "backup": "snapshot restore vs SQLite backup API",
             "recover": "recover(point, full) vs SQLite backup API",
             "zstd_db": "snapshot restore vs zstd -d CLI (db file)"}
    if not any(bench.wants(n) for n in names.values()):
        return
    results: list[Any] = []

    def ours(stack: ExitStack) -> Run:
        store = opened(stack, copy_db(fx.mutated, stack, fx.root))
        manager = RecoveryManager(store)

        def run() -> int:
            results.append(manager.restore_snapshot(fx.snapshot_id))
            return 1
        return run

    def by_point(stack: ExitStack) -> Run:
        store = opened(stack, copy_db(fx.mutated, stack, fx.root))
        manager = RecoveryManager(store)

        def run() -> int:
            results.append(manager.recover(fx.point_id, "full"))
            return 1
        return run

    def backup(stack: ExitStack) -> Run:
        live = copy_db(fx.mutated, stack, fx.root)

        def run() -> int:
            _backup(fx.backup, live)
            return 1
        return run

    def out(stack: ExitStack, name: str) -> str:
        return str(Path(stack.enter_context(tempfile.TemporaryDirectory(dir=fx.root))) / name)

    cases: dict[str, Prepare] = {"ours": ours, "backup": backup, "recover": by_point}
    if zstd is None:
        bench.skip(names["zstd"], "the zstd command line is not installed")
    else:
        cases["zstd"] = lambda stack: _cli(zstd, "-d", "-q", "-f", str(fx.image_zst), "-o",
                                           out(stack, "image.json"))
        assert fx.base_zst is not None
        base_zst = str(fx.base_zst)
        cases["zstd_db"] = lambda stack: _cli(zstd, "-d", "-q", "-f", base_zst, "-o",
                                              out(stack, "base.db"))
    if bench.profiling:
        bench.profile("snapshot restore", ours)
        return
    samples = bench.interleave(cases, rounds=bench.rounds_for(5))
    _report(bench, fx, samples, [
        (names["zstd"], "zstd", 0.5, "MB/s of database file; ours: verify + decode the"
         " image, compare every live row, write the difference, verify, one transaction"),
        (names["backup"], "backup", 0.5, "the backup of the same state copied page by page"
         " over the live (WAL) file"),
        (names["zstd_db"], "zstd_db", None, "zstd -d of the compressed database file"),
    ])
    # recover(point, "full") against the same backup-API baseline, for information.
    if "recover" in samples:
        bench.report(names["recover"], [r * fx.db_bytes for r in samples["recover"]],
                     [r * fx.db_bytes for r in samples["backup"]], target=None,
                     ops={"bytes": fx.db_bytes},
                     note="the point was made right after the snapshot: 0 events replayed")
    first = results[0]
    changed = ", ".join(f"{t} +{c['inserted']}/~{c['updated']}/-{c['deleted']}"
                        for t, c in first.changed.items())
    bench.note(f"restore undoes: {fx.mutation}; rows written ({first.rows_changed:,}, each"
               f" with an audit row): {changed}")


# -- 2. recovery point latency ---------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def recovery_points(bench: Bench, fx: Fixture) -> None:
    name = "recovery point vs one set_context"
    if not bench.wants(name):
        return
    per_round = bench.size(300, 60)
    rounds = bench.rounds_for(5)
    with ExitStack() as stack:
        store = opened(stack, copy_db(fx.snap, stack, fx.root))
        manager = RecoveryManager(store)
        sid = store.create_session("agent").id
        rng = random.Random(5)
        lat: dict[str, list[float]] = {"rp": [], "set": [], "complete": []}
        counter = [0]
        before = store.query_one("SELECT COUNT(*) FROM state_snapshots", ())[0]

        def iteration(record: bool) -> None:
            i = counter[0]
            counter[0] += 1
            task = store.create_task(sid, "step", description=f"step {i}")
            store.start_task(task.id)
            for j in range(3):
                key = f"step{i}-{j}" if j else "plan"
                t0 = time.perf_counter_ns()
                store.set_context(sid, TYPES[j], key, item_value(rng, i, j))
                if record:
                    lat["set"].append((time.perf_counter_ns() - t0) / 1e9)
            t0 = time.perf_counter_ns()
            store.complete_task(task.id, result={"ok": True, "step": i})
            t1 = time.perf_counter_ns()
            manager.create_recovery_point()
            t2 = time.perf_counter_ns()
            if record:
                lat["complete"].append((t1 - t0) / 1e9)
                lat["rp"].append((t2 - t1) / 1e9)

        if bench.profiling:
            bench.profile(name, lambda _s: lambda: ([iteration(False)
                                                     for _ in range(per_round)], per_round)[1])
            return
        for _ in range(per_round // 3):  # warm-up
            iteration(False)
        ours: list[float] = []
        base: list[float] = []
        for _ in range(rounds):
            n_rp, n_set = len(lat["rp"]), len(lat["set"])
            for _ in range(per_round):
                iteration(True)
            ours.append(1 / statistics.median(lat["rp"][n_rp:]))
            base.append(1 / statistics.median(lat["set"][n_set:]))
        after = store.query_one("SELECT COUNT(*) FROM state_snapshots", ())[0]
        events = audit_hwm(store)
    bench.report(name, ours, base, target=None, kind="time",
                 ops={"points": per_round * rounds},
                 note="per-round medians; ratio = point / set_context")
    rp, st, ct = lat["rp"], lat["set"], lat["complete"]
    bench.note(f"recovery point ({len(rp):,} calls, {fx.db_bytes / MB:.0f} MB store, base image"
               f" in place): median {_ms(statistics.median(rp))}, p95 {_ms(_pct(rp, 0.95))},"
               f" max {_ms(max(rp))}; one set_context: median {_ms(statistics.median(st))},"
               f" p95 {_ms(_pct(st, 0.95))}; complete_task median"
               f" {_ms(statistics.median(ct))}")
    fell = "none fell in these runs" if after == before else \
        f"{after - before} fell in these runs (in the p95 and max)"
    bench.note(f"  each iteration writes 6 audit rows, so a point rebases (a whole-store"
               f" snapshot, figure 1's create) once per ~{manager.rebase_events // 6:,}"
               f" points; {fell} (audit position {events:,})")


# -- 3. point-in-time recovery vs history length --------------------------------------------


def agent_work(store: Store, sessions: list[str], rng: random.Random, until: int,
               base_audit: int, step: list[int]) -> None:
    """Agent activity until ``until`` audit events follow ``base_audit``: a task created,
    started, 20 items written (15 rewritten, 5 new), the task completed; every tenth
    step an item deleted. ~23 events a step; the last step is trimmed to land on
    ``until`` exactly."""
    while True:
        left = until - (audit_hwm(store) - base_audit)
        if left <= 0:
            return
        i = step[0]
        step[0] += 1
        sid = sessions[rng.randrange(len(sessions))]
        if left < 25:
            store.set_context_many(sid, [ContextInput("note", f"tail{i}-{j}", {"j": j})
                                         for j in range(left)])
            continue
        task = store.create_task(sid, "step", description=f"work {i}")
        store.start_task(task.id)
        items = [ContextInput(*item_key(k), item_value(rng, k, i))
                 for k in rng.sample(range(ITEMS_PER_SESSION), 15)]
        items += [ContextInput("note", f"w{i}-{j}", item_value(rng, j, i)) for j in range(5)]
        store.set_context_many(sid, items)
        store.complete_task(task.id, result={"ok": True})
        if i % 10 == 9:
            store.delete_context(sid, "note", f"w{i - 1}-0")


def point_in_time(bench: Bench, fx: Fixture) -> None:
    name = "point-in-time recovery"
    if not bench.wants(name):
        return
    marks = [1_000, 10_000, 50_000] if not bench.quick else [1_000, 5_000]
    tail = bench.size(2_000, 500)
    started = time.perf_counter()
    pitr = fx.root / "pitr.db"
    shutil.copyfile(fx.snap, pitr)
    store = open_store(StateConfig(db=str(pitr)))
    snapshot = SnapshotManager(store).get(fx.snapshot_id)
    base_audit = int(snapshot.audit_id or 0)
    live = list(fx.sessions)
    rng = random.Random(9)
    step = [0]
    time.sleep(0.002)
    ats = {0: store.now()}
    time.sleep(0.002)
    for mark in marks:
        agent_work(store, live, rng, mark, base_audit, step)
        time.sleep(0.002)
        ats[mark] = store.now()
        time.sleep(0.002)
    agent_work(store, live, rng, marks[-1] + tail, base_audit, step)
    close_clean(store)
    bench.note(f"point in time: {marks[-1] + tail:,} audit events written after the base image"
               f" in {time.perf_counter() - started:.1f} s (untimed); database now"
               f" {pitr.stat().st_size / MB:.0f} MB")

    replayed: dict[str, list[int]] = {}
    changed: list[int] = []

    def dry(label: str, at: Any) -> Prepare:
        def prepare(stack: ExitStack) -> Run:
            manager = RecoveryManager(opened(stack, pitr))

            def run() -> int:
                res = manager.recover_to_time(at, dry_run=True)
                replayed.setdefault(label, []).append(res.events_replayed)
                return 1
            return run
        return prepare

    def real(stack: ExitStack) -> Run:
        manager = RecoveryManager(opened(stack, copy_db(pitr, stack, fx.root)))

        def run() -> int:
            res = manager.recover_to_time(ats[marks[-1]])
            replayed.setdefault("real", []).append(res.events_replayed)
            changed.append(res.rows_changed)
            return 1
        return run

    cases: dict[str, Prepare] = {f"dry{m}": dry(f"dry{m}", ats[m]) for m in [0, *marks]}
    cases["real"] = real
    if bench.profiling:
        bench.profile(f"{name}, dry run, {marks[-1]:,} events", cases[f"dry{marks[-1]}"])
        bench.profile(f"{name}, real, {marks[-1]:,} events", real)
        return
    samples = bench.interleave(cases, rounds=bench.rounds_for(3))
    secs = {k: [1 / r for r in v] for k, v in samples.items()}
    fixed = statistics.median(secs["dry0"])
    bench.note(f"point in time on the {fx.db_bytes / MB:.0f} MB store (base image"
               f" {fx.image_json.stat().st_size / MB:.0f} MB of JSON), whole store,"
               f" median (min-max) of {len(secs['dry0'])} rounds:")
    for label in ["dry0", *[f"dry{m}" for m in marks], "real"]:
        s = secs[label]
        med = statistics.median(s)
        events = replayed[label][0]
        what = f"dry run, {events:>6,} events" if label != "real" else \
            f"real,    {events:>6,} events"
        rate = f", {events / med:,.0f} events/s overall" if events else ""
        beyond = f", replay {events / (med - fixed):,.0f} events/s beyond the 0-event run" \
            if events and med > fixed and label != "real" else ""
        bench.note(f"  recover_to_time {what}: {med:.3f} s ({min(s):.3f}-{max(s):.3f})"
                   f"{rate}{beyond}")
    bench.note(f"  the real recovery undoes the {tail:,} events written after the last mark"
               f" ({changed[0]:,} rows written with their audit rows), then integrity_check"
               " and consistency checks, in one transaction")


def main(argv: Sequence[str] | None = None) -> int:
    bench = Bench("recovery", "snapshots vs zstd CLI / SQLite backup API; recovery points;"
                  " point-in-time recovery", argv)
    zstd = shutil.which("zstd")
    figures: list[Callable[[Bench, Fixture], None]] = [
        lambda b, f: snapshot_create(b, f, zstd),
        lambda b, f: snapshot_restore(b, f, zstd),
        recovery_points,
        point_in_time,
    ]
    with tempfile.TemporaryDirectory(prefix="sk-bench-recovery-") as tmp:
        fx = build_fixture(bench, Path(tmp), zstd)
        describe(bench, fx)
        for figure in figures:
            figure(bench, fx)
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())
