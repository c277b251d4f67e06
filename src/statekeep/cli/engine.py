"""The context engine's commands: capture, resume, search, explain, analyze, graph.

``resume`` prints the Markdown brief itself (piped, it is the raw Markdown an
agent pastes into its prompt; on a terminal rich renders it); every command
takes ``--json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown
from rich.text import Text

from statekeep.cli.browse import KeyArg, SessionArg, TypeArg, context_app
from statekeep.cli.render import listing
from statekeep.cli.shared import (
    ConfigOption,
    DbOption,
    JsonOption,
    Output,
    open_system,
    progress_bar,
)

__all__ = ["analyze", "capture", "graph", "resume", "search"]

SessionOpt = Annotated[str, typer.Option("--session", "-s", help="Session id.",
                                         show_default=False)]


def capture(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH...", help="Files and folders to capture (.gitignore is honoured).",
        show_default=False)],
    session: SessionOpt,
    root: Annotated[Path | None, typer.Option(
        "--root", help="Workspace root every path must stay inside"
                       " (default: the config's workspace_root, else the current folder).",
        show_default=False)] = None,
    env: Annotated[bool, typer.Option(
        "--env/--no-env", help="Also capture the environment (secrets redacted).")] = True,
    git: Annotated[bool, typer.Option(
        "--git/--no-git", help="Also capture the git state when the root is a repository.")
    ] = True,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Capture files, folders, git state and environment into a session."""
    out = Output(json=json)
    with open_system(ctx) as sk, progress_bar(out, "capturing") as step:
        report = sk.capture_paths(session, paths, root=root, environment=env, git=git,
                                  progress=lambda done, total, _label: step(done, total))
    if out.json:
        out.emit_json(report.to_dict())
        return
    out.console.print(Text.assemble(
        ("captured ", "green"), (f"{len(report.keys)} items", "bold"),
        f" ({report.written} written, {report.unchanged} unchanged)",
        f"; relations +{report.relations_added} -{report.relations_removed}",
        (f" in {report.elapsed_s:.2f}s", "dim")))
    if report.skipped:
        table = listing(f"Skipped ({len(report.skipped)})")
        table.add_column("path", overflow="fold")
        table.add_column("reason")
        for s in report.skipped:
            table.add_row(Text(s.path), Text(s.reason))
        out.console.print(table)


def resume(
    ctx: typer.Context,
    session_id: SessionArg,
    budget: Annotated[int | None, typer.Option(
        "--budget", help="Token budget of the brief (default: the config's"
                         " brief_budget_tokens, 2000).", show_default=False)] = None,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Print the resume brief: what the session was doing, most relevant first."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        brief = sk.resume_brief(session_id, budget_tokens=budget)
        if out.json:
            payload = brief.to_dict()
            payload["context"] = sk.reconstruct_context(session_id).to_dict()
            out.emit_json(payload)
            return
    if out.console.is_terminal:
        out.console.print(Markdown(brief.text))
        out.console.print(Text(f"{brief.tokens} of {brief.budget} tokens (estimated)",
                               style="dim"))
    else:
        typer.echo(brief.text, nl=False)


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(metavar="QUERY", help="Words to look for.")],
    session: Annotated[str | None, typer.Option(
        "--session", "-s", help="Only this session.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(help="At most this many results.")] = 20,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Full-text search over context, ranked by text match and relevance."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        results = sk.search_context(query, session_id=session, limit=limit)
    if out.json:
        out.emit_json([r.to_dict() for r in results])
        return
    if not results:
        out.console.print("Nothing matches.")
        return
    table = listing(f"Search: {query}")
    for header, opts in (("score", {"justify": "right"}), ("text", {"justify": "right"}),
                         ("relevance", {"justify": "right"}), ("type", {}),
                         ("key", {"overflow": "fold"}), ("session", {"style": "cyan"})):
        table.add_column(header, **opts)  # type: ignore[arg-type]
    for r in results:
        table.add_row(f"{r.score:.2f}", f"{r.text_rank:.2f}", f"{r.relevance:.2f}",
                      Text(r.item.context_type), Text(r.item.context_key),
                      Text(r.item.session_id))
    out.console.print(table)


@context_app.command("explain")
def explain(
    ctx: typer.Context,
    session_id: SessionArg,
    context_type: TypeArg,
    key: KeyArg,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show how an item's relevance score is made up."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        why = sk.explain_relevance(session_id, context_type, key)
    if out.json:
        out.emit_json(why.to_dict())
        return
    w = why.weights
    table = listing(f"Relevance of {context_type}/{key}: {why.score:.3f}")
    for col in ("component", "value", "weight", "contributes", "from"):
        table.add_column(col)
    table.add_row("time", f"{why.time_score:.3f}", f"{w.time}",
                  f"{why.time_score * w.time:.3f}",
                  f"{why.age_hours:.1f} h since last change, {w.decay_per_hour}/h")
    table.add_row("access", f"{why.access_score:.3f}", f"{w.access}",
                  f"{why.access_score * w.access:.3f}", f"{why.access_count} accesses")
    table.add_row("relationship", f"{why.relationship_score:.3f}", f"{w.relationship}",
                  f"{why.relationship_score * w.relationship:.3f}",
                  f"{why.relation_count} relations, mean strength {why.avg_strength:.2f}")
    table.add_row("task", f"{why.task_score:.3f}", f"{w.task}",
                  f"{why.task_score * w.task:.3f}", Text(why.task_reason))
    if why.weight != 1.0:
        table.add_row("item weight", f"{why.weight:.3f}", "scales", "", "relevance_score column")
    out.console.print(table)


def analyze(
    ctx: typer.Context,
    session_id: SessionArg,
    top: Annotated[int, typer.Option(help="How many of the most touched files.")] = 10,
    stale_hours: Annotated[float, typer.Option(
        help="Untouched for this long counts as stale.")] = 48.0,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Most touched files, stale context, clusters and on-disk drift of a session."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        sk.get_session(session_id)
        touched = sk.analyzer.most_touched(session_id, top)
        stale = sk.analyzer.stale(session_id, older_than_hours=stale_hours)
        clusters = sk.analyzer.clusters(session_id)
        drift = sk.analyzer.drift(session_id)
    if out.json:
        out.emit_json({
            "most_touched": [{"type": t.context_type, "key": t.context_key,
                              "accesses": t.accesses, "updates": t.updates} for t in touched],
            "stale": [{"type": t.context_type, "key": t.context_key} for t in stale],
            "clusters": [[list(k) for k in c.keys] for c in clusters],
            "drift": [{"path": d.path, "state": d.state, "detail": d.detail} for d in drift],
        })
        return
    table = listing("Most touched")
    for col in ("key", "reads", "changes"):
        table.add_column(col)
    for t in touched:
        table.add_row(Text(t.context_key), str(t.accesses), str(t.updates))
    out.console.print(table)
    out.console.print(Text(f"{len(stale)} stale items (untouched for {stale_hours:g} h),"
                           f" {len(clusters)} clusters, {len(drift)} files changed on disk"))
    for d in drift:
        out.console.print(Text(f"  {d.state}: {d.path} — {d.detail}"))
    for i, c in enumerate(clusters[:5], 1):
        keys = ", ".join(k for _t, k in c.keys[:8])
        more = f" (+{c.size - 8})" if c.size > 8 else ""
        out.console.print(Text(f"  cluster {i} ({c.size}): {keys}{more}"))


def graph(
    ctx: typer.Context,
    session_id: SessionArg,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """The relations around the session's most relevant items."""
    out = Output(json=json)
    with open_system(ctx) as sk:
        recon = sk.reconstruct_context(session_id)
    g = recon.context_graph
    if out.json:
        out.emit_json(g.to_dict())
        return
    if not g.edges:
        out.console.print("No relations yet: capture some files (statekeep capture).")
        return
    labels = {n.id: n.context_key for n in g.nodes}
    table = listing(f"Relations ({len(g.edges)} among {len(g.nodes)} items)")
    for col in ("from", "relation", "to", "strength"):
        table.add_column(col, overflow="fold")
    for e in g.edges:
        table.add_row(Text(labels[e.source_id]), e.relation_type, Text(labels[e.target_id]),
                      f"{e.strength:.2f}")
    out.console.print(table)
