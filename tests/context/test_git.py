"""Git state capture against real repositories made with the git executable."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from statekeep.context.git import MAX_DIRTY_ENTRIES, capture_git
from statekeep.errors import CaptureError

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=T",
       "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True)
    return done.stdout.decode().strip()


def make_repo(path: Path, *, commit: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run([*GIT, "init", "-q", str(path)], check=True)
    if commit:
        (path / "a.txt").write_text("a\n")
        (path / "m.txt").write_text("m\n")
        git(path, "add", ".")
        git(path, "commit", "-q", "-m", "first")
    return path


@pytest.fixture(autouse=True)
def no_outer_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep git from finding a repository above the test folder."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


def test_clean_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    el = capture_git(repo)
    assert el is not None
    assert (el.type, el.identifier, el.content) == ("git", "git", None)
    assert el.attributes == {
        "toplevel": ".",
        "branch": "main",
        "head": git(repo, "rev-parse", "HEAD"),
        "detached": False,
        "dirty": [],
        "dirty_count": 0,
        "ahead": None,
        "behind": None,
    }
    assert len(el.attributes["head"]) == 40


def test_dirty_untracked_and_renamed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "mv", "a.txt", "renamed file.txt")
    (repo / "m.txt").write_text("changed\n")
    (repo / "new file.txt").write_text("new\n")
    (repo / "staged.txt").write_text("s\n")
    git(repo, "add", "staged.txt")
    el = capture_git(repo)
    assert el is not None
    dirty = sorted(el.attributes["dirty"], key=lambda e: e["path"])
    assert dirty == [
        {"path": "m.txt", "status": " M"},
        {"path": "new file.txt", "status": "??"},
        {"path": "renamed file.txt", "status": "R ", "orig_path": "a.txt"},
        {"path": "staged.txt", "status": "A "},
    ]
    assert el.attributes["dirty_count"] == 4


def test_deleted_file_and_odd_names(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "a.txt").unlink()
    (repo / "quote\"and\\slash.txt").write_text("x")
    el = capture_git(repo)
    assert el is not None
    assert {"path": "a.txt", "status": " D"} in el.attributes["dirty"]
    assert {"path": "quote\"and\\slash.txt", "status": "??"} in el.attributes["dirty"]


def test_dirty_list_is_capped(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    for i in range(MAX_DIRTY_ENTRIES + 5):
        (repo / f"u{i:04d}.txt").write_text("")
    el = capture_git(repo)
    assert el is not None
    assert el.attributes["dirty_count"] == MAX_DIRTY_ENTRIES + 5
    assert len(el.attributes["dirty"]) == MAX_DIRTY_ENTRIES


def test_detached_head(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach")
    el = capture_git(repo)
    assert el is not None
    assert el.attributes["branch"] is None
    assert el.attributes["detached"] is True
    assert el.attributes["head"] == head


def test_repository_without_commits(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", commit=False)
    (repo / "draft.txt").write_text("x")
    el = capture_git(repo)
    assert el is not None
    attrs = el.attributes
    assert attrs["head"] is None
    assert attrs["branch"] == "main"
    assert attrs["detached"] is False
    assert attrs["dirty"] == [{"path": "draft.txt", "status": "??"}]
    assert (attrs["ahead"], attrs["behind"]) == (None, None)


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert capture_git(plain) is None


def test_inside_git_directory_is_not_a_work_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert capture_git(repo / ".git") is None


def test_git_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert capture_git(repo) is None


def test_subdirectory_reports_absolute_toplevel(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    sub = repo / "sub"
    sub.mkdir()
    (sub / "x.txt").write_text("x")
    el = capture_git(sub)
    assert el is not None
    assert el.attributes["toplevel"] == str(repo.resolve())
    assert el.attributes["dirty"] == [{"path": "sub/", "status": "??"}]  # toplevel-relative


def test_ahead_and_behind_upstream(tmp_path: Path) -> None:
    origin = make_repo(tmp_path / "origin")
    clone = tmp_path / "clone"
    subprocess.run([*GIT, "clone", "-q", str(origin), str(clone)], check=True)
    (clone / "local.txt").write_text("l")
    git(clone, "add", ".")
    git(clone, "commit", "-q", "-m", "local")
    for name in ("r1.txt", "r2.txt"):
        (origin / name).write_text("r")
        git(origin, "add", ".")
        git(origin, "commit", "-q", "-m", name)
    git(clone, "fetch", "-q")
    el = capture_git(clone)
    assert el is not None
    assert (el.attributes["ahead"], el.attributes["behind"]) == (1, 2)
    assert el.attributes["branch"] == "main"


def test_git_dir_in_environment_is_ignored(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo")
    other = make_repo(tmp_path / "other")
    git(other, "checkout", "-q", "-b", "elsewhere")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    el = capture_git(repo)
    assert el is not None
    assert el.attributes["branch"] == "main"


def test_hanging_git_is_a_capture_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text("#!/bin/sh\nexec sleep 10\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    with pytest.raises(CaptureError, match="did not finish"):
        capture_git(repo, timeout=0.3)


def test_repository_owned_by_another_user_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the repository to another user")
    repo = make_repo(tmp_path / "repo")
    for path in [repo, *repo.rglob("*")]:
        os.lchown(path, 65534, 65534)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)  # no safe.directory from the host
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("SUDO_UID", raising=False)
    with pytest.raises(CaptureError, match=r"safe\.directory"):
        capture_git(repo)
