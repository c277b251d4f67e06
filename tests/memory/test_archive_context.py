"""The archive tier carries the context engine's rows: a session's relations,
its items' content links and the bytes of the blobs they reference go into the
file and come back on restore -- on both backends, and from format 1 files
that predate them."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
import zstandard

from statekeep import ArchiveCorruptError, ContextInput, Store, codec
from statekeep.memory import archive as archive_mod
from statekeep.memory.archive import ArchiveTier

SHARED = b"# shared module\n" * 400
OWN = b"def only_here():\n    pass\n" * 300
TABLES = ("sessions", "tasks", "context", "context_relations", "context_content",
          "content_blobs", "state_snapshots", "decisions", "recovery_points")


class FakeClock(Protocol):
    """The root conftest's ``clock`` fixture."""

    def advance(self, **delta: float) -> Any: ...


def state(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the archive touches (not the audit log)."""
    out = {}
    with store.reading() as conn:
        for table in TABLES:
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


def blobs(store: Store) -> dict[str, int]:
    with store.reading() as conn:
        return {str(r[0]): int(r[1])
                for r in conn.execute("SELECT hash, ref_count FROM content_blobs").fetchall()}


@pytest.fixture
def aged(make_store: Callable[..., Store], clock: FakeClock) -> Store:
    return make_store(clock=clock)


def tier(store: Store, tmp_path: Path) -> ArchiveTier:
    return ArchiveTier(store, tmp_path / "archive", cold_retention_days=90,
                       archive_retention_days=365)


def seed(store: Store) -> tuple[str, str, dict[str, str]]:
    """A finished session with a small graph and file contents (one blob shared
    with a session that stays, one its own), and that other, active session."""
    s = store.create_session("alice").id
    keep = store.create_session("bob").id
    store.set_context_many(s, [ContextInput("file", k, {"path": k, "doc": f"heron {k}"})
                               for k in ("main.py", "util.py", "cli.py")])
    ids = {k: store.get_context(s, "file", k).id for k in ("main.py", "util.py", "cli.py")}  # type: ignore[union-attr]
    kept = store.set_context(keep, "file", "lib.py", {"path": "lib.py"})
    store.relate(s, ids["main.py"], ids["util.py"], "dependency", metadata={"line": 3})
    store.relate(s, ids["cli.py"], ids["main.py"], "calls", 0.95)
    with store.atomic() as conn:
        store.attach_content(conn, ids["main.py"], s, SHARED)
        store.attach_content(conn, ids["util.py"], s, OWN)
        store.attach_content(conn, kept.id, keep, SHARED)
    store.update_session(s, status="completed")
    return s, keep, ids


def test_round_trip_with_relations_and_content(aged: Store, clock: FakeClock,
                                               tmp_path: Path) -> None:
    s, keep, ids = seed(aged)
    aged.access_log.flush()  # the archive run flushes the counts seed's reads gathered
    before = state(aged)
    shared, own = codec.checksum(SHARED), codec.checksum(OWN)
    assert blobs(aged) == {shared: 2, own: 1}
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    entry = arc.run().archived[0]
    assert entry.session_id == s

    # Gone from the database: rows, links, and the blob only this session used;
    # the shared blob lost one reference and keeps its bytes.
    assert aged.relations(s) == []
    assert blobs(aged) == {shared: 1}
    assert aged.item_content(ids["main.py"]) is None
    assert aged.search_context("heron") == []
    doc = codec.loads(archive_mod.read_archive_file(entry.path, entry.checksum))
    assert doc["format"] == 2
    assert len(doc["context_relations"]) == 2 and len(doc["context_content"]) == 2
    assert [d for d, _, _ in doc["blobs"]] == sorted([shared, own])

    arc.restore(s)
    assert state(aged) == before
    assert blobs(aged) == {shared: 2, own: 1}
    assert aged.item_content(ids["util.py"]) == OWN
    assert aged.neighbours(s, [ids["cli.py"]], 2) == {
        ids["cli.py"]: 0, ids["main.py"]: 1, ids["util.py"]: 2}
    assert sorted(h.item.context_key for h in aged.search_context("heron", session_id=s)) == [
        "cli.py", "main.py", "util.py"]
    assert aged.item_content(aged.get_context(keep, "file", "lib.py").id) == SHARED  # type: ignore[union-attr]


def test_new_relation_counts_as_activity(aged: Store, clock: FakeClock,
                                         tmp_path: Path) -> None:
    s, _, ids = seed(aged)
    clock.advance(days=80)
    aged.relate(s, ids["util.py"], ids["cli.py"], "related")
    clock.advance(days=11)
    arc = tier(aged, tmp_path)
    assert arc.candidates() == []
    clock.advance(days=80)
    assert [c.session_id for c in arc.candidates()] == [s]


def test_relation_added_after_the_file_keeps_the_session(
        aged: Store, clock: FakeClock, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    s, _, ids = seed(aged)
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    real = ArchiveTier._write_atomic

    def write_then_relate(self: ArchiveTier, path: Path, blob: bytes) -> None:
        real(self, path, blob)
        aged.relate(s, ids["util.py"], ids["cli.py"], "related")

    monkeypatch.setattr(ArchiveTier, "_write_atomic", write_then_relate)
    report = arc.run()
    assert report.archived == [] and [sid for sid, _ in report.skipped] == [s]
    assert len(aged.relations(s)) == 3


def test_damaged_blob_is_not_archived(aged: Store, clock: FakeClock, tmp_path: Path) -> None:
    s, _, _ = seed(aged)
    with aged.atomic() as conn:
        conn.execute("UPDATE content_blobs SET data = ? WHERE hash = ?",
                     (codec.compress(b"bit rot"), codec.checksum(OWN)))
    clock.advance(days=91)
    report = tier(aged, tmp_path).run()
    assert report.archived == [] and report.failed[0][0] == s
    assert len(aged.relations(s)) == 2  # the session stays, whole


def test_format_1_file_restores_without_the_new_rows(aged: Store, clock: FakeClock,
                                                     tmp_path: Path) -> None:
    """A file written before relations and content existed (format 1) restores."""
    s, _, ids = seed(aged)
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    entry = arc.run().archived[0]
    doc = codec.loads(archive_mod.read_archive_file(entry.path, entry.checksum))
    for key in ("context_relations", "context_content", "blobs"):
        del doc[key]
    doc["format"] = 1
    payload = codec.dumps_trusted(doc)
    digest = codec.checksum(payload)
    header = archive_mod._HEADER.pack(archive_mod.MAGIC, 1, len(payload), bytes.fromhex(digest))
    entry.path.write_bytes(header + zstandard.ZstdCompressor().compress(payload))
    with aged.atomic() as conn:
        conn.execute("UPDATE archive_index SET checksum = ? WHERE session_id = ?", (digest, s))
    assert arc.verify() == []

    arc.restore(s)
    assert aged.get_session(s).id == s
    assert {i.id for i in aged.list_context(s)} == set(ids.values())
    assert aged.relations(s) == []
    assert aged.item_content(ids["main.py"]) is None
    assert blobs(aged) == {codec.checksum(SHARED): 1}


def test_tampered_blob_in_the_document_is_refused(aged: Store, clock: FakeClock,
                                                  tmp_path: Path) -> None:
    """Blob bytes that do not match their hash never enter the store (a file whose
    own checksum was recomputed over the tampered document)."""
    s, _, _ = seed(aged)
    clock.advance(days=91)
    arc = tier(aged, tmp_path)
    entry = arc.run().archived[0]
    doc = codec.loads(archive_mod.read_archive_file(entry.path, entry.checksum))
    doc["blobs"][0][2] = base64.b64encode(b"not the original bytes").decode()
    payload = codec.dumps_trusted(doc)
    digest = codec.checksum(payload)
    entry.path.write_bytes(archive_mod._encode_file(payload))
    with aged.atomic() as conn:
        conn.execute("UPDATE archive_index SET checksum = ? WHERE session_id = ?", (digest, s))
    before = state(aged)
    with pytest.raises(ArchiveCorruptError):
        arc.restore(s)
    assert state(aged) == before
    assert arc.is_archived(s)
