"""``ContextEngine`` -- the seed's section 4.1 API over the pieces of this package.

The engine owns no state of its own: captured context lives in the store,
relations are derived from it, scores are computed on read. That is what
lets any process, after any crash, rebuild the same context.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from statekeep.config import StateConfig
from statekeep.context.capture import (
    CaptureReport,
    Progress,
    read_paths,
    require_session,
    write_capture,
)
from statekeep.context.elements import (
    CaptureResult,
    ContextElement,
    ContextRelationship,
    Skipped,
)
from statekeep.context.reconstruct import (
    SessionContext,
    build_session_context,
    explain_item,
)
from statekeep.context.relationships import identify_relationships
from statekeep.context.relevance import (
    ItemFacts,
    RelevanceCalculator,
    RelevanceExplanation,
    RelevanceWeights,
)
from statekeep.errors import CaptureError, ValidationError
from statekeep.store.protocol import Store

__all__ = ["SOURCES", "ContextEngine"]

#: What ``capture_context`` accepts as its ``source``.
SOURCES = ("code", "environment", "files", "git", "task", "workspace")


class ContextEngine:
    """Capture, relate, rank and reconstruct a session's context."""

    def __init__(self, store: Store, config: StateConfig | None = None) -> None:
        self.store = store
        self.config = config or store.config
        self.relevance_calculator = RelevanceCalculator(
            RelevanceWeights.from_config(self.config))

    # -- capture -------------------------------------------------------------

    def workspace_root(self, root: str | Path | None = None) -> Path:
        """The folder captured paths must stay inside."""
        chosen = root if root is not None else self.config.workspace_root
        return Path(chosen) if chosen is not None else Path.cwd()

    def capture_paths(self, session_id: str, paths: Sequence[str | Path], *,
                      root: str | Path | None = None, environment: bool = False,
                      git: bool = False, progress: Progress | None = None) -> CaptureReport:
        """Capture files and folders (honouring .gitignore), optionally with the
        environment and git state, as one all-or-nothing write."""
        started = time.perf_counter()
        require_session(self.store, session_id)
        if isinstance(paths, str | Path) or not paths:
            raise ValidationError("paths must be a non-empty list of paths", field="paths")
        ws_root = self.workspace_root(root)
        result = read_paths(ws_root, paths, max_bytes=self.config.capture_max_file_bytes,
                            max_files=self.config.capture_max_files, progress=progress)
        self._add_sources(result, ws_root, environment=environment, git=git)
        return write_capture(self.store, session_id, "files", result, started=started)

    def capture_context(self, session_id: str, source: str, data: Mapping[str, Any], *,
                        root: str | Path | None = None,
                        progress: Progress | None = None) -> CaptureReport:
        """The seed's entry point: ``data`` may hold ``files`` (paths),
        ``code_snippets``, ``task`` and ``environment``, in any combination;
        ``source`` names who captured it and is recorded on the report."""
        started = time.perf_counter()
        if source not in SOURCES:
            raise ValidationError(f"unknown source {source!r}; expected one of"
                                  f" {', '.join(SOURCES)}", field="source")
        if not isinstance(data, Mapping):
            raise ValidationError("data must be a mapping", field="data")
        require_session(self.store, session_id)
        unknown = sorted(set(data) - {"files", "code_snippets", "task", "environment", "git"})
        if unknown:
            raise ValidationError(f"unknown data key(s): {', '.join(unknown)}", field="data")
        ws_root = self.workspace_root(root)
        result = self.extract_context_elements(data, root=ws_root, progress=progress)
        return write_capture(self.store, session_id, source, result, started=started)

    def extract_context_elements(self, data: Mapping[str, Any], *,
                                 root: str | Path | None = None,
                                 progress: Progress | None = None) -> CaptureResult:
        """Read ``data``'s sources into elements; nothing is written."""
        from statekeep.context.snippets import snippet_element, task_element

        ws_root = self.workspace_root(root)
        result = CaptureResult()
        files = data.get("files")
        if files is not None:
            if isinstance(files, str | bytes) or not isinstance(files, Sequence):
                raise ValidationError("files must be a list of paths", field="files")
            read = read_paths(ws_root, list(files),
                              max_bytes=self.config.capture_max_file_bytes,
                              max_files=self.config.capture_max_files, progress=progress)
            result.elements += read.elements
            result.skipped += read.skipped
        snippets = data.get("code_snippets")
        if snippets is not None:
            if isinstance(snippets, str | bytes) or not isinstance(snippets, Sequence):
                raise ValidationError("code_snippets must be a list", field="code_snippets")
            for i, snippet in enumerate(snippets):
                result.elements.append(snippet_element(snippet, i))
        if (task := data.get("task")) is not None:
            result.elements.append(task_element(self.store, task))
        if "environment" in data:
            env = data["environment"]
            self._add_sources(result, ws_root, environment=True, git=False,
                              packages=env.get("packages") if isinstance(env, Mapping) else None)
        if data.get("git"):
            self._add_sources(result, ws_root, environment=False, git=True)
        return result

    @staticmethod
    def _add_sources(result: CaptureResult, root: Path, *, environment: bool, git: bool,
                     packages: Any = None) -> None:
        if environment:
            from statekeep.context.environment import capture_environment
            env = capture_environment(cwd=str(root))
            if isinstance(packages, Mapping) and packages:
                env = ContextElement(env.type, env.identifier, {
                    **env.attributes, "packages": {str(k): str(v) for k, v in packages.items()}})
            result.elements.append(env)
        if git:
            from statekeep.context.git import capture_git
            try:
                found = capture_git(root)
            except CaptureError as exc:  # a timeout, or git refusing the repository
                result.skipped.append(Skipped(".", f"git state not captured: {exc}"))
                return
            if found is None:
                result.skipped.append(Skipped(".", "not a git work tree (or git is missing)"))
            else:
                result.elements.append(found)

    def identify_relationships(
            self, elements: Sequence[ContextElement]) -> list[ContextRelationship]:
        """The derived relations among elements (imports, calls, references)."""
        return identify_relationships(elements)

    # -- relevance and reconstruction -----------------------------------------

    def calculate_relevance(self, facts: ItemFacts) -> float:
        return self.relevance_calculator.score(facts, self.store.now())

    def explain_relevance(self, session_id: str, context_type: str,
                          context_key: str) -> RelevanceExplanation:
        """Why an item scores what it scores: every component of the formula."""
        _item, facts = explain_item(self.store, self.relevance_calculator, session_id,
                                    context_type, context_key)
        return self.relevance_calculator.explain(facts, self.store.now())

    def reconstruct_context(self, session_id: str, *, limit: int | None = None,
                            depth: int | None = None) -> SessionContext:
        """Rebuild the session's context from the store (uncached; the façade
        serves it from the tiers)."""
        from statekeep.context.reconstruct import check_limit
        return build_session_context(
            self.store, self.relevance_calculator, session_id,
            limit=check_limit(self.config.reconstruct_context_limit if limit is None
                              else limit, "limit", 100_000),
            depth=check_limit(self.config.graph_depth if depth is None else depth,
                              "depth", 10))
