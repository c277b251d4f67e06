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

Both halves are lists of small steps (:data:`DEMO_STEPS`, :data:`AGENT_DAY`)
so that later demos -- killing the agent mid-task, resuming from a brief --
are new entries rather than rewrites. The agent runs on a simulated clock
that ends before the real present, so durations look like a day's work while
the whole demo takes about a second.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
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
from statekeep.store.context import ContextInput
from statekeep.system import StateSystem

__all__ = ["AGENT_DAY", "DEMO_STEPS", "DemoRun", "main", "run_demo", "run_worker"]

USER = "alice"

#: The demo captures a real folder; a bigger one is skipped, not waited for.
DEMO_MAX_FILES = 5000
#: Seconds the child pauses after each narrated action when someone is watching.
WATCH_PACE = 0.06


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
        ("ast", "implement", "Extract AST node classes into ast.py", 5),
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
    out.print()
    # soft_wrap: a command to copy must not be broken across lines.
    out.print(Text.assemble("explore it yourself:  ",
                            (f"statekeep sessions show {sid} --db"
                             f" {shlex.quote(display_location(run.db))}",
                             "bold")), soft_wrap=True)


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
    console.print(Text(f"demo finished in {time.perf_counter() - started:.1f}s", style="dim"))
    return run


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m statekeep.demo [--db PATH]``, or ``worker --db PATH`` for the child."""
    parser = argparse.ArgumentParser(prog="python -m statekeep.demo")
    parser.add_argument("role", nargs="?", choices=["run", "worker"], default="run",
                        help="'run' the whole demo (default), or be the agent 'worker'")
    parser.add_argument("--db", help="the demo store (default: a new temporary directory)")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="worker only: seconds to pause after each action")
    parser.add_argument("--workspace", default=None,
                        help="the folder the agent captures (default: the current folder)")
    args = parser.parse_args(argv)
    if args.role == "worker":
        if not args.db:
            parser.error("worker needs --db")
        run_worker(args.db, args.pace, args.workspace)
        return 0
    try:
        run_demo(args.db, workspace=args.workspace or ".")
    except StatekeepError as exc:
        report_error(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
