"""Cross-process cache coherence: invalidations over Redis pub/sub.

Each process keeps its own hot tier, so a write in one process must evict the
copies held by the others. After a transaction commits, the writer publishes
the affected cache keys on ``sk:<namespace>:invalidate`` (the namespace is the
store's ``store_id``, so only processes on the same database listen to each
other); every other process's bus thread receives them and calls
``on_invalidate(keys)``. Messages carry an origin id, so a process ignores its
own -- it already invalidated locally, in the same after-commit hook.

Pub/sub is fire-and-forget: a subscriber that is disconnected misses
messages. The bus therefore calls ``on_reset()`` whenever its subscription is
lost and again when it is re-established (a redis-py reconnect shows up as a
second subscribe confirmation), and the caller drops its whole hot tier then;
while ``connected`` is False the caller should not trust cached copies. A
publisher that cannot reach Redis remembers the keys and publishes them once
it can (or, if too many piled up, publishes a reset).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from statekeep.codec import dumps_trusted, loads
from statekeep.errors import InvalidIdError
from statekeep.memory.warm import REDIS_ERRORS, redis_client, redis_location, validate_namespace
from statekeep.retry import ExponentialBackoff, Outage

__all__ = ["InvalidationBus"]

log = logging.getLogger(__name__)

#: Unpublished keys kept during an outage; beyond this a reset is published.
MAX_OWED = 100_000


class InvalidationBus:
    """Publish and receive cache invalidations between processes on one store."""

    def __init__(self, redis_url: str, namespace: str,
                 on_invalidate: Callable[[list[str]], None], *,
                 on_reset: Callable[[], None] | None = None, timeout: float = 0.5,
                 backoff: ExponentialBackoff | None = None) -> None:
        validate_namespace(namespace)
        self.channel = f"sk:{namespace}:invalidate"
        self.origin = uuid.uuid4().hex
        self.location = redis_location(redis_url)
        self.published = 0
        self.received = 0
        self.errors = 0
        self._on_invalidate = on_invalidate
        self._on_reset = on_reset
        self._publisher = redis_client(redis_url, timeout=timeout)
        self._subscriber = redis_client(redis_url, timeout=timeout, health_check_interval=5)
        self._pub_outage = Outage(backoff)
        self._sub_outage = Outage(backoff)
        self._owed: list[str] = []
        self._owed_reset = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"statekeep-invalidate-{namespace}")
        self._thread.start()

    @property
    def connected(self) -> bool:
        """True while subscribed; when False, other processes' writes go unheard."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Block until subscribed (True) or ``timeout`` seconds passed (False)."""
        return self._ready.wait(timeout)

    # -- publishing -----------------------------------------------------------

    def publish(self, keys: Iterable[str]) -> bool:
        """Tell the other processes to drop ``keys``; call it after commit.

        Never raises for Redis: on failure the keys are kept and sent later,
        and False is returned.
        """
        batch = list(dict.fromkeys(keys))
        if not all(isinstance(k, str) and k for k in batch):
            raise InvalidIdError("invalidation keys are non-empty str", field="keys")
        with self._lock:
            if self._owed_reset or self._owed:
                batch = [*self._owed, *batch]
                self._owed = []
            reset, self._owed_reset = self._owed_reset, False
        if not batch and not reset:
            return True
        message: dict[str, Any] = {"origin": self.origin, "keys": batch}
        if reset:
            message = {"origin": self.origin, "keys": [], "reset": True}
        if self._pub_outage.ready():
            try:
                self._publisher.publish(self.channel, dumps_trusted(message))
            except REDIS_ERRORS as exc:
                self.errors += 1
                if self._pub_outage.failed():
                    log.warning("invalidation bus: cannot publish to Redis at %s (%s); keys"
                                " are kept and sent when it is back", self.location, exc)
            else:
                if self._pub_outage.succeeded():
                    log.info("invalidation bus: Redis at %s is back", self.location)
                self.published += 1
                return True
        self._owe(batch, reset)
        return False

    def _owe(self, keys: list[str], reset: bool) -> None:
        with self._lock:
            if reset or self._owed_reset or len(self._owed) + len(keys) > MAX_OWED:
                self._owed_reset = True
                self._owed = []
            else:
                self._owed.extend(keys)

    # -- receiving ------------------------------------------------------------

    def _run(self) -> None:
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
                        if subscribed_before:  # a gap: messages may have been lost
                            self._reset("resubscribed")
                        subscribed_before = True
                        self._ready.set()
                        if self._sub_outage.succeeded():
                            log.info("invalidation bus: subscribed again to %s", self.location)
                        self.publish([])  # send what piled up while Redis was away
                    elif message["type"] == "message":
                        self._deliver(message["data"])
            except REDIS_ERRORS as exc:
                self.errors += 1
                if self._ready.is_set():
                    self._ready.clear()
                    self._reset("subscription lost")
                if self._sub_outage.failed():
                    log.warning("invalidation bus: lost Redis at %s (%s); hot copies are"
                                " dropped and the bus resubscribes when it is back",
                                self.location, exc)
                self._stop.wait(max(self._sub_outage.wait_seconds(), 0.01))
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    pubsub.close()
        self._ready.clear()

    def _deliver(self, data: Any) -> None:
        try:
            message = loads(data)
            origin, keys = message["origin"], message["keys"]
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise TypeError("keys must be a list of str")
        except Exception as exc:  # a foreign or corrupt message must not stop the bus
            log.debug("invalidation bus: ignoring malformed message (%s)", exc)
            return
        if origin == self.origin:
            return
        self.received += 1
        if message.get("reset"):
            self._reset("a publisher lost messages")
        elif keys:
            try:
                self._on_invalidate(keys)
            except Exception:
                log.exception("invalidation bus: on_invalidate failed")

    def _reset(self, why: str) -> None:
        log.debug("invalidation bus: reset (%s)", why)
        if self._on_reset is not None:
            try:
                self._on_reset()
            except Exception:
                log.exception("invalidation bus: on_reset failed")

    def close(self) -> None:
        """Stop the subscriber thread and release the connections."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._publisher.close()
        self._subscriber.close()
