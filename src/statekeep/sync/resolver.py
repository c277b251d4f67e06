"""Conflict policy: which strategy settles a conflict, and what it decides.

The store detects conflicts and applies decisions; this module only decides,
as a pure function of the :class:`Conflict` and the configuration, so it can
be tested without a database and swapped without touching SQL.

Strategy selection follows the design, in this order:

1. a key matching ``sync_critical_keys`` goes to ``user_decides`` -- a person
   settles it later, the key keeps its value meanwhile;
2. two values that merge (two lists, two dicts) go to ``merge``;
3. a key matching a ``sync_rules`` pattern goes to ``rule_based``;
4. anything else is ``last_write_wins``.

Rules are data, never code: ``"pattern=strategy"`` strings from the config,
with shell-style patterns (``*``, ``?``, ``[...]``; matched case-sensitively)
compiled once, first match winning, and strategies from a fixed list.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from statekeep.config import SYNC_RULE_STRATEGIES, StateConfig
from statekeep.errors import NoRuleError, NotMergeableError, UnknownStrategyError
from statekeep.store.sync import Conflict, Resolution, Resolve
from statekeep.sync.merge import is_mergeable, merge_states

__all__ = [
    "STRATEGIES",
    "Conflict",
    "ConflictResolver",
    "Resolution",
    "Rule",
]

#: The strategies :meth:`ConflictResolver.resolve` takes: the design's four,
#: plus the rule strategies, which a caller may also force directly.
STRATEGIES = frozenset({"last_write_wins", "merge", "user_decides", "rule_based"}
                       | SYNC_RULE_STRATEGIES)


@dataclass(frozen=True, slots=True)
class Rule:
    """One configured ``pattern=strategy`` rule, its pattern compiled."""

    pattern: str
    strategy: str
    regex: re.Pattern[str]

    @property
    def text(self) -> str:
        return f"{self.pattern}={self.strategy}"

    def matches(self, key: str) -> bool:
        return self.regex.fullmatch(key) is not None


def _compile(pattern: str) -> re.Pattern[str]:
    # fnmatch.translate already anchors the end; fullmatch anchors the start.
    return re.compile(fnmatch.translate(pattern))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ConflictResolver:
    """Picks and applies a strategy for each conflict, from the config's rules."""

    def __init__(self, config: StateConfig) -> None:
        self.critical = tuple(_compile(p.strip()) for p in config.sync_critical_keys)
        rules: list[Rule] = []
        for text in config.sync_rules:
            # rpartition: a pattern may itself contain '=', a strategy never does.
            pattern, _, strategy = text.rpartition("=")
            rules.append(Rule(pattern.strip(), strategy.strip(), _compile(pattern.strip())))
        self.rules = tuple(rules)

    # -- selection ------------------------------------------------------------

    def is_critical(self, key: str) -> bool:
        return any(r.fullmatch(key) for r in self.critical)

    def rule_for(self, key: str) -> Rule | None:
        """The first rule whose pattern matches ``key``, or None."""
        return next((r for r in self.rules if r.matches(key)), None)

    def select_strategy(self, conflict: Conflict) -> str:
        """The design's order: critical, mergeable, a rule, last write wins."""
        if self.is_critical(conflict.key):
            return "user_decides"
        if is_mergeable(conflict.current_value, conflict.proposed_value):
            return "merge"
        if self.rule_for(conflict.key) is not None:
            return "rule_based"
        return "last_write_wins"

    @staticmethod
    def check_strategy(strategy: str) -> str:
        """``strategy`` if statekeep has it, else UnknownStrategyError."""
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise UnknownStrategyError(
                f"unknown conflict strategy {strategy!r}; use one of: "
                f"{', '.join(sorted(STRATEGIES))}", field="strategy")
        return strategy

    def check_rules(self, keys: Iterable[str]) -> None:
        """NoRuleError for the first key no rule matches: ``rule_based`` asked for
        keys it has no answer for fails up front, not only when a conflict happens
        to occur (which would make the error depend on timing)."""
        for key in keys:
            # A key that is not even a string is the store's to refuse, by name.
            if isinstance(key, str) and self.rule_for(key) is None:
                raise self._no_rule(key)

    def _no_rule(self, key: str) -> NoRuleError:
        configured = ", ".join(r.text for r in self.rules) or "none configured"
        return NoRuleError(f"rule_based: no sync rule matches key {key!r} (rules: {configured})",
                           field="key")

    # -- resolution -----------------------------------------------------------

    def resolve(self, conflict: Conflict, strategy: str | None = None) -> Resolution:
        """Decide ``conflict`` with ``strategy`` (or the selected one)."""
        chosen = self.select_strategy(conflict) if strategy is None else (
            self.check_strategy(strategy))
        if chosen == "rule_based":
            rule = self.rule_for(conflict.key)
            if rule is None:
                raise self._no_rule(conflict.key)
            decided = self._apply(rule.strategy, conflict)
            return Resolution("rule_based", decided.action, decided.value, rule.text)
        return self._apply(chosen, conflict)

    def policy(self, strategy: str | None = None) -> Resolve:
        """A ``resolve`` callable for :meth:`~statekeep.store.sync.SyncStore.sync_write`."""
        if strategy is not None:
            self.check_strategy(strategy)

        def resolve(conflict: Conflict) -> Resolution:
            return self.resolve(conflict, strategy)

        return resolve

    def _apply(self, strategy: str, c: Conflict) -> Resolution:
        if strategy == "last_write_wins":
            return Resolution(strategy, "write", c.proposed_value)
        if strategy == "keep_current":
            return Resolution(strategy, "keep", c.current_value)
        if strategy == "user_decides":
            return Resolution(strategy, "pending")
        if strategy == "merge":
            return Resolution(strategy, "write", self.merge_states(c))
        if strategy in ("max", "min"):
            if not (_number(c.current_value) and _number(c.proposed_value)):
                raise NotMergeableError(
                    f"{strategy} needs two numbers for key {c.key!r}, not"
                    f" {type(c.current_value).__name__} and {type(c.proposed_value).__name__}",
                    field="value")
            pick = max if strategy == "max" else min
            # On a tie the stored value stays (1 and 1.0 are equal numbers).
            return Resolution(strategy, "write", pick(c.current_value, c.proposed_value))
        self.check_strategy(strategy)
        raise AssertionError(f"strategy {strategy!r} has no implementation")

    @staticmethod
    def merge_states(conflict: Conflict) -> Any:
        """The seed's name: the merge of the stored and the incoming value."""
        return merge_states(conflict.current_value, conflict.proposed_value)

    @staticmethod
    def escalate_to_user(conflict: Conflict) -> Resolution:
        """The seed's name for ``user_decides``: leave the conflict to a person."""
        del conflict
        return Resolution("user_decides", "pending")

    def apply_rules(self, conflict: Conflict) -> Resolution:
        """The seed's name for ``rule_based``."""
        return self.resolve(conflict, "rule_based")
