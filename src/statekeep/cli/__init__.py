"""The ``statekeep`` command line: inspect, edit and migrate a store, or run the demo.

``main`` is the console script; ``app`` is the typer application (for
``typer.testing.CliRunner`` and for embedding the commands elsewhere).
"""

from statekeep.cli.app import app, main

__all__ = ["app", "main"]
