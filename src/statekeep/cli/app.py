"""The ``statekeep`` command: one typer app, and the one place errors are caught.

A user error -- anything statekeep raises on purpose (:class:`StatekeepError`),
including a VALUE that is not JSON -- becomes one red ``error: ...`` line on
stderr and exit code 1. That translation lives in :class:`_StatekeepGroup`,
which wraps the whole command tree, so commands simply let errors rise, and
``CliRunner`` tests see exactly what a shell sees. Usage errors (unknown
option, missing argument) keep typer's own report and exit code 2. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from statekeep.cli import (
    admin,
    archive,
    backup,
    browse,
    engine,
    gc,
    indexes,
    learning,
    metrics,
    recovery,
    sync,
)
from statekeep.cli.shared import ConfigOption, DbOption, report_error
from statekeep.errors import StatekeepError

__all__ = ["app", "main"]


class _StatekeepGroup(TyperGroup):
    """The root group; turns StatekeepError into a one-line message and exit 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except StatekeepError as exc:
            report_error(str(exc))
            raise typer.Exit(1) from None


app = typer.Typer(
    name="statekeep",
    cls=_StatekeepGroup,
    no_args_is_help=True,
    # Tracebacks are for bugs only; the plain ones do not dump local variables
    # (which may hold a database URL with its password) the way rich's do.
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(db: DbOption = None, config: ConfigOption = None) -> None:
    """statekeep: durable state and context for long-running AI-agent work.

    The store is one setting: --db (before or after the command name),
    STATEKEEP_DB, or the config file; by default a file in your user data
    folder, so statekeep works from any directory.
    """


app.command()(admin.init)
app.add_typer(browse.sessions_app, name="sessions")
app.add_typer(browse.tasks_app, name="tasks")
app.add_typer(browse.context_app, name="context")
app.command()(browse.audit)
app.add_typer(learning.decisions_app, name="decisions")
app.add_typer(learning.prefs_app, name="prefs")
app.command()(engine.capture)
app.command()(engine.resume)
app.command()(engine.search)
app.command()(engine.analyze)
app.command()(engine.graph)
app.add_typer(admin.migrate_app, name="migrate")
app.add_typer(archive.archive_app, name="archive")
app.command()(gc.gc)
app.add_typer(indexes.indexes_app, name="indexes")
app.add_typer(recovery.snapshot_app, name="snapshot")
app.add_typer(recovery.recover_app, name="recover")
app.add_typer(backup.backup_app, name="backup")
app.command()(backup.doctor)
app.add_typer(sync.state_app, name="state")
app.add_typer(sync.conflicts_app, name="conflicts")
app.command()(metrics.stats)
app.add_typer(metrics.metrics_app, name="metrics")
app.command()(admin.demo)
app.command()(admin.version)


def main() -> None:
    """Console-script entry point (``statekeep = "statekeep.cli:main"``)."""
    app(prog_name="statekeep")
