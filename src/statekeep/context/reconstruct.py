"""Rebuilding a session's working context: what an agent needs after two days away.

:func:`build_session_context` reads, in one snapshot, the session, its active
task trees, the facts of every live context item (not their values), the
relation counts, and the user's preferences; ranks every item with the
relevance formula; then reads the values of the top items only and the
graph around them. Cost grows with the session, never with the store: every
query is bounded by ``session_id`` on an index.

Task relevance (the seed's ``calculate_task_relevance``) is made concrete:
an item is *referenced* by an active task when it is that task's captured
item, when the task's text names its path, or when the task's item has a
``references`` relation to it; *related* when it is one hop from a
referenced item; in the *same code area* when it sits in the folder of a
referenced file; and otherwise in the same project (the session).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from statekeep.context.relationships import PathMatcher, strings_in
from statekeep.context.relevance import (
    TASK_DIRECT,
    TASK_NONE_ACTIVE,
    TASK_PROJECT,
    TASK_RELATED,
    TASK_SAME_AREA,
    ItemFacts,
    RelevanceCalculator,
)
from statekeep.errors import NotFoundError, ValidationError
from statekeep.ids import validate_id, validate_key, validate_name
from statekeep.models import (
    ContextItem,
    Preference,
    Session,
    Task,
    TaskStatus,
    TaskTree,
)
from statekeep.store.base import Connection
from statekeep.store.context import CONTEXT_COLS
from statekeep.store.protocol import Store

__all__ = [
    "ACTIVE_STATUSES",
    "ContextGraph",
    "GraphEdge",
    "GraphNode",
    "RankedItem",
    "SessionContext",
    "TaskFocus",
    "build_session_context",
    "explain_item",
    "rank_items",
    "score_items",
]

ACTIVE_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.IN_PROGRESS})
_GRAPH_SEEDS = 50
_GRAPH_MAX_NODES = 300
_CHUNK = 500
_FACT_COLS = "id, context_type, context_key, access_count, updated_at, relevance_score"
#: A ranked item: (-score, type, key, reason, fact row) -- sorts best first as is.
Ranked = tuple[float, str, str, str, Any]


@dataclass(frozen=True, slots=True)
class RankedItem:
    """A context item with its relevance now and the task reason behind it."""

    item: ContextItem
    score: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.item.to_dict(), "score": self.score, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankedItem:
        return cls(ContextItem.from_dict(data), float(data["score"]), str(data["reason"]))


@dataclass(frozen=True, slots=True)
class GraphNode:
    id: str
    context_type: str
    context_key: str
    depth: int
    score: float


@dataclass(frozen=True, slots=True)
class GraphEdge:
    source_id: str
    target_id: str
    relation_type: str
    strength: float


@dataclass(frozen=True, slots=True)
class ContextGraph:
    """The relations around the most relevant items, ``graph_depth`` hops out."""

    nodes: tuple[GraphNode, ...] = ()
    edges: tuple[GraphEdge, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [_plain(n) for n in self.nodes], "edges": [_plain(e) for e in self.edges]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContextGraph:
        return cls(tuple(GraphNode(**n) for n in data["nodes"]),
                   tuple(GraphEdge(**e) for e in data["edges"]))


def _plain(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def _tree_from_dict(data: dict[str, Any]) -> TaskTree:
    return TaskTree(Task.from_dict(data), tuple(_tree_from_dict(c) for c in data["children"]))


@dataclass(frozen=True, slots=True)
class SessionContext:
    """The seed's SessionContext: everything a returning agent needs, ranked."""

    session: Session
    active_tasks: tuple[TaskTree, ...]
    recent_context: tuple[RankedItem, ...]
    context_graph: ContextGraph
    preferences: tuple[Preference, ...]
    #: Live items in the session (``recent_context`` holds the top of them).
    total_items: int
    #: When the scores were computed: relevance decays, a cached copy ages.
    built_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": self.session.to_dict(),
            "active_tasks": [t.to_dict() for t in self.active_tasks],
            "recent_context": [r.to_dict() for r in self.recent_context],
            "context_graph": self.context_graph.to_dict(),
            "preferences": [p.to_dict() for p in self.preferences],
            "total_items": self.total_items,
            "built_at": self.built_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionContext:
        return cls(
            session=Session.from_dict(data["session"]),
            active_tasks=tuple(_tree_from_dict(t) for t in data["active_tasks"]),
            recent_context=tuple(RankedItem.from_dict(r) for r in data["recent_context"]),
            context_graph=ContextGraph.from_dict(data["context_graph"]),
            preferences=tuple(Preference.from_dict(p) for p in data["preferences"]),
            total_items=int(data["total_items"]),
            built_at=datetime.fromisoformat(data["built_at"]),
        )


@dataclass(slots=True)
class TaskFocus:
    """Which items the active tasks point at, and why."""

    active: bool = False
    direct: dict[str, str] = field(default_factory=dict)
    related: dict[str, str] = field(default_factory=dict)
    areas: dict[str, str] = field(default_factory=dict)

    def score(self, item_id: str, ctype: str, key: str) -> tuple[float, str]:
        if (why := self.direct.get(item_id)) is not None:
            return TASK_DIRECT, why
        if (why := self.related.get(item_id)) is not None:
            return TASK_RELATED, why
        if self.areas and ctype in ("file", "code"):
            why = self.areas.get(key.rpartition("/")[0])
            if why is not None:
                return TASK_SAME_AREA, why
        if self.active:
            return TASK_PROJECT, "same session as the active tasks"
        return TASK_NONE_ACTIVE, "no active task"


def _active(trees: Iterable[TaskTree]) -> list[Task]:
    return [t for tree in trees for t in tree.walk() if t.status in ACTIVE_STATUSES]


def _task_text(task: Task) -> str:
    parts = [task.type, task.description or ""]
    parts.extend(strings_in(task.parameters))
    return "\n".join(parts)


def task_focus(store: Store, session_id: str, tasks: Sequence[Task],
               facts: Sequence[Any]) -> TaskFocus:
    """Work out what the active ``tasks`` reference among the session's items."""
    focus = TaskFocus(active=bool(tasks))
    if not tasks:
        return focus
    files: dict[str, str] = {}
    task_items_by_key: dict[str, str] = {}
    for r in facts:
        if r[1] == "file":
            files[r[2]] = r[0]
        elif r[1] == "task":
            task_items_by_key[r[2]] = r[0]
    matcher = PathMatcher(files)
    task_items: dict[str, Task] = {}
    for task in tasks:
        label = f"active task {task.id}"
        if (item_id := task_items_by_key.get(task.id)) is not None:
            focus.direct.setdefault(item_id, f"is {label}")
            task_items[item_id] = task
        for path in sorted(matcher.find(_task_text(task))):
            focus.direct.setdefault(files[path], f"named by {label}")
    if task_items:
        for rel in store.relations(session_id, item_ids=sorted(task_items)):
            if rel.relation_type == "references" and rel.source_id in task_items:
                focus.direct.setdefault(
                    rel.target_id, f"referenced by active task {task_items[rel.source_id].id}")
    if focus.direct:
        live = {r[0] for r in facts}
        near = store.neighbours(session_id, sorted(focus.direct), 1)
        for item_id, depth in sorted(near.items()):
            if depth == 1 and item_id not in focus.direct and item_id in live:
                focus.related[item_id] = "one relation away from an item an active task names"
        paths = {v: k for k, v in files.items()}
        for item_id in focus.direct:
            if (where := paths.get(item_id)) is not None:
                folder = where.rpartition("/")[0]
                focus.areas.setdefault(folder, f"in {folder or '.'}/, where an active task works")
    return focus


def _facts(conn: Connection, store: Store, session_id: str, now: datetime) -> list[Any]:
    """Per live item: id, type, key, accesses, last change, weight, hours since
    the last change (computed by the database: no timestamp parsing here)."""
    return conn.execute(
        f"SELECT {_FACT_COLS}, {store.hours_since_sql.format(col='updated_at')}"
        " FROM context WHERE session_id = ? AND (expires_at IS NULL OR expires_at > ?)",
        (store.ts(now), session_id, store.ts(now))).fetchall()


def rank_items(store: Store, calculator: RelevanceCalculator, session_id: str,
               facts: Sequence[Any], focus: TaskFocus,
               now: datetime) -> list[Ranked]:
    """(-score, type, key, reason, fact row) for every item, most relevant
    first; ties by type and key so the order is the same on every run.

    The loop is :meth:`RelevanceCalculator.score` and :meth:`TaskFocus.score`
    inlined: it runs once per item of the session, and a reconstruction of
    10,000 items must cost little more than reading their rows.
    """
    stats = store.relation_stats(session_id)
    w = calculator.weights
    decay, boost, cap, rel_w = (w.decay_per_hour, w.access_boost, w.access_cap,
                                w.relationship_weight)
    wt, wa, wr, wk = w.time, w.access, w.relationship, w.task
    direct, related, areas = focus.direct, focus.related, focus.areas
    fallback, fallback_why = ((TASK_PROJECT, "same session as the active tasks") if focus.active
                              else (TASK_NONE_ACTIVE, "no active task"))
    no_stats = (0, 0.0)
    order: list[Ranked] = []
    for row in facts:
        item_id = row[0]
        age_h = row[6]
        time_score = decay ** age_h if age_h > 0 else 1.0
        access_score = row[3] * boost
        access_score = min(access_score, cap)
        count, avg = stats.get(item_id, no_stats)
        why = direct.get(item_id)
        if why is not None:
            task_score = TASK_DIRECT
        elif (why := related.get(item_id)) is not None:
            task_score = TASK_RELATED
        elif (areas and row[1] in ("file", "code")
              and (why := areas.get(row[2].rpartition("/")[0])) is not None):
            task_score = TASK_SAME_AREA
        else:
            task_score, why = fallback, fallback_why
        total = (time_score * wt + access_score * wa + (avg * rel_w * wr if count else 0.0)
                 + task_score * wk)
        order.append((-(min(total, 1.0) * row[5]), row[1], row[2], why, row))
    order.sort()
    return order


def _items(conn: Connection, store: Store, ids: Sequence[str]) -> dict[str, ContextItem]:
    out: dict[str, ContextItem] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        rows = conn.execute(
            f"SELECT {CONTEXT_COLS} FROM context WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk).fetchall()
        for row in rows:
            item = store.context_row(row)
            out[item.id] = item
    return out


def _graph(store: Store, session_id: str, ranked: Sequence[Ranked],
           depth: int) -> ContextGraph:
    if not ranked or depth == 0:
        return ContextGraph()
    seeds = [r[4][0] for r in ranked[:_GRAPH_SEEDS]]
    near = store.neighbours(session_id, seeds, depth)
    ordered = sorted((near[r[4][0]], r[0], r[1], r[2], r[4][0])
                     for r in ranked if r[4][0] in near)[:_GRAPH_MAX_NODES]
    nodes = tuple(GraphNode(i, t, k, d, -neg) for d, neg, t, k, i in ordered)
    keep = {n.id for n in nodes}
    edges = sorted(
        {GraphEdge(r.source_id, r.target_id, r.relation_type, r.strength)
         for r in store.relations(session_id, item_ids=sorted(keep))
         if r.source_id in keep and r.target_id in keep},
        key=lambda e: (e.source_id, e.target_id, e.relation_type))
    return ContextGraph(nodes, tuple(edges))


def build_session_context(store: Store, calculator: RelevanceCalculator, session_id: str, *,
                          limit: int, depth: int) -> SessionContext:
    """Reconstruct a session's context from the store (no caches involved)."""
    validate_id(session_id, "session_id")
    now = store.now()
    with store.snapshot() as conn:
        session = store.get_session(session_id)
        trees = store.task_tree(session_id)
        active = _active(trees)
        facts = _facts(conn, store, session_id, now)
        focus = task_focus(store, session_id, active, facts)
        ranked = rank_items(store, calculator, session_id, facts, focus, now)
        top = ranked[:limit]
        items = _items(conn, store, [r[4][0] for r in top])
        graph = _graph(store, session_id, ranked, depth)
        preferences = store.list_preferences(session.user_id)
    active_ids = {t.id for t in active}
    return SessionContext(
        session=session,
        active_tasks=tuple(t for t in trees if any(x.id in active_ids for x in t.walk())),
        recent_context=tuple(RankedItem(items[r[4][0]], -r[0], r[3])
                             for r in top if r[4][0] in items),
        context_graph=graph,
        preferences=tuple(preferences),
        total_items=len(facts),
        built_at=now,
    )


def explain_item(store: Store, calculator: RelevanceCalculator, session_id: str,
                 context_type: str, context_key: str) -> tuple[ContextItem, ItemFacts]:
    """The facts behind one item's score, gathered exactly as ranking gathers them."""
    validate_id(session_id, "session_id")
    validate_name(context_type, "context_type")
    validate_key(context_key, "context_key")
    now = store.now()
    with store.snapshot() as conn:
        trees = store.task_tree(session_id)
        facts = _facts(conn, store, session_id, now)
        row = next((r for r in facts if r[1] == context_type and r[2] == context_key), None)
        if row is None:
            raise NotFoundError("context item", f"{context_type}:{context_key}")
        focus = task_focus(store, session_id, _active(trees), facts)
        count, avg = store.relation_stats(session_id).get(row[0], (0, 0.0))
        item = _items(conn, store, [row[0]])[row[0]]
    task_score, reason = focus.score(row[0], row[1], row[2])
    return item, ItemFacts(item_id=row[0], updated_at=store.ts_out(row[4]),
                           access_count=int(row[3]), relation_count=count,
                           avg_strength=avg, task_score=task_score, task_reason=reason,
                           weight=float(row[5]))


def check_limit(value: object, name: str, upper: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise ValidationError(f"{name} must be an integer from 0 to {upper}", field=name)
    return value


def score_items(store: Store, calculator: RelevanceCalculator, session_id: str,
                item_ids: Iterable[str]) -> dict[str, tuple[float, str]]:
    """Relevance now of some items of one session, ranked exactly as a
    reconstruction ranks them (the task focus needs the whole session)."""
    wanted = set(item_ids)
    now = store.now()
    with store.snapshot() as conn:
        trees = store.task_tree(session_id)
        facts = _facts(conn, store, session_id, now)
        focus = task_focus(store, session_id, _active(trees), facts)
        ranked = rank_items(store, calculator, session_id, facts, focus, now)
    return {r[4][0]: (-r[0], r[3]) for r in ranked if r[4][0] in wanted}
