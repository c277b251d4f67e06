"""Where the repository stood when context was captured: branch, commit, uncommitted work.

On resume, "which commit was I on and what had I not committed" is often the
first question, and git's own answer is the only trustworthy one -- so this
runs the ``git`` executable rather than reading ``.git`` by hand. It is run
defensively, since it executes inside a folder we do not control:

* argv lists, never a shell, so no path or branch name is ever interpreted;
* ``GIT_TERMINAL_PROMPT=0`` and stdin closed, so a credential prompt can never
  block a capture; a timeout on every call;
* ``LC_ALL=C`` so messages are the same everywhere;
* repository-selecting variables (``GIT_DIR``, ``GIT_WORK_TREE``, ...) are
  removed, so a capture started from inside a git hook reads the workspace,
  not the hook's repository;
* ``GIT_OPTIONAL_LOCKS=0`` so ``git status`` does not take ``index.lock`` and
  collide with the user's own git commands, and ``core.fsmonitor=false`` so a
  repository's config cannot make a capture run a program.

Absent git, or a folder outside any work tree, is normal -- the result is
None. A git that is present but fails or hangs is an error
(:class:`CaptureError`), so the caller can report it instead of silently
storing "no repository".
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from statekeep.context.elements import ContextElement
from statekeep.errors import CaptureError

__all__ = ["MAX_DIRTY_ENTRIES", "capture_git"]

#: Entries of ``dirty`` kept; ``dirty_count`` always has the full number.
MAX_DIRTY_ENTRIES = 1000

# Variables that make git look at another repository than the one at -C.
_REPO_ENV = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
    "GIT_PREFIX", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
)


class _Git:
    """One git executable bound to one folder, with the safe environment."""

    def __init__(self, executable: str, root: Path, timeout: float) -> None:
        self._argv = [executable, "-c", "core.fsmonitor=false", "-C", str(root)]
        self._timeout = timeout
        env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
        env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_OPTIONAL_LOCKS="0")
        self._env = env

    def run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [*self._argv, *args], capture_output=True, stdin=subprocess.DEVNULL,
                env=self._env, timeout=self._timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise CaptureError(
                f"git {args[0]} did not finish within {self._timeout:g} s"
            ) from None
        except OSError as exc:
            raise CaptureError(f"git could not be run: {exc}") from None

    def text(self, *args: str) -> str | None:
        """Stripped stdout of a command, or None when git says no (non-zero exit)."""
        done = self.run(*args)
        if done.returncode != 0:
            return None
        return _decode(done.stdout).strip()


def capture_git(root: Path, *, timeout: float = 5.0) -> ContextElement | None:
    """The git state of the work tree containing ``root``, or None when there is none."""
    executable = shutil.which("git")
    if executable is None:
        return None
    root = Path(root).resolve()
    git = _Git(executable, root, timeout)
    probe = git.run("rev-parse", "--is-inside-work-tree")
    if probe.returncode != 0 or _decode(probe.stdout).strip() != "true":
        _refuse_if_distrusted(probe)
        return None
    toplevel = git.text("rev-parse", "--show-toplevel")
    if toplevel is None:
        return None
    branch = git.text("symbolic-ref", "--quiet", "--short", "HEAD")
    head = git.text("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    dirty, dirty_count = _dirty(git)
    ahead, behind = _ahead_behind(git) if head else (None, None)
    attrs: dict[str, Any] = {
        "toplevel": _shown_toplevel(Path(toplevel), root),
        "branch": branch or None,
        "head": head or None,
        "detached": branch is None,
        "dirty": dirty,
        "dirty_count": dirty_count,
        "ahead": ahead,
        "behind": behind,
    }
    return ContextElement(type="git", identifier="git", attributes=attrs)


def _refuse_if_distrusted(probe: subprocess.CompletedProcess[bytes]) -> None:
    """Turn git's "dubious ownership" refusal into an error instead of "no repository".

    Git refuses repositories owned by another user (common in containers);
    reporting that as "not a repository" would hide a fixable setup problem.
    """
    message = _decode(probe.stderr)
    if "dubious ownership" in message:
        raise CaptureError(
            "git refuses to read this repository because another user owns it; "
            "add it to git's safe.directory setting to capture its state"
        )


def _shown_toplevel(toplevel: Path, root: Path) -> str:
    """Relative to the root when inside it (so stored context is portable), else absolute."""
    resolved = toplevel.resolve()
    if resolved.is_relative_to(root):
        return resolved.relative_to(root).as_posix()
    return str(resolved)


def _dirty(git: _Git) -> tuple[list[dict[str, str]], int]:
    """Uncommitted changes, from the NUL-separated porcelain format.

    Paths are relative to the repository's top level (git's porcelain rule).
    A rename or copy is ``XY NEW\\0OLD\\0``: the old path is kept as ``orig_path``.
    """
    done = git.run("status", "--porcelain=v1", "-z")
    if done.returncode != 0:
        raise CaptureError(f"git status failed: {_first_line(done.stderr)}")
    fields = done.stdout.split(b"\0")
    entries: list[dict[str, str]] = []
    count = 0
    i = 0
    while i < len(fields):
        record = fields[i]
        i += 1
        if len(record) < 4:
            continue  # the empty string after the final NUL
        status = _decode(record[:2])
        entry = {"path": _decode(record[3:]), "status": status}
        if "R" in status or "C" in status:
            entry["orig_path"] = _decode(fields[i]) if i < len(fields) else ""
            i += 1
        count += 1
        if len(entries) < MAX_DIRTY_ENTRIES:
            entries.append(entry)
    return entries, count


def _ahead_behind(git: _Git) -> tuple[int | None, int | None]:
    """Commits ahead of and behind the upstream; (None, None) without an upstream."""
    counts = git.text("rev-list", "--left-right", "--count", "@{upstream}...HEAD")
    if counts is None:
        return None, None
    behind, ahead = counts.split()
    return int(ahead), int(behind)


def _decode(raw: bytes) -> str:
    """Git output as storable text: odd bytes in file names become visible escapes."""
    return raw.decode("utf-8", errors="backslashreplace")


def _first_line(raw: bytes) -> str:
    lines = _decode(raw).strip().splitlines()
    return lines[0] if lines else "no message"
