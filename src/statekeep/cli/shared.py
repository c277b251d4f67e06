"""What every command shares: the store options, output, and opening the store.

The store location is one setting. ``--db`` and ``--config`` are declared on
every command (and on the root and on ``migrate``), so they work both before
and after the subcommand name; the innermost one given wins, and when none is
given :meth:`StateConfig.load` falls back to ``STATEKEEP_DB`` and the config
file exactly as the library does. The CLI never reads ``STATEKEEP_*`` itself,
so there is one precedence rule, not two.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import typer
from rich.console import Console
from rich.text import Text

from statekeep.config import StateConfig
from statekeep.errors import ValidationError
from statekeep.store.sqlite import sqlite_path
from statekeep.system import StateSystem

__all__ = [
    "ConfigOption",
    "DbOption",
    "JsonOption",
    "Output",
    "display_location",
    "load_config",
    "local_time",
    "make_console",
    "missing_sqlite_file",
    "open_system",
    "option_value",
    "parse_json_value",
    "progress_bar",
    "report_error",
    "short_time",
]

STORE_PANEL = "Store"

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLite file or postgresql:// URL of the store"
        " (default: $STATEKEEP_DB, the config file, or the per-user data file).",
        show_default=False,
        rich_help_panel=STORE_PANEL,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (default: $STATEKEEP_CONFIG or the per-user config file).",
        show_default=False,
        dir_okay=False,
        rich_help_panel=STORE_PANEL,
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print machine-readable JSON instead of tables."),
]

# Width used when stdout is not a terminal: wide enough that a table row is
# one line for grep and friends, instead of rich's 80-column fallback.
_PIPE_WIDTH = 200
#: Console width from which listings show all their columns.
_WIDE = 120


def make_console(*, stderr: bool = False) -> Console:
    """A console for this invocation's stdout or stderr.

    Built per command rather than once per module because tests (and
    ``CliRunner``) swap ``sys.stdout``; rich then decides colour and
    interactivity from the stream it will really write to.
    """
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty() and "COLUMNS" not in os.environ:
        width = _PIPE_WIDTH
    return Console(stderr=stderr, width=width, highlight=False)


@dataclass
class Output:
    """Where a command writes: rich to a console, or JSON to stdout."""

    json: bool = False
    console: Console = field(default_factory=make_console)

    def emit_json(self, data: Any) -> None:
        """Print ``data`` as indented JSON, bypassing rich (no markup, no wrapping)."""
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())

    @property
    def wide(self) -> bool:
        """Room for every column; narrow terminals get the essential ones only."""
        return self.console.width >= _WIDE

    @property
    def interactive(self) -> bool:
        """True when a person is watching: progress bars and animations are welcome."""
        return self.console.is_terminal and not self.json


def report_error(message: str) -> None:
    """The one-line red ``error: ...`` every user error ends in, on stderr."""
    line = " ".join(message.split())  # a multi-line message would not be one line
    make_console(stderr=True).print(Text(f"error: {line}", style="bold red"), soft_wrap=True)


def option_value(ctx: typer.Context, name: str) -> Any:
    """An option given anywhere on the command line, the innermost one winning.

    ``statekeep --db A sessions list --db B`` uses B; with only the first, A.
    """
    current: Any = ctx
    while current is not None:
        value = current.params.get(name)
        if value is not None:
            return value
        current = current.parent
    return None


def load_config(ctx: typer.Context, **overrides: Any) -> StateConfig:
    """The configuration for this command: ``--db``/``--config`` > env > file."""
    config = StateConfig.load(option_value(ctx, "config"), db=option_value(ctx, "db"),
                              **overrides)
    if config.db.startswith("~"):
        # The SQLite backend creates the parent folder of the expanded path but
        # opens the unexpanded one; expanding here keeps both the same.
        config = config.replace(db=str(Path(config.db).expanduser()))
    return config


def display_location(db: str) -> str:
    """The store location as it is safe to print: a URL's password masked."""
    if "://" not in db:
        return db
    parts = urlsplit(db)
    if parts.password is None:
        return db
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def missing_sqlite_file(config: StateConfig) -> Path | None:
    """The SQLite file the config names, if it does not exist yet; else None.

    Read commands use this to refuse to conjure an empty store out of a typo'd
    path; PostgreSQL URLs and in-memory databases are never "missing".
    """
    location = config.db
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    if scheme not in ("", "sqlite"):
        return None
    path = sqlite_path(location)
    if path == ":memory:":
        return None
    file = Path(path).expanduser()
    return None if file.exists() else file


@contextmanager
def open_system(ctx: typer.Context, *, create: bool = False,
                **overrides: Any) -> Iterator[StateSystem]:
    """Open the configured store for one command and close it afterwards.

    Unless ``create`` is set, a SQLite file that does not exist is an error
    pointing at ``statekeep init`` rather than a silently created empty store.
    """
    config = load_config(ctx, **overrides)
    if not create and (missing := missing_sqlite_file(config)) is not None:
        from statekeep.errors import StoreUnavailableError

        raise StoreUnavailableError(
            f"no store at {missing}; create it with 'statekeep init' or choose one with --db")
    system = StateSystem(config)
    try:
        yield system
    finally:
        system.close()


def parse_json_value(text: str, *, field: str = "VALUE") -> Any:
    """Parse a command-line JSON value, with a hint when it was meant as text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(
            f"{field} is not valid JSON ({exc}); pass --string to store it as plain text",
            field=field.lower()) from None


def local_time(value: datetime | None, *, seconds: bool = True) -> str:
    """A stored UTC time in the viewer's local zone; '' for None."""
    if value is None:
        return ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def short_time(value: datetime | None) -> str:
    """Month, day and minute: enough inside one session's tables, and narrow."""
    if value is None:
        return ""
    return value.astimezone().strftime("%m-%d %H:%M")


@contextmanager
def progress_bar(out: Output, label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on a terminal, silent in pipes and under --json.

    Yields ``step(done, total)``. rich.progress is imported here: it costs a
    tenth of a second that only long operations need.
    """
    from rich.progress import BarColumn, Progress, TextColumn

    bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   console=out.console, disable=not out.interactive, transient=True)
    with bar:
        task = bar.add_task(label, total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield step
