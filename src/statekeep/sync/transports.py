"""How committed sync changes reach other processes: three transports, one shape.

A :class:`Transport` carries :class:`SyncEvent` batches between the
:class:`~statekeep.sync.propagation.Propagator` of each process on one store.
Which one is used follows from what the deployment already has, so that
propagation never adds a service of its own (:func:`make_transport`):

* PostgreSQL store -> ``LISTEN``/``NOTIFY`` on the store's own database. Every
  process already reaches it, and the audit log beside it can supply a value
  too large for a notification payload (8000 bytes).
* SQLite store with Redis configured -> Redis pub/sub on ``sk:<store_id>:sync``,
  the server the warm tier and the invalidation bus already use.
* SQLite store alone -> poll the audit log. The commit itself is the message:
  nothing is sent, and SQLite hands out audit ids in commit order, so reading
  ``id > last`` never skips a change.

Published messages carry an origin token and a transport ignores its own on
receipt. The audit-log poller cannot tell its own process's rows from others';
it delivers them all and the propagator's per-key version check drops the ones
it published itself (see ``Propagator``). Transports never decide delivery or
order -- they hand every foreign event to ``on_events`` in the order it arrived.

Messages are orjson documents, never pickles: another process is trusted to
speak the format, not to run code here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import orjson

from statekeep import codec
from statekeep.config import StateConfig
from statekeep.errors import StatekeepError
from statekeep.retry import ExponentialBackoff, Outage
from statekeep.sync.events import SyncEvent

if TYPE_CHECKING:
    from statekeep.store.postgres import PostgresStore
    from statekeep.store.protocol import Store

__all__ = [
    "NOTIFY_PAYLOAD_BYTES",
    "AuditPollTransport",
    "EventsCallback",
    "NullTransport",
    "PgNotifyTransport",
    "RedisTransport",
    "Transport",
    "decode_message",
    "encode_messages",
    "entry_event",
    "fetch_event_value",
    "make_transport",
    "pg_channel",
]

log = logging.getLogger("statekeep.sync")

#: Receives the foreign events of one message (or one poll), in arrival order.
EventsCallback = Callable[[list[SyncEvent]], None]

#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more (in the server's
#: encoding); the margin covers a server encoding that is not UTF-8.
NOTIFY_PAYLOAD_BYTES: Final = 7900
#: Rows one audit-log poll reads; a backlog is read in several polls back to back.
POLL_BATCH: Final = 1000
#: Audit rows one look-up of a large value reads per round trip, newest first.
FETCH_PAGE: Final = 64
_CHANNEL_RE = re.compile(r"[a-z0-9_]+")
_PG_IDENT_BYTES: Final = 63


class Transport(Protocol):
    """What the propagator needs from a way of reaching other processes."""

    #: Short name for stats and log lines ("postgres", "redis", "audit-poll", "none").
    name: str
    #: False when ``send`` does nothing (the commit is the message, or no one
    #: listens), so the propagator need not keep an outbox and a sender thread.
    sends: bool

    def start(self, on_events: EventsCallback) -> None:
        """Begin receiving; ``on_events`` runs on the transport's own thread."""

    def send(self, events: Sequence[SyncEvent]) -> None:
        """Hand committed events to the other processes; raises when that failed,
        so that the caller (a sender thread, never the writer) can retry them."""

    def wait_ready(self, timeout: float) -> bool:
        """True once changes committed from now on will be received."""

    def close(self) -> None:
        """Stop receiving and release connections; idempotent."""


# -- the wire format ------------------------------------------------------------


def _event_doc(event: SyncEvent, *, inline: bool) -> bytes:
    """One event as JSON; without ``value`` it is a reference the receiver resolves."""
    doc: dict[str, Any] = {"scope": event.scope, "key": event.key, "version": event.version,
                           "component": event.component,
                           "committed_at": event.committed_at.isoformat()}
    if inline:
        # codec.dumps, not dumps_trusted: a value orjson would coerce (a datetime,
        # NaN) must be refused here rather than arrive changed in another process.
        doc["value"] = orjson.Fragment(codec.dumps(event.value, field="value"))
    return codec.dumps_trusted(doc)


def encode_messages(origin: str, events: Sequence[SyncEvent], limit: int) -> list[bytes]:
    """``events`` packed into as few messages of at most ``limit`` bytes as fit.

    An event whose value would overflow a message on its own travels as a
    reference (no value): the receiver reads that version from the audit log.
    An event that cannot be encoded at all (a value that is not JSON, a key too
    long even for a reference) is logged and left out: it was committed, and
    only the notification of other processes is lost.
    """
    prefix = b'{"origin":' + codec.dumps_trusted(origin) + b',"events":['
    overhead = len(prefix) + len(b"]}")
    messages: list[bytes] = []
    parts: list[bytes] = []
    size = overhead
    for event in events:
        try:
            doc = _event_doc(event, inline=True)
            if overhead + len(doc) > limit:
                doc = _event_doc(event, inline=False)
        except (StatekeepError, TypeError, AttributeError) as exc:
            log.warning("sync propagation: %s:%s v%s cannot be sent to other processes: %s",
                        event.scope, event.key, event.version, exc)
            continue
        if overhead + len(doc) > limit:
            log.warning("sync propagation: %s:%s v%d is too large to announce even by"
                        " reference (%d bytes); other processes miss it",
                        event.scope, event.key, event.version, len(doc))
            continue
        if parts and size + 1 + len(doc) > limit:
            messages.append(prefix + b",".join(parts) + b"]}")
            parts, size = [], overhead
        size += len(doc) + (1 if parts else 0)
        parts.append(doc)
    if parts:
        messages.append(prefix + b",".join(parts) + b"]}")
    return messages


def _first_line(exc: BaseException) -> str:
    """The gist of a driver error, without psycopg's multi-line decoration."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _hand_over(on_events: EventsCallback | None, events: list[SyncEvent]) -> None:
    """Give received events to the propagator; its failure must not kill the thread."""
    if on_events is None or not events:
        return
    try:
        on_events(events)
    except Exception:
        log.exception("sync propagation: delivering received events failed")


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("committed_at must be an ISO 8601 string")
    at = datetime.fromisoformat(value)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _checked(doc: Any) -> tuple[str, str, int, str, datetime]:
    if not isinstance(doc, dict):
        raise TypeError("an event must be an object")
    scope, key, version, component = (doc.get("scope"), doc.get("key"), doc.get("version"),
                                      doc.get("component"))
    if not (isinstance(scope, str) and isinstance(key, str) and isinstance(component, str)):
        raise TypeError("scope, key and component must be strings")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError("version must be a positive integer")
    stamp = doc.get("committed_at", doc.get("updated_at"))
    return scope, key, version, component, _timestamp(stamp)


def entry_event(entry: Any) -> SyncEvent:
    """The event of an audit row's ``new_value`` (a SyncEntry dict); TypeError or
    ValueError when the row is not one."""
    scope, key, version, component, at = _checked(entry)
    if "value" not in entry:
        raise TypeError("a sync entry has a value")
    return SyncEvent(scope, key, entry["value"], version, component, at)


def decode_message(data: bytes | str, origin: str,
                   resolve: Callable[[str, str, int], tuple[bool, Any]]) -> list[SyncEvent]:
    """The events of a message from another process ([] for one of our own).

    ``resolve(scope, key, version)`` supplies the value of a reference as
    ``(found, value)``; an event whose value cannot be found is left out.
    Raises (TypeError, ValueError) for a message that is not ours to read.
    """
    message = orjson.loads(data)
    if not isinstance(message, dict) or not isinstance(message.get("events"), list):
        raise TypeError("a sync message is an object with an events list")
    if message.get("origin") == origin:
        return []
    events: list[SyncEvent] = []
    for doc in message["events"]:
        scope, key, version, component, at = _checked(doc)
        if "value" in doc:
            value = doc["value"]
        else:
            found, value = resolve(scope, key, version)
            if not found:
                log.warning("sync propagation: %s:%s v%d is no longer in the audit log;"
                            " its notification is dropped", scope, key, version)
                continue
        events.append(SyncEvent(scope, key, value, version, component, at))
    return events


def _resolver(store: Store) -> Callable[[str, str, int], tuple[bool, Any]]:
    """Reference resolution for :func:`decode_message`: a store that cannot be read
    loses that one notification, not the receiving thread."""

    def resolve(scope: str, key: str, version: int) -> tuple[bool, Any]:
        try:
            return fetch_event_value(store, scope, key, version)
        except StatekeepError as exc:
            log.warning("sync propagation: cannot read %s:%s v%d from the audit log (%s)",
                        scope, key, version, exc)
            return False, None

    return resolve


def fetch_event_value(store: Store, scope: str, key: str, version: int) -> tuple[bool, Any]:
    """The value ``scope:key`` had at ``version``, from the audit log (the change log).

    Reads the key's rows newest first, a page at a time, because the wanted
    version is nearly always among the last few. Ids are not in commit order on
    PostgreSQL, so the scan does not stop at an older version; it stops when
    it finds this one or runs out of rows.
    """
    entity_id = f"{scope}:{key}"
    before: int | None = None
    while True:
        with store.reading() as conn:
            if before is None:
                rows = conn.execute(
                    "SELECT id, new_value FROM audit_log WHERE entity_type = 'sync'"
                    " AND entity_id = ? ORDER BY id DESC LIMIT ?",
                    (entity_id, FETCH_PAGE)).fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, new_value FROM audit_log WHERE entity_type = 'sync'"
                    " AND entity_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                    (entity_id, before, FETCH_PAGE)).fetchall()
        for row_id, raw in rows:
            entry = store.json_col(raw)
            if isinstance(entry, dict) and entry.get("version") == version and "value" in entry:
                return True, entry["value"]
            before = int(row_id)
        if len(rows) < FETCH_PAGE:
            return False, None


# -- no transport -----------------------------------------------------------------


class NullTransport:
    """In-process propagation only: a store no other process can open (``:memory:``)
    or a propagator built without a store."""

    name = "none"
    sends = False

    def start(self, on_events: EventsCallback) -> None:
        """Nothing ever arrives."""

    def send(self, events: Sequence[SyncEvent]) -> None:
        """Nobody else listens."""

    def wait_ready(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        """Nothing to release."""


# -- SQLite alone: poll the audit log --------------------------------------------------


class AuditPollTransport:
    """Reads the other processes' sync writes from the audit log every ``interval`` s.

    Used when the store is SQLite and there is no Redis: a file on one machine,
    where a read of new audit rows costs microseconds. It starts after the
    newest row that exists when it starts, so it reports changes, not history.
    """

    name = "audit-poll"
    sends = False

    def __init__(self, store: Store, *, interval: float,
                 backoff: ExponentialBackoff | None = None) -> None:
        self._store = store
        self.interval = max(interval, 0.005)  # 0 would spin a core for nothing
        self.received = 0
        self.errors = 0
        self._last_id = 0
        self._outage = Outage(backoff)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_events: EventsCallback | None = None

    def start(self, on_events: EventsCallback) -> None:
        # Read the starting point now, not in the thread: a change committed
        # after start() returns must be seen even if the thread is slow to run.
        with self._store.reading() as conn:
            row = conn.execute("SELECT MAX(id) FROM audit_log").fetchone()
        self._last_id = int(row[0] or 0)
        self._on_events = on_events
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="statekeep-sync-poll")
        self._thread.start()

    def send(self, events: Sequence[SyncEvent]) -> None:
        """Nothing to send: the committed audit row is the message."""

    def wait_ready(self, timeout: float) -> bool:
        return self._thread is not None

    def _run(self) -> None:
        while not self._stop.wait(max(self.interval, self._outage.wait_seconds())):
            try:
                self._poll()
            except Exception as exc:  # a locked or closed store: try again later
                self.errors += 1
                if self._outage.failed():
                    log.warning("sync propagation: cannot read the audit log of %s (%s);"
                                " retrying", self._store.location, exc)
            else:
                if self._outage.succeeded():
                    log.info("sync propagation: reading the audit log of %s again",
                             self._store.location)

    def _poll(self) -> None:
        while not self._stop.is_set():
            with self._store.reading() as conn:
                rows = conn.execute(
                    "SELECT id, new_value FROM audit_log WHERE entity_type = 'sync'"
                    " AND id > ? ORDER BY id LIMIT ?", (self._last_id, POLL_BATCH)).fetchall()
            if not rows:
                return
            events: list[SyncEvent] = []
            for _, raw in rows:
                entry = self._store.json_col(raw)
                if entry is None:  # a deletion has no value to propagate
                    continue
                try:
                    events.append(entry_event(entry))
                except (TypeError, ValueError) as exc:
                    log.debug("sync propagation: skipping a malformed sync audit row (%s)", exc)
            self._last_id = int(rows[-1][0])
            self.received += len(events)
            _hand_over(self._on_events, events)
            if len(rows) < POLL_BATCH:
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


# -- Redis pub/sub ----------------------------------------------------------------------


class RedisTransport:
    """Redis pub/sub on ``sk:<namespace>:sync`` (namespace: the store's ``store_id``).

    Follows the invalidation bus (:mod:`statekeep.memory.coherence`): a
    subscriber thread that resubscribes with backoff after losing Redis and
    logs once per outage. Pub/sub keeps nothing for a disconnected subscriber,
    so changes committed during an outage are missed by the processes that
    were cut off; ``gaps`` counts the times that happened here.
    """

    name = "redis"
    sends = True

    def __init__(self, store: Store, redis_url: str, namespace: str, *, origin: str,
                 max_bytes: int, backoff: ExponentialBackoff | None = None,
                 timeout: float = 0.5) -> None:
        from statekeep.memory.warm import redis_client, redis_location, validate_namespace

        validate_namespace(namespace)
        self.channel = f"sk:{namespace}:sync"
        self.origin = origin
        self.location = redis_location(redis_url)
        self.max_bytes = max(max_bytes, 4096)  # a reference must always fit
        self.received = 0
        self.errors = 0
        self.gaps = 0
        self._publisher = redis_client(redis_url, timeout=timeout)
        self._subscriber = redis_client(redis_url, timeout=timeout, health_check_interval=5)
        self._outage = Outage(backoff)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._resolve = _resolver(store)
        self._thread: threading.Thread | None = None
        self._on_events: EventsCallback | None = None

    def start(self, on_events: EventsCallback) -> None:
        self._on_events = on_events
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="statekeep-sync-redis")
        self._thread.start()

    def send(self, events: Sequence[SyncEvent]) -> None:
        for message in encode_messages(self.origin, events, self.max_bytes):
            self._publisher.publish(self.channel, message)

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def _run(self) -> None:
        from statekeep.memory.warm import REDIS_ERRORS

        subscribed_before = False
        while not self._stop.is_set():
            pubsub = self._subscriber.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        if subscribed_before:
                            self.gaps += 1
                            log.warning("sync propagation: resubscribed to Redis at %s;"
                                        " changes committed meanwhile were not received",
                                        self.location)
                        subscribed_before = True
                        self._ready.set()
                        if self._outage.succeeded():
                            log.info("sync propagation: Redis at %s is back", self.location)
                    elif message["type"] == "message":
                        self._deliver(message["data"])
            except REDIS_ERRORS as exc:
                self.errors += 1
                self._ready.clear()
                if self._outage.failed():
                    log.warning("sync propagation: lost Redis at %s (%s); resubscribing when"
                                " it is back", self.location, exc)
                self._stop.wait(max(self._outage.wait_seconds(), 0.01))
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    pubsub.close()
        self._ready.clear()

    def _deliver(self, data: Any) -> None:
        try:
            events = decode_message(data, self.origin, self._resolve)
        except Exception as exc:  # a foreign or corrupt message must not stop the thread
            self.errors += 1
            log.debug("sync propagation: ignoring a malformed Redis message (%s)", exc)
            return
        self.received += len(events)
        _hand_over(self._on_events, events)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._publisher.close()
        self._subscriber.close()


# -- PostgreSQL LISTEN/NOTIFY -----------------------------------------------------------


def pg_channel(store_id: str) -> str:
    """The NOTIFY channel of a store: ``sk_sync_<store_id>``.

    Channels are database-wide, while a store may be one schema of the
    database; the store id is unique per schema, so stores never hear each
    other. It must be a plain identifier of at most 63 bytes (longer ones
    are truncated by the server, which could merge two channels); an id that is
    not gets hashed instead.
    """
    channel = f"sk_sync_{store_id}"
    if _CHANNEL_RE.fullmatch(channel) and len(channel) <= _PG_IDENT_BYTES:
        return channel
    return "sk_sync_" + hashlib.sha256(store_id.encode()).hexdigest()[:40]


class PgNotifyTransport:
    """``LISTEN``/``NOTIFY`` on the store's PostgreSQL database.

    Both connections are the transport's own, in autocommit, outside the
    store's pool: a LISTEN connection is held forever and would starve the
    pool, and ``NOTIFY`` inside a store transaction would tie the message to
    the writer's commit, which propagation deliberately follows instead. A
    notification too large for the payload limit travels as a reference and
    the receiver reads the value from the audit log. Notifications sent while
    the listener is disconnected are lost (``gaps`` counts reconnections).
    """

    name = "postgres"
    sends = True
    #: Seconds between liveness checks of an idle LISTEN connection: a dead
    #: socket raises nothing while nobody talks on it.
    keepalive = 5.0

    def __init__(self, store: Store, *, origin: str, channel: str, conninfo: str,
                 backoff: ExponentialBackoff | None = None) -> None:
        if not _CHANNEL_RE.fullmatch(channel) or len(channel) > _PG_IDENT_BYTES:
            raise ValueError(f"NOTIFY channel {channel!r} must be [a-z0-9_], at most 63 bytes")
        self.channel = channel
        self.origin = origin
        self.location = store.location
        self.received = 0
        self.errors = 0
        self.gaps = 0
        self._conninfo = conninfo
        self._outage = Outage(backoff)
        self._send_lock = threading.Lock()
        self._sender: Any = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._resolve = _resolver(store)
        self._thread: threading.Thread | None = None
        self._on_events: EventsCallback | None = None

    def start(self, on_events: EventsCallback) -> None:
        self._on_events = on_events
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="statekeep-sync-listen")
        self._thread.start()

    def send(self, events: Sequence[SyncEvent]) -> None:
        import psycopg

        payloads = [(self.channel, m.decode())
                    for m in encode_messages(self.origin, events, NOTIFY_PAYLOAD_BYTES)]
        if not payloads:
            return
        with self._send_lock:
            try:
                if self._sender is None or self._sender.closed:
                    self._sender = psycopg.connect(self._conninfo, autocommit=True)
                with self._sender.cursor() as cur:
                    cur.executemany("SELECT pg_notify(%s, %s)", payloads)
            except psycopg.Error:
                self._drop_sender()
                raise

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def _run(self) -> None:
        import psycopg
        from psycopg import sql

        listened_before = False
        while not self._stop.is_set():
            conn: Any = None
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True)
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                if listened_before:
                    self.gaps += 1
                    log.warning("sync propagation: listening on %s again; changes committed"
                                " meanwhile were not received", self.location)
                listened_before = True
                self._ready.set()
                if self._outage.succeeded():
                    log.info("sync propagation: PostgreSQL at %s is back", self.location)
                checked = time.monotonic()
                while not self._stop.is_set():
                    for notify in conn.notifies(timeout=0.2):
                        self._deliver(notify.payload)
                        checked = time.monotonic()
                    if time.monotonic() - checked >= self.keepalive:
                        conn.execute("SELECT 1")
                        checked = time.monotonic()
            except psycopg.Error as exc:
                self.errors += 1
                self._ready.clear()
                if self._outage.failed():
                    log.warning("sync propagation: lost the LISTEN connection to %s (%s);"
                                " reconnecting", self.location, _first_line(exc))
                self._stop.wait(max(self._outage.wait_seconds(), 0.01))
            finally:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
        self._ready.clear()

    def _deliver(self, payload: str) -> None:
        try:
            events = decode_message(payload, self.origin, self._resolve)
        except Exception as exc:  # a foreign NOTIFY on our channel must not stop us
            self.errors += 1
            log.debug("sync propagation: ignoring a malformed notification (%s)", exc)
            return
        self.received += len(events)
        _hand_over(self._on_events, events)

    def _drop_sender(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(Exception):
                self._sender.close()
            self._sender = None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._send_lock:
            self._drop_sender()


def make_transport(store: Store, config: StateConfig | None = None, *, origin: str,
                   backoff: ExponentialBackoff | None = None) -> Transport:
    """The transport this deployment supports (see the module docstring for why)."""
    config = config or store.config
    if store.dialect == "postgresql":
        from psycopg.conninfo import make_conninfo

        # The store's own connection parameters (host, credentials, TimeZone,
        # search_path for the audit-log reads) under a name that shows in
        # pg_stat_activity.
        conninfo = make_conninfo(cast("PostgresStore", store).conninfo,
                                 application_name="statekeep-sync")
        return PgNotifyTransport(store, origin=origin, channel=pg_channel(store.store_id),
                                 conninfo=conninfo, backoff=backoff)
    if config.redis_url:
        return RedisTransport(store, config.redis_url, store.store_id, origin=origin,
                              max_bytes=config.max_value_bytes, backoff=backoff)
    if getattr(store, "path", None) == ":memory:":
        return NullTransport()
    return AuditPollTransport(store, interval=config.sync_poll_interval, backoff=backoff)
