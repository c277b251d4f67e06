"""``statekeep archive``: move idle finished sessions to archive files and back."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from statekeep.cli.render import listing
from statekeep.cli.shared import (
    ConfigOption,
    DbOption,
    JsonOption,
    Output,
    local_time,
    open_system,
    progress_bar,
)
from statekeep.memory.archive import ArchiveTier
from statekeep.system import StateSystem

__all__ = ["archive_app"]

archive_app = typer.Typer(no_args_is_help=True,
                          help="Archive idle finished sessions to compressed files.")


def _tier(system: StateSystem) -> ArchiveTier:
    return ArchiveTier.for_store(system.store)


@archive_app.command("run")
def run(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the sessions that would be archived; change nothing.")] = False,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Archive finished sessions idle for longer than the cold retention."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        tier = _tier(sk)
        if dry_run:
            found = tier.candidates()
            if out.json:
                out.emit_json({"dry_run": True, "candidates": [
                    {"session_id": c.session_id, "user_id": c.user_id, "status": c.status,
                     "last_activity": c.last_activity.isoformat()} for c in found]})
                return
            for c in found:
                out.console.print(f"{c.session_id}  {c.user_id}  {c.status}"
                                  f"  last active {local_time(c.last_activity)}")
            out.console.print(f"{len(found)} session(s) would be archived to {tier.directory}."
                              " Dry run: nothing was changed.", soft_wrap=True)
            return
        with progress_bar(out, "archiving") as step:
            report = tier.run(progress=step)
    if out.json:
        out.emit_json(report.to_dict())
        return
    out.console.print(Text(f"✔ archived {len(report.archived)} session(s)", style="green"))
    for sid, why in report.skipped:
        out.console.print(f"  skipped {sid}: {why}", soft_wrap=True)
    for sid, err in report.failed:
        out.console.print(Text(f"  failed {sid}: {err}", style="red"), soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


@archive_app.command("list")
def list_(
    ctx: typer.Context,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the archived sessions."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        entries = _tier(sk).list()
    if out.json:
        out.emit_json([e.to_dict() for e in entries])
        return
    table = listing("Archived sessions")
    for col in ("session", "user", "tasks", "context", "size", "archived", "expires"):
        table.add_column(col, justify="right" if col in ("tasks", "context", "size") else
                         "left")
    for e in entries:
        table.add_row(e.session_id, e.user_id, str(e.item_counts.get("tasks", 0)),
                      str(e.item_counts.get("context", 0)), f"{e.size_bytes:,} B",
                      local_time(e.archived_at, seconds=False),
                      local_time(e.expires_at, seconds=False))
    out.console.print(table)


@archive_app.command("restore")
def restore(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The archived session's id.")],
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Bring an archived session back into the store."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        session = _tier(sk).restore(session_id)
    if out.json:
        out.emit_json(session.to_dict())
        return
    out.console.print(Text(f"✔ restored session {session.id}", style="green"))


@archive_app.command("purge")
def purge(
    ctx: typer.Context,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete archives older than the archive retention."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        removed = _tier(sk).purge_expired()
    if out.json:
        out.emit_json({"purged": removed})
        return
    out.console.print(f"purged {removed} expired archive(s)")
