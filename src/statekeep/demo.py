"""``statekeep demo``: an agent's working day that outlives the agent's process.

The point statekeep makes is that state survives the process that wrote it,
so the demo proves it across a real process boundary instead of asserting it:

1. **A fresh store** -- a new temporary directory unless ``--db`` is given,
   so the demo never writes into the user's own store.
2. **A day of agent work** in a *child* process (``python -m statekeep.demo
   worker --db PATH``): a session, a task tree three levels deep with
   finished, failed-and-retried, running and pending tasks, context items,
   decisions with outcomes and learned preferences. The child narrates each
   action as one JSON line on stdout, which this process renders, and exits.
3. **What survived**: with the child gone, this process opens the store
   afresh and shows the session, the task tree, context, decisions,
   preferences and the size of the audit trail.
4. **The resume brief** an agent would paste into its prompt.
5. **Killed mid-write**: another child (``writer``) resumes the session and
   commits notes as fast as it can, printing each note's key only once its
   commit has returned. It is SIGKILLed at a random instant -- no handler, no
   flush, no clean-up -- while it is writing. This process then checks every
   acknowledged note (present, intact, with its audit row), runs the health
   checks including the write-ahead log the dead writer left behind, and
   resumes the session. Any broken promise makes the demo fail, not just say so.
6. **A recovery point undoes a mistake**: a point of the session is marked,
   a clean-up deletes the running task's subtree and a note by mistake, and a
   ``full`` recovery to the point puts them back -- same ids, same states --
   in one verified transaction.

Both halves are lists of small steps (:data:`DEMO_STEPS`, :data:`AGENT_DAY`)
so that a new demo is a new entry rather than a rewrite. The agent runs on a
simulated clock that ends before the real present, so durations look like a
day's work while the whole demo takes a few seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.markdown import Markdown
from rich.rule import Rule
from rich.text import Text

from statekeep.cli import render
from statekeep.cli.shared import (
    display_location,
    make_console,
    missing_sqlite_file,
    report_error,
)
from statekeep.config import StateConfig
from statekeep.errors import CaptureError, StatekeepError
from statekeep.models import ContextItem, SessionStatus, TaskStatus
from statekeep.recovery.health import HealthReport
from statekeep.recovery.manager import RecoveryResult
from statekeep.store.context import ContextInput
from statekeep.system import StateSystem

__all__ = ["AGENT_DAY", "DEMO_STEPS", "DemoRun", "main", "note_key", "note_value", "run_demo",
           "run_worker", "run_writer"]

USER = "alice"

#: The demo captures a real folder; a bigger one is skipped, not waited for.
DEMO_MAX_FILES = 5000
#: Seconds the child pauses after each narrated action when someone is watching.
WATCH_PACE = 0.06
#: The writer is killed this many seconds (a random instant in the range) after
#: its first acknowledged note: long enough for a few hundred commits, short
#: enough to keep the demo quick.
KILL_WINDOW = (0.15, 0.45)
#: A writer whose parent died stops by itself after this long.
WRITER_MAX_SECONDS = 30.0
#: The context type of the writer's notes.
NOTE_TYPE = "scan"
#: The task the recovery step's clean-up deletes by mistake (with its subtasks).
AST_TASK = "Extract AST node classes into ast.py"


# -- the agent's day (runs in the child process) ----------------------------------


class SimulatedClock:
    """The store's clock during the demo: time moves only when the agent works."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


@dataclass
class Agent:
    """The child's state between steps: the store and the ids it created."""

    sk: StateSystem
    clock: SimulatedClock
    pace: float
    workspace: str | None = None
    session_id: str = ""
    tasks: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, str] = field(default_factory=dict)

    def say(self, kind: str, text: str, **extra: Any) -> None:
        """Narrate one action to the parent as a JSON line."""
        line = {"at": self.clock().isoformat(), "kind": kind, "text": text, **extra}
        print(orjson.dumps(line).decode(), flush=True)
        if self.pace:
            time.sleep(self.pace)

    def work(self, minutes: float) -> None:
        self.clock.advance(minutes)


def start_session(a: Agent) -> None:
    session = a.sk.create_session(USER, metadata={
        "goal": "split the 800-line parser into lexer, ast and parser modules",
        "repo": "acme/widget", "branch": "refactor/split-parser"})
    a.session_id = session.id
    a.sk.set_preference(USER, "communication", "summary_style", "bullets", confidence=0.6)
    a.say("session", f"session {session.id} started for {USER}")


def plan_work(a: Agent) -> None:
    sid, add = a.session_id, a.sk.create_task
    root = add(sid, "refactor", description="Split parser.py into modules", priority=8)
    a.tasks["refactor"] = root.id
    for name, type_, desc, prio in [
        ("analyze", "analyze", "Map parser.py: functions, classes, imports", 9),
        ("lexer", "implement", "Extract the lexer into lexer.py", 7),
        ("tests", "test", "Run the test suite", 6),
        ("ast", "implement", AST_TASK, 5),
        ("docs", "docs", "Update the architecture notes", 2),
    ]:
        a.tasks[name] = add(sid, type_, description=desc, priority=prio,
                            parent_task_id=root.id).id
    a.tasks["nodes"] = add(sid, "implement", description="Move the node classes",
                           priority=5, parent_task_id=a.tasks["ast"]).id
    a.tasks["imports"] = add(sid, "implement", description="Update imports in parser.py",
                             priority=4, parent_task_id=a.tasks["ast"]).id
    a.sk.start_task(root.id)
    a.sk.set_context(sid, "note", "plan", "Lexer first, then AST nodes, then the parser"
                     " proper; keep the public API stable", relevance_score=0.9)
    a.work(10)
    a.say("plan", f"planned {len(a.tasks)} tasks, three levels deep")


def analyze(a: Agent) -> None:
    tid = a.tasks["analyze"]
    a.sk.start_task(tid)
    a.work(35)
    a.sk.set_context_many(a.session_id, [
        ContextInput("file", "src/parser.py", {"lines": 812, "functions": 41, "classes": 12},
                     relevance_score=0.95),
        ContextInput("file", "tests/test_parser.py", {"lines": 1340, "tests": 214},
                     relevance_score=0.7),
    ])
    a.sk.complete_task(tid, {"functions": 41, "classes": 12, "import_cycles": 0})
    a.say("completed", "analyze: 41 functions, 12 classes, no import cycles")


def decide_approach(a: Agent) -> None:
    d = a.sk.record_decision(
        "approach", "Extract the lexer first, then the AST nodes", confidence=0.82,
        autonomous=True, session_id=a.session_id, task_id=a.tasks["refactor"],
        context={"file": "src/parser.py", "functions": 41},
        reasoning={"why": "the lexer has no inward dependencies; AST nodes depend on it"})
    a.decisions["approach"] = d.id
    a.work(5)
    a.say("decision", "decided alone (confidence 0.82): lexer first, then AST")


def extract_lexer(a: Agent) -> None:
    tid = a.tasks["lexer"]
    a.sk.start_task(tid)
    a.work(80)
    a.sk.set_context(a.session_id, "file", "src/lexer.py", {"lines": 298, "new": True},
                     relevance_score=0.85)
    a.sk.complete_task(tid, {"files_changed": 2, "lines_moved": 312})
    a.say("completed", "lexer: 312 lines moved into lexer.py")


def run_tests_fail(a: Agent) -> None:
    tid = a.tasks["tests"]
    a.sk.start_task(tid)
    a.work(12)
    a.sk.fail_task(tid, {"failed": 3, "first": "tests/test_unicode.py::test_positions",
                         "reason": "token columns off by one"})
    a.sk.set_context(a.session_id, "note", "gotcha", "test_unicode relies on 1-based token"
                     " columns from the old lexer", relevance_score=0.8)
    a.say("failed", "tests: 3 failures, token columns off by one")


def fix_and_retry(a: Agent) -> None:
    d = a.sk.record_decision(
        "fix_strategy", "Keep token columns 1-based, as the old lexer did", confidence=0.55,
        autonomous=False, session_id=a.session_id, task_id=a.tasks["tests"],
        context={"failure": "token columns off by one"},
        reasoning={"asked": USER, "answer": "keep them 1-based"})
    a.decisions["fix_strategy"] = d.id
    a.say("decision", f"asked {USER} (confidence 0.55): keep columns 1-based")
    tid = a.tasks["tests"]
    a.sk.retry_task(tid)
    a.sk.start_task(tid)
    a.work(15)
    a.sk.complete_task(tid, {"passed": 214, "failed": 0})
    a.sk.update_decision(a.decisions["fix_strategy"], outcome="tests green after one retry",
                         feedback_score=0.8)
    a.sk.update_decision(a.decisions["approach"], outcome="lexer extracted cleanly",
                         feedback_score=0.9)
    a.sk.set_preference(USER, "testing", "run_before_commit", True, confidence=0.85)
    a.sk.set_preference(USER, "code_style", "line_length", 100, confidence=0.9)
    a.say("retried", "tests: retried, 214 passed; learned two of alice's preferences")


def extract_ast(a: Agent) -> None:
    a.sk.start_task(a.tasks["ast"])
    a.sk.start_task(a.tasks["nodes"])
    a.work(95)
    a.sk.complete_task(a.tasks["nodes"], {"classes_moved": 12})
    a.sk.set_context(a.session_id, "file", "src/ast.py", {"lines": 405, "new": True},
                     relevance_score=0.9)
    a.sk.set_context(a.session_id, "environment", "python",
                     {"python": "3.12", "venv": ".venv", "dirty_files": 3},
                     ttl_seconds=24 * 3600)
    a.say("in_progress", "ast: node classes moved; imports still to update")


def capture_workspace(a: Agent) -> None:
    """Capture a real folder: files, imports between them, git state, environment."""
    if a.workspace is None:
        return
    root = Path(a.workspace)
    try:
        report = a.sk.capture_paths(a.session_id, [root], root=root, environment=True,
                                    git=True)
    except CaptureError as exc:
        a.say("skipped", f"capture of {root} skipped: {exc}")
        return
    a.work(3)
    files = sum(1 for t, _k in report.keys if t == "file")
    a.say("captured", f"captured {files} files of {root.name or root} with"
                      f" {report.relations_added} relations ({len(report.skipped)} skipped)")
    hub = _most_connected_file(a.sk, a.session_id)
    if hub is not None:
        task = a.sk.create_task(a.session_id, "review", priority=6,
                                parent_task_id=a.tasks["refactor"],
                                description=f"Review {hub} before the next split")
        a.tasks["review"] = task.id
        a.say("plan", f"next: review {hub}, the most connected file")


def _most_connected_file(sk: StateSystem, session_id: str) -> str | None:
    counts: dict[str, int] = {}
    for r in sk.relations(session_id):
        if r.relation_type == "dependency":
            counts[r.target_id] = counts.get(r.target_id, 0) + 1
    if not counts:
        return None
    best = min(counts, key=lambda i: (-counts[i], i))
    return sk.get_context_by_id(best).context_key


def end_of_day(a: Agent) -> None:
    a.work(20)
    session = a.sk.get_session(a.session_id)
    a.sk.update_session(a.session_id, status=SessionStatus.PAUSED,
                        metadata={**session.metadata, "next": "update imports in parser.py"},
                        expected_version=session.version)
    a.say("session", "end of day: session paused, the agent process exits")


#: The child's script, in order. Each step is one function of the Agent.
AGENT_DAY: list[Callable[[Agent], None]] = [
    start_session, plan_work, analyze, decide_approach, extract_lexer, run_tests_fail,
    fix_and_retry, extract_ast, capture_workspace, end_of_day,
]
_DAY_MINUTES = 10 + 35 + 5 + 80 + 12 + 15 + 95 + 3 + 20


def run_worker(db: str, pace: float = 0.0, workspace: str | None = None) -> str:
    """Play the agent's day against ``db`` (capturing ``workspace`` if given);
    returns the session id."""
    # The day ends a little before the real present so that nothing (the
    # environment item's TTL, audit times) lies in the future.
    start = datetime.now(UTC) - timedelta(minutes=_DAY_MINUTES + 30)
    clock = SimulatedClock(start)
    config = StateConfig(db=db, capture_max_files=DEMO_MAX_FILES)
    with StateSystem(config, clock=clock) as sk:
        agent = Agent(sk, clock, pace, workspace)
        for step in AGENT_DAY:
            step(agent)
    print(orjson.dumps({"kind": "done", "session_id": agent.session_id}).decode(), flush=True)
    return agent.session_id


# -- the writer that gets killed (runs in another child process) ------------------


def note_key(n: int) -> str:
    """The key of the writer's ``n``-th note (1-based)."""
    return f"parser.py:{n:05d}"


def note_value(n: int) -> dict[str, Any]:
    """The ``n``-th note's value: a pure function of ``n``, so the parent can check
    that each note it finds is exactly what was written, not a torn half of it."""
    return {"n": n, "line": n * 7 % 812 + 1,
            "text": f"token stream checked up to offset {n * 131}; columns stay 1-based",
            "pad": "·" * (40 + n % 60)}


def run_writer(db: str, session_id: str, seconds: float = WRITER_MAX_SECONDS) -> int:
    """Resume the session and commit one note after another until killed.

    Each note's key is printed (and flushed) only after ``set_context`` has
    returned: a printed key is an *acknowledged* write, which statekeep
    promises survives ``kill -9``. Stops by itself after ``seconds`` so that a
    writer whose parent died does not write for ever. Returns how many it wrote.
    """
    n = 0
    with StateSystem(StateConfig(db=db)) as sk:
        sk.resume_session(session_id)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            n += 1
            sk.set_context(session_id, NOTE_TYPE, note_key(n), note_value(n),
                           relevance_score=0.2)
            print(note_key(n), flush=True)
    return n


# -- the demo (runs in the parent process) ----------------------------------------


@dataclass
class DemoRun:
    """What the parent knows as the demo's steps run."""

    console: Console
    db: str
    pace: float
    workspace: str | None = None
    session_id: str | None = None
    worker_pid: int | None = None
    #: Step 5: the keys the killed writer acknowledged, and the health report after it.
    acknowledged: list[str] = field(default_factory=list)
    health: HealthReport | None = None
    #: Step 6: what the recovery to the point did.
    recovery: RecoveryResult | None = None


_NARRATION: dict[str, tuple[str, str]] = {
    "session": ("●", "bold cyan"),
    "plan": ("☰", "cyan"),
    "completed": render.TASK_STYLES[TaskStatus.COMPLETED],
    "failed": render.TASK_STYLES[TaskStatus.FAILED],
    "retried": ("↻", "green"),
    "in_progress": render.TASK_STYLES[TaskStatus.IN_PROGRESS],
    "decision": ("◆", "magenta"),
    "captured": ("⇣", "bold green"),
    "skipped": ("·", "yellow"),
}


def prepare_store(run: DemoRun) -> None:
    if missing_sqlite_file(StateConfig(db=run.db)) is not None:
        note = "a new, empty file"
    elif "://" in run.db and not run.db.startswith("sqlite:"):
        note = "a database server; the demo adds a session"
    else:
        note = "it exists already; the demo adds a session"
    run.console.print(Text.assemble("store: ", (display_location(run.db), "bold"),
                                    (f"  ({note})", "dim")),
                      soft_wrap=True)


def _narrate(run: DemoRun, line: str) -> None:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        run.console.print(Text(line.rstrip(), style="dim"))
        return
    if event.get("kind") == "done":
        run.session_id = event["session_id"]
        return
    icon, style = _NARRATION.get(event["kind"], ("·", ""))
    at = datetime.fromisoformat(event["at"]).astimezone().strftime("%H:%M")
    run.console.print(Text.assemble(f"  {at}  ", (f"{icon} ", style), event["text"]))


def agent_day(run: DemoRun) -> None:
    cmd = [sys.executable, "-m", "statekeep.demo", "worker", "--db", run.db,
           "--pace", str(run.pace)]
    if run.workspace is not None:
        cmd += ["--workspace", run.workspace]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        run.worker_pid = proc.pid
        run.console.print(Text(f"agent process (pid {proc.pid}) starts work:", style="dim"))
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            _narrate(run, line)
        errors = proc.stderr.read()
        code = proc.wait()
    if code != 0 or run.session_id is None:
        last = (errors.strip().splitlines() or ["no output"])[-1]
        raise StatekeepError(f"the demo agent process {proc.pid} failed (exit {code}): {last}")
    run.console.print(Text(f"agent process (pid {proc.pid}) has exited with code 0: whatever"
                           " it held in memory is gone", style="dim"))


def show_survivors(run: DemoRun) -> None:
    assert run.session_id is not None
    out, sid = run.console, run.session_id
    out.print(Text(f"this is process {os.getpid()}, opening the store cold", style="dim"))
    with StateSystem(StateConfig(db=run.db)) as sk:
        session = sk.get_session(sid)
        trees = sk.task_tree(sid)
        context = sk.list_context(sid)
        decisions = sk.list_decisions(session_id=sid)
        preferences = sk.list_preferences(session.user_id)
        audit_session = len(sk.audit(session_id=sid, limit=100_000))
        audit_all = len(sk.audit(limit=100_000))
    counts = {"tasks": sum(len(t.walk()) for t in trees), "context items": len(context),
              "decisions": len(decisions)}
    out.print(render.session_panel(session, counts))
    out.print(render.task_tree(trees, title="task tree", show_ids=False))
    captured = [c for c in context if _was_captured(c)]
    out.print(render.context_table([c for c in context if not _was_captured(c)]))
    if captured:
        out.print(Text(f"  …and {len(captured)} items captured from the folder"
                       " (files, git state, environment)", style="dim"))
    out.print(render.decisions_table(decisions))
    out.print(render.preferences_table(preferences))
    show_relations(run)
    out.print(Text.assemble(
        ("audit trail: ", "bold"),
        f"{audit_all} events in the store, {audit_session} of them for this session;"
        " each was committed together with the change it records"))


def show_relations(run: DemoRun) -> None:
    """The relations capture found in the real folder: imports resolved to files."""
    assert run.session_id is not None
    with StateSystem(StateConfig(db=run.db)) as sk:
        graph = sk.reconstruct_context(run.session_id).context_graph
        total = len(sk.relations(run.session_id))
    if not graph.edges:
        return
    labels = {n.id: n.context_key for n in graph.nodes}
    table = render.listing(f"relations found in the captured folder ({total} in all;"
                           " the first around the most relevant items)")
    for col in ("from", "relation", "to"):
        table.add_column(col, overflow="fold")
    for e in graph.edges[:12]:
        table.add_row(Text(labels[e.source_id]), e.relation_type, Text(labels[e.target_id]))
    run.console.print(table)


def show_brief(run: DemoRun) -> None:
    """What an agent process would paste into its prompt to pick the work up."""
    assert run.session_id is not None
    with StateSystem(StateConfig(db=run.db)) as sk:
        brief = sk.resume_brief(run.session_id, budget_tokens=900)
    out = run.console
    out.print(Text(f"statekeep resume {run.session_id} --budget 900", style="bold"))
    if out.is_terminal:
        out.print(Markdown(brief.text))
    else:
        out.print(Text(brief.text.rstrip()))
    out.print(Text(f"{brief.tokens} of {brief.budget} tokens (estimated)", style="dim"))


def kill_mid_write(run: DemoRun) -> None:
    """A writer SIGKILLed while it commits: every write it acknowledged must be in
    the store, whole and with its audit row; the store must pass every health
    check; the session must resume. A broken promise fails the demo."""
    assert run.session_id is not None
    out, sid = run.console, run.session_id
    acked, seconds = _write_until_killed(run)
    run.acknowledged = acked
    _say(out, Text.assemble(
        "  ", ("☠ ", "bold red"), f"killed with SIGKILL {seconds:.2f}s after its first"
        f" acknowledgement: {len(acked)} writes acknowledged",
        f" (the last: {acked[-1]})" if acked else ""))
    _say(out, Text(f"this is process {os.getpid()}, opening the store the dead process left",
                   style="dim"))
    with StateSystem(StateConfig(db=run.db)) as sk:
        # First, before this process writes anything: the WAL as the writer left it.
        report = run.health = sk.health.check(wal=True)
        notes = {c.context_key: c for c in sk.list_context(sid, context_type=NOTE_TYPE)}
        audited = {e.entity_id for e in sk.audit(entity_type="context", session_id=sid,
                                                 limit=100_000) if e.event_type == "create"}
        session = sk.resume_session(sid)
        open_tasks = [t for t in sk.list_tasks(sid)
                      if t.status in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)]
        brief = sk.resume_brief(sid, budget_tokens=900)

    def intact(key: str) -> bool:
        item = notes.get(key)
        return (item is not None and item.id in audited
                and item.context_value == note_value(int(key.rpartition(":")[2])))

    failures: list[str] = []
    survived = sum(1 for k in acked if intact(k))
    _check(out, failures, survived == len(acked),
           f"{survived} of {len(acked)} acknowledged writes survived: each one is in the"
           " store with exactly the value written and its audit row")
    extra = sorted(set(notes) - set(acked))
    if extra:
        _check(out, failures, all(intact(k) for k in extra),
               f"{len(extra)} more committed in the instant before the kill ({', '.join(extra)}):"
               " its acknowledgement died with the process, the write did not")
    _check(out, failures, all(intact(k) for k in notes),
           f"nothing half-written: all {len(notes)} notes in the store are whole (a write the"
           " kill cut off is either all there or not there at all)")
    _check(out, failures, report.ok, _health_line(report))
    for finding in report.findings:
        _say(out, Text(f"      {finding.severity}: {finding.detail}", style="dim"))
    nxt = session.metadata.get("next")
    _check(out, failures, session.status is SessionStatus.ACTIVE,
           f"session resumed here: {session.status.value}, {len(open_tasks)} open tasks"
           + (f", next: {nxt}" if nxt else "")
           + f"; its resume brief is {brief.tokens} of {brief.budget} tokens")
    if failures:
        raise StatekeepError(f"the kill -9 demo found a broken promise: {failures[0]}")


def _write_until_killed(run: DemoRun) -> tuple[list[str], float]:
    """Run the writer and SIGKILL it a random instant after its first acknowledgement;
    returns the acknowledged keys and the delay from the first one to the kill."""
    assert run.session_id is not None
    cmd = [sys.executable, "-m", "statekeep.demo", "writer", "--db", run.db,
           "--session", run.session_id]
    acked: list[str] = []
    delay = random.uniform(*KILL_WINDOW)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        _say(run.console, Text(f"agent process (pid {proc.pid}) resumes the session and commits"
                               " notes as fast as it can, printing each key once its commit"
                               " has returned", style="dim"))
        # send_signal rather than a bare os.kill: it will not signal a pid that was
        # already reaped (and perhaps reused).
        killer = threading.Timer(delay, proc.send_signal, (signal.SIGKILL,))
        assert proc.stdout is not None and proc.stderr is not None
        try:
            for line in proc.stdout:
                if not line.endswith("\n"):
                    continue  # cut off mid-line by the kill: never acknowledged
                if not acked:
                    killer.start()
                acked.append(line.rstrip("\n"))
        finally:
            killer.cancel()
            if proc.poll() is None:  # we are leaving early: do not leave a writer behind
                proc.kill()
        errors = proc.stderr.read()
        code = proc.wait()
    if code != -signal.SIGKILL:
        last = (errors.strip().splitlines() or ["no output"])[-1]
        raise StatekeepError(f"the demo writer process {proc.pid} ended before it was killed"
                             f" (exit {code}): {last}")
    return acked, delay


def _health_line(report: HealthReport) -> str:
    """One line naming every check the health report ran and its verdict."""
    scanned = report.scanned
    parts = ["integrity", "foreign keys"]
    if report.wal is not None and report.wal.exists:
        wal = report.wal
        tail = ""
        if wal.torn:  # the kill landed inside a transaction (or the WAL cannot tell)
            tail = (f", then {wal.bytes_after_commit} bytes"
                    + (" that never committed" if wal.committed_lost is False else ""))
        parts.append(f"the write-ahead log ({wal.commits} intact transactions{tail})")
    parts += [f"{scanned.get('snapshots', 0)} snapshots", f"{scanned.get('blobs', 0)} blobs",
              f"{scanned.get('archives', 0)} archive files", "consistency"]
    errors = len(report.remaining)
    verdict = "no problems" if report.ok else f"{errors} problem{'s' * (errors != 1)}"
    return f"health check: {verdict} ({', '.join(parts)}; {report.seconds:.2f}s)"


def _check(out: Console, failures: list[str], ok: bool, text: str) -> None:
    """One verified claim: a green tick, or a red cross that fails the demo."""
    _say(out, Text.assemble("  ", ("✓ ", "bold green") if ok else ("✗ FAILED: ", "bold red"),
                            text))
    if not ok:
        failures.append(text)


def _say(out: Console, text: Text) -> None:
    """A line of the kill and recovery steps: wrapped at words on a terminal, one
    line per claim in a pipe (where a script or a test greps for it)."""
    out.print(text, soft_wrap=not out.is_terminal)


def undo_with_recovery_point(run: DemoRun) -> None:
    """Mark a recovery point, make a mistake, recover to the point: the mistake is
    undone in one transaction that verifies the store before it commits.

    The point is of the demo's session only, so recovering it touches nothing
    else -- ``--db`` may name a store other agents write to meanwhile.
    """
    assert run.session_id is not None
    out, sid = run.console, run.session_id
    failures: list[str] = []
    with StateSystem(StateConfig(db=run.db)) as sk:
        manager = sk.recovery_manager
        started = time.perf_counter()
        point = sk.create_recovery_point("before-cleanup", session_id=sid,
                                         description="the agent is about to tidy up")
        cost = time.perf_counter() - started
        _say(out, Text.assemble("  ", ("⚑ ", "bold cyan"),
                                f"recovery point {point.id} \"{point.name}\" at audit position"
                                f" {point.recovery_metadata['audit_id']} ({cost * 1000:.0f} ms)"))
        before = {t.id: t for t in sk.list_tasks(sid)}
        ast = next(t for t in before.values() if t.description == AST_TASK)
        gotcha = sk.get_context(sid, "note", "gotcha")
        deleted = sk.delete_task(ast.id)
        sk.delete_context(sid, "note", "gotcha")
        left = {t.id for t in sk.list_tasks(sid)}
        # The subtree's root first, then the subtasks in the store's order.
        gone = [ast, *(t for t in before.values() if t.id not in left and t.id != ast.id)]
        _say(out, Text.assemble(
            "  ", ("⌫ ", "bold red"), f"a clean-up goes wrong: it deletes the running task"
            f" \"{AST_TASK}\" with its {deleted - 1} subtasks ({len(before)} → {len(left)}"
            " tasks) and the note \"gotcha\""))
        result = run.recovery = manager.recover(point.id, "full")
        problems = manager.verify_recovery()
        after = {t.id: t for t in sk.list_tasks(sid)}
        restored = sk.get_context(sid, "note", "gotcha")
    base = (f"snapshot {result.base_snapshot_id}" if result.base_snapshot_id
            else "the start of the log")
    _say(out, Text.assemble(
        "  ", ("↺ ", "bold green"), f"recovery {result.recovery_id} ({result.strategy}) to"
        f" \"{point.name}\": {base} plus {result.events_replayed} audit events replayed,"
        f" {result.rows_changed} rows written back, {result.elapsed_s * 1000:.0f} ms"))
    table = render.listing("rows the recovery wrote")
    for col in ("table", "inserted", "updated", "deleted"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for name, counts in result.changed.items():
        table.add_row(name, *(str(counts[k]) for k in ("inserted", "updated", "deleted")))
    out.print(table)
    same = all(t.id in after and after[t.id].status is t.status
               and after[t.id].parent_task_id == t.parent_task_id for t in gone)
    statuses = ", ".join(f"{t.description} ({after[t.id].status.value})" for t in gone
                         if t.id in after)
    _check(out, failures, same and len(after) == len(before),
           f"the {len(gone)} tasks are back with the same ids, parents and states: {statuses}")
    _check(out, failures, gotcha is not None and restored is not None
           and restored.id == gotcha.id and restored.context_value == gotcha.context_value,
           "the note \"gotcha\" is back, same id, same value")
    _check(out, failures, not problems,
           "verified inside the recovery's transaction before it committed, and again now"
           f" (integrity, foreign keys, consistency): {len(problems)} problems")
    _say(out, Text(f"  a recovery can be undone too: its point \"pre-recovery"
                   f" {result.recovery_id}\" ({result.before_point_id}) was taken just before",
                   style="dim"))
    out.print(Text.assemble("  from the shell:  ", (
        f"statekeep recover run {point.id} --strategy full --db"
        f" {shlex.quote(display_location(run.db))}", "bold")), soft_wrap=True)
    if failures:
        raise StatekeepError(f"the recovery demo found a broken promise: {failures[0]}")


def explore_hint(run: DemoRun) -> None:
    """The command to look at the demo's session afterwards."""
    run.console.print()
    # soft_wrap: a command to copy must not be broken across lines.
    run.console.print(Text.assemble("explore it yourself:  ",
                                    (f"statekeep sessions show {run.session_id} --db"
                                     f" {shlex.quote(display_location(run.db))}",
                                     "bold")), soft_wrap=True)


def _was_captured(item: ContextItem) -> bool:
    """Written by the folder capture (summarised in the demo, not listed)."""
    value = item.context_value
    return ((item.context_type, item.context_key) in
            {("git", "git"), ("environment", "env"), ("workspace", "root")}
            or (item.context_type == "file" and isinstance(value, dict) and "sha256" in value))


#: The parent's steps, in order, with the title shown above each.
DEMO_STEPS: list[tuple[str, Callable[[DemoRun], None]]] = [
    ("A fresh store", prepare_store),
    ("A day of agent work, in its own process", agent_day),
    ("That process is gone: what survived?", show_survivors),
    ("Picking the work back up: the resume brief", show_brief),
    ("kill -9 in the middle of a write", kill_mid_write),
    ("A recovery point undoes a mistake", undo_with_recovery_point),
]


def run_demo(db: str | None = None, console: Console | None = None,
             workspace: str | None = ".") -> DemoRun:
    """Run every demo step; with no ``db``, in a new temporary directory. The
    agent captures ``workspace`` (the current folder by default; None skips it)."""
    console = console or make_console()
    if db is None:
        db = str(Path(tempfile.mkdtemp(prefix="statekeep-demo-")) / "demo.db")
    run = DemoRun(console=console, db=db, pace=WATCH_PACE if console.is_terminal else 0.0,
                  workspace=None if workspace is None else str(Path(workspace).resolve()))
    started = time.perf_counter()
    for n, (title, step) in enumerate(DEMO_STEPS, 1):
        console.print(Rule(Text(f"{n}. {title}", style="bold"), align="left"))
        step(run)
    explore_hint(run)
    console.print(Text(f"demo finished in {time.perf_counter() - started:.1f}s", style="dim"))
    return run


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m statekeep.demo [--db PATH]``; ``worker --db PATH`` and
    ``writer --db PATH --session ID`` are the children."""
    parser = argparse.ArgumentParser(prog="python -m statekeep.demo")
    parser.add_argument("role", nargs="?", choices=["run", "worker", "writer"], default="run",
                        help="'run' the whole demo (default), be the agent 'worker', or the"
                             " 'writer' that is killed mid-write")
    parser.add_argument("--db", help="the demo store (default: a new temporary directory)")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="worker only: seconds to pause after each action")
    parser.add_argument("--session", default=None, help="writer only: the session to resume")
    parser.add_argument("--workspace", default=None,
                        help="the folder the agent captures (default: the current folder)")
    args = parser.parse_args(argv)
    if args.role == "worker":
        if not args.db:
            parser.error("worker needs --db")
        run_worker(args.db, args.pace, args.workspace)
        return 0
    if args.role == "writer":
        if not args.db or not args.session:
            parser.error("writer needs --db and --session")
        run_writer(args.db, args.session)
        return 0
    try:
        run_demo(args.db, workspace=args.workspace or ".")
    except StatekeepError as exc:
        report_error(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
