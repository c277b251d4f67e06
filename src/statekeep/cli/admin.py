"""Looking after the store itself: init, migrate, version, and the demo.

``migrate`` and ``migrate status`` open the store with ``auto_migrate``
off -- otherwise merely opening it would apply the very migrations they are
asked to report on -- and, on a SQLite file that does not exist yet, they
answer from the registry without creating the file, so a dry run really
changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

import statekeep
from statekeep.cli.render import listing
from statekeep.cli.shared import (
    ConfigOption,
    DbOption,
    JsonOption,
    Output,
    display_location,
    load_config,
    local_time,
    missing_sqlite_file,
    open_system,
    option_value,
)
from statekeep.store.migrations import (
    Migration,
    MigrationRegistry,
    MigrationResult,
    MigrationStatus,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["demo", "init", "migrate_app", "version"]

migrate_app = typer.Typer(
    help="Apply pending schema migrations; 'migrate status' lists them.",
    invoke_without_command=True,
)


def _label(m: Migration) -> str:
    return f"{m.version:04d}_{m.name}"


def init(
    ctx: typer.Context,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Create the store (or bring it up to date) and print where it is."""
    out = Output(json=json)
    # auto_migrate is off so that init migrates even when the config file
    # turned automatic migration off: running init is the explicit request.
    with open_system(ctx, create=True, auto_migrate=False) as sk:
        result = sk.migrations.migrate()
        location, dialect = sk.store.location, sk.store.dialect
        current = sk.migrations.current_version()
    if out.json:
        out.emit_json({"location": location, "dialect": dialect, "schema_version": current,
                       "applied": result.completed_migrations,
                       "backup_path": result.backup_path})
        return
    out.console.print(Text.assemble(("✔ store ready at ", "green"), (location, "bold")),
                      soft_wrap=True)
    applied = ", ".join(result.completed_migrations) or "already up to date"
    out.console.print(Text(f"  {dialect}, schema version {current} ({applied})", style="dim"))


class _StepCounter(logging.Handler):
    """Advances a progress bar each time the migrator starts a step.

    A migration path runs in one transaction with no callback hook; the
    migrator's own "executing migration" log line is the one signal that a
    step began. If that line ever changes, the bar just fills at the end.
    """

    def __init__(self, progress: Progress, task: TaskID) -> None:
        super().__init__(logging.INFO)
        self.progress, self.task, self.started = progress, task, 0

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("executing migration"):
            return
        if self.started:  # the previous step finished
            self.progress.advance(self.task)
        self.started += 1
        args = record.args if isinstance(record.args, tuple) else ()
        self.progress.update(self.task, description=f"applying {args[0] if args else ''}")


@contextmanager
def _progress(out: Output, total: int) -> Iterator[tuple[Progress, TaskID]]:
    # Imported here: rich.progress costs a tenth of a second that only
    # `migrate` needs.
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), console=out.console,
                        disable=not out.interactive)
    with progress:
        task = progress.add_task("migrating", total=total)
        logger = logging.getLogger("statekeep.migrations")
        handler, old_level = _StepCounter(progress, task), logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield progress, task
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)


def _print_result(out: Output, result: MigrationResult, pending: list[Migration]) -> None:
    if out.json:
        out.emit_json(dataclasses.asdict(result))
        return
    if not pending:
        out.console.print(f"Nothing to do: the schema is at version {result.from_version},"
                          " the latest.")
        return
    table = listing("Would apply" if result.dry_run else "Applied")
    table.add_column("version", justify="right")
    table.add_column("name")
    for m in pending:
        table.add_row(str(m.version), m.name)
    out.console.print(table)
    if result.dry_run:
        out.console.print(f"{len(pending)} migration(s) pending, version"
                          f" {result.from_version} -> {result.to_version}."
                          " Dry run: nothing was changed.")
    else:
        out.console.print(Text(f"✔ schema now at version {result.to_version}", style="green"))
        if result.backup_path:
            out.console.print(Text(f"  backup taken first: {result.backup_path}", style="dim"),
                              soft_wrap=True)


@migrate_app.callback()
def migrate(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the migrations that would run; change nothing.")] = False,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Apply pending schema migrations, all in one transaction."""
    if ctx.invoked_subcommand is not None:
        return  # `migrate status`: the options above only carry --db/--config to it
    out = Output(json=json)
    cfg = load_config(ctx, auto_migrate=False)
    if dry_run and missing_sqlite_file(cfg) is not None:
        pending = MigrationRegistry("sqlite").all()
        latest = pending[-1].version if pending else 0
        result = MigrationResult(0, latest, [_label(m) for m in pending], dry_run=True,
                                 success=True)
        _print_result(out, result, pending)
        return
    with open_system(ctx, create=True, auto_migrate=False) as sk:
        pending = sk.migrations.pending()
        if dry_run or not pending:
            result = sk.migrations.migrate(dry_run=dry_run)
        else:
            with _progress(out, len(pending)) as (progress, task):
                result = sk.migrations.migrate()
                progress.update(task, completed=len(pending), description="done")
    _print_result(out, result, pending)


def _applied_time(stamp: str) -> str:
    try:
        return local_time(datetime.fromisoformat(stamp))
    except ValueError:  # written by another tool; show it as it is
        return stamp


@migrate_app.command("status")
def migrate_status(
    ctx: typer.Context,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List every known migration: applied when, and whether it still matches."""
    out = Output(json=json)
    cfg = load_config(ctx, auto_migrate=False)
    problems: list[str] = []
    if missing_sqlite_file(cfg) is not None:
        rows = [MigrationStatus(m.version, m.name, None, None)
                for m in MigrationRegistry("sqlite").all()]
        location = f"{cfg.db} (does not exist yet)"
    else:
        with open_system(ctx, auto_migrate=False) as sk:
            rows = sk.migrations.status()
            problems = sk.migrations.verify()
            location = sk.store.location
    current = max((r.version for r in rows if r.applied_at), default=0)
    latest = max((r.version for r in rows), default=0)
    if out.json:
        out.emit_json({"location": location, "current_version": current,
                       "latest_version": latest,
                       "migrations": [dataclasses.asdict(r) for r in rows],
                       "problems": problems})
        return
    out.console.print(Text.assemble(("store: ", "bold"), location), soft_wrap=True)
    table = listing("Migrations")
    table.add_column("version", justify="right")
    table.add_column("name")
    table.add_column("applied at", no_wrap=True)
    table.add_column("checksum")
    for r in rows:
        if r.checksum_ok is None:
            check = Text("—", style="dim")
        elif r.checksum_ok:
            check = Text("✔ ok", style="green")
        else:
            check = Text("✘ changed since applied", style="bold red")
        applied = (Text("pending", style="yellow") if r.applied_at is None
                   else _applied_time(r.applied_at))
        table.add_row(str(r.version), r.name, applied, check)
    out.console.print(table)
    out.console.print(f"schema version {current} of {latest}")
    for problem in problems:
        out.console.print(Text(f"warning: {problem}", style="yellow"))


def version(
    ctx: typer.Context,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Print the statekeep version, the schema it knows and the store it would use."""
    out = Output(json=json)
    cfg = load_config(ctx)  # the location only; the store is not opened
    info = {
        "statekeep": statekeep.__version__,
        "schema_version": MigrationRegistry("sqlite").latest,
        "python": platform.python_version(),
        "store": display_location(cfg.db),
    }
    if out.json:
        out.emit_json(info)
        return
    out.console.print(Text.assemble(("statekeep ", "bold"), (statekeep.__version__, "bold cyan")))
    out.console.print(f"schema version {info['schema_version']}, Python {info['python']}")
    out.console.print(Text(f"store: {info['store']}", style="dim"), soft_wrap=True)


def demo(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(
        metavar="[PATH]", help="Folder the demo agent captures (default: the current one).",
        show_default=False)] = Path("."),
    no_capture: Annotated[bool, typer.Option(
        "--no-capture", help="Do not capture any folder.")] = False,
    db: Annotated[str | None, typer.Option(
        "--db", help="Store the demo writes to (default: a new temporary directory, so your"
                     " own store is never touched).", show_default=False)] = None,
) -> None:
    """Watch an agent's day survive its process, a kill -9 mid-write and a mistake
    undone by a recovery point."""
    from statekeep.demo import run_demo

    # Only an explicit --db counts: STATEKEEP_DB and the config file name the
    # user's real store, which the demo must not write into.
    run_demo(db=option_value(ctx, "db"), console=Output().console,
             workspace=None if no_capture else str(path))
