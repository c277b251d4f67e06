"""Finding past decisions made in the same or a similar context.

A context is JSON. It is flattened into a set of features, one per leaf:
the leaf's path (object keys and list indexes from the root) and its
canonical JSON text, e.g. ``{"lang": "py", "files": ["a.py"]}`` gives
``(("lang",), '"py"')`` and ``(("files", 0), '"a.py"')``. Empty objects and
lists are leaves too (``{}``, ``[]``), so every value has at least one
feature. Similarity is the Jaccard index of two feature sets,
|A and B| / |A or B|: 1.0 exactly when the canonical contexts are equal, 0.0
when they share no leaf, and in between the share of facts they have in
common. Jaccard because it needs no schema, no weights and no training, treats
a missing key like a differing one, and is cheap enough to compute against
hundreds of stored contexts per question. Lists are compared by position
(``["a", "b"]`` and ``["b", "a"]`` share nothing); an agent whose context
holds a set should store it sorted.

A lookup asks two indexed queries in one snapshot: decisions of the type
with the same context hash (similarity 1.0, however old), then the newest
``similar_decisions_scan`` decisions of the type, ranked by similarity.
Decisions that share no feature (and decisions stored with only a hash, which
have no context to compare) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from statekeep import codec
from statekeep.errors import ValidationError
from statekeep.ids import validate_id, validate_name
from statekeep.models import Decision

if TYPE_CHECKING:  # the store imports this package: no import of the store at run time
    from statekeep.store import Store

__all__ = [
    "Feature",
    "SimilarDecision",
    "features",
    "jaccard",
    "rank",
    "similar_decisions",
    "similar_to",
    "similarity",
]

#: A leaf of a context: its path from the root and its canonical JSON.
Feature = tuple[tuple[str | int, ...], str]


@dataclass(frozen=True, slots=True)
class SimilarDecision:
    """A past decision, how near its context is, and how it turned out."""

    decision: Decision
    similarity: float
    #: Same context hash: the very same context (or the same caller-given hash).
    exact: bool

    @property
    def outcome(self) -> str | None:
        return self.decision.outcome

    @property
    def feedback_score(self) -> float | None:
        return self.decision.feedback_score

    @property
    def user_override(self) -> bool:
        return self.decision.user_override

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision.to_dict(), "similarity": self.similarity,
                "exact": self.exact}


def features(context: Any) -> frozenset[Feature]:
    """The context's leaves as (path, canonical JSON) pairs."""
    out: set[Feature] = set()
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), context)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict) and value:
            stack.extend(((*path, str(k)), v) for k, v in value.items())
        elif isinstance(value, list | tuple) and value:
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        else:
            out.add((path, orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()))
    return frozenset(out)


def jaccard(a: frozenset[Feature], b: frozenset[Feature]) -> float:
    """|A and B| / |A or B| (1.0 for two empty sets, which features() never makes)."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def similarity(a: Any, b: Any) -> float:
    """How near two contexts are, from 0.0 (nothing shared) to 1.0 (equal)."""
    return jaccard(features(a), features(b))


def rank(
    exact: list[Decision],
    scanned: list[Decision],
    query: frozenset[Feature] | None,
    *,
    limit: int,
    exclude_id: str | None = None,
) -> list[SimilarDecision]:
    """Exact matches first, then the scanned decisions by similarity.

    Order: exact before near, higher similarity first, then newest first,
    then id (descending, as ids are time-ordered). ``query`` None means the
    asking context is unknown (only its hash is): only exact matches count.
    """
    seen: set[str] = set()
    found: list[SimilarDecision] = []
    for d in exact:
        if d.id != exclude_id and d.id not in seen:
            seen.add(d.id)
            found.append(SimilarDecision(d, 1.0, True))
    if query is not None:
        for d in scanned:
            if d.id == exclude_id or d.id in seen or d.context is None:
                continue
            score = jaccard(query, features(d.context))
            if score > 0.0:
                seen.add(d.id)
                found.append(SimilarDecision(d, score, False))
    found.sort(key=lambda s: s.decision.id, reverse=True)
    found.sort(key=lambda s: (not s.exact, -s.similarity, -s.decision.created_at.timestamp()))
    return found[:limit]


def _check_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValidationError("limit must be a positive integer", field="limit")
    return limit


def _lookup(
    store: Store,
    decision_type: str,
    context_hash: str,
    query: frozenset[Feature] | None,
    *,
    limit: int,
    user_id: str | None,
    scan: int | None,
    exclude_id: str | None,
) -> list[SimilarDecision]:
    validate_name(decision_type, "decision_type")
    if user_id is not None:
        validate_id(user_id, "user_id")
    _check_limit(limit)
    n_scan = store.config.similar_decisions_scan if scan is None else scan
    if not isinstance(n_scan, int) or isinstance(n_scan, bool) or n_scan < 0:
        raise ValidationError("scan must be a non-negative integer", field="scan")
    extra = 1 if exclude_id is not None else 0
    with store.snapshot():  # both queries see the same decisions
        exact = store.list_decisions(decision_type=decision_type, context_hash=context_hash,
                                     user_id=user_id, limit=limit + extra)
        scanned = [] if n_scan == 0 or query is None else store.list_decisions(
            decision_type=decision_type, user_id=user_id, limit=n_scan)
    return rank(exact, scanned, query, limit=limit, exclude_id=exclude_id)


def similar_decisions(
    store: Store,
    decision_type: str,
    context: Any,
    *,
    limit: int = 10,
    user_id: str | None = None,
    scan: int | None = None,
) -> list[SimilarDecision]:
    """Past decisions of ``decision_type`` made in ``context`` or near it.

    ``user_id`` keeps those made in that user's sessions; ``scan`` overrides
    the ``similar_decisions_scan`` setting (how many recent decisions are
    compared; exact matches are found however old).
    """
    context_hash = codec.canonical_hash(context, field="context")
    return _lookup(store, decision_type, context_hash, features(context), limit=limit,
                   user_id=user_id, scan=scan, exclude_id=None)


def similar_to(
    store: Store,
    decision: Decision,
    *,
    limit: int = 10,
    user_id: str | None = None,
    scan: int | None = None,
) -> list[SimilarDecision]:
    """Other past decisions like ``decision`` (itself left out).

    A decision stored with only a context hash has no context to compare,
    so only decisions with the same hash are found for it.
    """
    query = None
    if decision.context is not None or decision.context_hash == codec.canonical_hash(None):
        query = features(decision.context)
    return _lookup(store, decision.decision_type, decision.context_hash, query, limit=limit,
                   user_id=user_id, scan=scan, exclude_id=decision.id)
