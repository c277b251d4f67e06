"""``statekeep decisions`` and ``statekeep prefs``: the agent's decision history and
what it has learned about each user.

Thin, like the other command modules: the store validates ids and names,
:class:`~statekeep.learning.DecisionEngine` applies the learning rules, and
these commands only render. ``prefs set`` goes through the engine, so a
preference set by hand is an explicit observation under the same rule as a
learned one (docs/learning.md), not a raw overwrite of the row.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from statekeep.cli import render
from statekeep.cli.shared import (
    ConfigOption,
    DbOption,
    JsonOption,
    Output,
    local_time,
    open_system,
    parse_json_value,
    short_time,
)
from statekeep.errors import NotFoundError
from statekeep.learning import DecisionEngine, SimilarDecision
from statekeep.models import Decision

__all__ = ["decisions_app", "prefs_app"]

decisions_app = typer.Typer(help="List and inspect the agent's decisions.",
                            no_args_is_help=True)
prefs_app = typer.Typer(help="List, set and forget users' preferences.", no_args_is_help=True)

#: How many similar past decisions ``decisions show`` lists.
SIMILAR_SHOWN = 5

UserArg = Annotated[str, typer.Argument(metavar="USER", help="User id.", show_default=False)]
PrefTypeArg = Annotated[str, typer.Argument(metavar="TYPE",
                                            help="Preference type (style, decision, ...).")]
PrefKeyArg = Annotated[str, typer.Argument(metavar="KEY", help="Preference key.")]


def _who(d: Decision) -> Text:
    if d.user_override:
        return Text("user override", style="yellow")
    return Text("agent" if d.autonomous else "asked user")


def _feedback(score: float | None) -> str:
    return "" if score is None else f"{score:+.2f}"


def _decisions_table(decisions: list[Decision], *, wide: bool) -> Table:
    # render.decisions_table has no id column, and `decisions show` needs the id.
    table = render.listing("Decisions")
    table.add_column("id", no_wrap=True, style="cyan")
    if wide:
        table.add_column("made", no_wrap=True)
    table.add_column("type", style="magenta")
    table.add_column("decision", overflow="fold")
    table.add_column("conf", justify="right", no_wrap=True)
    table.add_column("who")
    table.add_column("outcome", overflow="fold")
    table.add_column("feedback", justify="right", no_wrap=True)
    for d in decisions:
        cells: list[RenderableType] = [Text(d.id)]
        if wide:
            cells.append(short_time(d.created_at))
        cells += [Text(d.decision_type), Text(d.decision_made),
                  "" if d.confidence is None else f"{d.confidence:.2f}", _who(d),
                  Text(d.outcome or ""), _feedback(d.feedback_score)]
        table.add_row(*cells)
    return table


def _decision_panel(d: Decision, user: str | None) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("type", Text(d.decision_type))
    grid.add_row("decision", Text(d.decision_made))
    grid.add_row("made", local_time(d.created_at))
    grid.add_row("session", Text(d.session_id or "(none)"))
    if user is not None:
        grid.add_row("user", Text(user))
    if d.task_id is not None:
        grid.add_row("task", Text(d.task_id))
    grid.add_row("confidence", "" if d.confidence is None else f"{d.confidence:.2f}")
    grid.add_row("who", _who(d))
    grid.add_row("outcome", Text(d.outcome or ""))
    grid.add_row("feedback", _feedback(d.feedback_score))
    grid.add_row("context hash", Text(d.context_hash, style="bright_black"))
    for name in ("context", "reasoning"):
        value = getattr(d, name)
        if value is not None:
            grid.add_row(name, Text(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()))
    return Panel(grid, title=Text(f"decision {d.id}", style="bold"), title_align="left",
                 expand=False)


def _similar_table(found: list[SimilarDecision]) -> Table:
    table = render.listing("Similar past decisions")
    table.add_column("similarity", justify="right", no_wrap=True)
    table.add_column("id", no_wrap=True, style="cyan")
    table.add_column("made", no_wrap=True)
    table.add_column("decision", overflow="fold")
    table.add_column("who")
    table.add_column("outcome", overflow="fold")
    table.add_column("feedback", justify="right", no_wrap=True)
    for s in found:
        d = s.decision
        table.add_row("same context" if s.exact else f"{s.similarity:.2f}", Text(d.id),
                      short_time(d.created_at), Text(d.decision_made), _who(d),
                      Text(d.outcome or ""), _feedback(d.feedback_score))
    return table


# -- decisions ---------------------------------------------------------------------


@decisions_app.command("list")
def decisions_list(
    ctx: typer.Context,
    session: Annotated[str | None, typer.Option(
        "--session", help="Only decisions made in this session.")] = None,
    type: Annotated[str | None, typer.Option(
        "--type", help="Only decisions of this type.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many decisions.")] = 50,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List decisions, newest first."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        if session is not None:
            sk.get_session(session)  # an unknown session is an error, not an empty list
        decisions = sk.list_decisions(session_id=session, decision_type=type, limit=limit)
    if out.json:
        out.emit_json([d.to_dict() for d in decisions])
    elif not decisions:
        out.console.print("No decisions match.")
    else:
        out.console.print(_decisions_table(decisions, wide=out.wide))


@decisions_app.command("show")
def decisions_show(
    ctx: typer.Context,
    decision_id: Annotated[str, typer.Argument(metavar="DECISION_ID", help="Decision id.",
                                               show_default=False)],
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one decision in full, with the most similar past decisions and how they went."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        engine = DecisionEngine(sk.store, sk.config)
        decision = sk.get_decision(decision_id)
        user = None if decision.session_id is None else sk.get_session(
            decision.session_id).user_id
        similar = engine.similar_to(decision, limit=SIMILAR_SHOWN)
    if out.json:
        out.emit_json({"decision": decision.to_dict(), "user_id": user,
                       "similar": [s.to_dict() for s in similar]})
        return
    parts: list[RenderableType] = [_decision_panel(decision, user)]
    if similar:
        parts.append(_similar_table(similar))
    else:
        parts.append(Text("No similar past decisions.", style="dim"))
    out.console.print(Group(*parts))


# -- preferences ---------------------------------------------------------------------


@prefs_app.command("list")
def prefs_list(
    ctx: typer.Context,
    user: UserArg,
    type: Annotated[str | None, typer.Option(
        "--type", help="Only preferences of this type.")] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List a user's preferences, most confident first."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        prefs = sk.list_preferences(user, preference_type=type)
    if out.json:
        out.emit_json([p.to_dict() for p in prefs])
    elif not prefs:
        out.console.print("No preferences match.")
    else:
        out.console.print(render.preferences_table(prefs))


@prefs_app.command("set")
def prefs_set(
    ctx: typer.Context,
    user: UserArg,
    preference_type: PrefTypeArg,
    key: PrefKeyArg,
    value: Annotated[str, typer.Argument(metavar="VALUE",
                                         help="The value, as JSON (see --string).")],
    string: Annotated[bool, typer.Option(
        "--string", help="Take VALUE as a plain string instead of parsing it as JSON.")
    ] = False,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """State a user's preference: an explicit observation, the strongest kind."""
    out = Output(json=json)
    data: Any = value if string else parse_json_value(value)
    with open_system(ctx) as sk:
        pref = DecisionEngine(sk.store, sk.config).set_preference(user, preference_type, key,
                                                                  data)
    if out.json:
        out.emit_json(pref.to_dict())
        return
    out.console.print(Text.assemble(
        ("set ", "green"), (f"{preference_type}/{key}", "bold"), f" for {user}: ",
        render.json_preview(pref.preference_value),
        (f" (confidence {pref.confidence:.2f}, {pref.observation_count} observation(s))",
         "dim")))


@prefs_app.command("forget")
def prefs_forget(
    ctx: typer.Context,
    user: UserArg,
    preference_type: PrefTypeArg,
    key: PrefKeyArg,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete a user's preference and the evidence behind it."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        if not DecisionEngine(sk.store, sk.config).forget(user, preference_type, key):
            raise NotFoundError("preference", f"{user}/{preference_type}/{key}")
    if out.json:
        out.emit_json({"forgotten": True, "user_id": user, "preference_type": preference_type,
                       "preference_key": key})
        return
    out.console.print(Text.assemble(("forgot ", "green"), (f"{preference_type}/{key}", "bold"),
                                    f" for {user}"))
