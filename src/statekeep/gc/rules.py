"""Retention rules: typed data, parsed from config text, never evaluated as code.

The seed wrote its rules as ``condition="obj.type == 'session' and ..."``
strings for ``eval`` -- anyone who can set a config value could then run code
inside the agent. Here a rule is a small record: an entity type, optional
conditions of three fixed kinds, keep or collect, and a priority. Its text form
(``docs/gc.md``)::

    name:entity[:status=a|b][:age<72h][:importance>0.8]=keep|collect@priority

Rules are tried highest priority first and the first one that matches decides.
Two guards from :class:`~statekeep.config.StateConfig` come before every rule a
user writes (``min_age``, priority 1000: nothing younger than
``gc_min_age_hours`` is collected) or before most of them (``importance``,
priority 500: nothing more important than ``gc_importance_keep``); an item no
rule matches is collected -- it was found unreachable, and nothing retains it.

The same rules are evaluated twice, on purpose: here in Python for one item
(:meth:`RetentionRules.decide`, what ``should_retain`` answers) and compiled to
SQL by :mod:`statekeep.store.gc` for millions of rows. A test holds the two to
the same answers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from statekeep.errors import ConfigError

__all__ = [
    "DEFAULT_RULES",
    "ENTITIES",
    "GUARD_IMPORTANCE",
    "GUARD_MIN_AGE",
    "MAX_PRIORITY",
    "Action",
    "EntityFacts",
    "RetentionRule",
    "RetentionRules",
    "RuleDecision",
    "parse_rule",
    "validate_rules",
]

Action = Literal["keep", "collect"]

#: User rules' priorities are 0..MAX_PRIORITY; the min-age guard sits above them all.
MAX_PRIORITY: Final = 999
GUARD_MIN_AGE: Final = "min_age"
GUARD_IMPORTANCE: Final = "importance"
_GUARD_PRIORITY: Final = {GUARD_MIN_AGE: 1000, GUARD_IMPORTANCE: 500}
#: What no rule matching an item means: the mark phase found it unreachable.
UNREACHABLE: Final = "unreachable"
#: A session a kept decision points at: held by reference, not by a rule.
REFERENCED: Final = "referenced"


@dataclass(frozen=True, slots=True)
class EntityFacts:
    """What a rule may say about one entity type."""

    #: The status values a ``status=`` condition may name (empty: no statuses).
    statuses: frozenset[str]
    #: Statuses the garbage collector never collects, whatever the rules say: a
    #: ``collect`` rule naming one is refused as a mistake.
    never_collected: frozenset[str] = frozenset()
    #: Whether the entity has an importance (``importance>`` is refused otherwise).
    importance: bool = False
    #: True for entities GC never deletes: their rules can only keep (a kept
    #: decision holds the session it points at).
    keep_only: bool = False


#: The entity types a rule may name. What "status", "age" and "importance" are
#: for each one is in docs/gc.md.
ENTITIES: Final[dict[str, EntityFacts]] = {
    "session": EntityFacts(frozenset({"active", "paused", "completed", "failed"}),
                           never_collected=frozenset({"active", "paused"})),
    "context": EntityFacts(frozenset({"live", "expired"}), never_collected=frozenset({"live"}),
                           importance=True),
    "blob": EntityFacts(frozenset({"referenced", "orphaned"}),
                        never_collected=frozenset({"referenced"})),
    "snapshot": EntityFacts(frozenset({"checkpoint", "backup", "recovery", "held"}),
                            never_collected=frozenset({"held"})),
    "decision": EntityFacts(frozenset(), keep_only=True),
    "preference": EntityFacts(frozenset(), keep_only=True),
}

#: The seed's four rules in the typed form, used when ``gc_rules`` is empty;
#: ``{decision_hours}`` is ``gc_decision_retention_hours``.
DEFAULT_RULES: Final = (
    "active_session:session:status=active|paused=keep@100",
    "checkpoint:snapshot:status=held=keep@100",
    "user_preference:preference=keep@95",
    "recent_decision:decision:age<{decision_hours}h=keep@90",
)

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_AGE_UNITS: Final = {"h": 1.0, "d": 24.0}


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """One rule: which items it matches, what it decides, and how early it is asked."""

    name: str
    #: An entity type from :data:`ENTITIES`, or ``*`` (the two guards only).
    entity: str
    action: Action
    priority: int
    #: Matches an item whose status is one of these (None: any status).
    statuses: frozenset[str] | None = None
    #: Matches an item younger than this many hours (None: any age).
    max_age_hours: float | None = None
    #: Matches an item more important than this (None: any importance).
    min_importance: float | None = None

    def applies_to(self, entity: str) -> bool:
        """Whether the rule can match items of ``entity`` at all."""
        if self.entity not in ("*", entity):
            return False
        return self.min_importance is None or ENTITIES[entity].importance

    def matches(self, entity: str, *, statuses: Iterable[str] = (),
                age_hours: float | None = None, importance: float | None = None) -> bool:
        """Whether an item with these facts matches. A fact the item lacks (None)
        never satisfies a condition on it -- the SQL form treats NULL the same way."""
        if not self.applies_to(entity):
            return False
        if self.statuses is not None and self.statuses.isdisjoint(statuses):
            return False
        if self.max_age_hours is not None and (age_hours is None
                                               or not age_hours < self.max_age_hours):
            return False
        return self.min_importance is None or (importance is not None
                                               and importance > self.min_importance)

    def conditions(self) -> str:
        """The rule's conditions as text (``status=a|b, age<72h``), or ``any``."""
        parts: list[str] = []
        if self.statuses is not None:
            parts.append("status=" + "|".join(sorted(self.statuses)))
        if self.max_age_hours is not None:
            parts.append(f"age<{self.max_age_hours:g}h")
        if self.min_importance is not None:
            parts.append(f"importance>{self.min_importance:g}")
        return ", ".join(parts) or "any"

    def text(self) -> str:
        """The rule in its config syntax (what :func:`parse_rule` reads back)."""
        text = self.conditions()
        conds = "" if text == "any" else "".join(f":{c}" for c in text.split(", "))
        return f"{self.name}:{self.entity}{conds}={self.action}@{self.priority}"


@dataclass(frozen=True, slots=True)
class RuleDecision:
    """Keep or collect one item, and the rule (or reason) that decided it."""

    keep: bool
    #: The deciding rule's name, ``unreachable`` (no rule matched) or
    #: ``referenced`` (a kept decision points at the session).
    rule: str
    #: One line for people: why.
    reason: str


def _fail(text: str, why: str) -> ConfigError:
    return ConfigError(f"gc rule {text!r}: {why} (syntax: "
                       "name:entity[:status=a|b][:age<72h][:importance>0.8]=keep|collect@priority)")


def parse_rule(text: str) -> RetentionRule:
    """A rule from its text form; ConfigError naming the rule and what is wrong."""
    if not isinstance(text, str):
        raise ConfigError(f"gc rule {text!r} must be a string")
    raw = text.strip()
    head, at, prio_text = raw.rpartition("@")
    if not at:
        raise _fail(text, "it has no '@priority'")
    prio_text = prio_text.strip()
    if not prio_text.isdigit() or not prio_text.isascii():
        raise _fail(text, f"priority {prio_text!r} is not a whole number from 0 to"
                          f" {MAX_PRIORITY}")
    priority = int(prio_text)
    if priority > MAX_PRIORITY:
        raise _fail(text, f"priority {priority} is above {MAX_PRIORITY} (1000 is the"
                          " min-age guard's, which no rule outranks)")
    cond_text, eq, action = head.rpartition("=")
    action = action.strip()
    if not eq or action not in ("keep", "collect"):
        raise _fail(text, f"the action must be '=keep' or '=collect', not {action!r}")
    parts = [p.strip() for p in cond_text.split(":")]
    if len(parts) < 2:
        raise _fail(text, "it needs a name and an entity type")
    name, entity, *conds = parts
    if not _NAME_RE.fullmatch(name):
        raise _fail(text, f"name {name!r} must be lower-case letters, digits and _,"
                          " starting with a letter")
    if name in _GUARD_PRIORITY:
        raise _fail(text, f"name {name!r} is the built-in guard's")
    facts = ENTITIES.get(entity)
    if facts is None:
        raise _fail(text, f"unknown entity type {entity!r}; use one of"
                          f" {', '.join(sorted(ENTITIES))}")
    statuses: frozenset[str] | None = None
    max_age: float | None = None
    min_importance: float | None = None
    for cond in conds:
        if cond.startswith("status="):
            if statuses is not None:
                raise _fail(text, "it gives status twice")
            statuses = _statuses(text, entity, facts, cond[len("status="):])
        elif cond.startswith("age<"):
            if max_age is not None:
                raise _fail(text, "it gives age twice")
            max_age = _age(text, cond[len("age<"):])
        elif cond.startswith("importance>"):
            if min_importance is not None:
                raise _fail(text, "it gives importance twice")
            if not facts.importance:
                raise _fail(text, f"a {entity} has no importance (only context items do:"
                                  " their relevance_score)")
            min_importance = _importance(text, cond[len("importance>"):])
        else:
            raise _fail(text, f"unknown condition {cond!r}: use status=a|b, age<N(h|d)"
                              " or importance>N")
    if action == "collect":
        if facts.keep_only:
            raise _fail(text, f"garbage collection never deletes a {entity}: its rules can"
                              " only keep")
        if statuses is not None and (bad := statuses & facts.never_collected):
            raise _fail(text, f"a {entity} that is {'|'.join(sorted(bad))} is never"
                              " collected, whatever the rules say")
    return RetentionRule(name, entity, "keep" if action == "keep" else "collect", priority,
                         statuses, max_age, min_importance)


def _statuses(text: str, entity: str, facts: EntityFacts, value: str) -> frozenset[str]:
    if not facts.statuses:
        raise _fail(text, f"a {entity} has no status")
    names = [v.strip() for v in value.split("|")]
    unknown = [n for n in names if n not in facts.statuses]
    if not names or unknown:
        raise _fail(text, f"unknown {entity} status {'|'.join(unknown) or value!r}; use"
                          f" {', '.join(sorted(facts.statuses))}")
    return frozenset(names)


def _age(text: str, value: str) -> float:
    value = value.strip()
    if value.startswith("-"):
        raise _fail(text, f"age {value!r} is negative")
    number, unit = value[:-1], value[-1:]
    if unit not in _AGE_UNITS or not _NUMBER_RE.fullmatch(number):
        raise _fail(text, f"age {value!r} must be a number of hours or days, like 72h or 3d")
    hours = float(number) * _AGE_UNITS[unit]
    if not 0 < hours < 1e7 or not math.isfinite(hours):
        raise _fail(text, f"age {value!r} must be above zero and below a thousand years")
    return hours


def _importance(text: str, value: str) -> float:
    value = value.strip()
    if value.startswith("-"):
        raise _fail(text, f"importance {value!r} is negative")
    if not _NUMBER_RE.fullmatch(value) or not 0.0 <= float(value) <= 1.0:
        raise _fail(text, f"importance {value!r} must be a number from 0 to 1")
    return float(value)


def validate_rules(texts: Sequence[str]) -> tuple[RetentionRule, ...]:
    """Parse every rule of a ``gc_rules`` setting; names must be unique."""
    parsed = tuple(parse_rule(t) for t in texts)
    seen: set[str] = set()
    for text, rule in zip(texts, parsed, strict=True):
        if rule.name in seen:
            raise ConfigError(f"gc rule {text!r}: another rule is already named {rule.name!r}")
        seen.add(rule.name)
    return parsed


class RetentionRules:
    """The ordered rule list one collector applies: guards, then the configured rules."""

    def __init__(self, rules: Iterable[RetentionRule], *, min_age_hours: float = 24.0,
                 importance_keep: float = 0.8) -> None:
        for name, value, top in (("min_age_hours", min_age_hours, 1e7),
                                 ("importance_keep", importance_keep, 1.0)):
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or not 0 <= value <= top):
                raise ConfigError(f"{name} must be a number from 0 to {top:g}, not {value!r}")
        guards: list[RetentionRule] = []
        if min_age_hours > 0:
            guards.append(RetentionRule(GUARD_MIN_AGE, "*", "keep",
                                        _GUARD_PRIORITY[GUARD_MIN_AGE],
                                        max_age_hours=float(min_age_hours)))
        guards.append(RetentionRule(GUARD_IMPORTANCE, "*", "keep",
                                    _GUARD_PRIORITY[GUARD_IMPORTANCE],
                                    min_importance=float(importance_keep)))
        user = list(rules)
        names = [r.name for r in user]
        if len(set(names)) != len(names):
            raise ConfigError("gc rule names must be unique")
        # sorted() is stable: equal priorities keep the configured order, and a
        # guard goes before a user rule of its own priority.
        self.rules: tuple[RetentionRule, ...] = tuple(
            sorted([*guards, *user], key=lambda r: -r.priority))
        self.min_age_hours = float(min_age_hours)
        self.importance_keep = float(importance_keep)

    @classmethod
    def from_texts(cls, texts: Sequence[str], *, min_age_hours: float = 24.0,
                   importance_keep: float = 0.8,
                   decision_hours: float = 72.0) -> RetentionRules:
        """Rules from their text form; no texts means the seed's four (DEFAULT_RULES)."""
        if not texts:
            texts = [t.format(decision_hours=f"{decision_hours:g}") for t in DEFAULT_RULES]
        return cls(validate_rules(texts), min_age_hours=min_age_hours,
                   importance_keep=importance_keep)

    @classmethod
    def from_config(cls, config: object) -> RetentionRules:
        """The rules a :class:`~statekeep.config.StateConfig` describes."""
        from statekeep.config import StateConfig

        if not isinstance(config, StateConfig):
            raise TypeError(f"expected a StateConfig, not {type(config).__name__}")
        return cls.from_texts(config.gc_rules, min_age_hours=config.gc_min_age_hours,
                              importance_keep=config.gc_importance_keep,
                              decision_hours=config.gc_decision_retention_hours)

    def for_entity(self, entity: str) -> tuple[RetentionRule, ...]:
        """The rules that can match ``entity``'s items, in the order they are tried."""
        if entity not in ENTITIES:
            raise ConfigError(f"unknown entity type {entity!r}")
        return tuple(r for r in self.rules if r.applies_to(entity))

    def decide(self, entity: str, *, statuses: Iterable[str] = (),
               age_hours: float | None = None,
               importance: float | None = None) -> RuleDecision:
        """Keep or collect an unreachable item with these facts: the first matching rule
        decides; none matching means collect."""
        facts = tuple(statuses)
        for rule in self.for_entity(entity):
            if rule.matches(entity, statuses=facts, age_hours=age_hours,
                            importance=importance):
                return decision_of(rule)
        return RuleDecision(False, UNREACHABLE, "unreachable, and no rule retains it")

    def describe(self) -> list[str]:
        """One line per rule, in the order they are tried (``statekeep gc --dry-run``)."""
        return [f"{r.priority:>4}  {r.name:<20} {r.entity:<10} {r.conditions():<32}"
                f" {r.action}" for r in self.rules]


def decision_of(rule: RetentionRule) -> RuleDecision:
    """What it means that ``rule`` matched: its action, with a reason people can read."""
    if rule.name == GUARD_MIN_AGE:
        why = f"younger than {rule.max_age_hours:g} h (gc_min_age_hours)"
    elif rule.name == GUARD_IMPORTANCE:
        why = f"importance above {rule.min_importance:g} (gc_importance_keep)"
    else:
        why = f"rule {rule.name} ({rule.entity}: {rule.conditions()})"
    return RuleDecision(rule.action == "keep", rule.name, why)
