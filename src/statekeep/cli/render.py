"""Rich renderings of statekeep records, shared by the CLI and the demo.

Every piece of user data goes into a :class:`~rich.text.Text`, never into a
markup string, so a context key such as ``[red]`` is shown as typed instead
of being interpreted by rich.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from statekeep.cli.shared import local_time, short_time
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
    "listing",
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


@dataclass(frozen=True)
class _Column:
    """One column of a listing: header, how to render a record, and whether it
    is dropped on a narrow terminal (ids are long; times and extras give way)."""

    header: str
    cell: Callable[[Any], RenderableType]
    wide_only: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def listing(title: str) -> Table:
    """An empty table in the house style: a title, a ruled header, no cell borders."""
    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                 show_edge=False, header_style="bold")


def _listing(title: str, columns: Sequence[_Column], records: Iterable[Any],
             wide: bool) -> Table:
    table = listing(title)
    used = [c for c in columns if wide or not c.wide_only]
    for c in used:
        table.add_column(c.header, **c.options)
    for record in records:
        table.add_row(*(c.cell(record) for c in used))
    return table


_ID = {"no_wrap": True, "style": "cyan"}
_FOLD = {"overflow": "fold"}
_NUM = {"justify": "right", "no_wrap": True}


def sessions_table(sessions: Iterable[Session], *, wide: bool = True) -> Table:
    return _listing("Sessions", [
        _Column("id", lambda s: Text(s.id), options=_ID),
        _Column("user", lambda s: Text(s.user_id), options=_FOLD),
        _Column("status", lambda s: _session_status(s.status)),
        _Column("started", lambda s: local_time(s.start_time, seconds=False),
                options={"no_wrap": True}),
        _Column("ended", lambda s: local_time(s.end_time, seconds=False), wide_only=True,
                options={"no_wrap": True}),
        _Column("v", lambda s: str(s.version), wide_only=True, options=_NUM),
        _Column("metadata", lambda s: Text("" if s.metadata is None
                                           else json_preview(s.metadata)),
                wide_only=True, options={"overflow": "fold", "min_width": 16}),
    ], sessions, wide)


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


def task_label(task: Task, *, show_id: bool = True) -> Text:
    """One line for a task in a tree: status icon, type, description, and extras."""
    icon, style = TASK_STYLES[task.status]
    label = Text.assemble((f"{icon} ", style), (task.type, f"bold {style}"))
    if task.description:
        label.append(f"  {task.description}")
    extras = []
    if task.duration_ms is not None:
        extras.append(_duration(task.duration_ms))
    if task.retry_count:
        extras.append(f"retries: {task.retry_count}")
    if task.status is TaskStatus.COMPLETED and task.result is not None:
        extras.append(f"→ {json_preview(task.result, 48)}")
    if task.status is TaskStatus.FAILED and task.error_details is not None:
        extras.append(f"error {json_preview(task.error_details, 48)}")
    if extras:
        label.append("  " + " · ".join(extras), style="dim")
    if show_id:
        label.append(f"  {task.id}", style="bright_black")
    return label


def task_tree(trees: Sequence[TaskTree], title: str = "tasks", *,
              show_ids: bool = True) -> Tree:
    """A session's task forest as a rich Tree, coloured by status."""
    root = Tree(Text(title, style="bold"), guide_style="bright_black")

    def add(node: Tree, subtree: TaskTree) -> None:
        branch = node.add(task_label(subtree.task, show_id=show_ids))
        for child in subtree.children:
            add(branch, child)

    for t in trees:
        add(root, t)
    if not trees:
        root.add(Text("(no tasks)", style="dim"))
    return root


def tasks_table(tasks: Iterable[Task], *, wide: bool = True) -> Table:
    return _listing("Tasks", [
        _Column("id", lambda t: Text(t.id), options=_ID),
        _Column("type", lambda t: Text(t.type), options=_FOLD),
        _Column("status", lambda t: _status(t.status), options={"no_wrap": True}),
        _Column("prio", lambda t: str(t.priority), wide_only=True, options=_NUM),
        _Column("retries", lambda t: str(t.retry_count), wide_only=True, options=_NUM),
        _Column("took", lambda t: _duration(t.duration_ms), wide_only=True, options=_NUM),
        _Column("description", lambda t: Text(t.description or ""),
                options={"overflow": "fold", "min_width": 12}),
    ], tasks, wide)


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
    return _listing(title, [
        _Column("type", lambda c: Text(c.context_type),
                options={"style": "magenta", "overflow": "fold"}),
        _Column("key", lambda c: Text(c.context_key), options={"overflow": "fold",
                                                               "min_width": 8}),
        _Column("value", lambda c: Text(json_preview(c.context_value)),
                options={"overflow": "fold", "min_width": 16}),
        _Column("relevance", lambda c: f"{c.relevance_score:.2f}", options=_NUM),
        _Column("expires", lambda c: short_time(c.expires_at), options={"no_wrap": True}),
    ], items, True)


def _who(d: Decision) -> str:
    if d.user_override:
        return "user override"
    return "agent" if d.autonomous else "asked user"


def decisions_table(decisions: Iterable[Decision]) -> Table:
    return _listing("Decisions", [
        _Column("type", lambda d: Text(d.decision_type), options={"style": "magenta"}),
        _Column("decision", lambda d: Text(d.decision_made), options=_FOLD),
        _Column("confidence", lambda d: "" if d.confidence is None else f"{d.confidence:.2f}",
                options=_NUM),
        _Column("who", _who),
        _Column("outcome", lambda d: Text(d.outcome or ""), options=_FOLD),
        _Column("feedback", lambda d: "" if d.feedback_score is None
                else f"{d.feedback_score:+.2f}", options=_NUM),
    ], decisions, True)


def preferences_table(preferences: Iterable[Preference]) -> Table:
    return _listing("Preferences", [
        _Column("user", lambda p: Text(p.user_id)),
        _Column("type", lambda p: Text(p.preference_type), options={"style": "magenta"}),
        _Column("key", lambda p: Text(p.preference_key), options=_FOLD),
        _Column("value", lambda p: Text(json_preview(p.preference_value)), options=_FOLD),
        _Column("confidence", lambda p: f"{p.confidence:.2f}", options=_NUM),
        _Column("seen", lambda p: str(p.observation_count), options=_NUM),
    ], preferences, True)


def audit_table(events: Iterable[AuditEvent], *, wide: bool = True) -> Table:
    return _listing("Audit log", [
        _Column("#", lambda e: str(e.id), options={**_NUM, "style": "bright_black"}),
        _Column("time", lambda e: local_time(e.timestamp, seconds=wide),
                options={"no_wrap": True}),
        _Column("event", lambda e: Text(e.event_type)),
        _Column("entity", lambda e: Text(e.entity_type), wide_only=True),
        _Column("entity id", lambda e: Text(e.entity_id), options=_ID),
        _Column("session", lambda e: Text(e.session_id or ""), wide_only=True,
                options={"no_wrap": True, "style": "bright_black"}),
        _Column("user", lambda e: Text(e.user_id or ""), options=_FOLD),
    ], events, wide)
