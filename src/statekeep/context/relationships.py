"""Relationships between captured items, derived from what capture read.

Everything here is recomputed from stored item values, never from memory of
earlier captures, so the relations table can always be rebuilt from the
context table and a re-capture converges on the same graph:

- ``dependency`` (file -> file): real import resolution, Python and JS/TS;
- ``calls`` (code/file -> code/file): a captured function calls a function
  another captured item defines -- for a file, only into files it imports;
  for a snippet, also when no other item defines a function of that name;
- ``references`` (task -> file): a task's text names a captured file;
- ``defines`` (file -> code): a snippet was taken from a captured file.

Hand-made relations use the type ``related``, which capture never touches.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from statekeep.context.elements import (
    RELATION_STRENGTHS,
    CodeFacts,
    ContextElement,
    ContextRelationship,
    ImportRef,
)
from statekeep.context.languages import PARSED_LANGUAGES

__all__ = [
    "DERIVED_TYPES",
    "PathMatcher",
    "facts_from_attributes",
    "identify_relationships",
    "strings_in",
]

#: Relation types capture owns: recomputed on every capture of a session.
DERIVED_TYPES = ("calls", "defines", "dependency", "references")

# Path-like tokens in free text: "src/a/b.py", "./x.ts", "README.md", "base.py:12".
_PATH_TOKEN = re.compile(r"[\w@+\-./]*[\w\-]\.[A-Za-z0-9]{1,10}\b")


def strings_in(value: Any, limit: int = 10_000) -> Iterator[str]:
    """Every string inside a JSON value (dict keys excluded), up to ``limit``."""
    stack = [value]
    seen = 0
    while stack and seen < limit:
        v = stack.pop()
        if isinstance(v, str):
            seen += 1
            yield v
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)


class PathMatcher:
    """Finds captured file paths named in free text (a task's description).

    A token matches a path exactly, as a unique ``/``-suffix of one
    (``store/base.py`` -> ``src/statekeep/store/base.py``), or as a unique
    base name (``base.py``). An ambiguous base name matches nothing: naming
    ``__init__.py`` says nothing about which package.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        self._paths = set(paths)
        self._by_name: dict[str, list[str]] = {}
        for p in self._paths:  # order is irrelevant: only a single hit is used
            self._by_name.setdefault(p.rpartition("/")[2], []).append(p)

    def find(self, text: str) -> set[str]:
        found: set[str] = set()
        for raw in _PATH_TOKEN.findall(text):
            token = raw.removeprefix("./").strip(".")
            if token in self._paths:
                found.add(token)
                continue
            same_name = self._by_name.get(posixpath.basename(token), ())
            if "/" in token:
                hits = [p for p in same_name if p.endswith("/" + token)]
            else:
                hits = list(same_name)
            if len(hits) == 1:
                found.add(hits[0])
        return found


def facts_from_attributes(attrs: Mapping[str, Any]) -> CodeFacts | None:
    """The parse results stored in an item's value, or None if it holds none."""
    language = attrs.get("language")
    if language not in PARSED_LANGUAGES or "functions" not in attrs:
        return None
    try:
        return CodeFacts(
            language=str(language),
            functions=tuple(str(f) for f in attrs.get("functions") or ()),
            classes=tuple(str(c) for c in attrs.get("classes") or ()),
            imports=tuple(ImportRef.from_json(i) for i in attrs.get("imports") or ()),
            calls=tuple(str(c) for c in attrs.get("calls") or ()),
            error=attrs.get("parse_error"),
        )
    except (TypeError, ValueError):  # a value written by hand in another shape
        return None


@dataclass(frozen=True, slots=True)
class _Item:
    type: str
    key: str
    attrs: Mapping[str, Any]


def identify_relationships(elements: Sequence[ContextElement]) -> list[ContextRelationship]:
    """The derived relationships among ``elements`` (a whole session's items of
    types file, code and task), deterministic and without duplicates."""
    from statekeep.context.imports import ModuleIndex, call_links

    items = [_Item(e.type, e.identifier, e.attributes) for e in elements]
    files = {i.key: i for i in items if i.type == "file"}
    out: dict[tuple[tuple[str, str], tuple[str, str], str], ContextRelationship] = {}

    def add(src: tuple[str, str], dst: tuple[str, str], kind: str) -> None:
        if src != dst:
            out.setdefault((src, dst, kind),
                           ContextRelationship(src, dst, kind, RELATION_STRENGTHS[kind]))

    index = ModuleIndex(files)
    facts: dict[tuple[str, str], CodeFacts] = {}
    for item in items:
        if item.type in ("file", "code") and (f := facts_from_attributes(item.attrs)):
            facts[(item.type, item.key)] = f
    for (kind, key), f in facts.items():
        if kind == "file":
            for target, _ref in index.dependencies(key, f):
                add(("file", key), ("file", target), "dependency")
    # A call names a function, not where it lives. Trust the link when the
    # caller imports the defining file, or when only one item defines the name.
    by_name = {f"{t}\x1f{k}": f for (t, k), f in facts.items()}
    links = call_links(by_name, by_name)
    callees: dict[tuple[str, str], int] = {}
    for caller, _callee, name in links:
        callees[(caller, name)] = callees.get((caller, name), 0) + 1
    for caller, callee, name in links:
        src_t, src_k = caller.split("\x1f", 1)
        dst_t, dst_k = callee.split("\x1f", 1)
        imported = ((src_t, src_k), (dst_t, dst_k), "dependency") in out
        # A file's imports are known, so a file only calls what it imports
        # (``s.encode()`` is not a call into whichever file defines encode).
        # A snippet usually comes without its imports: there a name that only
        # one item defines is the best evidence there is.
        if imported or (src_t != "file" and callees[(caller, name)] == 1):
            add((src_t, src_k), (dst_t, dst_k), "calls")
    matcher = PathMatcher(files)
    for item in items:
        if item.type == "task":
            text = "\n".join(strings_in(dict(item.attrs)))
            for path in matcher.find(text):
                add(("task", item.key), ("file", path), "references")
        elif item.type == "code":
            source = item.attrs.get("path")
            if isinstance(source, str) and source in files:
                add(("file", source), ("code", item.key), "defines")
    return [out[k] for k in sorted(out)]
