"""``statekeep gc``: collect what is unreachable and not retained (docs/gc.md)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from statekeep.cli.shared import (
    ConfigOption,
    DbOption,
    JsonOption,
    Output,
    open_system,
    progress_bar,
)
from statekeep.gc import CollectionResult

__all__ = ["gc"]

_NOUNS = {"context": "context item", "session": "session", "snapshot": "snapshot",
          "blob": "blob"}


def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List what would be collected and why; change nothing.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Collect even when no collection is due.")] = False,
    vacuum: Annotated[bool, typer.Option(
        "--vacuum", help="SQLite: allow a full VACUUM when enough of the file is free"
        " (writers wait for it).")] = False,
    limit: Annotated[int, typer.Option(
        "--limit", min=0, help="Items a dry run lists (0: all).")] = 1000,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete expired context, orphaned blobs and superseded snapshots, and archive
    finished idle sessions, as the retention rules allow."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        collector = sk.garbage_collector
        if dry_run:
            result = sk.collect_garbage(force, dry_run=True, limit=limit or None)
            rules = collector.rules.describe()
        else:
            with progress_bar(out, "collecting") as step:
                result = sk.collect_garbage(force, vacuum=vacuum, progress=step)
            rules = []
    if out.json:
        out.emit_json(result.to_dict())
    elif dry_run:
        _print_plan(out, result, rules)
    else:
        _print_run(out, result)
    if result.archive is not None and result.archive.failed:
        raise typer.Exit(1)


def _counts(out: Output, result: CollectionResult) -> None:
    table = Table(box=None, pad_edge=False)
    for col in ("kind", "collect", "by", "keep", "by"):
        table.add_column(col, justify="right" if col in ("collect", "keep") else "left")
    for kind, ks in result.statistics.kinds.items():
        table.add_row(kind, str(sum(ks.to_collect.values())),
                      ", ".join(f"{r} {n}" for r, n in sorted(ks.to_collect.items())),
                      str(sum(ks.kept.values())),
                      ", ".join(f"{r} {n}" for r, n in sorted(ks.kept.items())))
    out.console.print(table)


def _print_plan(out: Output, result: CollectionResult, rules: list[str]) -> None:
    console = out.console
    console.print("Rules, in the order they are tried (first match decides):")
    for line in rules:
        console.print(f"  {line}", soft_wrap=True, markup=False)
    console.print()
    for item in result.planned:
        verb = "archive" if item.kind == "session" else "delete"
        console.print(f"{verb:<8} {item.kind:<8} {item.id}  {item.label}  [{item.rule}]"
                      f" {item.reason}", soft_wrap=True, markup=False)
    more = result.planned_total - len(result.planned)
    if more > 0:
        console.print(f"... and {more} more (--limit 0 lists them all)")
    console.print()
    _counts(out, result)
    due = "due" if result.due else "not due (--force runs one anyway)"
    console.print(f"{result.planned_total} item(s) would be collected, {result.items_marked}"
                  f" kept by the rules. A collection is {due}: {result.reason}."
                  " Dry run: nothing was changed.", soft_wrap=True, markup=False)


def _print_run(out: Output, result: CollectionResult) -> None:
    console = out.console
    if result.skipped:
        console.print(f"no collection is due: {result.reason}", soft_wrap=True, markup=False)
        return
    stats = result.statistics
    parts = [f"{ks.collected} {_NOUNS[k]}(s)" for k, ks in stats.kinds.items()
             if ks.collected]
    console.print(Text(f"✔ collected {result.items_collected} item(s)"
                       + (f": {', '.join(parts)}" if parts else ""), style="green"))
    longest = max((b.seconds for b in stats.batches), default=0.0)
    console.print(f"  kept {result.items_marked} by the rules; {result.space_reclaimed:,} bytes"
                  f" of payload freed in {len(stats.batches)} transaction(s) (largest"
                  f" {stats.largest_batch} rows, longest {longest * 1000:.1f} ms)",
                  soft_wrap=True, markup=False)
    if result.compaction is not None:
        c = result.compaction
        console.print(f"  compaction: {c.action} -- {c.reason}", soft_wrap=True, markup=False)
    if result.archive is not None:
        for sid, why in result.archive.skipped:
            console.print(f"  skipped session {sid}: {why}", soft_wrap=True, markup=False)
        for sid, err in result.archive.failed:
            console.print(Text(f"  failed to archive {sid}: {err}", style="red"),
                          soft_wrap=True)
