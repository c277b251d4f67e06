"""Full-text search over context, ranked by text match *and* relevance.

The store finds candidates by text (FTS5 bm25 on SQLite, ts_rank_cd on
PostgreSQL), normalised within the result set; each candidate is then scored
with the relevance formula, and the two are blended. Text decides *whether*
an item matches; relevance decides which of the matches an agent coming back
to its work most likely means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from statekeep.context.reconstruct import score_items
from statekeep.context.relevance import RelevanceCalculator
from statekeep.errors import ValidationError
from statekeep.models import ContextItem
from statekeep.store.protocol import Store

__all__ = ["TEXT_WEIGHT", "SearchResult", "search_context"]

#: Share of the blended score that comes from the text match.
TEXT_WEIGHT = 0.6


@dataclass(frozen=True, slots=True)
class SearchResult:
    item: ContextItem
    score: float
    text_rank: float
    relevance: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.item.to_dict(), "score": self.score, "text_rank": self.text_rank,
                "relevance": self.relevance, "reason": self.reason}


def search_context(store: Store, calculator: RelevanceCalculator, query: str, *,
                   session_id: str | None = None, limit: int = 20) -> list[SearchResult]:
    """The best ``limit`` matches for ``query``, best first."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise ValidationError("limit must be an integer from 1 to 1000", field="limit")
    hits = store.search_context(query, session_id=session_id, limit=limit,
                                candidates=max(200, limit))
    by_session: dict[str, list[str]] = {}
    for hit in hits:
        by_session.setdefault(hit.item.session_id, []).append(hit.item.id)
    scores: dict[str, tuple[float, str]] = {}
    for sid, ids in by_session.items():
        scores.update(score_items(store, calculator, sid, ids))
    results = []
    for hit in hits:
        relevance, reason = scores.get(hit.item.id, (0.0, "expired or removed meanwhile"))
        blended = TEXT_WEIGHT * hit.text_rank + (1 - TEXT_WEIGHT) * relevance
        results.append(SearchResult(hit.item, blended, hit.text_rank, relevance, reason))
    results.sort(key=lambda r: (-r.score, r.item.session_id, r.item.context_type,
                                r.item.context_key))
    return results[:limit]
