"""The workspace boundary and the .gitignore-aware walk, on real files and symlinks."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from statekeep.context.elements import Skipped
from statekeep.context.workspace import Workspace, WorkspaceFile
from statekeep.errors import CaptureError, PathEscapeError, ValidationError

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=T",
       "-c", "init.defaultBranch=main"]


def write(root: Path, rel: str, data: bytes = b"x\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def rels(items: Iterable[WorkspaceFile | Skipped]) -> list[str]:
    return [i.rel for i in items if isinstance(i, WorkspaceFile)]


def skips(items: Iterable[WorkspaceFile | Skipped]) -> dict[str, str]:
    return {i.path: i.reason for i in items if isinstance(i, Skipped)}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def ws(root: Path) -> Workspace:
    return Workspace(root)


# -- the root -------------------------------------------------------------------


def test_root_is_resolved_through_symlinks(root: Path, tmp_path: Path) -> None:
    link = tmp_path / "link-to-ws"
    link.symlink_to(root)
    assert Workspace(link).root == root.resolve()
    assert Workspace(str(link)).root.is_absolute()


def test_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="does not exist"):
        Workspace(tmp_path / "nope")


def test_file_as_root_is_refused(tmp_path: Path) -> None:
    f = write(tmp_path, "file.txt")
    with pytest.raises(CaptureError, match="not a directory"):
        Workspace(f)


# -- resolve ----------------------------------------------------------------------


def test_resolve_relative_and_absolute_inside(ws: Workspace, root: Path) -> None:
    f = write(root, "a/b.txt")
    assert ws.resolve("a/b.txt") == f
    assert ws.resolve(f) == f
    assert ws.resolve("a/../a/b.txt") == f


@pytest.mark.parametrize("path", ["../outside.txt", "a/../../outside.txt", "/etc/passwd"])
def test_resolve_refuses_escapes(ws: Workspace, root: Path, path: str) -> None:
    write(root.parent, "outside.txt")
    write(root, "a/keep.txt")
    with pytest.raises(PathEscapeError) as info:
        ws.resolve(path)
    assert info.value.path == path
    assert info.value.root == str(root)
    assert info.value.field == "path"


def test_resolve_refuses_symlink_out(ws: Workspace, root: Path) -> None:
    (root / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(PathEscapeError):
        ws.resolve("passwd")


def test_resolve_refuses_symlink_chain_escaping(ws: Workspace, root: Path) -> None:
    # inside -> inside -> outside: each hop looks harmless on its own.
    (root / "hop2").symlink_to("/etc/passwd")
    (root / "hop1").symlink_to("hop2")
    with pytest.raises(PathEscapeError):
        ws.resolve("hop1")


def test_resolve_refuses_dangling_link_out_as_escape(ws: Workspace, root: Path) -> None:
    (root / "dangling").symlink_to("/nonexistent-statekeep-target/x")
    with pytest.raises(PathEscapeError):
        ws.resolve("dangling")


def test_prefix_sibling_is_outside(tmp_path: Path) -> None:
    # "/x/ws-evil" starts with the string "/x/ws" but is not inside it.
    base = tmp_path / "x"
    good = base / "ws"
    evil = base / "ws-evil"
    good.mkdir(parents=True)
    secret = write(evil, "secret.txt")
    (good / "sneaky").symlink_to(secret)
    ws = Workspace(good)
    with pytest.raises(PathEscapeError):
        ws.resolve(secret)
    with pytest.raises(PathEscapeError):
        ws.resolve("../ws-evil/secret.txt")
    with pytest.raises(PathEscapeError):
        ws.resolve("sneaky")
    with pytest.raises(PathEscapeError):
        ws.rel(secret)


@pytest.mark.parametrize("path", ["a\x00b", "line\nbreak", "esc\x1b[2J", "tab\there", "c1\x85"])
def test_resolve_refuses_control_characters(ws: Workspace, path: str) -> None:
    with pytest.raises(ValidationError) as info:
        ws.resolve(path)
    assert type(info.value) is ValidationError
    assert info.value.field == "path"


def test_resolve_missing_names_the_path(ws: Workspace) -> None:
    with pytest.raises(CaptureError, match=r"no-such-file\.txt") as info:
        ws.resolve("no-such-file.txt")
    assert not isinstance(info.value, PathEscapeError)


def test_resolve_symlink_loop_is_a_capture_error(ws: Workspace, root: Path) -> None:
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    with pytest.raises(CaptureError):
        ws.resolve("loop1")


def test_rel(ws: Workspace, root: Path) -> None:
    f = write(root, "a/b c.txt")
    assert ws.rel(f) == "a/b c.txt"
    with pytest.raises(ValidationError):
        ws.rel(root)
    with pytest.raises(PathEscapeError):
        ws.rel(root.parent / "elsewhere.txt")


# -- walk: basics -------------------------------------------------------------------


def test_walk_is_sorted_and_complete(ws: Workspace, root: Path) -> None:
    for rel in ["z.txt", "a/b/c.py", "a/a.md", "m/x.txt", "b.txt"]:
        write(root, rel)
    items = list(ws.walk(["."], max_files=100))
    assert rels(items) == sorted(["z.txt", "a/b/c.py", "a/a.md", "m/x.txt", "b.txt"])
    assert all(isinstance(i, WorkspaceFile) for i in items)
    by_rel = {i.rel: i for i in items if isinstance(i, WorkspaceFile)}
    assert by_rel["a/b/c.py"].path == root / "a" / "b" / "c.py"
    assert list(ws.walk(["."], max_files=100)) == items


def test_walk_refuses_a_single_string(ws: Workspace) -> None:
    with pytest.raises(ValidationError):
        ws.walk(".", max_files=10)  # type: ignore[arg-type]


def test_walk_deduplicates_overlapping_arguments(ws: Workspace, root: Path) -> None:
    write(root, "a.txt")
    write(root, "sub/b.txt")
    items = list(ws.walk(["a.txt", ".", "sub", "sub/b.txt", str(root / "a.txt")],
                         max_files=100))
    assert rels(items) == ["a.txt", "sub/b.txt"]


def test_walk_missing_named_path_is_skipped(ws: Workspace, root: Path) -> None:
    write(root, "a.txt")
    items = list(ws.walk(["a.txt", "missing.txt", "gone/dir"], max_files=10))
    assert rels(items) == ["a.txt"]
    assert skips(items) == {"missing.txt": "not found", "gone/dir": "not found"}


def test_walk_refuses_escapes_before_anything(ws: Workspace, root: Path) -> None:
    write(root, "a.txt")
    write(root.parent, "outside.txt")
    for bad in ["../outside.txt", str(root.parent / "outside.txt"), "/etc/passwd"]:
        with pytest.raises(PathEscapeError):
            ws.walk(["a.txt", bad], max_files=10)


def test_walk_refuses_named_symlink_escaping(ws: Workspace, root: Path) -> None:
    (root / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(PathEscapeError):
        ws.walk(["passwd"], max_files=10)


def test_walk_refuses_prefix_sibling(tmp_path: Path) -> None:
    good = tmp_path / "x" / "ws"
    good.mkdir(parents=True)
    secret = write(tmp_path / "x" / "ws-evil", "secret.txt")
    with pytest.raises(PathEscapeError):
        Workspace(good).walk([secret], max_files=10)


def test_walk_refuses_more_than_max_files_up_front(ws: Workspace, root: Path) -> None:
    for i in range(5):
        write(root, f"f{i}.txt")
    with pytest.raises(CaptureError, match="more than 4 files"):
        ws.walk(["."], max_files=4)
    assert len(rels(ws.walk(["."], max_files=5))) == 5
    with pytest.raises(CaptureError):
        ws.walk(["f0.txt", "f1.txt"], max_files=1)


def test_walk_rejects_negative_max_files(ws: Workspace) -> None:
    with pytest.raises(ValidationError):
        ws.walk(["."], max_files=-1)


# -- walk: .gitignore -----------------------------------------------------------------

IGNORE_TREE = {
    ".gitignore": "*.log\n!keep.log\nbuild/\n/top.txt\ndist/*\n!dist/keep.txt\n"
                  "cache/\n!cache/important.txt\n",
    "app.log": "", "keep.log": "", "top.txt": "", "x.tmp": "", "main.py": "",
    "build/out.bin": "", "build/sub/deep.txt": "",
    "dist/keep.txt": "", "dist/bundle.js": "",
    "cache/important.txt": "", "cache/other.txt": "",
    "sub/.gitignore": "!debug.log\n*.tmp\nlocal/\n",
    "sub/debug.log": "", "sub/other.log": "", "sub/x.tmp": "", "sub/top.txt": "",
    "sub/local/a.txt": "", "sub/code.py": "",
    "sub/inner/.gitignore": "*.log\n!*.md\n",
    "sub/inner/debug.log": "", "sub/inner/readme.md": "", "sub/inner/z.txt": "",
    "other/local/kept.txt": "",
}
EXPECTED_KEPT = sorted([
    ".gitignore", "keep.log", "x.tmp", "main.py", "dist/keep.txt",
    "sub/.gitignore", "sub/debug.log", "sub/top.txt", "sub/code.py",
    "sub/inner/.gitignore", "sub/inner/readme.md", "sub/inner/z.txt",
    "other/local/kept.txt",
])


def make_tree(root: Path, tree: dict[str, str]) -> None:
    for rel, text in tree.items():
        write(root, rel, text.encode())


def test_nested_gitignore_with_negations(ws: Workspace, root: Path) -> None:
    make_tree(root, IGNORE_TREE)
    items = list(ws.walk(["."], max_files=100))
    assert rels(items) == EXPECTED_KEPT
    assert skips(items) == {}  # ignored files are left out silently


def test_walk_agrees_with_git(ws: Workspace, root: Path) -> None:
    make_tree(root, IGNORE_TREE)
    subprocess.run([*GIT, "init", "-q", str(root)], check=True)
    write(root, ".git/info/exclude", b"main.py\n")
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "--others", "--cached", "--exclude-standard",
         "-z"], check=True, capture_output=True,
    ).stdout.decode().split("\0")
    expected = sorted(p for p in listed if p)
    assert "main.py" not in expected
    assert rels(ws.walk(["."], max_files=100)) == expected


def test_git_directory_is_never_walked(ws: Workspace, root: Path) -> None:
    subprocess.run([*GIT, "init", "-q", str(root)], check=True)
    write(root, "a.txt")
    write(root, "sub/.git", b"gitdir: elsewhere\n")  # a submodule's gitlink file
    items = list(ws.walk(["."], max_files=1000))
    assert rels(items) == ["a.txt"]
    named = list(ws.walk([".git/config", ".git"], max_files=1000))
    assert rels(named) == []
    assert set(skips(named)) == {".git/config", ".git"}
    assert all(".git" in reason for reason in skips(named).values())


def test_info_exclude_applies(ws: Workspace, root: Path) -> None:
    write(root, ".git/info/exclude", b"*.secret\n")
    write(root, "a.secret")
    write(root, "sub/b.secret")
    write(root, "c.txt")
    assert rels(ws.walk(["."], max_files=10)) == ["c.txt"]


def test_gitignore_overrides_info_exclude(ws: Workspace, root: Path) -> None:
    write(root, ".git/info/exclude", b"*.secret\n")
    write(root, ".gitignore", b"!wanted.secret\n")
    write(root, "wanted.secret")
    write(root, "other.secret")
    assert rels(ws.walk(["."], max_files=10)) == [".gitignore", "wanted.secret"]


def test_named_ignored_file_is_captured(ws: Workspace, root: Path) -> None:
    make_tree(root, IGNORE_TREE)
    items = list(ws.walk(["app.log", "build/out.bin", "sub/inner/debug.log"], max_files=10))
    assert rels(items) == ["app.log", "build/out.bin", "sub/inner/debug.log"]


def test_named_subdirectory_honours_rules_from_above(ws: Workspace, root: Path) -> None:
    make_tree(root, IGNORE_TREE)
    assert rels(ws.walk(["sub"], max_files=100)) == [
        "sub/.gitignore", "sub/code.py", "sub/debug.log",
        "sub/inner/.gitignore", "sub/inner/readme.md", "sub/inner/z.txt", "sub/top.txt",
    ]


def test_named_ignored_directory_is_walked(ws: Workspace, root: Path) -> None:
    make_tree(root, IGNORE_TREE)
    assert rels(ws.walk(["build"], max_files=100)) == ["build/out.bin", "build/sub/deep.txt"]


def test_unreadable_gitignore_skips_its_directory(
    ws: Workspace, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(root, "sub/.gitignore", b"secret.txt\n")
    write(root, "sub/secret.txt")
    write(root, "a.txt")
    real_read = Path.read_bytes

    def deny(self: Path) -> bytes:
        if self.name == ".gitignore":
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    items = list(ws.walk(["."], max_files=10))
    assert rels(items) == ["a.txt"]
    assert "permission denied" in skips(items)["sub"]


# -- walk: symlinks and special files ---------------------------------------------------


def test_walk_symlinks(ws: Workspace, root: Path, tmp_path: Path) -> None:
    target = write(root, "real/target.txt")
    outside = write(tmp_path, "outside/secret.txt")
    (root / "link.txt").symlink_to("real/target.txt")
    (root / "out.txt").symlink_to(outside)
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "chain1").symlink_to("chain2")
    (root / "chain2").symlink_to(outside)
    (root / "dirlink").symlink_to("real", target_is_directory=True)
    (root / "outdir").symlink_to(outside.parent, target_is_directory=True)
    (root / "broken").symlink_to("nothing-here")
    (root / "loop").symlink_to("loop")
    items = list(ws.walk(["."], max_files=100))
    files = {i.rel: i.path for i in items if isinstance(i, WorkspaceFile)}
    assert files == {"link.txt": target, "real/target.txt": target}
    assert skips(items) == {
        "out.txt": "symlink points outside the workspace",
        "passwd": "symlink points outside the workspace",
        "chain1": "symlink points outside the workspace",
        "chain2": "symlink points outside the workspace",
        "outdir": "symlink points outside the workspace",
        "dirlink": "symlinked directory not followed",
        "broken": "broken symlink",
        "loop": "symlink loop",
    }


def test_named_symlink_file_keeps_the_link_name(ws: Workspace, root: Path) -> None:
    target = write(root, "real/target.txt")
    (root / "link.txt").symlink_to("real/target.txt")
    assert list(ws.walk(["link.txt"], max_files=10)) == [WorkspaceFile("link.txt", target)]


def test_named_symlinked_directory_is_walked_at_its_target(ws: Workspace, root: Path) -> None:
    write(root, "real/a.txt")
    (root / "dirlink").symlink_to("real", target_is_directory=True)
    assert rels(ws.walk(["dirlink"], max_files=10)) == ["real/a.txt"]


def test_fifo_and_socket_are_not_regular_files(ws: Workspace, root: Path) -> None:
    os.mkfifo(root / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock"))
        write(root, "a.txt")
        items = list(ws.walk(["."], max_files=10))
        assert rels(items) == ["a.txt"]
        assert skips(items) == {"pipe": "not a regular file", "sock": "not a regular file"}
        assert skips(ws.walk(["pipe"], max_files=10)) == {"pipe": "not a regular file"}
    finally:
        sock.close()


def test_unreadable_directory_is_skipped(ws: Workspace, root: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every directory regardless of permissions")
    write(root, "locked/a.txt")
    write(root, "b.txt")
    (root / "locked").chmod(0)
    try:
        items = list(ws.walk(["."], max_files=10))
    finally:
        (root / "locked").chmod(0o755)
    assert rels(items) == ["b.txt"]
    assert skips(items) == {"locked": "permission denied"}


def test_directory_failing_to_list_is_skipped(
    ws: Workspace, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same path as above, reachable even when the tests run as root.
    write(root, "locked/a.txt")
    write(root, "b.txt")
    real_scandir = os.scandir

    def scandir(path: str | Path) -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    items = list(ws.walk(["."], max_files=10))
    assert rels(items) == ["b.txt"]
    assert skips(items) == {"locked": "permission denied"}


def test_unstorable_file_names_are_skipped_not_fatal(ws: Workspace, root: Path) -> None:
    write(root, "ok.txt")
    write(root, "bad\nname.txt")
    with open(os.fsencode(root) + b"/caf\xe9.txt", "wb") as fh:  # not UTF-8
        fh.write(b"x")
    items = list(ws.walk(["."], max_files=10))
    assert rels(items) == ["ok.txt"]
    skipped = skips(items)
    assert set(skipped) == {"bad\\x0aname.txt", "caf\\xe9.txt"}
    assert all("unusable" in reason for reason in skipped.values())
