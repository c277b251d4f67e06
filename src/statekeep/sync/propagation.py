"""Propagation: every committed change of a synchronised key reaches its subscribers.

The seed notified subscribers with ``asyncio.gather(..., return_exceptions=True)``:
one failure did not stop the others, but the writer still awaited the slowest
subscriber, and nothing bounded how much piled up behind it. Here the writer
only ever does ``put_nowait``: each subscription has its own bounded queue and
its own delivery thread, a full queue drops the new notification and counts it,
and a callback that raises is counted and logged. A subscriber can fall behind
or fail; the writer cannot notice.

Other processes on the same store are reached through a transport
(:mod:`statekeep.sync.transports`), fed by a sender thread from a bounded
outbox, so a slow or unreachable server costs the writer nothing either; while
it is down the outbox keeps the newest events and sends them when it is back.

Delivery is monotonic per key: a subscriber never sees a version of a key
older than (or equal to) one it was already given. The same check drops an
event that arrives twice -- published here *and* read back from the audit log
by the poller, or announced by two transports -- and a stale one, such as two
writers' after-commit hooks running in the opposite order of their commits.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import queue
import re
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from statekeep.config import StateConfig
from statekeep.errors import ValidationError
from statekeep.retry import ExponentialBackoff, Outage
from statekeep.sync.events import SyncEvent
from statekeep.sync.transports import NullTransport, Transport, make_transport

if TYPE_CHECKING:
    from statekeep.store.protocol import Store

__all__ = ["PropagationStats", "Propagator", "Subscription", "SubscriptionStats"]

log = logging.getLogger("statekeep.sync")

#: Events waiting for the transport. While it is down the oldest are dropped
#: first: a peer is better served by a key's newest value than by its history.
OUTBOX_SIZE: Final = 10_000
#: Events handed to the transport in one ``send``.
SEND_BATCH: Final = 1000
#: Keys whose last delivered version is remembered. A key that falls out can
#: see one duplicate or stale delivery, never a lost one.
TRACKED_KEYS: Final = 100_000
#: Seconds ``close`` waits for each thread it stops.
JOIN_TIMEOUT: Final = 5.0

Callback = Callable[[SyncEvent], None]


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    """One subscription's counters; see :class:`Subscription`."""

    component: str
    keys: str
    scope: str | None
    delivered: int
    dropped: int
    failed: int
    pending: int


@dataclass(frozen=True, slots=True)
class PropagationStats:
    """A propagator's counters, for metrics and for ``statekeep doctor``-style reports."""

    #: "postgres", "redis", "audit-poll" or "none".
    transport: str
    #: Local commits handed to subscribers (and to the transport).
    published: int
    #: Other processes' commits handed to subscribers.
    received: int
    #: Events whose version had already been delivered. With the audit-log
    #: poller, this process's own changes read back land here or in ``stale``.
    duplicates: int
    #: Events older than a version of the same key already delivered.
    stale: int
    #: Events the transport accepted for other processes.
    sent: int
    #: Events other processes will never hear of: the outbox overflowed or
    #: the transport was still down at close.
    unsent: int
    #: Failed ``send`` attempts (each is retried with backoff).
    send_errors: int
    subscriptions: tuple[SubscriptionStats, ...]


class Subscription:
    """A component's interest in some keys: a bounded queue and a delivery thread.

    The thread is what lets a callback be slow or raise without touching
    the writer or the other subscribers. Counters: ``delivered`` (callbacks
    that returned), ``failed`` (callbacks that raised), ``dropped`` (events
    that found the queue full and were never delivered). Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(self, component: str, callback: Callback, *, keys: str, scope: str | None,
                 queue_size: int, on_close: Callable[[Subscription], None]) -> None:
        self.component = component
        self.keys = keys
        self.scope = scope
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self._callback = callback
        # A compiled shell pattern, case-sensitive like the keys themselves.
        self._match = re.compile(fnmatch.translate(keys)).match
        self._queue: queue.Queue[SyncEvent | None] = queue.Queue(queue_size)
        self._on_close = on_close
        self._lock = threading.Lock()
        self._burst = 0
        self._failing = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"statekeep-sync-{component}")
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Events queued and not yet handed to the callback."""
        return self._queue.qsize()

    def wants(self, event: SyncEvent) -> bool:
        """True if ``event`` is for this subscription: never its own component's write."""
        return (event.component != self.component
                and (self.scope is None or event.scope == self.scope)
                and self._match(event.key) is not None)

    def _offer(self, event: SyncEvent) -> None:
        """Queue ``event`` without waiting; a full queue loses it (and counts it)."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                self._burst += 1
                first = self._burst == 1
            if first:  # once per burst: a stuck subscriber must not flood the log
                log.warning("sync propagation: subscriber %r is %d notifications behind;"
                            " new ones are dropped until it catches up",
                            self.component, self._queue.maxsize)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None or self._closed:
                return
            try:
                self._callback(event)
            except Exception:
                self.failed += 1
                self._failing += 1
                if self._failing == 1:
                    log.exception("sync propagation: subscriber %r failed on %s:%s v%d",
                                  self.component, event.scope, event.key, event.version)
                else:
                    log.debug("sync propagation: subscriber %r failed again",
                              self.component, exc_info=True)
            else:
                self.delivered += 1
                if self._failing:
                    log.info("sync propagation: subscriber %r works again after %d failures",
                             self.component, self._failing)
                    self._failing = 0
            if self._burst and self._queue.empty():
                with self._lock:
                    lost, self._burst = self._burst, 0
                log.info("sync propagation: subscriber %r caught up; %d notifications were"
                         " dropped", self.component, lost)

    def stats(self) -> SubscriptionStats:
        return SubscriptionStats(self.component, self.keys, self.scope, self.delivered,
                                 self.dropped, self.failed, self.pending)

    def close(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Stop delivering; queued events are discarded. Safe from inside the callback."""
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        # Wake an idle worker; a full queue means a busy one, which sees
        # _closed after its current callback.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("sync propagation: subscriber %r is still inside its callback"
                            " after %.1f s; leaving its thread behind", self.component, timeout)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        scope = f" scope={self.scope!r}" if self.scope is not None else ""
        return f"<Subscription {self.component!r} keys={self.keys!r}{scope}>"


class Propagator:
    """Hands committed :class:`SyncEvent` s to subscribers here and in other processes.

    ``Propagator(store)`` picks the transport the store's deployment supports
    (see :func:`~statekeep.sync.transports.make_transport`); without a store
    it propagates within this process only. Call :meth:`publish` from an
    after-commit hook, so that only committed changes travel, and
    :meth:`close` before closing the store.
    """

    def __init__(self, store: Store | None = None, *, config: StateConfig | None = None,
                 transport: Transport | None = None, outbox_size: int = OUTBOX_SIZE,
                 backoff: ExponentialBackoff | None = None) -> None:
        if outbox_size < 1:
            raise ValidationError("outbox_size must be at least 1", field="outbox_size")
        if config is None:
            config = store.config if store is not None else StateConfig()
        self.config = config
        #: Tags this propagator's messages, so that it ignores them on receipt.
        self.origin = uuid.uuid4().hex
        if transport is None:
            transport = (NullTransport() if store is None else
                         make_transport(store, config, origin=self.origin, backoff=backoff))
        self.transport = transport
        self.outbox_size = outbox_size
        self.published = 0
        self.received = 0
        self.duplicates = 0
        self.stale = 0
        self.sent = 0
        self.unsent = 0
        self.send_errors = 0
        self._closed = False
        self._subs: tuple[Subscription, ...] = ()
        self._subs_lock = threading.Lock()
        self._latest: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._latest_lock = threading.Lock()
        self._outbox: deque[SyncEvent] = deque()
        self._outbox_cond = threading.Condition()
        self._overflowing = False
        self._stopping = False
        self._send_outage = Outage(backoff)
        self._sender: threading.Thread | None = None
        if transport.sends:
            self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                            name="statekeep-sync-send")
            self._sender.start()
        try:
            transport.start(self._receive)
        except BaseException:
            self.close()
            raise

    # -- subscribing --------------------------------------------------------------

    def subscribe(self, component: str, callback: Callback, *, keys: str = "*",
                  scope: str | None = None, queue_size: int | None = None) -> Subscription:
        """Call ``callback(event)`` for each committed change of a key matching the shell
        pattern ``keys`` (in ``scope``, or any scope), except ``component``'s own.

        The callback runs on the subscription's own thread, one event at a time,
        in publish order; at most ``queue_size`` (default ``sync_queue_size``)
        events wait for it, and beyond that new ones are dropped and counted.
        """
        if not isinstance(component, str) or not component:
            raise ValidationError("component must be a non-empty string", field="component")
        if not callable(callback):
            raise ValidationError("callback must be callable", field="callback")
        if not isinstance(keys, str) or not keys:
            raise ValidationError("keys must be a non-empty shell pattern", field="keys")
        if scope is not None and not isinstance(scope, str):
            raise ValidationError("scope must be a string or None", field="scope")
        size = self.config.sync_queue_size if queue_size is None else queue_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValidationError("queue_size must be an integer of at least 1",
                                  field="queue_size")
        if self._closed:
            raise ValidationError("the propagator is closed", field="component")
        sub = Subscription(component, callback, keys=keys, scope=scope, queue_size=size,
                           on_close=self._unsubscribe)
        with self._subs_lock:
            self._subs = (*self._subs, sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._subs_lock:
            self._subs = tuple(s for s in self._subs if s is not sub)

    # -- publishing and receiving -------------------------------------------------

    def publish(self, events: Sequence[SyncEvent]) -> None:
        """Announce committed changes; call it after commit. Never blocks, never raises.

        Subscribers here get them through their queues; other processes get
        them through the transport, from a sender thread.
        """
        if self._closed:
            log.debug("sync propagation: publish after close ignored")
            return
        try:
            fresh = self._admit(events, local=True)
            if not fresh:
                return
            self._fan_out(fresh)
            if self._sender is not None:
                with self._outbox_cond:
                    self._outbox.extend(fresh)
                    self._trim_outbox()
                    self._outbox_cond.notify()
        except Exception:  # the write is committed; its notification must not undo that
            log.exception("sync propagation: publishing failed")

    def _receive(self, events: list[SyncEvent]) -> None:
        """Events from other processes (the transport's thread)."""
        fresh = self._admit(events, local=False)
        if fresh and not self._closed:
            self._fan_out(fresh)

    def _admit(self, events: Sequence[SyncEvent], *, local: bool) -> list[SyncEvent]:
        """The events not yet delivered, newer than any delivered version of their key."""
        fresh: list[SyncEvent] = []
        with self._latest_lock:
            latest = self._latest
            for event in events:
                if not isinstance(event, SyncEvent):
                    log.error("sync propagation: %r is not a SyncEvent; not published", event)
                    continue
                slot = (event.scope, event.key)
                last = latest.get(slot)
                if last is not None and event.version <= last:
                    if event.version == last:
                        self.duplicates += 1
                    else:
                        self.stale += 1
                    continue
                latest[slot] = event.version
                latest.move_to_end(slot)
                if len(latest) > TRACKED_KEYS:
                    latest.popitem(last=False)
                fresh.append(event)
            if local:
                self.published += len(fresh)
            else:
                self.received += len(fresh)
        return fresh

    def _fan_out(self, events: list[SyncEvent]) -> None:
        subs = self._subs  # a snapshot: subscribe/close replace the tuple
        for event in events:
            for sub in subs:
                if sub.wants(event):
                    sub._offer(event)

    # -- sending ------------------------------------------------------------------

    def _trim_outbox(self) -> None:
        """Bound the outbox (caller holds its lock), dropping the oldest events."""
        excess = len(self._outbox) - self.outbox_size
        if excess <= 0:
            return
        for _ in range(excess):
            self._outbox.popleft()
        self.unsent += excess
        if not self._overflowing:
            self._overflowing = True
            log.warning("sync propagation: %d events wait for the %s transport; older ones"
                        " are dropped and other processes will miss them",
                        self.outbox_size, self.transport.name)

    def _send_loop(self) -> None:
        cond = self._outbox_cond
        while True:
            with cond:
                while not self._outbox and not self._stopping:
                    cond.wait()
                if not self._outbox:
                    return
                if self._stopping and self._send_outage.down:
                    self.unsent += len(self._outbox)
                    log.warning("sync propagation: closing with %d events the %s transport"
                                " could not send", len(self._outbox), self.transport.name)
                    self._outbox.clear()
                    return
                batch = [self._outbox.popleft()
                         for _ in range(min(len(self._outbox), SEND_BATCH))]
            try:
                self.transport.send(batch)
            except Exception as exc:
                self.send_errors += 1
                if self._send_outage.failed():
                    log.warning("sync propagation: the %s transport cannot send (%s); events"
                                " are kept and retried", self.transport.name, exc)
                with cond:
                    self._outbox.extendleft(reversed(batch))
                    self._trim_outbox()
                    cond.wait_for(lambda: self._stopping, self._send_outage.wait_seconds())
            else:
                self.sent += len(batch)
                if self._send_outage.succeeded():
                    log.info("sync propagation: the %s transport sends again",
                             self.transport.name)
                if self._overflowing:
                    with cond:
                        self._overflowing = len(self._outbox) >= self.outbox_size

    # -- lifecycle ----------------------------------------------------------------

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """True once other processes' commits from now on will be received."""
        return self.transport.wait_ready(timeout)

    def stats(self) -> PropagationStats:
        return PropagationStats(
            transport=self.transport.name, published=self.published, received=self.received,
            duplicates=self.duplicates, stale=self.stale, sent=self.sent, unsent=self.unsent,
            send_errors=self.send_errors,
            subscriptions=tuple(s.stats() for s in self._subs))

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return self._subs

    def close(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Send what the transport can still take, then stop every thread.

        The outbox is flushed first, so a process that publishes and exits
        still reaches the others; if the transport is down, the rest is
        counted in ``unsent``. Close the propagator before its store.
        """
        if self._closed:
            return
        self._closed = True
        with self._outbox_cond:
            self._stopping = True
            self._outbox_cond.notify_all()
        if self._sender is not None and self._sender is not threading.current_thread():
            self._sender.join(timeout)
            if self._sender.is_alive():
                log.warning("sync propagation: the %s transport is still sending after"
                            " %.1f s; leaving it behind", self.transport.name, timeout)
        try:
            self.transport.close()
        except Exception:
            log.exception("sync propagation: closing the %s transport failed",
                          self.transport.name)
        for sub in self._subs:
            sub.close(timeout)

    def __enter__(self) -> Propagator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
