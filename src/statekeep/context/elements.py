"""What capture produces, before anything touches the store.

Capture is split from persistence on purpose: every source (files, code,
tasks, environment, git) is read into these plain records first, and only a
complete set is written, in one transaction -- so a capture that fails half
way writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RELATION_STRENGTHS",
    "CaptureResult",
    "CodeFacts",
    "ContextElement",
    "ContextRelationship",
    "ImportRef",
    "Skipped",
]

#: Relation types and their default strengths. ``dependency`` and ``calls``
#: carry the seed's numbers; ``references`` (a task naming a file) is the
#: strongest signal a task gives; ``defines`` links a file to a snippet taken
#: from it; ``related`` is what a person or agent asserts by hand.
RELATION_STRENGTHS: dict[str, float] = {
    "dependency": 0.8,
    "calls": 0.9,
    "references": 1.0,
    "defines": 0.6,
    "related": 0.5,
}


@dataclass(frozen=True, slots=True)
class ImportRef:
    """One import statement, unresolved.

    ``module`` is the specifier as written: dotted for Python with one leading
    dot per relative level (``"pkg.mod"``, ``".sibling"``, ``".."``), the string
    literal for JavaScript/TypeScript (``"./util"``, ``"react"``). ``names`` are
    the names taken from it (Python ``from m import a, b``; JS named imports).
    """

    module: str
    names: tuple[str, ...] = ()

    def to_json(self) -> list[Any]:
        return [self.module, list(self.names)]

    @classmethod
    def from_json(cls, raw: Any) -> ImportRef:
        module, names = raw
        return cls(str(module), tuple(str(n) for n in names))


@dataclass(frozen=True, slots=True)
class CodeFacts:
    """What parsing a piece of source text found.

    ``functions`` are qualified (``"f"``, ``"Class.method"``); ``calls`` are
    the called names as written, last component only (``obj.save()`` ->
    ``"save"``), which is what matching against definitions needs. ``error``
    is set when the text did not parse: the facts are then what could be
    recovered (tree-sitter recovers; Python's ``ast`` gives nothing).
    """

    language: str
    functions: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    imports: tuple[ImportRef, ...] = ()
    calls: tuple[str, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "functions": list(self.functions),
            "classes": list(self.classes),
            "imports": [i.to_json() for i in self.imports],
            "calls": list(self.calls),
            "parse_error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ContextElement:
    """One item about to become a context row.

    ``type`` and ``identifier`` become ``context_type`` and ``context_key``;
    ``attributes`` (JSON) become the value. ``content`` is file text kept
    deduplicated in the blob table, never inline.
    """

    type: str
    identifier: str
    attributes: dict[str, Any]
    content: bytes | None = None


@dataclass(frozen=True, slots=True)
class ContextRelationship:
    """A typed, weighted edge between two elements, named by (type, identifier)."""

    source: tuple[str, str]
    target: tuple[str, str]
    type: str
    strength: float


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something capture left out, and why (unreadable, ignored, escapes, ...)."""

    path: str
    reason: str


@dataclass(slots=True)
class CaptureResult:
    """What one capture read: the elements to store and what it skipped."""

    elements: list[ContextElement] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
