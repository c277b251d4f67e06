"""Looking at what the store holds: sessions, tasks, context and the audit log.

These commands are thin: they call one or two :class:`StateSystem` methods
and hand the records to :mod:`statekeep.cli.render` (tables, trees) or to
``to_dict()`` (``--json``). Validation of ids, statuses and limits is left
to the store, which names the field at fault in its error.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from statekeep.cli import render
from statekeep.cli.shared import (
    ConfigOption,
    DbOption,
    JsonOption,
    Output,
    local_time,
    open_system,
    parse_json_value,
)
from statekeep.errors import NotFoundError

__all__ = ["audit", "context_app", "sessions_app", "tasks_app"]

sessions_app = typer.Typer(help="List and inspect sessions.", no_args_is_help=True)
tasks_app = typer.Typer(help="List and inspect a session's tasks.", no_args_is_help=True)
context_app = typer.Typer(help="Read and write a session's context items.",
                          no_args_is_help=True)

SessionArg = Annotated[str, typer.Argument(metavar="SESSION_ID", help="Session id.",
                                           show_default=False)]
TypeArg = Annotated[str, typer.Argument(metavar="TYPE", help="Context type.")]
KeyArg = Annotated[str, typer.Argument(metavar="KEY", help="Context key.")]


# -- sessions ------------------------------------------------------------------


@sessions_app.command("list")
def sessions_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's sessions.")] = None,
    status: Annotated[str | None, typer.Option(
        help="Only sessions in this status: active, paused, completed or failed.")] = None,
    limit: Annotated[int, typer.Option(help="Sessions per page (1-10000).")] = 50,
    cursor: Annotated[str | None, typer.Option(
        help="Continue after a previous page (the cursor it printed).")] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List sessions, newest first, one page at a time."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        page = sk.list_sessions(user_id=user, status=status, limit=limit, cursor=cursor)
    if out.json:
        out.emit_json({"items": [s.to_dict() for s in page.items],
                       "next_cursor": page.next_cursor})
        return
    if not page.items:
        out.console.print("No sessions match.")
        return
    out.console.print(render.sessions_table(page.items, wide=out.wide))
    if page.next_cursor:
        # The cursor is printed on a line of its own so it is easy to copy.
        out.console.print(Text("next cursor: ", style="dim") + Text(page.next_cursor))
        out.console.print(Text("(pass it with --cursor for the next page)", style="dim"))


@sessions_app.command("show")
def sessions_show(
    ctx: typer.Context,
    session_id: SessionArg,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one session, its task tree and how much context it holds."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        session = sk.get_session(session_id)
        trees = sk.task_tree(session_id)
        counts = {
            "tasks": sum(len(t.walk()) for t in trees),
            "context items": len(sk.list_context(session_id)),
            "decisions": len(sk.list_decisions(session_id=session_id, limit=100_000)),
        }
    if out.json:
        out.emit_json({"session": session.to_dict(), "tasks": [t.to_dict() for t in trees],
                       "context_count": counts["context items"],
                       "decision_count": counts["decisions"]})
        return
    out.console.print(render.session_panel(session, counts))
    out.console.print(render.task_tree(trees))


# -- tasks -----------------------------------------------------------------------


@tasks_app.command("list")
def tasks_list(
    ctx: typer.Context,
    session_id: SessionArg,
    status: Annotated[str | None, typer.Option(
        help="Only tasks in this status: pending, in_progress, completed, failed"
             " or cancelled.")] = None,
    type: Annotated[str | None, typer.Option(help="Only tasks of this type.")] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List a session's tasks, most urgent first."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        sk.get_session(session_id)  # an unknown session is an error, not an empty list
        tasks = sk.list_tasks(session_id, status=status, type=type)
    if out.json:
        out.emit_json([t.to_dict() for t in tasks])
    elif not tasks:
        out.console.print("No tasks match.")
    else:
        out.console.print(render.tasks_table(tasks, wide=out.wide))


@tasks_app.command("show")
def tasks_show(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="Task id.",
                                           show_default=False)],
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one task in full (parameters, result, error) with its subtasks."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        task = sk.get_task(task_id)
        (tree,) = sk.task_tree(task.session_id, root_task_id=task_id)
    if out.json:
        out.emit_json(tree.to_dict())
    else:
        out.console.print(render.task_detail(tree))


# -- context ---------------------------------------------------------------------


@context_app.command("list")
def context_list(
    ctx: typer.Context,
    session_id: SessionArg,
    type: Annotated[str | None, typer.Option(
        "--type", help="Only items of this context type (file, note, ...).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many items.")] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List a session's live context items, most relevant first."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        sk.get_session(session_id)
        items = sk.list_context(session_id, context_type=type, limit=limit)
    if out.json:
        out.emit_json([c.to_dict() for c in items])
    elif not items:
        out.console.print("No context items match.")
    else:
        out.console.print(render.context_table(items))


@context_app.command("get")
def context_get(
    ctx: typer.Context,
    session_id: SessionArg,
    context_type: TypeArg,
    key: KeyArg,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Print one context item's value (the whole item with --json)."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        item = sk.get_context(session_id, context_type, key)
        if item is None:
            sk.get_session(session_id)  # report a missing session as such
            raise NotFoundError("context item", f"{context_type}/{key}")
    if out.json:
        out.emit_json(item.to_dict())
    elif out.console.is_terminal:
        out.console.print_json(data=item.context_value)
    else:
        # Piped: the bare JSON value, so `statekeep context get ... | jq` just works.
        out.emit_json(item.context_value)


@context_app.command("set")
def context_set(
    ctx: typer.Context,
    session_id: SessionArg,
    context_type: TypeArg,
    key: KeyArg,
    value: Annotated[str, typer.Argument(metavar="VALUE",
                                         help="The value, as JSON (see --string).")],
    string: Annotated[bool, typer.Option(
        "--string", help="Store VALUE as a plain string instead of parsing it as JSON.")
    ] = False,
    ttl: Annotated[float | None, typer.Option(
        "--ttl", metavar="SECONDS", help="Expire the item after this many seconds.")] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Create or replace a context item."""
    out = Output(json=json)
    data = value if string else parse_json_value(value)
    with open_system(ctx) as sk:
        item = sk.set_context(session_id, context_type, key, data, ttl_seconds=ttl)
    if out.json:
        out.emit_json(item.to_dict())
        return
    verb = "created" if item.created_at == item.updated_at else "updated"
    line = Text.assemble((f"{verb} ", "green"), (f"{context_type}/{key}", "bold"),
                         f" in session {session_id}")
    if item.expires_at is not None:
        line.append(f" (expires {local_time(item.expires_at)})", style="dim")
    out.console.print(line)


# -- audit -------------------------------------------------------------------------


def audit(
    ctx: typer.Context,
    session: Annotated[str | None, typer.Option(
        "--session", help="Only events of this session.")] = None,
    entity_type: Annotated[str | None, typer.Option(
        help="Only events about this kind of entity: session, task, context, decision,"
             " preference.")] = None,
    entity_id: Annotated[str | None, typer.Option(help="Only events about this entity.")
                         ] = None,
    limit: Annotated[int, typer.Option(help="At most this many events.")] = 100,
    after: Annotated[int | None, typer.Option(
        help="Only events after this event number (to page through the log).")] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the audit trail: every committed change, oldest first."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        events = sk.audit(session_id=session, entity_type=entity_type, entity_id=entity_id,
                          after_id=after, limit=limit)
    if out.json:
        out.emit_json([e.to_dict() for e in events])
        return
    if not events:
        out.console.print("No audit events match.")
        return
    out.console.print(render.audit_table(events, wide=out.wide))
    if len(events) == limit:
        out.console.print(Text(f"more may follow: --after {events[-1].id}", style="dim"))
