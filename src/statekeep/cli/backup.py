"""``statekeep backup`` (take, list, verify, restore, prune backups) and
``statekeep doctor`` (check the store, optionally repair it)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from statekeep.cli.render import listing
from statekeep.cli.shared import (
    ConfigOption,
    DbOption,
    JsonOption,
    Output,
    load_config,
    local_time,
    missing_sqlite_file,
    open_system,
    progress_bar,
)
from statekeep.errors import ValidationError
from statekeep.recovery.backup import BackupManager
from statekeep.recovery.health import AutoRecovery, Finding, HealthReport, wal_findings
from statekeep.recovery.wal import WalReport
from statekeep.store.sqlite import sqlite_path
from statekeep.system import StateSystem

__all__ = ["DOCTOR_PROBLEMS_EXIT", "backup_app", "doctor"]

#: ``doctor``'s exit code while errors remain: distinct from 1 (the command itself
#: failed), so a script can tell "the store is sick" from "could not check".
DOCTOR_PROBLEMS_EXIT = 3

backup_app = typer.Typer(no_args_is_help=True,
                         help="Take, list, verify and restore backups of the store.")

BackupId = Annotated[str, typer.Argument(help="The backup's id (see 'statekeep backup list').")]


def _manager(sk: StateSystem) -> BackupManager:
    """The façade's, so that a restore clears the façade's caches."""
    return sk.backup_scheduler


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:,.1f} {unit}"


@backup_app.command("now")
def now(
    ctx: typer.Context,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Take a verified backup now, while the store stays in use."""
    out = Output(json=json)
    with open_system(ctx) as sk, progress_bar(out, "backing up") as step:
        backup = _manager(sk).backup_now(progress=step)
    if out.json:
        out.emit_json(backup.to_dict())
        return
    out.console.print(Text(f"✔ backup {backup.id} written and verified", style="green"))
    out.console.print(f"  {_size(backup.size_bytes)} in {backup.seconds:.2f} s, audit"
                      f" high-water mark {backup.audit_high_water}, at {backup.path}",
                      soft_wrap=True)
    for note in backup.notes:
        out.console.print(Text(f"  note: {note}", style="yellow"), soft_wrap=True)


@backup_app.command("list")
def list_(
    ctx: typer.Context,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show this store's backups, newest first."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        manager = _manager(sk)
        backups = manager.list_backups()
        folder = manager.directory
    if out.json:
        out.emit_json([b.to_dict() for b in backups])
        return
    table = listing(f"Backups in {folder}")
    for col in ("id", "kind", "taken", "size", "audit", "verified"):
        table.add_column(col, justify="right" if col in ("size", "audit") else "left")
    for b in backups:
        table.add_row(b.id, b.kind, local_time(b.created_at), _size(b.size_bytes),
                      "" if b.audit_high_water is None else str(b.audit_high_water),
                      Text("yes", style="green") if b.verified else Text("NO", style="red"))
    out.console.print(table)
    if not backups:
        out.console.print("no backups yet: take one with 'statekeep backup now'")


@backup_app.command("verify")
def verify(
    ctx: typer.Context,
    backup_id: BackupId,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Re-read a backup and check every file against its manifest (exit 1 if damaged)."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        result = _manager(sk).verify_backup(backup_id)
    if out.json:
        out.emit_json(result.to_dict())
    elif result.ok:
        out.console.print(Text(f"✔ backup {backup_id} is intact ({_size(result.bytes_read)}"
                               f" read in {result.seconds:.2f} s)", style="green"))
    else:
        out.console.print(Text(f"✖ backup {backup_id} is damaged:", style="bold red"))
        for p in result.problems:
            out.console.print(f"  {p}", soft_wrap=True)
    if not result.ok:
        raise typer.Exit(1)


@backup_app.command("restore")
def restore(
    ctx: typer.Context,
    backup_id: BackupId,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Do not ask for confirmation.")] = False,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Replace the store's state with a backup's (a safety backup is taken first)."""
    out = Output(json=json)
    if not yes:
        if not sys.stdin.isatty() or out.json:
            raise ValidationError("restoring replaces the store's state; pass --yes to"
                                  " confirm", field="yes")
        typer.confirm(f"Replace the store's state with backup {backup_id}? (a safety backup"
                      " of the current state is taken first)", abort=True)
    with open_system(ctx) as sk, progress_bar(out, "restoring") as step:
        result = _manager(sk).restore(backup_id, progress=step)
    if out.json:
        out.emit_json(result.to_dict())
        return
    out.console.print(Text(f"✔ restored backup {backup_id}", style="green"))
    out.console.print(f"  the state before was kept as backup {result.safety_backup_id};"
                      f" restore it to undo", soft_wrap=True)
    for name in result.archives_restored:
        out.console.print(f"  archive file {name} put back", soft_wrap=True)
    for note in result.notes:
        out.console.print(f"  {note}", soft_wrap=True)


@backup_app.command("prune")
def prune(
    ctx: typer.Context,
    keep: Annotated[int | None, typer.Option(
        "--keep", min=1, help="How many to keep (default: the backup_keep setting).")] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete all but the newest backups (regular and safety copies counted apart)."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        removed = _manager(sk).prune(keep)
    if out.json:
        out.emit_json({"removed": removed})
        return
    out.console.print(f"removed {len(removed)} backup(s)")


# -- doctor ----------------------------------------------------------------------------


def doctor(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option(
        "--repair", help="Repair what can be repaired from backups and snapshots.")] = False,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Check the store for corruption and inconsistency; --repair fixes what it can.

    Exits 0 when healthy (or every problem was repaired), 3 while problems remain.
    """
    out = Output(json=json)
    settings = load_config(ctx)
    pre: list[Finding] = []
    wal = None
    scheme = settings.db.split("://", 1)[0].lower() if "://" in settings.db else ""
    path = sqlite_path(settings.db)
    if scheme in ("", "sqlite", "file") and path != ":memory:" and \
            missing_sqlite_file(settings) is None:
        # Before opening: opening the store replays (and a clean close removes) the WAL.
        wal, pre = wal_findings(path)
    # The report is the output: escalations must not also go to stderr as log lines.
    quiet = logging.getLogger("statekeep.recovery")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        report = _examine(ctx, repair, out, wal, pre)
    finally:
        quiet.setLevel(level)
    if out.json:
        out.emit_json(report.to_dict())
    else:
        _render(out, report, repaired=repair)
    if report.remaining:
        raise typer.Exit(DOCTOR_PROBLEMS_EXIT)


def _examine(ctx: typer.Context, repair: bool, out: Output, wal: WalReport | None,
             pre: list[Finding]) -> HealthReport:
    with open_system(ctx) as sk:
        monitor = AutoRecovery(sk.store, backups=_manager(sk), interval=0,
                               recovery=getattr(sk, "recovery", None), archive=sk.archive)
        with progress_bar(out, "checking") as step:
            step(0, 1)
            report = monitor.check()
            report.findings[:0] = pre
            report.wal = wal
            if repair and report.remaining:
                report = monitor.handle_corruption(report)
            step(1, 1)
    return report


_MARK = {"repaired": ("✔", "green"), "error": ("✖", "bold red"), "warning": ("!", "yellow")}


def _render(out: Output, report: HealthReport, *, repaired: bool) -> None:
    scanned = ", ".join(f"{n} {what}" for what, n in report.scanned.items())
    if report.findings:
        table: Table = listing("Findings")
        for col in ("", "kind", "object", "detail", "action"):
            table.add_column(col, overflow="fold")
        for f in report.findings:
            state = "repaired" if f.repaired else f.severity
            mark, style = _MARK.get(state, ("?", ""))
            table.add_row(Text(mark, style=style), f.kind, _short(f.object), f.detail,
                          f.action or ("repairable: run with --repair" if f.repairable and
                                       not repaired else ""))
        out.console.print(table)
    if report.salvage is not None:
        s = report.salvage
        base = f"backup {s.base_backup_id}" if s.base_backup_id else "no backup"
        out.console.print(f"database rebuilt from {base} and every readable row;"
                          f" {len(s.lost)} row(s) lost", soft_wrap=True)
    if report.wal is not None and report.wal.exists and not report.wal.torn:
        out.console.print(f"WAL: {report.wal.commits} intact transaction(s), no torn tail")
    left = report.remaining
    summary = f"checked {scanned or 'the store'} in {report.seconds:.2f} s"
    if not left:
        fixed = sum(f.repaired for f in report.findings)
        out.console.print(Text(f"✔ healthy ({summary}"
                               f"{f'; {fixed} problem(s) repaired' if fixed else ''})",
                               style="green"), soft_wrap=True)
    else:
        hint = "" if repaired or not any(f.repairable for f in left) else \
            "; run 'statekeep doctor --repair'"
        out.console.print(Text(f"✖ {len(left)} problem(s) remain ({summary}){hint}",
                               style="bold red"), soft_wrap=True)


def _short(value: str) -> str:
    """Blob hashes and paths are long; the table shows enough to recognise them."""
    return value if len(value) <= 40 else f"{value[:18]}…{value[-18:]}"

