"""Rich renderings of statekeep records, shared by the CLI and the demo.

Every piece of user data goes into a :class:`~rich.text.Text`, never into a
markup string, so a context key such as ``[red]`` is shown as typed instead
of being interpreted by rich.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from statekeep.cli.shared import local_time
from statekeep.models import (
    AuditEvent,
    ContextItem,
    Decision,
    Preference,
    Session,
    SessionStatus,
    Task,
    TaskStatus,
    TaskTree,
)

__all__ = [
    "SESSION_STYLES",
    "TASK_STYLES",
    "audit_table",
    "context_table",
    "decisions_table",
    "json_preview",
    "preferences_table",
    "session_panel",
    "sessions_table",
    "task_detail",
    "task_label",
    "task_tree",
    "tasks_table",
]

#: Status -> (icon, style). One table so the tree, the tables and the demo agree.
TASK_STYLES: dict[TaskStatus, tuple[str, str]] = {
    TaskStatus.PENDING: ("○", "bright_black"),
    TaskStatus.IN_PROGRESS: ("▶", "bold yellow"),
    TaskStatus.COMPLETED: ("✔", "green"),
    TaskStatus.FAILED: ("✘", "bold red"),
    TaskStatus.CANCELLED: ("⊘", "bright_black strike"),
}
SESSION_STYLES: dict[SessionStatus, str] = {
    SessionStatus.ACTIVE: "bold cyan",
    SessionStatus.PAUSED: "yellow",
    SessionStatus.COMPLETED: "green",
    SessionStatus.FAILED: "bold red",
}
_PREVIEW = 60


def json_preview(value: Any, limit: int = _PREVIEW) -> str:
    """Compact JSON of a value, cut to ``limit`` characters for a table cell."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status(status: TaskStatus) -> Text:
    icon, style = TASK_STYLES[status]
    return Text(f"{icon} {status.value}", style=style)


def _session_status(status: SessionStatus) -> Text:
    return Text(status.value, style=SESSION_STYLES[status])


def _duration(ms: int | None) -> str:
    if ms is None:
        return ""
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def sessions_table(sessions: Iterable[Session]) -> Table:
    table = Table(title="Sessions", title_justify="left")
    table.add_column("id", no_wrap=True, style="cyan")
    table.add_column("user")
    table.add_column("status")
    table.add_column("started", no_wrap=True)
    table.add_column("ended", no_wrap=True)
    table.add_column("v", justify="right")
    table.add_column("metadata", overflow="fold")
    for s in sessions:
        table.add_row(Text(s.id), Text(s.user_id), _session_status(s.status),
                      local_time(s.start_time), local_time(s.end_time), str(s.version),
                      Text("" if s.metadata is None else json_preview(s.metadata)))
    return table


def session_panel(session: Session, counts: dict[str, int]) -> Panel:
    """The session's fields plus a few counts (tasks, context, decisions...)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("user", Text(session.user_id))
    grid.add_row("status", _session_status(session.status))
    grid.add_row("started", local_time(session.start_time))
    if session.end_time is not None:
        grid.add_row("ended", local_time(session.end_time))
    grid.add_row("updated", f"{local_time(session.updated_at)} (version {session.version})")
    if session.metadata is not None:
        grid.add_row("metadata", Text(json_preview(session.metadata, 200)))
    for name, n in counts.items():
        grid.add_row(name, str(n))
    return Panel(grid, title=Text(f"session {session.id}", style="bold"), title_align="left",
                 expand=False)


def task_label(task: Task) -> Text:
    """One line for a task in a tree: status icon, type, description, and extras."""
    icon, style = TASK_STYLES[task.status]
    label = Text.assemble((f"{icon} ", style), (task.type, f"bold {style}"))
    if task.description:
        label.append(f"  {task.description}")
    extras = []
    if task.duration_ms is not None:
        extras.append(_duration(task.duration_ms))
    if task.retry_count:
        extras.append(f"retried {task.retry_count}×")
    if task.status is TaskStatus.COMPLETED and task.result is not None:
        extras.append(f"→ {json_preview(task.result, 48)}")
    if task.status is TaskStatus.FAILED and task.error_details is not None:
        extras.append(f"error {json_preview(task.error_details, 48)}")
    if extras:
        label.append("  " + " · ".join(extras), style="dim")
    label.append(f"  {task.id}", style="bright_black")
    return label


def task_tree(trees: Sequence[TaskTree], title: str = "tasks") -> Tree:
    """A session's task forest as a rich Tree, coloured by status."""
    root = Tree(Text(title, style="bold"), guide_style="bright_black")

    def add(node: Tree, subtree: TaskTree) -> None:
        branch = node.add(task_label(subtree.task))
        for child in subtree.children:
            add(branch, child)

    for t in trees:
        add(root, t)
    if not trees:
        root.add(Text("(no tasks)", style="dim"))
    return root


def tasks_table(tasks: Iterable[Task]) -> Table:
    table = Table(title="Tasks", title_justify="left")
    table.add_column("id", no_wrap=True, style="cyan")
    table.add_column("type")
    table.add_column("status", no_wrap=True)
    table.add_column("prio", justify="right")
    table.add_column("retries", justify="right")
    table.add_column("took", justify="right")
    table.add_column("parent", no_wrap=True, style="bright_black")
    table.add_column("description", overflow="fold")
    for t in tasks:
        table.add_row(Text(t.id), Text(t.type), _status(t.status), str(t.priority),
                      str(t.retry_count), _duration(t.duration_ms),
                      Text(t.parent_task_id or ""), Text(t.description or ""))
    return table


def task_detail(tree: TaskTree) -> RenderableType:
    """A task's fields, its JSON payloads in full, and its subtree."""
    task = tree.task
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("session", Text(task.session_id))
    grid.add_row("parent", Text(task.parent_task_id or "(root)"))
    grid.add_row("type", Text(task.type))
    grid.add_row("status", _status(task.status))
    grid.add_row("priority", str(task.priority))
    if task.description:
        grid.add_row("description", Text(task.description))
    grid.add_row("created", local_time(task.created_at))
    if task.started_at:
        grid.add_row("started", local_time(task.started_at))
    if task.completed_at:
        grid.add_row("finished", f"{local_time(task.completed_at)}"
                                 f" (took {_duration(task.duration_ms)})")
    grid.add_row("retries", str(task.retry_count))
    for name in ("parameters", "result", "error_details"):
        value = getattr(task, name)
        if value is not None:
            grid.add_row(name, Text(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()))
    panel = Panel(grid, title=Text(f"task {task.id}", style="bold"), title_align="left",
                  expand=False)
    if not tree.children:
        return panel
    return Group(panel, task_tree([tree], title="subtree"))


def context_table(items: Iterable[ContextItem], title: str = "Context") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("type", style="magenta")
    table.add_column("key", overflow="fold")
    table.add_column("value", overflow="fold")
    table.add_column("relevance", justify="right")
    table.add_column("reads", justify="right")
    table.add_column("expires", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    for c in items:
        table.add_row(Text(c.context_type), Text(c.context_key),
                      Text(json_preview(c.context_value)), f"{c.relevance_score:.2f}",
                      str(c.access_count), local_time(c.expires_at), local_time(c.updated_at))
    return table


def decisions_table(decisions: Iterable[Decision]) -> Table:
    table = Table(title="Decisions", title_justify="left")
    table.add_column("type", style="magenta")
    table.add_column("decision", overflow="fold")
    table.add_column("confidence", justify="right")
    table.add_column("who")
    table.add_column("outcome", overflow="fold")
    table.add_column("feedback", justify="right")
    for d in decisions:
        who = "user override" if d.user_override else ("agent" if d.autonomous else "asked user")
        table.add_row(Text(d.decision_type), Text(d.decision_made),
                      "" if d.confidence is None else f"{d.confidence:.2f}", who,
                      Text(d.outcome or ""),
                      "" if d.feedback_score is None else f"{d.feedback_score:+.2f}")
    return table


def preferences_table(preferences: Iterable[Preference]) -> Table:
    table = Table(title="Preferences", title_justify="left")
    table.add_column("user")
    table.add_column("type", style="magenta")
    table.add_column("key", overflow="fold")
    table.add_column("value", overflow="fold")
    table.add_column("confidence", justify="right")
    table.add_column("seen", justify="right")
    for p in preferences:
        table.add_row(Text(p.user_id), Text(p.preference_type), Text(p.preference_key),
                      Text(json_preview(p.preference_value)), f"{p.confidence:.2f}",
                      str(p.observation_count))
    return table


def audit_table(events: Iterable[AuditEvent]) -> Table:
    table = Table(title="Audit log", title_justify="left")
    table.add_column("#", justify="right", style="bright_black")
    table.add_column("time", no_wrap=True)
    table.add_column("event")
    table.add_column("entity")
    table.add_column("entity id", no_wrap=True, style="cyan")
    table.add_column("session", no_wrap=True, style="bright_black")
    table.add_column("user")
    for e in events:
        table.add_row(str(e.id), local_time(e.timestamp), Text(e.event_type),
                      Text(e.entity_type), Text(e.entity_id), Text(e.session_id or ""),
                      Text(e.user_id or ""))
    return table
