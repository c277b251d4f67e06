"""``python metrics_cli_host.py ARGS``: the ``statekeep`` program for the metrics
tests, run as a real process.

Once app.py registers ``stats`` and ``metrics`` this is simply the real
``statekeep`` command; until then, the metrics commands on a root like the
real one (same error translation), so the tests do not depend on when they
are registered.
"""

from __future__ import annotations

import typer
from typer.main import get_command

from statekeep.cli.app import _StatekeepGroup
from statekeep.cli.app import app as real_app
from statekeep.cli.metrics import metrics_app, stats
from statekeep.cli.shared import ConfigOption, DbOption


def build() -> typer.Typer:
    commands = getattr(get_command(real_app), "commands", {})
    if "metrics" in commands and "stats" in commands:
        return real_app
    app = typer.Typer(name="statekeep", cls=_StatekeepGroup, no_args_is_help=True,
                      pretty_exceptions_enable=False)

    @app.callback()
    def _root(db: DbOption = None, config: ConfigOption = None) -> None:
        """statekeep (metrics test root)."""

    app.command()(stats)
    app.add_typer(metrics_app, name="metrics")
    return app


if __name__ == "__main__":
    build()(prog_name="statekeep")
