"""``statekeep indexes``: index usage, query shapes with their plans, index advice.

The query shapes come from the statistics that processes saved into the store
(``QueryOptimizer.save_statistics``; the system saves them when it closes),
because statistics are kept in the process that ran the queries, not in this
one. ``advise`` and ``apply`` also take ``--sql`` statements to treat as
frequent.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from statekeep.cli.render import listing
from statekeep.cli.shared import ConfigOption, DbOption, JsonOption, Output, open_system
from statekeep.errors import ValidationError
from statekeep.query import IndexSuggestion, IndexUsageReport, QueryOptimizer
from statekeep.query.advisor import DEFAULT_MIN_CALLS
from statekeep.query.optimizer import ShapeVerdict

__all__ = ["indexes_app"]

indexes_app = typer.Typer(no_args_is_help=True,
                          help="Index usage, query plans and index advice.")

MinCallsOption = Annotated[int, typer.Option(
    "--min-calls", min=1, help="A query shape is frequent from this many calls on.")]
SqlOption = Annotated[list[str] | None, typer.Option(
    "--sql", help="A statement (with ? placeholders) to treat as frequent; repeatable.")]


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


_STATUS_STYLE = {"unused": "yellow", "inefficient": "red", "used": "green",
                 "constraint": "dim", "unknown": "dim", "foreign-key": "dim"}


def _print_report(out: Output, usage: IndexUsageReport, shapes: list[ShapeVerdict]) -> None:
    table = listing(f"Indexes ({usage.source})")
    for col in ("index", "table", "keys", "size", "scans", "efficiency", "status"):
        table.add_column(col, justify="right" if col in ("size", "scans", "efficiency")
                         else "left")
    for u in usage.index_usage:
        eff = "" if u.efficiency is None else f"{u.efficiency:.2f}"
        status = u.status + (" (fk)" if u.supports_foreign_key and u.status in (
            "used", "unused", "inefficient") else "") + (" *" if u.created_by_advisor else "")
        table.add_row(u.name, u.table, ", ".join(u.columns), _size(u.size_bytes),
                      "" if u.scans is None else f"{u.scans:,}", eff,
                      Text(status, style=_STATUS_STYLE.get(u.status, "")))
    out.console.print(table)
    if usage.stats_since is not None:
        out.console.print(f"counters since {usage.stats_since.isoformat(timespec='seconds')}")
    out.console.print("* created by the index advisor; (fk) leads with a foreign key column")
    if usage.unused_indexes:
        out.console.print(f"unused: {', '.join(usage.unused_indexes)}", soft_wrap=True)
    if usage.inefficient_indexes:
        out.console.print(f"inefficient: {', '.join(usage.inefficient_indexes)}",
                          soft_wrap=True)
    for note in usage.notes:
        out.console.print(Text(f"note: {note}", style="dim"), soft_wrap=True)
    shapes_table = listing("Query shapes (most total time first)")
    for col in ("calls", "mean ms", "p95 ms", "total s", "rows/call", "plan", "statement"):
        shapes_table.add_column(col, justify="left" if col in ("plan", "statement")
                                else "right")
    for v in shapes:
        s = v.stats
        rows = "?" if s.rows_per_call is None else f"{s.rows_per_call:.1f}"
        style = "red" if v.plan.large_scans else ("dim" if v.plan.error else "")
        shapes_table.add_row(f"{s.count:,}", _ms(s.mean_seconds), _ms(s.p95_seconds),
                             f"{s.total_seconds:.3f}", rows, Text(v.plan.verdict, style=style),
                             s.shape if out.wide else s.shape[:60])
    out.console.print(shapes_table)
    if not shapes:
        out.console.print("no recorded query shapes yet: they are saved by processes that"
                          " ran with query_stats on, when their system closes", soft_wrap=True)
    if usage.suggested_indexes:
        out.console.print(f"{len(usage.suggested_indexes)} index suggestion(s):"
                          " see 'statekeep indexes advise'")


@indexes_app.command("report")
def report(
    ctx: typer.Context,
    top: Annotated[int, typer.Option("--top", min=1, help="How many query shapes.")] = 20,
    analyze: Annotated[bool, typer.Option(
        "--analyze", help="Refresh the planner's statistics first (ANALYZE).")] = False,
    min_calls: MinCallsOption = DEFAULT_MIN_CALLS,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Index usage (unused, inefficient) and the top query shapes with their plans."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        opt = QueryOptimizer(sk.store, sk.config, min_calls=min_calls)
        if analyze:
            sk.store.analyze()
        usage = opt.analyze_index_usage()
        shapes = opt.verdicts(top=top)
    if out.json:
        out.emit_json({"indexes": usage.to_dict(), "shapes": [v.to_dict() for v in shapes]})
        return
    _print_report(out, usage, shapes)


def _print_suggestions(out: Output, found: list[IndexSuggestion]) -> None:
    if not found:
        out.console.print("no suggestions: no frequent query shape scans a large table by an"
                          " allow-listed column or JSON path", soft_wrap=True)
        return
    for s in found:
        head = Text(f"{s.name}", style="bold")
        head.append(f"  on {s.table}, {s.calls:,} calls" + ("  (exists)" if s.exists else ""))
        out.console.print(head)
        out.console.print(f"  why: {s.reason}", soft_wrap=True)
        out.console.print(f"  ddl: {s.ddl}", soft_wrap=True)


@indexes_app.command("advise")
def advise(
    ctx: typer.Context,
    min_calls: MinCallsOption = DEFAULT_MIN_CALLS,
    sql: SqlOption = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Suggest indexes for frequent query shapes whose plans scan large tables."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        found = QueryOptimizer(sk.store, sk.config).suggest_indexes(
            min_calls=min_calls, extra_sql=sql or ())
    if out.json:
        out.emit_json([s.to_dict() for s in found])
        return
    _print_suggestions(out, found)


@indexes_app.command("apply")
def apply(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(
        help="Suggested index names to create (default: every suggestion).",
        show_default=False)] = None,
    yes: Annotated[bool, typer.Option(
        "--yes", help="Create them even though index_advisor_apply is off.")] = False,
    min_calls: MinCallsOption = DEFAULT_MIN_CALLS,
    sql: SqlOption = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Create the suggested indexes (allow-listed tables, columns and JSON paths only)."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        if not (yes or sk.config.index_advisor_apply):
            raise ValidationError("creating indexes needs --yes (or index_advisor_apply ="
                                  " true in the config); see 'statekeep indexes advise'",
                                  field="yes")
        opt = QueryOptimizer(sk.store, sk.config)
        found = [s for s in opt.suggest_indexes(min_calls=min_calls, extra_sql=sql or ())
                 if not s.exists]
        if names:
            known = {s.name: s for s in found}
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValidationError(f"not a current suggestion: {', '.join(unknown)}"
                                      f" (suggested: {', '.join(known) or 'none'})",
                                      field="names")
            found = [known[n] for n in names]
        applied = opt.apply_indexes(found, confirm=True)
    failed = [a for a in applied if not a.created and a.note != "already exists"]
    if out.json:
        out.emit_json([a.to_dict() for a in applied])
    else:
        if not applied:
            out.console.print("nothing to create: no current suggestion")
        for a in applied:
            if a.created:
                out.console.print(Text(f"✔ created {a.name} on {a.table}", style="green"))
                out.console.print(f"  {a.ddl}", soft_wrap=True)
            else:
                style = "red" if a in failed else "dim"
                out.console.print(Text(f"  {a.name}: {a.note}", style=style), soft_wrap=True)
    if failed:
        raise typer.Exit(1)
