"""The workspace boundary: which files a capture may read, and under which names.

A capture is driven by paths an agent hands us, so every path is hostile until
proven otherwise. The root is resolved once; every other path is resolved
*fully* (all symlinks, ``..`` segments) and then compared with
:meth:`Path.is_relative_to` -- a comparison on path components, so a sibling
such as ``/srv/ws-evil`` is never mistaken for a child of ``/srv/ws`` the way a
string-prefix test would.

Walking honours ``.gitignore`` the way git does, because what git ignores is
almost always build output, dependencies and secrets (``.env``) that would
flood or poison the agent's context:

* ``.git/info/exclude`` is the weakest source, then the root ``.gitignore``,
  then each nested ``.gitignore`` for its own subtree; a deeper file overrides
  a shallower one and, within a file, the last matching pattern wins, so
  ``!negation`` re-includes.
* An ignored directory is not entered at all: as in git, nothing below an
  excluded directory can be re-included.
* ``.git`` itself is never walked: object files are useless as context and its
  config may hold credentials.

Things deliberately left out are reported as :class:`Skipped` with a reason, so
that the agent can tell "not there" from "refused"; ignored files are simply
absent (reporting every file under ``node_modules`` would drown the report).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pathspec import GitIgnoreSpec

from statekeep.context.elements import Skipped
from statekeep.errors import CaptureError, InvalidIdError, PathEscapeError, ValidationError
from statekeep.ids import validate_key

__all__ = ["Workspace", "WorkspaceFile"]

# C0 controls, DEL and C1 controls: never part of a name a person typed, and a
# NUL would be silently cut off by the C library underneath.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

#: (base directory, relative to the root -- "" for the root; compiled patterns)
_IgnoreStack = tuple[tuple[str, GitIgnoreSpec], ...]


@dataclass(frozen=True, slots=True)
class WorkspaceFile:
    """A file the walk decided to capture.

    The two paths differ for a symlink: the link's name is what the user sees
    and what becomes the context key, the target is what is actually read.
    """

    rel: str  # posix path relative to the root, used as the context key
    path: Path  # the real file to read (symlink resolved)


class Workspace:
    """A resolved root folder and the rules for reading inside it."""

    def __init__(self, root: str | Path) -> None:
        try:
            resolved = Path(root).resolve(strict=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise CaptureError(
                f"workspace root {str(root)!r} does not exist or cannot be resolved ({exc})"
            ) from None
        if not resolved.is_dir():
            raise CaptureError(f"workspace root {str(root)!r} is not a directory")
        self._root = resolved

    @property
    def root(self) -> Path:
        """The absolute, symlink-free root every captured path must stay under."""
        return self._root

    def __repr__(self) -> str:
        return f"Workspace({str(self._root)!r})"

    # -- single paths -----------------------------------------------------------

    def resolve(self, path: str | Path) -> Path:
        """The real location of ``path``, refused if it is outside the root or missing.

        The escape check runs before the existence check, so a dangling link to
        a file outside the root reports the escape, not "missing".
        """
        text = _checked_text(path)
        real = Path(os.path.realpath(self._absolute(text)))
        if not self._inside(real):
            raise PathEscapeError(text, str(self._root))
        try:
            os.stat(real)
        except FileNotFoundError:
            raise CaptureError(
                f"path {text!r} does not exist in the workspace {str(self._root)!r}"
            ) from None
        except OSError as exc:
            raise CaptureError(f"path {text!r} cannot be accessed: {_os_reason(exc)}") from None
        return real

    def rel(self, path: Path) -> str:
        """The context key of a resolved path inside the root."""
        if not self._inside(path):
            raise PathEscapeError(str(path), str(self._root))
        rel = path.relative_to(self._root).as_posix()
        if rel == ".":
            raise ValidationError("the workspace root itself is not a file", field="path")
        return rel

    # -- walking ----------------------------------------------------------------

    def walk(
        self, paths: Sequence[str | Path], *, max_files: int
    ) -> Iterator[WorkspaceFile | Skipped]:
        """Expand ``paths`` into the files to capture, sorted by relative path.

        Everything is decided before the iterator is returned: escaping paths
        and an over-large capture raise here, so a caller never holds half a
        capture. Naming a file explicitly captures it even when it is
        gitignored (the user asked for it); naming an ignored *directory* walks
        it with only the ignore files found at or below it, for the same reason.
        A named symlink to a directory inside the root is walked at its target.
        """
        if isinstance(paths, str | Path):
            raise ValidationError("paths must be a sequence of paths, not one path",
                                  field="paths")
        if max_files < 0:
            raise ValidationError("max_files must not be negative", field="max_files")
        located = [self._locate(path) for path in paths]  # every escape refused up front
        found = _Found(max_files)
        for link, real in located:
            self._expand(link, real, found)
        return iter(found.ordered())

    def _locate(self, path: str | Path) -> tuple[Path, Path]:
        """(the path as named, last component unresolved; its real location)."""
        text = _checked_text(path)
        candidate = self._absolute(text)
        real = Path(os.path.realpath(candidate))
        if not self._inside(real):
            raise PathEscapeError(text, str(self._root))
        if candidate.name in ("", ".", ".."):
            return real, real
        link = Path(os.path.realpath(candidate.parent)) / candidate.name
        return (link if self._inside(link) else real), real

    def _expand(self, link: Path, real: Path, found: _Found) -> None:
        rel = shown = link.relative_to(self._root).as_posix()  # "." for the root itself
        try:
            st = os.stat(real)
        except FileNotFoundError:
            found.skip(shown, "not found")
            return
        except OSError as exc:
            found.skip(shown, _os_reason(exc))
            return
        real_rel = real.relative_to(self._root).as_posix()
        if ".git" in Path(rel).parts or ".git" in Path(real_rel).parts:
            found.skip(shown, "inside a .git directory, which is never captured")
        elif stat.S_ISDIR(st.st_mode):
            base = "" if real_rel == "." else real_rel
            self._walk_dir(base, self._stack_for(base), found)
        elif not stat.S_ISREG(st.st_mode):
            found.skip(shown, "not a regular file")
        elif problem := _unusable_name(rel):
            found.skip(_display(rel), problem)
        else:
            found.add(WorkspaceFile(rel, real))

    def _stack_for(self, dir_rel: str) -> _IgnoreStack:
        """The ignore rules in force at ``dir_rel`` (excluding its own .gitignore).

        If the directory or one of its parents is ignored, the user named it
        anyway: the rules from above are dropped instead of hiding everything.
        """
        try:
            stack = self._exclude_rules()
            parts = dir_rel.split("/") if dir_rel else []
            for depth in range(len(parts)):
                stack += self._gitignore("/".join(parts[:depth]))
                if _ignored(stack, "/".join(parts[: depth + 1]), is_dir=True):
                    return ()
        except OSError as exc:
            raise CaptureError(
                f"an ignore file above {dir_rel or '.'!r} cannot be read ({_os_reason(exc)}); "
                "refusing to capture what it may hide"
            ) from None
        return stack

    def _walk_dir(self, start: str, stack: _IgnoreStack, found: _Found) -> None:
        pending: list[tuple[str, _IgnoreStack]] = [(start, stack)]
        while pending:
            dir_rel, inherited = pending.pop()
            shown = dir_rel or "."
            try:
                with os.scandir(self._root / dir_rel) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
            except OSError as exc:
                found.skip(_display(shown), _os_reason(exc))
                continue
            try:
                rules = inherited + self._gitignore(dir_rel)
            except OSError as exc:
                # Fail closed: what an unreadable .gitignore hides is unknown.
                found.skip(_display(shown), f".gitignore unreadable ({_os_reason(exc)})")
                continue
            for entry in entries:
                if entry.name == ".git":
                    continue
                rel = f"{dir_rel}/{entry.name}" if dir_rel else entry.name
                subdir = self._visit(entry, rel, rules, found)
                if subdir:
                    pending.append((rel, rules))

    def _visit(self, entry: os.DirEntry[str], rel: str, rules: _IgnoreStack,
               found: _Found) -> bool:
        """Handle one directory entry; True when it is a directory to descend into."""
        try:
            is_link = entry.is_symlink()
            is_dir = not is_link and entry.is_dir(follow_symlinks=False)
            is_file = not is_link and entry.is_file(follow_symlinks=False)
        except OSError as exc:
            found.skip(_display(rel), _os_reason(exc))
            return False
        if _ignored(rules, rel, is_dir=is_dir):
            return False
        if problem := _unusable_name(rel):
            found.skip(_display(rel), problem)
        elif is_dir:
            return True
        elif is_file:
            found.add(WorkspaceFile(rel, Path(entry.path)))
        elif is_link:
            self._visit_link(rel, Path(entry.path), found)
        else:
            found.skip(rel, "not a regular file")
        return False

    def _visit_link(self, rel: str, link: Path, found: _Found) -> None:
        target = Path(os.path.realpath(link))
        if not self._inside(target):
            found.skip(rel, "symlink points outside the workspace")
            return
        if ".git" in target.relative_to(self._root).parts:
            found.skip(rel, "symlink points into a .git directory")
            return
        try:
            st = os.stat(target)
        except FileNotFoundError:
            found.skip(rel, "broken symlink")
            return
        except OSError as exc:
            found.skip(rel, _os_reason(exc))
            return
        if stat.S_ISDIR(st.st_mode):
            found.skip(rel, "symlinked directory not followed")
        elif stat.S_ISREG(st.st_mode):
            found.add(WorkspaceFile(rel, target))
        else:
            found.skip(rel, "not a regular file")

    # -- ignore files -------------------------------------------------------------

    def _exclude_rules(self) -> _IgnoreStack:
        exclude = self._root / ".git" / "info" / "exclude"
        return _load_rules(exclude, "")

    def _gitignore(self, dir_rel: str) -> _IgnoreStack:
        return _load_rules(self._root / dir_rel / ".gitignore", dir_rel)

    # -- helpers ------------------------------------------------------------------

    def _absolute(self, text: str) -> Path:
        path = Path(text)
        return path if path.is_absolute() else self._root / path

    def _inside(self, path: Path) -> bool:
        return path.is_relative_to(self._root)


class _Found:
    """What a walk collected: files deduplicated by key, refusing past the cap."""

    def __init__(self, max_files: int) -> None:
        self._max_files = max_files
        self._files: dict[str, WorkspaceFile] = {}
        self._skipped: dict[str, Skipped] = {}

    def add(self, wf: WorkspaceFile) -> None:
        if wf.rel in self._files:
            return
        self._files[wf.rel] = wf
        if len(self._files) > self._max_files:
            raise CaptureError(
                f"the capture would read more than {self._max_files} files; name fewer "
                "paths, add patterns to .gitignore, or raise capture_max_files"
            )

    def skip(self, path: str, reason: str) -> None:
        self._skipped.setdefault(path, Skipped(path, reason))

    def ordered(self) -> list[WorkspaceFile | Skipped]:
        items: list[WorkspaceFile | Skipped] = [*self._files.values(), *self._skipped.values()]
        items.sort(key=lambda i: (i.rel if isinstance(i, WorkspaceFile) else i.path))
        return items


def _load_rules(path: Path, base: str) -> _IgnoreStack:
    """The compiled patterns of one ignore file, or nothing when there is none.

    A symlinked ignore file is not read, as git does not: it could point
    anywhere. Any other OSError propagates: an ignore file that exists but
    cannot be read must not silently let through what it was meant to hide.
    """
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return ()
    if not stat.S_ISREG(st.st_mode):
        return ()
    text = path.read_bytes().decode("utf-8", errors="replace")
    spec = GitIgnoreSpec.from_lines(text.splitlines())
    return ((base, spec),) if len(spec) else ()


def _ignored(rules: _IgnoreStack, rel: str, *, is_dir: bool) -> bool:
    """Git's verdict: the deepest ignore file with a matching pattern decides."""
    for base, spec in reversed(rules):
        sub = rel[len(base) + 1:] if base else rel
        verdict = spec.check_file(sub + "/" if is_dir else sub).include
        if verdict is not None:
            return verdict
    return False


def _checked_text(path: str | Path) -> str:
    if not isinstance(path, str | Path):
        raise ValidationError(
            f"path must be a str or Path, not {type(path).__name__}", field="path"
        )
    text = str(path)
    if not text:
        raise ValidationError("path must not be empty", field="path")
    if _CONTROL_RE.search(text):
        raise ValidationError(
            f"path {text!r} contains a control character (NUL, newline, escape, ...)",
            field="path",
        )
    return text


def _unusable_name(rel: str) -> str | None:
    """Why a file name cannot become a context key, or None when it can.

    Checked with the store's own key rule so that one odd file name is
    skipped here instead of failing the whole capture at write time.
    """
    try:
        validate_key(rel, "path")
    except InvalidIdError as exc:
        return f"file name unusable as a key: {exc}"
    return None


def _display(rel: str) -> str:
    """A printable, storable spelling of a name that may hold odd bytes."""
    raw = rel.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    text = _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= 500 else text[:497] + "..."


def _os_reason(exc: OSError) -> str:
    """A short, stable reason for an OS error (no paths, no errno numbers)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return (exc.strerror or type(exc).__name__).lower()
