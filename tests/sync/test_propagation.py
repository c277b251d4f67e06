"""Propagation of committed sync changes: in process, and across real processes
over each transport (audit-log polling, Redis pub/sub, PostgreSQL LISTEN/NOTIFY).

No mocks and no timing assertions: waits are generous deadlines, and "nothing
else arrived" is proved with a marker event published after the others.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from services import service_missing
from statekeep import StateConfig, open_store
from statekeep.retry import ExponentialBackoff
from statekeep.sync.events import SyncEvent
from statekeep.sync.propagation import Propagator
from statekeep.sync.transports import (
    NOTIFY_PAYLOAD_BYTES,
    decode_message,
    encode_messages,
    pg_channel,
)

CHILD = Path(__file__).with_name("propagation_child.py")
FAST = ExponentialBackoff(base=0.01, cap=0.1)
WAIT = 60.0  # generous: these are deadlines, not measurements


def ev(key: str, version: int, component: str = "writer", value: Any = None, *,
       scope: str = "s") -> SyncEvent:
    return SyncEvent(scope, key, {"v": version} if value is None else value, version,
                     component, datetime(2030, 1, 1, tzinfo=UTC))


class Inbox:
    """A callback that records events and lets the test wait for a condition."""

    def __init__(self) -> None:
        self.events: list[SyncEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: SyncEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, check: Callable[[list[SyncEvent]], bool], timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: check(self.events), timeout)

    def wait_key(self, key: str, timeout: float = WAIT) -> bool:
        return self.wait_for(lambda evs: any(e.key == key for e in evs), timeout)

    def seen(self) -> list[tuple[str, int]]:
        with self._cond:
            return [(e.key, e.version) for e in self.events]


def wait_until(check: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


@pytest.fixture
def local() -> Iterator[Propagator]:
    """An in-process propagator (no store, no transport)."""
    propagator = Propagator(config=StateConfig(db=":memory:"))
    yield propagator
    propagator.close()


# -- in process ---------------------------------------------------------------------


def test_subscribers_get_each_committed_change_in_order(local: Propagator) -> None:
    one, two = Inbox(), Inbox()
    local.subscribe("reader", one)
    local.subscribe("other", two)
    events = [ev("a", 1), ev("b", 1), ev("a", 2), ev("a", 3), ev("b", 2)]
    local.publish(events[:2])
    local.publish(events[2:])
    assert one.wait_for(lambda e: len(e) == 5) and two.wait_for(lambda e: len(e) == 5)
    assert one.events == events and two.events == events
    stats = local.stats()
    assert (stats.transport, stats.published, stats.received) == ("none", 5, 0)


def test_a_change_never_goes_back_to_its_source(local: Propagator) -> None:
    writer, reader = Inbox(), Inbox()
    local.subscribe("writer", writer)
    local.subscribe("reader", reader)
    local.publish([ev("a", 1, "writer"), ev("b", 1, "writer"), ev("end", 1, "reader")])
    # The marker was published last by another component: once it arrived,
    # nothing of writer's can still be on its way to writer.
    assert writer.wait_key("end")
    assert writer.seen() == [("end", 1)]
    assert reader.wait_for(lambda e: len(e) == 2)
    assert reader.seen() == [("a", 1), ("b", 1)]


def test_key_pattern_and_scope_filters(local: Propagator) -> None:
    prefs, scoped, exact = Inbox(), Inbox(), Inbox()
    local.subscribe("p", prefs, keys="pref.*")
    local.subscribe("s", scoped, scope="team")
    local.subscribe("x", exact, keys="pref.theme", scope="team")
    local.publish([ev("pref.theme", 1, scope="team"), ev("pref.font", 1),
                   ev("Pref.Case", 1), ev("other", 1, scope="team"), ev("other", 1),
                   ev("pref.theme", 1)])
    marker = ev("pref.theme", 2, scope="team")  # matches every filter, published last
    local.publish([marker])
    for inbox in (prefs, scoped, exact):
        assert inbox.wait_for(lambda e: marker in e)
    assert [(e.scope, e.key, e.version) for e in prefs.events] == [
        ("team", "pref.theme", 1), ("s", "pref.font", 1), ("s", "pref.theme", 1),
        ("team", "pref.theme", 2)]
    assert [(e.scope, e.key, e.version) for e in scoped.events] == [
        ("team", "pref.theme", 1), ("team", "other", 1), ("team", "pref.theme", 2)]
    assert exact.seen() == [("pref.theme", 1), ("pref.theme", 2)]


def test_a_slow_subscriber_never_blocks_the_writer_and_drops_are_counted(
        local: Propagator, caplog: pytest.LogCaptureFixture) -> None:
    entered, gate = threading.Event(), threading.Event()
    slow_seen: list[SyncEvent] = []

    def slow(event: SyncEvent) -> None:
        entered.set()
        gate.wait(WAIT)
        slow_seen.append(event)

    fast = Inbox()
    slow_sub = local.subscribe("slow", slow, queue_size=2)
    local.subscribe("fast", fast, queue_size=100)
    caplog.set_level(logging.WARNING, logger="statekeep.sync")
    local.publish([ev("k0", 1)])
    assert entered.wait(WAIT)  # the worker holds k0 and is stuck in the callback
    for i in range(1, 10):
        local.publish([ev(f"k{i}", 1)])  # returns although the callback does not
    assert fast.wait_for(lambda e: len(e) == 10)
    assert slow_sub.dropped == 7 and slow_sub.pending == 2
    behind = [r for r in caplog.records if "behind" in r.getMessage()]
    assert len(behind) == 1  # once per burst, not once per event
    gate.set()
    assert wait_until(lambda: slow_sub.pending == 0 and len(slow_seen) == 3)
    slow_sub.close()
    assert [e.key for e in slow_seen] == ["k0", "k1", "k2"]
    stats = {s.component: s for s in local.stats().subscriptions}
    assert (slow_sub.delivered, slow_sub.dropped, slow_sub.failed) == (3, 7, 0)
    assert "slow" not in stats and stats["fast"].dropped == 0


def test_a_failing_subscriber_is_counted_and_the_others_still_get_everything(
        local: Propagator, caplog: pytest.LogCaptureFixture) -> None:
    got: list[int] = []

    def flaky(event: SyncEvent) -> None:
        if event.version in (2, 3, 4, 5, 8):
            raise RuntimeError(f"cannot take v{event.version}")
        got.append(event.version)

    good = Inbox()
    bad = local.subscribe("flaky", flaky)
    local.subscribe("good", good)
    caplog.set_level(logging.DEBUG, logger="statekeep.sync")
    local.publish([ev("k", v) for v in range(1, 11)])
    assert good.wait_for(lambda e: len(e) == 10)
    assert wait_until(lambda: bad.delivered + bad.failed == 10)
    bad.close()
    assert got == [1, 6, 7, 9, 10]  # it kept going after each failure
    assert (bad.delivered, bad.failed, bad.dropped) == (5, 5, 0)
    # One traceback at ERROR per run of failures (2-5, then 8); the rest at DEBUG.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all(r.exc_info for r in errors)


def test_versions_only_move_forward_per_key(local: Propagator) -> None:
    inbox = Inbox()
    local.subscribe("r", inbox)
    # Two writers' after-commit hooks may run in the opposite order of their
    # commits; a subscriber must not be taken back to an older value.
    local.publish([ev("k", 2)])
    local.publish([ev("k", 1), ev("k", 2), ev("j", 1), ev("k", 3)])
    assert inbox.wait_for(lambda e: len(e) == 3)
    assert inbox.seen() == [("k", 2), ("j", 1), ("k", 3)]
    stats = local.stats()
    assert (stats.published, stats.stale, stats.duplicates) == (3, 1, 1)


def test_close_joins_every_thread_and_publish_after_close_is_harmless(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    store = open_store(str(tmp_path / "close.db"))
    propagator = Propagator(store)  # SQLite without Redis: the audit-log poller
    assert propagator.stats().transport == "audit-poll"
    reached = threading.Event()
    with propagator.subscribe("a", lambda e: None) as sub:
        propagator.subscribe("b", lambda e: reached.set())
        propagator.publish([ev("k", 1)])
        assert reached.wait(WAIT)
    assert sub.closed and len(propagator.subscriptions) == 1
    propagator.close()
    propagator.close()  # idempotent
    propagator.publish([ev("k", 2)])  # after close: ignored, never raised
    store.close()
    assert wait_until(lambda: not (set(threading.enumerate()) - before), 10)


def test_closing_a_subscription_from_its_own_callback(local: Propagator) -> None:
    done = threading.Event()
    holder: list[Any] = []

    def once(event: SyncEvent) -> None:
        holder[0].close()
        done.set()

    holder.append(local.subscribe("once", once))
    local.publish([ev("k", 1), ev("k", 2)])
    assert done.wait(WAIT)
    assert wait_until(lambda: holder[0].closed and not local.subscriptions)


def test_subscribe_rejects_bad_arguments(local: Propagator) -> None:
    from statekeep.errors import ValidationError

    for kwargs in ({"queue_size": 0}, {"keys": ""}, {"scope": 3}):
        with pytest.raises(ValidationError):
            local.subscribe("c", lambda e: None, **kwargs)
    with pytest.raises(ValidationError):
        local.subscribe("", lambda e: None)


# -- the wire format ------------------------------------------------------------------


def test_messages_fit_the_payload_limit_and_big_values_travel_by_reference() -> None:
    events = [ev(f"k{i}", 1, value="x" * 500) for i in range(40)]
    events.append(ev("big", 7, value={"blob": "y" * 20_000}))
    messages = encode_messages("me", events, NOTIFY_PAYLOAD_BYTES)
    assert len(messages) > 1 and all(len(m) <= NOTIFY_PAYLOAD_BYTES for m in messages)
    wanted: list[tuple[str, str, int]] = []

    def resolve(scope: str, key: str, version: int) -> tuple[bool, Any]:
        wanted.append((scope, key, version))
        return True, {"blob": "y" * 20_000}

    decoded = [e for m in messages for e in decode_message(m, "you", resolve)]
    assert decoded == events
    assert wanted == [("s", "big", 7)]
    assert all(decode_message(m, "me", resolve) == [] for m in messages)  # our own


def test_unencodable_values_are_left_out_not_raised() -> None:
    bad = ev("nan", 1, value=float("nan"))
    messages = encode_messages("me", [bad, ev("ok", 1)], NOTIFY_PAYLOAD_BYTES)
    assert [e.key for m in messages for e in decode_message(m, "x", lambda *a: (False, None))] \
        == ["ok"]


def test_malformed_messages_raise_for_the_transport_to_skip() -> None:
    def nothing(*a: Any) -> tuple[bool, Any]:
        return False, None

    for data in (b"not json", b"[]", b'{"origin": "x"}',
                 b'{"origin":"x","events":[{"scope":"s","key":"k","version":0,'
                 b'"component":"c","committed_at":"2030-01-01T00:00:00+00:00"}]}'):
        with pytest.raises((TypeError, ValueError)):
            decode_message(data, "me", nothing)
    missing = (b'{"origin":"x","events":[{"scope":"s","key":"k","version":1,'
               b'"component":"c","committed_at":"2030-01-01T00:00:00+00:00"}]}')
    assert decode_message(missing, "me", nothing) == []  # value gone from the audit log


def test_pg_channel_is_a_short_plain_identifier() -> None:
    assert pg_channel("store_0190abcdef") == "sk_sync_store_0190abcdef"
    for odd in ("Store-ID", "x" * 80, 'a"; DROP TABLE t; --'):
        channel = pg_channel(odd)
        assert channel.startswith("sk_sync_") and len(channel) <= 63
        assert all(c.isdigit() or c.islower() or c == "_" for c in channel)
    assert pg_channel("Store-ID") != pg_channel("store-id")


# -- across processes -----------------------------------------------------------------

CHILD_EVENTS = [["s", "a", 1, {"n": 1}], ["s", "b", 1, [1, 2]], ["s", "a", 2, {"n": 2}],
                ["t", "a", 1, "other scope"], ["s", "b", 2, None], ["s", "a", 3, 3.5],
                ["s", "big", 1, {"blob": "z" * 20_000}], ["s", "end", 1, True]]


def _target(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if kind == "postgres":
        url: str = request.getfixturevalue("pg_schema_url")
        return url, None
    if kind == "redis":
        redis_url: str = request.getfixturevalue("redis_url")
        return str(tmp_path / "shared.db"), redis_url
    return str(tmp_path / "shared.db"), None


def _run_child(db: str, redis_url: str | None, spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(CHILD), db, redis_url or "-", json.dumps(spec)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stats: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return stats


@pytest.mark.parametrize("kind", ["audit-poll", "redis", "postgres"])
def test_another_process_gets_exactly_the_committed_changes(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    db, redis_url = _target(kind, tmp_path, request)
    # A small cap makes the Redis transport send the big value by reference too.
    config = StateConfig(db=db, redis_url=redis_url, max_value_bytes=4096)
    store = open_store(config)
    propagator = Propagator(store, backoff=FAST)
    try:
        assert propagator.stats().transport == kind
        everything, same_name, scoped = Inbox(), Inbox(), Inbox()
        propagator.subscribe("parent", everything)
        propagator.subscribe("child", same_name)  # the writer's own name, elsewhere
        propagator.subscribe("scoped", scoped, keys="[ab]", scope="s")
        assert propagator.wait_ready(WAIT)
        stats = _run_child(db, redis_url, {"component": "child", "events": CHILD_EVENTS,
                                           "max_value_bytes": 4096})
        assert stats["unsent"] == 0
        assert everything.wait_key("end"), f"got only {everything.seen()}"
        assert len(everything.events) == len(CHILD_EVENTS), everything.seen()
        expected = [SyncEvent(s, k, v, n, "child", e.committed_at)
                    for (s, k, n, v), e in zip(CHILD_EVENTS, everything.events, strict=True)]
        assert everything.events == expected
        per_key: dict[tuple[str, str], list[int]] = {}
        for e in everything.events:
            per_key.setdefault((e.scope, e.key), []).append(e.version)
        assert all(v == sorted(v) for v in per_key.values())
        assert scoped.wait_for(lambda e: len(e) == 5)
        assert scoped.seen() == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]
        own = {s.component: s for s in propagator.stats().subscriptions}["child"]
        assert (own.delivered, own.dropped, own.pending) == (0, 0, 0)
        assert propagator.stats().received == len(CHILD_EVENTS)
    finally:
        propagator.close()
        store.close()


@pytest.mark.parametrize("kind", ["audit-poll", "redis", "postgres"])
def test_a_process_does_not_deliver_its_own_changes_twice(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    db, redis_url = _target(kind, tmp_path, request)
    store = open_store(StateConfig(db=db, redis_url=redis_url))
    propagator = Propagator(store, backoff=FAST)
    other = Propagator(store, backoff=FAST)  # a second process's propagator, in effect
    try:
        mine, theirs = Inbox(), Inbox()
        propagator.subscribe("mine", mine)
        other.subscribe("theirs", theirs)
        assert propagator.wait_ready(WAIT) and other.wait_ready(WAIT)
        for version in (1, 2, 3):
            event = ev("k", version)
            with store.atomic() as conn:
                store.audit_row(conn, "update", "sync", "s:k", None,
                                {"scope": "s", "key": "k", "value": event.value,
                                 "version": version, "component": "writer",
                                 "updated_at": event.committed_at.isoformat()},
                                user_id=None, session_id=None, notify=False)
                store.after_commit(lambda e=event: propagator.publish([e]))
        assert theirs.wait_for(lambda e: len(e) == 3)
        assert mine.wait_for(lambda e: len(e) == 3)
        if kind == "audit-poll":
            # The poller reads this process's own rows back; each must be
            # recognised as already delivered (whichever path came first).
            # Read back after k3 was published, k1 and k2 count as stale.
            assert wait_until(lambda: propagator.stats().duplicates
                              + propagator.stats().stale == 3)
        else:
            # An echo of our own messages would come before this marker, which
            # the other propagator sends on the same channel after ours arrived.
            other.publish([ev("end", 1, "other")])
            assert mine.wait_key("end")
        stats = propagator.stats()
        assert [k for k in mine.seen() if k[0] == "k"] == [("k", 1), ("k", 2), ("k", 3)]
        if kind == "audit-poll":  # whichever path saw a change first delivered it
            assert stats.published + stats.received == 3
        else:  # our own messages were ignored; only the marker came in
            assert (stats.published, stats.received, stats.duplicates) == (3, 1, 0)
    finally:
        other.close()
        propagator.close()
        store.close()


# -- outages ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server this test owns, so that killing it disturbs no one else."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir, self.port = binary, workdir, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = wait_until(self._answers, 10)
        if not ok:
            self.kill()
            raise RuntimeError(f"private redis-server did not start on port {self.port}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server", "the binary is not on PATH")
        raise AssertionError("unreachable")
    server = PrivateRedis(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.redis
def test_a_redis_outage_never_reaches_the_writer(tmp_path: Path,
                                                  private_redis: PrivateRedis) -> None:
    store = open_store(StateConfig(db=str(tmp_path / "o.db"), redis_url=private_redis.url))
    sender = Propagator(store, backoff=FAST)
    receiver = Propagator(store, backoff=FAST)
    try:
        inbox = Inbox()
        receiver.subscribe("r", inbox)
        assert sender.wait_ready(WAIT) and receiver.wait_ready(WAIT)
        sender.publish([ev("k", 1)])
        assert inbox.wait_key("k")
        private_redis.kill()
        version = 1
        while sender.stats().send_errors == 0:  # publish never raises meanwhile
            version += 1
            sender.publish([ev("k", version)])
            time.sleep(0.01)
            assert version < 10_000
        private_redis.start()
        # Pub/sub keeps nothing for a subscriber that is away: keep committing
        # until one change made after the restart gets through.
        restarted_at = version

        def got_one_after_restart() -> bool:
            nonlocal version
            version += 1
            sender.publish([ev("k", version)])
            return inbox.wait_for(lambda e: e[-1].version > restarted_at, 0.05)

        assert wait_until(got_one_after_restart, WAIT)
        seen = [e.version for e in inbox.events]
        assert seen == sorted(set(seen))  # never backwards, never twice
    finally:
        receiver.close()
        sender.close()
        store.close()


def test_an_unreachable_redis_loses_notifications_but_not_writes(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    store = open_store(StateConfig(db=str(tmp_path / "n.db"), redis_url=url))
    propagator = Propagator(store, backoff=FAST, outbox_size=5)
    inbox = Inbox()
    propagator.subscribe("r", inbox)
    for version in range(1, 21):
        propagator.publish([ev("k", version)])
    assert inbox.wait_for(lambda e: len(e) == 20)  # local subscribers are unaffected
    propagator.close()
    stats = propagator.stats()
    assert stats.published == 20 and stats.sent == 0 and stats.unsent == 20
    store.close()


@pytest.mark.postgres
def test_a_lost_listen_connection_is_replaced(pg_schema_url: str) -> None:
    import psycopg

    from services import PG_URL

    store = open_store(pg_schema_url)
    sender = Propagator(store, backoff=FAST)
    receiver = Propagator(store, backoff=FAST)
    admin = psycopg.connect(PG_URL, autocommit=True)
    try:
        inbox = Inbox()
        receiver.subscribe("r", inbox)
        assert sender.wait_ready(WAIT) and receiver.wait_ready(WAIT)
        sender.publish([ev("k", 1)])
        assert inbox.wait_key("k")
        # Only this store's listeners: the channel names the store.
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'statekeep-sync' AND query LIKE %s",
            (f"%{pg_channel(store.store_id)}%",)).fetchall()
        assert len(killed) == 2  # the sender's listener and the receiver's
        version = 1

        def got_a_later_one() -> bool:
            nonlocal version
            version += 1
            sender.publish([ev("k", version)])
            return inbox.wait_for(lambda e: e[-1].version > 1, 0.05)

        assert wait_until(got_a_later_one)
        assert getattr(receiver.transport, "gaps", 0) == 1
        seen = [e.version for e in inbox.events]
        assert seen == sorted(set(seen))
    finally:
        admin.close()
        receiver.close()
        sender.close()
        store.close()


def test_payload_is_orjson_not_pickle() -> None:
    (message,) = encode_messages("me", [ev("k", 1)], NOTIFY_PAYLOAD_BYTES)
    assert orjson.loads(message)["events"][0]["value"] == {"v": 1}
