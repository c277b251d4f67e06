"""Reading files into context elements, and drift against the disk, on real files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from statekeep.context.elements import CodeFacts, ContextElement, ImportRef, Skipped
from statekeep.context.files import Drift, check_drift, read_file
from statekeep.context.workspace import Workspace, WorkspaceFile
from statekeep.errors import ValidationError

MIB = 1 << 20


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


def put(root: Path, rel: str, data: bytes) -> WorkspaceFile:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return WorkspaceFile(rel, path)


def element(result: ContextElement | Skipped) -> ContextElement:
    assert isinstance(result, ContextElement), result
    return result


# -- read_file ----------------------------------------------------------------------


def test_text_file(root: Path) -> None:
    data = "# notes\nhéllo wörld\nlast line without newline".encode()
    wf = put(root, "docs/notes.md", data)
    el = element(read_file(wf, max_bytes=MIB))
    st = os.stat(wf.path)
    assert el.type == "file"
    assert el.identifier == "docs/notes.md"
    assert el.content == data
    assert el.attributes == {
        "path": "docs/notes.md",
        "size": len(data),
        "mtime": st.st_mtime,
        "sha256": hashlib.sha256(data).hexdigest(),
        "binary": False,
        "encoding": "utf-8",
        "language": "markdown",
        "lines": 3,
        "content": "blob",
        "content_note": None,
    }
    assert json.loads(json.dumps(el.attributes)) == el.attributes


@pytest.mark.parametrize(("data", "lines"), [(b"", 0), (b"\n", 1), (b"a", 1), (b"a\nb\n", 2)])
def test_line_count(root: Path, data: bytes, lines: int) -> None:
    el = element(read_file(put(root, "f.txt", data), max_bytes=MIB))
    assert el.attributes["lines"] == lines
    assert el.content == data


def test_utf8_bom_is_text(root: Path) -> None:
    data = b"\xef\xbb\xbfdef f():\n    pass\n"
    seen: list[str] = []

    def parse(language: str, text: str) -> CodeFacts:
        seen.append(text)
        return CodeFacts(language, functions=("f",))

    el = element(read_file(put(root, "bom.py", data), max_bytes=MIB, parse=parse))
    assert el.attributes["encoding"] == "utf-8"
    assert el.content == data  # raw bytes, BOM included
    assert seen == ["def f():\n    pass\n"]  # the parser sees text, BOM stripped


def test_binary_file(root: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 10
    el = element(read_file(put(root, "img.png", data), max_bytes=MIB))
    assert el.content is None
    attrs = el.attributes
    assert (attrs["binary"], attrs["encoding"], attrs["lines"]) == (True, None, None)
    assert (attrs["content"], attrs["content_note"]) == (None, "binary")
    assert attrs["sha256"] == hashlib.sha256(data).hexdigest()
    assert attrs["size"] == len(data)


def test_nul_after_the_first_8k_is_not_binary(root: Path) -> None:
    data = b"a" * 9000 + b"\x00tail\n"
    el = element(read_file(put(root, "late.txt", data), max_bytes=MIB))
    assert el.attributes["binary"] is False
    assert el.content == data


def test_non_utf8_text_is_kept_by_hash_only(root: Path) -> None:
    data = "café crème\n".encode("latin-1")
    el = element(read_file(put(root, "latin.txt", data), max_bytes=MIB))
    assert el.content is None
    assert el.attributes["content_note"] == "not UTF-8 text"
    assert el.attributes["encoding"] is None
    assert el.attributes["binary"] is False
    assert el.attributes["sha256"] == hashlib.sha256(data).hexdigest()


def test_truncated_utf8_at_end_is_not_utf8(root: Path) -> None:
    data = "ok é".encode()[:-1]  # a lone lead byte at the very end
    el = element(read_file(put(root, "cut.txt", data), max_bytes=MIB))
    assert el.attributes["content_note"] == "not UTF-8 text"


def test_multibyte_character_across_chunk_boundary(root: Path) -> None:
    data = b"a" * (MIB - 1) + "é".encode() + b"\nend\n"  # é straddles the 1 MiB read
    el = element(read_file(put(root, "wide.txt", data), max_bytes=4 * MIB))
    assert el.attributes["encoding"] == "utf-8"
    assert el.attributes["lines"] == 2
    assert el.content == data


def test_huge_file_is_hashed_not_kept(root: Path) -> None:
    chunk = os.urandom(64 * 1024).hex().encode() + b"\n"  # text, 128 KiB per line
    wf = put(root, "big.log", chunk * 40)  # ~5 MiB
    el = element(read_file(wf, max_bytes=1000))
    assert el.content is None
    assert el.attributes["content"] is None
    assert el.attributes["content_note"] == "larger than 1000 bytes"
    assert el.attributes["sha256"] == hashlib.sha256(wf.path.read_bytes()).hexdigest()
    assert el.attributes["size"] == wf.path.stat().st_size
    assert el.attributes["encoding"] == "utf-8"
    assert el.attributes["lines"] == 40


def test_size_limit_is_inclusive(root: Path) -> None:
    wf = put(root, "edge.txt", b"x" * 100)
    assert element(read_file(wf, max_bytes=100)).content == b"x" * 100
    assert element(read_file(wf, max_bytes=99)).content is None


def test_parse_facts_are_merged(root: Path) -> None:
    calls: list[tuple[str, str]] = []

    def parse(language: str, text: str) -> CodeFacts:
        calls.append((language, text))
        return CodeFacts(language, functions=("f", "C.m"), classes=("C",),
                         imports=(ImportRef("os"), ImportRef(".sib", ("x",))), calls=("g",))

    el = element(read_file(put(root, "pkg/mod.py", b"import os\n"), max_bytes=MIB, parse=parse))
    assert calls == [("python", "import os\n")]
    attrs = el.attributes
    assert attrs["language"] == "python"
    assert attrs["functions"] == ["f", "C.m"]
    assert attrs["classes"] == ["C"]
    assert attrs["imports"] == [["os", []], [".sib", ["x"]]]
    assert attrs["calls"] == ["g"]
    assert attrs["parse_error"] is None
    assert attrs["content"] == "blob"


def test_parser_failure_does_not_break_capture(root: Path) -> None:
    def parse(language: str, text: str) -> CodeFacts:
        raise RecursionError("maximum recursion depth exceeded")

    el = element(read_file(put(root, "deep.ts", b"let x = 1;\n"), max_bytes=MIB, parse=parse))
    assert el.content == b"let x = 1;\n"
    assert el.attributes["language"] == "typescript"
    assert el.attributes["functions"] == []
    assert "maximum recursion depth" in el.attributes["parse_error"]


def test_parser_not_called_when_it_cannot_apply(root: Path) -> None:
    def parse(language: str, text: str) -> CodeFacts:
        raise AssertionError("must not be called")

    for wf, limit in [
        (put(root, "readme.md", b"# hi\n"), MIB),  # not a parsed language
        (put(root, "big.py", b"x = 1\n" * 100), 10),  # content not kept
        (put(root, "latin.py", "é = 1\n".encode("latin-1")), MIB),  # not UTF-8
    ]:
        el = element(read_file(wf, max_bytes=limit, parse=parse))
        assert "functions" not in el.attributes


def test_missing_file_is_skipped(root: Path) -> None:
    wf = WorkspaceFile("gone.txt", root / "gone.txt")
    assert read_file(wf, max_bytes=MIB) == Skipped("gone.txt", "deleted since it was listed")


def test_fifo_is_skipped_without_blocking(root: Path) -> None:
    os.mkfifo(root / "pipe")
    result = read_file(WorkspaceFile("pipe", root / "pipe"), max_bytes=MIB)
    assert result == Skipped("pipe", "not a regular file")


def test_file_swapped_for_a_symlink_is_refused(root: Path) -> None:
    wf = put(root, "a.txt", b"safe\n")
    wf.path.unlink()
    wf.path.symlink_to("/etc/passwd")
    result = read_file(wf, max_bytes=MIB)
    assert isinstance(result, Skipped)
    assert "changed" in result.reason


def test_unreadable_file_is_skipped(root: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file regardless of permissions")
    wf = put(root, "secret.txt", b"x")
    wf.path.chmod(0)
    assert read_file(wf, max_bytes=MIB) == Skipped("secret.txt", "permission denied")


def test_permission_error_is_skipped(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same path as above, reachable even when the tests run as root.
    wf = put(root, "secret.txt", b"x")
    real_open = os.open

    def deny(path: object, flags: int, *args: int, **kwargs: object) -> int:
        if str(path) == str(wf.path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", deny)
    assert read_file(wf, max_bytes=MIB) == Skipped("secret.txt", "permission denied")


def test_file_growing_while_read_is_skipped(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wf = put(root, "growing.log", b"line\n" * 1000)
    real_read = os.read
    appended: list[bool] = []

    def read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        if not appended:
            appended.append(True)
            with open(wf.path, "ab") as fh:
                fh.write(b"another line\n")
        return data

    monkeypatch.setattr(os, "read", read)
    assert read_file(wf, max_bytes=MIB) == Skipped("growing.log", "changed while being read")


def test_file_rewritten_in_place_while_read_is_skipped(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same size, new content: only the modification time gives the edit away.
    wf = put(root, "config.ini", b"a = 1\n")
    real_read = os.read
    rewritten: list[bool] = []

    def read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        if not rewritten:
            rewritten.append(True)
            with open(wf.path, "r+b") as fh:
                fh.write(b"a = 2\n")
            st = os.stat(wf.path)
            os.utime(wf.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return data

    monkeypatch.setattr(os, "read", read)
    assert read_file(wf, max_bytes=MIB) == Skipped("config.ini", "changed while being read")


def test_negative_limit_is_refused(root: Path) -> None:
    with pytest.raises(ValidationError):
        read_file(put(root, "a.txt", b"x"), max_bytes=-1)


# -- drift ------------------------------------------------------------------------------


def captured(root: Path, rel: str, data: bytes) -> dict[str, object]:
    return element(read_file(put(root, rel, data), max_bytes=MIB)).attributes


def test_drift_unchanged(root: Path) -> None:
    attrs = captured(root, "a.txt", b"hello\n")
    assert check_drift(Workspace(root), attrs).state == "unchanged"


def test_drift_modified_size(root: Path) -> None:
    attrs = captured(root, "a.txt", b"hello\n")
    (root / "a.txt").write_bytes(b"hello, world\n")
    drift = check_drift(Workspace(root), attrs)
    assert drift == Drift("a.txt", "modified", "size changed from 6 to 13 bytes")


def test_drift_modified_same_size(root: Path) -> None:
    attrs = captured(root, "a.txt", b"hello\n")
    (root / "a.txt").write_bytes(b"jello\n")
    mtime = float(attrs["mtime"])  # type: ignore[arg-type]
    os.utime(root / "a.txt", (mtime + 5, mtime + 5))
    assert check_drift(Workspace(root), attrs).state == "modified"


def test_drift_touched(root: Path) -> None:
    attrs = captured(root, "a.txt", b"hello\n")
    mtime = float(attrs["mtime"])  # type: ignore[arg-type]
    os.utime(root / "a.txt", (mtime + 5, mtime + 5))
    drift = check_drift(Workspace(root), attrs)
    assert drift.state == "touched"
    assert drift.path == "a.txt"


def test_drift_deleted(root: Path) -> None:
    attrs = captured(root, "sub/a.txt", b"hello\n")
    (root / "sub" / "a.txt").unlink()
    assert check_drift(Workspace(root), attrs).state == "deleted"


def test_drift_after_round_trip_through_json(root: Path) -> None:
    attrs = json.loads(json.dumps(captured(root, "a.txt", b"hello\n")))
    assert check_drift(Workspace(root), attrs).state == "unchanged"


def test_drift_symlink_now_pointing_outside_is_unreadable(root: Path) -> None:
    attrs = captured(root, "a.txt", b"hello\n")
    (root / "a.txt").unlink()
    (root / "a.txt").symlink_to("/etc/passwd")
    drift = check_drift(Workspace(root), attrs)
    assert drift.state == "unreadable"
    assert "outside" in drift.detail


def test_drift_unreadable(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attrs = captured(root, "a.txt", b"hello\n")
    real_open = os.open

    def deny(path: object, flags: int, *args: int, **kwargs: object) -> int:
        if str(path).endswith("a.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", deny)
    assert check_drift(Workspace(root), attrs) == Drift("a.txt", "unreadable",
                                                        "permission denied")


def test_drift_refuses_malformed_attributes(root: Path) -> None:
    ws = Workspace(root)
    for attrs in [{}, {"path": "a.txt"}, {"path": "a.txt", "size": "6", "mtime": 1.0,
                                            "sha256": "x"}]:
        with pytest.raises(ValidationError):
            check_drift(ws, attrs)
