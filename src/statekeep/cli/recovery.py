"""``statekeep snapshot`` and ``statekeep recover``: images, recovery points, recovery."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

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
from statekeep.errors import ValidationError
from statekeep.models import RecoveryPoint, Snapshot
from statekeep.recovery.manager import STRATEGIES, RecoveryManager, RecoveryResult
from statekeep.system import StateSystem

__all__ = ["recover_app", "snapshot_app"]

snapshot_app = typer.Typer(no_args_is_help=True,
                           help="Compressed, checksummed images of the store or a session.")
recover_app = typer.Typer(no_args_is_help=True,
                          help="Recovery points, and recovery to them or to any instant.")

SessionOption = Annotated[str | None, typer.Option(
    "--session", help="One session only (default: the whole store).", show_default=False)]
SessionsOption = Annotated[list[str] | None, typer.Option(
    "--session", help="Only this session (repeatable).", show_default=False)]
DryRunOption = Annotated[bool, typer.Option(
    "--dry-run", help="Report what would change; change nothing.")]


def _manager(sk: StateSystem) -> RecoveryManager:
    return sk.recovery_manager


def _snapshot_dict(s: Snapshot) -> dict[str, Any]:
    return s.to_dict()


def _print_snapshot(out: Output, verb: str, s: Snapshot) -> None:
    scope = "whole store" if s.session_id is None else f"session {s.session_id}"
    out.console.print(Text(f"✔ {verb} snapshot {s.id}", style="green"))
    out.console.print(f"  {s.snapshot_type.value}, {scope}, {s.size_bytes:,} B,"
                      f" audit position {s.audit_id}", soft_wrap=True)


def _parse_time(text: str) -> datetime:
    """An ISO-8601 instant; without an offset it is the viewer's local time."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{text!r} is not an ISO-8601 time such as"
                              " 2026-11-24T13:05:00+00:00", field="at") from None
    return when.astimezone() if when.tzinfo is None else when


def _report(out: Output, result: RecoveryResult) -> None:
    if out.json:
        out.emit_json(result.to_dict())
        return
    verb = "would change" if result.dry_run else "changed"
    style = "yellow" if result.dry_run else "green"
    target = ("" if result.target_time is None
              else f" to {local_time(result.target_time)}")
    out.console.print(Text(f"✔ recovery {result.recovery_id}{target}: {verb}"
                           f" {result.rows_changed} row(s)", style=style), soft_wrap=True)
    for table, counts in sorted(result.changed.items()):
        out.console.print(f"  {table}: +{counts['inserted']} ~{counts['updated']}"
                          f" -{counts['deleted']}")
    out.console.print(f"  replayed {result.events_replayed} audit event(s) from"
                      f" {result.base_snapshot_id or 'the start of the audit log'}",
                      soft_wrap=True)
    for warning in result.warnings:
        out.console.print(Text(f"  warning: {warning}", style="yellow"), soft_wrap=True)
    if result.skipped_archived:
        out.console.print(f"  left in their archive files: {', '.join(result.skipped_archived)}",
                          soft_wrap=True)
    if result.before_point_id:
        out.console.print(f"  undo with: statekeep recover run {result.before_point_id}",
                          soft_wrap=True)


# -- snapshot --------------------------------------------------------------------


@snapshot_app.command("create")
def snapshot_create(
    ctx: typer.Context,
    session: SessionOption = None,
    snapshot_type: Annotated[str, typer.Option(
        "--type", help="checkpoint, backup or recovery.")] = "checkpoint",
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Take a snapshot of the store (or of one session)."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        snap = _manager(sk).snapshots.create(session, snapshot_type)
    if out.json:
        out.emit_json(_snapshot_dict(snap))
        return
    _print_snapshot(out, "took", snap)


@snapshot_app.command("list")
def snapshot_list(
    ctx: typer.Context,
    session: SessionOption = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the snapshots, newest first."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        snaps = _manager(sk).snapshots.list(session_id=session)
    if out.json:
        out.emit_json([_snapshot_dict(s) for s in snaps])
        return
    table = listing("Snapshots")
    for col in ("id", "type", "scope", "size", "audit", "taken"):
        table.add_column(col, justify="right" if col in ("size", "audit") else "left")
    for s in snaps:
        table.add_row(s.id, s.snapshot_type.value, s.session_id or "store",
                      f"{s.size_bytes:,} B", "" if s.audit_id is None else str(s.audit_id),
                      local_time(s.created_at))
    out.console.print(table)


@snapshot_app.command("verify")
def snapshot_verify(
    ctx: typer.Context,
    snapshot_id: Annotated[str, typer.Argument(help="The snapshot's id.")],
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Check a snapshot's checksum and format (exit 1 when it is damaged)."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        mgr = _manager(sk)
        snap = mgr.snapshots.get(snapshot_id)
        mgr.snapshots.verify(snapshot_id)  # SnapshotCorruptError: one red line, exit 1
    if out.json:
        out.emit_json({"id": snap.id, "ok": True, "checksum": snap.checksum})
        return
    out.console.print(Text(f"✔ snapshot {snap.id} is intact", style="green"))


@snapshot_app.command("export")
def snapshot_export(
    ctx: typer.Context,
    snapshot_id: Annotated[str, typer.Argument(help="The snapshot's id.")],
    path: Annotated[Path, typer.Argument(help="File (or folder) to write.")],
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Write a snapshot to a file (verified first, written atomically)."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        written = _manager(sk).snapshots.export(snapshot_id, path)
    if out.json:
        out.emit_json({"id": snapshot_id, "path": str(written),
                       "size_bytes": written.stat().st_size})
        return
    out.console.print(Text(f"✔ exported {snapshot_id} to {written}", style="green"),
                      soft_wrap=True)


@snapshot_app.command("import")
def snapshot_import(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A file written by 'snapshot export'.")],
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Keep the snapshot a file holds (the file is verified before anything is written)."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        snap = _manager(sk).snapshots.import_file(path)
    if out.json:
        out.emit_json(_snapshot_dict(snap))
        return
    _print_snapshot(out, "imported", snap)


@snapshot_app.command("restore")
def snapshot_restore(
    ctx: typer.Context,
    snapshot_id: Annotated[str, typer.Argument(help="The snapshot's id.")],
    sessions: SessionsOption = None,
    dry_run: DryRunOption = False,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Make the store (or its sessions) exactly what a snapshot holds."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        result = sk.restore_snapshot(snapshot_id, sessions=sessions or None,
                                               dry_run=dry_run)
    _report(out, result)


# -- recover ---------------------------------------------------------------------


def _point_dict(p: RecoveryPoint) -> dict[str, Any]:
    return p.to_dict()


@recover_app.command("point")
def recover_point(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        help="A name (default: auto_<time>).", show_default=False)] = None,
    session: SessionOption = None,
    description: Annotated[str | None, typer.Option(
        "--description", help="Why this point.", show_default=False)] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a recovery point (cheap: call it at every task boundary)."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        point = _manager(sk).create_recovery_point(name, session_id=session,
                                                   description=description)
    if out.json:
        out.emit_json(_point_dict(point))
        return
    meta = point.recovery_metadata
    out.console.print(Text(f"✔ recovery point {point.id} ({point.name})", style="green"),
                      soft_wrap=True)
    out.console.print(f"  {meta['session_count']} session(s), {meta['active_tasks']} active"
                      f" task(s), audit position {meta['audit_id']}", soft_wrap=True)


@recover_app.command("points")
def recover_points(
    ctx: typer.Context,
    session: SessionOption = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the recovery points, newest first."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        points = _manager(sk).list_recovery_points(session_id=session)
    if out.json:
        out.emit_json([_point_dict(p) for p in points])
        return
    table = listing("Recovery points")
    for col in ("id", "name", "scope", "active tasks", "audit", "created"):
        table.add_column(col, justify="right" if col in ("active tasks", "audit") else "left")
    for p in points:
        meta = p.recovery_metadata if isinstance(p.recovery_metadata, dict) else {}
        table.add_row(p.id, p.name, str(meta.get("session_id") or "store"),
                      str(meta.get("active_tasks", "")), str(meta.get("audit_id", "")),
                      local_time(p.created_at))
    out.console.print(table)


@recover_app.command("run")
def recover_run(
    ctx: typer.Context,
    point_id: Annotated[str, typer.Argument(help="The recovery point's id.")],
    strategy: Annotated[str, typer.Option(
        "--strategy", help=f"One of {', '.join(STRATEGIES)}.")] = "full",
    sessions: SessionsOption = None,
    entity_types: Annotated[list[str] | None, typer.Option(
        "--type", help="Only this entity type (selective; repeatable).",
        show_default=False)] = None,
    keys: Annotated[list[str] | None, typer.Option(
        "--key", help="Only rows with this id or key (selective; repeatable).",
        show_default=False)] = None,
    dry_run: DryRunOption = False,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Bring the store (or a part of it) back to a recovery point."""
    out = Output(json=json)
    with open_system(ctx) as sk, progress_bar(out, "replaying") as step:
        result = sk.recover(point_id, strategy, sessions=sessions or None,
                                      entity_types=entity_types or None, keys=keys or None,
                                      dry_run=dry_run, progress=step)
    _report(out, result)


@recover_app.command("at")
def recover_at(
    ctx: typer.Context,
    at: Annotated[str, typer.Argument(
        help="ISO-8601 time; without an offset, your local time.", metavar="ISO_TIME")],
    sessions: SessionsOption = None,
    dry_run: DryRunOption = False,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Bring the store (or some sessions) back to its state at a past instant."""
    out = Output(json=json)
    when = _parse_time(at)
    with open_system(ctx) as sk, progress_bar(out, "replaying") as step:
        result = sk.recover_to_time(when, sessions=sessions or None,
                                              dry_run=dry_run, progress=step)
    _report(out, result)


@recover_app.command("verify")
def recover_verify(
    ctx: typer.Context,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Run the database's integrity checks and the state's consistency checks."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        problems = _manager(sk).verify_recovery()
    if out.json:
        out.emit_json({"ok": not problems, "problems": problems})
    elif problems:
        for p in problems:
            out.console.print(Text(f"✘ {p}", style="red"), soft_wrap=True)
    else:
        out.console.print(Text("✔ the store is consistent", style="green"))
    if problems:
        raise typer.Exit(1)
