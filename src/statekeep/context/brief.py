"""The resume brief: a Markdown page an agent pastes into its prompt to continue.

Deterministic (the same context renders the same bytes: times are relative
to the reconstruction's ``built_at``, ties are broken by key) and bounded by
a token budget. Sections come in the order a returning agent needs them --
what am I doing (active tasks), what was I looking at (context, most relevant
first), what moved under me (files changed on disk), what was decided, what
the user prefers, how things connect (strongest around the most relevant
items first) -- and each is cut line by line when
the budget runs out, with a footer saying what was left out. The greedy
sections (context, drift) take at most a share of the budget each, so
decisions and preferences still fit.

Tokens are *estimated* as one per four characters (rounded up), the usual
rule of thumb for English and code with BPE tokenizers; pass ``counter`` to
use a real tokenizer instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from statekeep.context.files import Drift
from statekeep.context.reconstruct import RankedItem, SessionContext
from statekeep.errors import ValidationError
from statekeep.models import Decision, TaskTree

__all__ = ["Brief", "estimate_tokens", "render_brief"]

MIN_BUDGET = 40
MAX_BUDGET = 1_000_000
_FOOTER_RESERVE = 30


def estimate_tokens(text: str) -> int:
    """About one token per four characters (documented estimate)."""
    return math.ceil(len(text) / 4)


@dataclass(slots=True)
class Brief:
    """The rendered brief and what the budget left out."""

    text: str
    tokens: int
    budget: int
    omitted: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "tokens": self.tokens, "budget": self.budget,
                "omitted": dict(self.omitted)}


def _ago(then: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def _clip(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _names(values: Any, limit: int = 6) -> str:
    if not isinstance(values, list) or not values:
        return ""
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" (+{len(values) - limit})" if len(values) > limit else "")


def describe(ranked: RankedItem) -> str:
    """One line about an item: what it is, in the fewest useful words."""
    item = ranked.item
    v = item.context_value if isinstance(item.context_value, dict) else {}
    kind = item.context_type
    bits: list[str] = []
    if kind == "file":
        bits += [str(v.get("language") or "file")]
        if v.get("lines") is not None:
            bits.append(f"{v['lines']} lines")
        classes, functions = v.get("classes"), v.get("functions")
        top = [*(classes if isinstance(classes, list) else []),
               *(f for f in (functions if isinstance(functions, list) else [])
                 if "." not in str(f))]
        if names := _names(top):
            bits.append(f"defines {names}")
        if v.get("parse_error"):
            bits.append(f"parse error: {_clip(str(v['parse_error']), 60)}")
    elif kind == "code":
        where = ".".join(str(x) for x in (v.get("class"), v.get("function")) if x)
        bits += [str(v.get("language") or "code")] + ([where] if where else [])
    elif kind == "task":
        bits.append(_clip(str(v.get("description") or ""), 80))
        if v.get("status"):
            bits.append(str(v["status"]))
    elif kind == "git":
        bits.append(f"branch {v.get('branch') or 'detached'}")
        if v.get("head"):
            bits.append(f"HEAD {str(v['head'])[:12]}")
        bits.append(f"{v.get('dirty_count', len(v.get('dirty') or []))} dirty")
    elif kind == "environment":
        version = str(v.get("python_version") or "").split(" ")[0]
        bits += [f"Python {version}" if version else "", f"cwd {v.get('cwd')}"]
    else:
        bits.append(_clip(_value_text(item.context_value), 90))
    detail = " · ".join(b for b in bits if b)
    return (f"`{item.context_key}` ({kind}) — {ranked.score:.2f} — {detail}"
            f" — _{ranked.reason}_")


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    from statekeep import codec
    return codec.dumps_trusted(value).decode()


def _task_lines(tree: TaskTree, now: datetime, depth: int = 0) -> list[str]:
    t = tree.task
    when = (f", started {_ago(t.started_at, now)}" if t.started_at
            else f", created {_ago(t.created_at, now)}")
    line = (f"{'  ' * depth}- [{t.status.value}] {_clip(t.description or t.type, 90)}"
            f" — `{t.id}` (priority {t.priority}{when})")
    out = [line]
    for child in tree.children:
        out += _task_lines(child, now, depth + 1)
    return out


class _Writer:
    def __init__(self, budget: int, counter: Callable[[str], int]) -> None:
        self.lines: list[str] = []
        self.used = 0
        self.budget = budget
        self.counter = counter
        self.omitted: dict[str, int] = {}

    def fits(self, *lines: str, limit: int | None = None) -> bool:
        cost = sum(self.counter(ln + "\n") for ln in lines)
        ceiling = self.budget - _FOOTER_RESERVE
        return self.used + cost <= (ceiling if limit is None else min(ceiling, limit))

    def add(self, *lines: str) -> None:
        for ln in lines:
            self.lines.append(ln)
            self.used += self.counter(ln + "\n")

    def section(self, name: str, heading: str, body: Sequence[str],
                share: float = 1.0) -> None:
        """Add a section, cut where the budget -- or the section's ``share``
        of the whole budget, so later sections keep some room -- runs out."""
        if not body:
            return
        limit = self.used + int(share * self.budget)
        if not self.fits("", heading, body[0]):
            self.omitted[name] = len(body)
            return
        self.add("", heading)
        for i, line in enumerate(body):
            if not self.fits(line, limit=limit if i else None):
                self.omitted[name] = len(body) - i
                return
            self.add(line)


def render_brief(ctx: SessionContext, *, budget_tokens: int,
                 decisions: Sequence[Decision] = (), drift: Sequence[Drift] = (),
                 counter: Callable[[str], int] = estimate_tokens) -> Brief:
    """Render ``ctx`` as Markdown within ``budget_tokens``."""
    if (not isinstance(budget_tokens, int) or isinstance(budget_tokens, bool)
            or not MIN_BUDGET <= budget_tokens <= MAX_BUDGET):
        raise ValidationError(f"budget must be an integer from {MIN_BUDGET} to {MAX_BUDGET}"
                              " tokens", field="budget")
    now = ctx.built_at
    s = ctx.session
    w = _Writer(budget_tokens, counter)
    w.add(f"# Resuming session `{s.id}`",
          f"- {s.status.value} · user {s.user_id} · started {_ago(s.start_time, now)}"
          f" · last change {_ago(s.updated_at, now)}",
          f"- {ctx.total_items} context items; the most relevant first"
          f" (scores as of {now.strftime('%Y-%m-%d %H:%M')} UTC)")
    tasks = [ln for tree in ctx.active_tasks for ln in _task_lines(tree, now)]
    w.section("tasks", "## Active tasks", tasks or ["- none: every task is finished"])
    w.section("context", "## Most relevant context",
              [f"{i}. {describe(r)}" for i, r in enumerate(ctx.recent_context, 1)],
              share=0.5)
    w.section("drift", "## Changed on disk since capture",
              [f"- {d.state}: `{d.path}` — {d.detail}" for d in drift], share=0.15)
    w.section("decisions", "## Recent decisions",
              [f"- {d.decision_type}: {_clip(d.decision_made, 90)}"
               + (f" → {d.outcome}" if d.outcome else "")
               + (" (user override)" if d.user_override else "") for d in decisions])
    w.section("preferences", "## User preferences",
              [f"- {p.preference_type}/{p.preference_key} = "
               f"{_clip(_value_text(p.preference_value), 60)} (confidence {p.confidence:.2f})"
               for p in ctx.preferences])
    nodes = {n.id: n for n in ctx.context_graph.nodes}
    edges = sorted(
        (e for e in ctx.context_graph.edges if e.source_id in nodes and e.target_id in nodes),
        key=lambda e: (-max(nodes[e.source_id].score, nodes[e.target_id].score),
                       nodes[e.source_id].context_key, nodes[e.target_id].context_key,
                       e.relation_type))
    w.section("relations", "## How they connect",
              [f"- `{nodes[e.source_id].context_key}` → `{nodes[e.target_id].context_key}`"
               f" ({e.relation_type})" for e in edges])
    if w.omitted:
        parts = ", ".join(f"{n} {name}" for name, n in w.omitted.items())
        w.add("", f"_Left out to fit {budget_tokens} tokens: {parts}._")
    text = "\n".join(w.lines) + "\n"
    return Brief(text=text, tokens=counter(text), budget=budget_tokens, omitted=w.omitted)
