"""``statekeep conflicts`` and ``statekeep state``: synchronised state from a shell.

Conflicts left to a person (``user_decides``) wait in the store until someone
settles them; ``conflicts list`` shows them and ``conflicts resolve`` decides
one. ``state show``/``state set`` read and write the synchronised keys, with
the same versioning and conflict handling as the library, so a person can
act as one more component.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from statekeep.cli.render import json_preview, listing
from statekeep.cli.shared import (
    ConfigOption,
    DbOption,
    JsonOption,
    Output,
    local_time,
    open_system,
    parse_json_value,
)
from statekeep.errors import ValidationError
from statekeep.models import ConflictStatus, SyncConflict
from statekeep.store.base import UNSET
from statekeep.sync.manager import SyncManager, SyncResult
from statekeep.system import StateSystem

__all__ = ["conflicts_app", "state_app"]

conflicts_app = typer.Typer(no_args_is_help=True,
                            help="Sync conflicts left to a person: list and resolve them.")
state_app = typer.Typer(no_args_is_help=True,
                        help="Synchronised state: show keys, set one as a component.")

ScopeOption = Annotated[str | None, typer.Option(
    "--scope", help="Only this scope (default: every scope).", show_default=False)]

_STATUS_STYLES = {ConflictStatus.PENDING: "bold yellow", ConflictStatus.RESOLVED: "green",
                  ConflictStatus.SUPERSEDED: "bright_black"}


def _manager(sk: StateSystem) -> SyncManager:
    return sk.sync_manager


def _conflicts_table(conflicts: list[SyncConflict], *, wide: bool, statuses: bool) -> Any:
    """Narrow terminals keep what a decision needs: the id to pass to ``resolve``,
    the key, who proposed what, and the two values."""
    table = listing("Sync conflicts")
    table.add_column("id", no_wrap=True, style="cyan")
    if statuses:
        table.add_column("status", no_wrap=True)
    if wide:
        table.add_column("scope", overflow="fold")
    table.add_column("key", overflow="fold", min_width=10)
    table.add_column("component" if wide else "from", overflow="fold", min_width=4)
    table.add_column("versions" if wide else "v", justify="right", no_wrap=True)
    table.add_column("current", overflow="fold", min_width=8)
    table.add_column("proposed", overflow="fold", min_width=8)
    if wide:
        table.add_column("created", no_wrap=True)
    preview = 40 if wide else 20
    for c in conflicts:
        cells: list[Any] = [Text(c.id)]
        if statuses:
            cells.append(Text(c.status.value, style=_STATUS_STYLES[c.status]))
        if wide:
            cells.append(Text(c.scope))
        cells += [Text(c.key), Text(c.component), f"{c.base_version}→{c.current_version}",
                  Text(json_preview(c.current_value, preview)),
                  Text(json_preview(c.proposed_value, preview))]
        if wide:
            cells.append(local_time(c.created_at, seconds=False))
        table.add_row(*cells)
    return table


@conflicts_app.command("list")
def conflicts_list(
    ctx: typer.Context,
    status: Annotated[str, typer.Option(
        "--status", help="pending, resolved, superseded, or all.")] = "pending",
    scope: ScopeOption = None,
    limit: Annotated[int, typer.Option(help="At most this many conflicts.")] = 100,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show sync conflicts, oldest first (pending ones unless --status says otherwise)."""
    out = Output(json=json)
    wanted = None if status == "all" else ConflictStatus.parse(status, "--status")
    with open_system(ctx) as sk:
        found = _manager(sk).conflicts(status=wanted, scope=scope, limit=limit)
    if out.json:
        out.emit_json([c.to_dict() for c in found])
        return
    if not found:
        what = "" if wanted is None else f"{wanted.value} "
        out.console.print(f"no {what}sync conflicts")
        return
    out.console.print(_conflicts_table(found, wide=out.wide,
                                       statuses=wanted is not ConflictStatus.PENDING))


@conflicts_app.command("resolve")
def conflicts_resolve(
    ctx: typer.Context,
    conflict_id: Annotated[str, typer.Argument(metavar="ID", help="The conflict's id.")],
    use: Annotated[str | None, typer.Option(
        "--use", help="current (keep the stored value), proposed (take the component's),"
                      " or merge (the union of both).", show_default=False)] = None,
    value: Annotated[str | None, typer.Option(
        "--value", metavar="JSON", help="Store this value instead.", show_default=False)
    ] = None,
    by: Annotated[str | None, typer.Option(
        "--by", help="Who decides (recorded in the audit log).", show_default=False)] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Settle a pending conflict with --use current|proposed|merge, or --value JSON."""
    out = Output(json=json)
    if (use is None) == (value is None):
        raise ValidationError("give exactly one of --use current|proposed|merge and --value",
                              field="use")
    if use is not None and use not in ("current", "proposed", "merge"):
        raise ValidationError(f"--use {use!r} is not one of: current, proposed, merge",
                              field="use")
    with open_system(ctx) as sk:
        manager = _manager(sk)
        if value is not None:
            done = manager.resolve_conflict(conflict_id, "value",
                                            value=parse_json_value(value, field="--value"),
                                            resolved_by=by)
        else:
            assert use is not None
            done = manager.resolve_conflict(conflict_id, use, value=UNSET, resolved_by=by)
    if out.json:
        out.emit_json(done.to_dict())
        return
    c, entry = done.conflict, done.entry
    line = Text.assemble(("✔ resolved ", "green"), (c.id, "cyan"), " (", (c.key, "bold"),
                         f": {c.resolution})")
    if done.written:
        line.append(f" → version {entry.version}: {json_preview(entry.value)}")
    else:
        line.append(f" → value kept at version {entry.version}")
    out.console.print(line, soft_wrap=True)


@state_app.command("show")
def state_show(
    ctx: typer.Context,
    scope: ScopeOption = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the synchronised keys: value, version and the component that wrote it."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        manager = _manager(sk)
        scopes = [scope] if scope is not None else sk.store.sync_scopes()
        entries = [e for s in scopes for e in manager.get_state(s).values()]
    if out.json:
        out.emit_json([e.to_dict() for e in entries])
        return
    if not entries:
        out.console.print("no synchronised state")
        return
    table = listing("Synchronised state")
    table.add_column("scope", overflow="fold")
    table.add_column("key", overflow="fold", style="bold")
    table.add_column("v", justify="right", no_wrap=True)
    table.add_column("component", overflow="fold")
    table.add_column("value", overflow="fold")
    if out.wide:
        table.add_column("updated", no_wrap=True)
    for e in entries:
        cells: list[Any] = [Text(e.scope), Text(e.key), str(e.version), Text(e.component),
                            Text(json_preview(e.value, 80))]
        if out.wide:
            cells.append(local_time(e.updated_at))
        table.add_row(*cells)
    out.console.print(table)


@state_app.command("set")
def state_set(
    ctx: typer.Context,
    component: Annotated[str, typer.Argument(help="The component the write is made as.")],
    key: Annotated[str, typer.Argument(help="The key to set.")],
    value: Annotated[str, typer.Argument(metavar="VALUE",
                                         help="The value, as JSON (see --string).")],
    scope: Annotated[str, typer.Option("--scope", help="The scope of the key.")] = "global",
    string: Annotated[bool, typer.Option(
        "--string", help="Take VALUE as a plain string instead of parsing it as JSON.")
    ] = False,
    base: Annotated[int | None, typer.Option(
        "--base", help="The version this write is based on (default: the version the"
                       " component last read or wrote).", show_default=False)] = None,
    strategy: Annotated[str | None, typer.Option(
        "--strategy", help="Settle a conflict with this strategy instead of the"
                           " configured selection.", show_default=False)] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Write one key as COMPONENT; a concurrent change is detected and resolved."""
    out = Output(json=json)
    data = value if string else parse_json_value(value)
    with open_system(ctx) as sk:
        result = _manager(sk).sync_state(
            component, {key: data}, scope=scope,
            base_versions=None if base is None else {key: base}, strategy=strategy)
    if out.json:
        out.emit_json(result.to_dict())
        return
    out.console.print(_describe(result, key), soft_wrap=True)


def _describe(result: SyncResult, key: str) -> Text:
    version = result.versions[key]
    if key in result.pending:
        return Text.assemble(("conflict ", "bold yellow"), (result.pending[key], "cyan"),
                             f" left to a person; {key} stays at version {version}"
                             " (statekeep conflicts resolve ID)")
    if key in result.unchanged:
        return Text(f"{key} already holds this value (version {version})")
    line = Text()
    if result.resolutions:
        r = result.resolutions[0]
        line.append(f"conflict with version {r.current_version} settled by {r.strategy}"
                    + (f" ({r.rule})" if r.rule else "") + ": ", style="yellow")
    if key in result.written:
        line.append(f"{key} is now version {version}: ", style="green")
        line.append(json_preview(result.applied[key]))
    else:
        line.append(f"{key} kept its value at version {version}")
    return line
