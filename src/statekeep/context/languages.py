"""Which language a file is, by its name: the one table capture and parsing share."""

from __future__ import annotations

from pathlib import PurePosixPath

__all__ = ["PARSED_LANGUAGES", "language_for"]

#: Languages whose source is parsed for functions, classes, imports and calls.
PARSED_LANGUAGES = frozenset({"python", "javascript", "typescript", "tsx"})

_BY_SUFFIX = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".md": "markdown", ".rst": "restructuredtext", ".txt": "text",
    ".json": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".ini": "ini",
    ".cfg": "ini", ".sql": "sql", ".sh": "shell", ".bash": "shell", ".html": "html",
    ".css": "css", ".rs": "rust", ".go": "go", ".c": "c", ".h": "c", ".cc": "cpp",
    ".cpp": "cpp", ".hpp": "cpp", ".java": "java", ".rb": "ruby", ".swift": "swift",
    ".kt": "kotlin", ".cs": "csharp", ".php": "php", ".lua": "lua",
}
_BY_NAME = {"Makefile": "make", "Dockerfile": "dockerfile", "CMakeLists.txt": "cmake"}


def language_for(path: str) -> str | None:
    """The language of a workspace-relative path, or None when unknown."""
    p = PurePosixPath(path)
    if p.name in _BY_NAME:
        return _BY_NAME[p.name]
    if p.name.endswith(".d.ts"):
        return "typescript"
    return _BY_SUFFIX.get(p.suffix.lower())
