"""The façade: one object that opens the store and wires every component.

:class:`StateSystem` is the synchronous core (scripts, the CLI, servers);
:class:`StateManagementSystem` is the seed's async API over the same core,
not a second copy of it. Each public method is declared once on the store;
the façades forward to it through :func:`_forward` / :func:`_offload`, which
keep the full signature for type checkers and the docstring for ``help()``.
As later components (memory tiers, context engine) take over a method, its
one-line forward is replaced by a real method here.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from statekeep import codec
from statekeep.config import StateConfig
from statekeep.context import cache as recon_cache
from statekeep.context.analyzer import ContextAnalyzer
from statekeep.context.brief import Brief, render_brief
from statekeep.context.capture import CaptureReport, Progress
from statekeep.context.engine import ContextEngine
from statekeep.context.reconstruct import SessionContext
from statekeep.context.relevance import RelevanceExplanation
from statekeep.context.search import SearchResult, search_context
from statekeep.errors import NotFoundError, StatekeepError
from statekeep.gc import CollectionResult, GarbageCollector
from statekeep.learning.autonomy import AutonomyAnswer
from statekeep.learning.engine import DecisionEngine, Settled
from statekeep.memory.archive import ArchiveTier
from statekeep.memory.coherence import InvalidationBus
from statekeep.memory.hierarchy import HierarchicalMemory
from statekeep.memory.hot import HotTier
from statekeep.memory.warm import WarmTier
from statekeep.metrics import PerformanceReport, StateMetrics, counts_errors
from statekeep.models import (
    ContextItem,
    RecoveryPoint,
    Session,
    SessionStatus,
    SyncEntry,
    Task,
)
from statekeep.query import QueryOptimizer
from statekeep.recovery.backup import BackupManager
from statekeep.recovery.health import AutoRecovery
from statekeep.recovery.manager import RecoveryManager, RecoveryResult
from statekeep.store import Store, open_store
from statekeep.store.base import UNSET, Change, utcnow
from statekeep.store.migrations import StateMigrationSystem
from statekeep.sync.events import SyncEvent
from statekeep.sync.manager import ConflictResolution, SyncManager, SyncResult
from statekeep.sync.propagation import Propagator, Subscription
from statekeep.sync.resolver import ConflictResolver

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["StateManagementSystem", "StateSystem"]

_SEP = "\x1f"  # ids, names and keys all refuse control characters: never ambiguous


def _stale_keys(change: Change) -> list[str]:
    """The cache entries a change makes stale, as strings that can cross processes.

    Any change inside a session also stales the session's reconstructed
    context; a preference change stales every reconstruction (preferences
    belong to a user, and the change does not say which sessions are theirs).
    """
    kind = change.entity_type
    keys: list[str] = []
    if kind == "context":
        keys = [_SEP.join(("ctx", change.session_id or "", t, k)) for t, k in change.keys]
    elif kind in ("session", "task", "memory"):
        keys = [f"{kind}{_SEP}{entity_id}" for entity_id in change.entity_ids]
        if kind == "session":
            keys += [f"recon{_SEP}{entity_id}" for entity_id in change.entity_ids]
            if change.event == "delete":
                keys += [f"session-all{_SEP}{entity_id}" for entity_id in change.entity_ids]
    elif kind == "preference":
        keys = ["recon-all"]
    elif kind == "store":  # a recovery, restore or repair rewrote rows of any kind
        return ["all"]
    if change.session_id is not None:
        keys.append(f"recon{_SEP}{change.session_id}")
    return keys


def _is_reconstruction(key: Any, _value: Any) -> bool:
    return isinstance(key, tuple) and bool(key) and key[0] == "recon"


def _belongs_to(session_id: str) -> Callable[[Any, Any], bool]:
    """A hot-tier predicate: entries (tasks, context items) of one session."""
    def match(_key: Any, value: Any) -> bool:
        return getattr(value, "session_id", None) == session_id
    return match


class Miss(Enum):
    """The hot tier has no answer (distinct from a cached 'absent')."""

    MISS = 0


MISS = Miss.MISS

P = ParamSpec("P")
R = TypeVar("R")


def _forward(method: Callable[Concatenate[Store, P], R]) -> Callable[
        Concatenate[StateSystem, P], R]:
    name = method.__name__

    @functools.wraps(method)
    def call(self: StateSystem, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result: R = getattr(self.store, name)(*args, **kwargs)
        except StatekeepError as exc:  # free until raised: no cost on the hot path
            self._count_error(exc)
            raise
        return result

    return cast("Callable[Concatenate[StateSystem, P], R]", call)


class StateSystem:
    """Synchronous statekeep: ``with StateSystem(StateConfig(db=...)) as sk: ...``."""

    def __init__(self, config: StateConfig | None = None, *,
                 clock: Callable[[], datetime] = utcnow,
                 metrics_registry: CollectorRegistry | None = None,
                 **overrides: Any) -> None:
        if config is None:
            config = StateConfig.load(**overrides)
        elif overrides:
            config = config.replace(**overrides)
        self.config = config
        self.store: Store = open_store(config, clock=clock)
        #: The seed's name for the durable tier.
        self.persistent_store = self.store
        self.migrations = StateMigrationSystem(self.store)
        #: The in-process hot tier in front of point reads (None when sized 0).
        self.hot: HotTier | None = None
        # Bumped by every invalidation; a cache fill that read the store before
        # an invalidation it did not see is dropped (see _fill).
        self._generation = 0
        self._fill_lock = threading.Lock()
        if config.hot_cache_bytes > 0:
            self.hot = HotTier(config.hot_cache_bytes, config.hot_ttl_seconds)
        #: The seed's names: the in-process store and the Redis cache layer.
        self.memory_store = self.hot
        self.cache_layer: WarmTier | None = None
        #: Tells other processes on this store what to drop from their hot tiers.
        self.bus: InvalidationBus | None = None
        short_term: WarmTier | None = None
        if config.redis_url:
            namespace = self.store.store_id
            self.cache_layer = WarmTier(config.redis_url, namespace,
                                        ttl_seconds=config.warm_ttl_seconds,
                                        max_bytes=config.warm_cache_bytes)
            short_term = WarmTier(config.redis_url, f"{namespace}-mem",
                                  ttl_seconds=config.warm_ttl_seconds,
                                  max_bytes=config.short_term_bytes)
            self.bus = InvalidationBus(config.redis_url, namespace,
                                       on_invalidate=self._drop, on_reset=self._reset)
        #: The seed's hierarchical memory: working (in process), short-term
        #: (Redis, when configured) and long-term (the store).
        self.memory = HierarchicalMemory(self.store, short_term=short_term)
        #: Finished sessions past the cold retention, moved to zstd files.
        self.archive = ArchiveTier.for_store(self.store)
        #: Query statistics, plans, index advice and the result cache (seed 8).
        self.query_optimizer = QueryOptimizer(self.store, config)
        #: Mark, sweep and compact under the retention rules (seed 9).
        self.garbage_collector = GarbageCollector(self.store, archive=self.archive)
        #: Snapshots, recovery points, full / selective / point-in-time recovery.
        self.recovery_manager = RecoveryManager(self.store)
        #: Online, verified backups with keep-last-N (scheduled by start_background).
        self.backup_scheduler = BackupManager(self.store, archive=self.archive,
                                              on_restore=self._forget_all)
        #: The health monitor: integrity, checksums, consistency, auto-repair.
        self.health = AutoRecovery(self.store, backups=self.backup_scheduler,
                                   recovery=self.recovery_manager, archive=self.archive,
                                   on_repair=self._forget_all)
        #: The seed's context engine: capture, relations, relevance, reconstruction.
        self.context = ContextEngine(self.store, config)
        #: What a returning agent asks first: most touched, stale, clusters, drift.
        self.analyzer = ContextAnalyzer(self.store)
        #: Decision history and preference learning.
        self.decisions = DecisionEngine(self.store, config)
        self._propagator: Propagator | None = None
        self._propagator_lock = threading.Lock()
        self.store.add_change_listener(self.invalidate)
        #: Prometheus metrics and the performance report (None when ``metrics``
        #: is off): its own registry unless ``metrics_registry`` is given.
        self.metrics: StateMetrics | None = (
            StateMetrics.for_system(self, registry=metrics_registry) if config.metrics
            else None)

    # -- sync (seed 6): built on first use ------------------------------------

    @functools.cached_property
    def sync_manager(self) -> SyncManager:
        """Components' shared state: versions, conflicts, resolution, propagation.

        Built on first use, because propagation opens a listener (LISTEN, Redis
        pub/sub or an audit-log poller) that a process not syncing should not pay for.
        """
        return SyncManager(self.store, self.config, propagator=self.propagator)

    @property
    def propagator(self) -> Propagator:
        """Delivers committed sync changes to subscribers here and in other processes."""
        with self._propagator_lock:
            if self._propagator is None:
                self._propagator = Propagator(self.store)
            return self._propagator

    @property
    def conflict_resolver(self) -> ConflictResolver:
        """The seed's name for the sync manager's resolver."""
        return self.sync_manager.resolver

    def subscribe(self, component: str, callback: Callable[[SyncEvent], None], *,
                  keys: str = "*", scope: str | None = None,
                  queue_size: int | None = None) -> Subscription:
        """Hear of every committed change of matching keys, except ``component``'s own."""
        return self.propagator.subscribe(component, callback, keys=keys, scope=scope,
                                         queue_size=queue_size)

    # -- the hot tier: read-through, invalidated after commit -----------------

    def invalidate(self, change: Change) -> None:
        """Drop what a committed change made stale, here and in other processes."""
        keys = _stale_keys(change)
        self._drop(keys)
        if self.cache_layer is not None:
            stale = [recon_cache.warm_key(k.partition(_SEP)[2]) for k in keys
                     if k.startswith(f"recon{_SEP}")]
            if stale:
                self.cache_layer.delete(*stale)
        if self.bus is not None:
            self.bus.publish(keys)

    def _drop(self, keys: list[str]) -> None:
        """Discard cache entries named by :func:`_stale_keys` (ours or another process's)."""
        hot = self.hot
        with self._fill_lock:
            self._generation += 1
            for text in keys:
                kind, _, rest = text.partition(_SEP)
                if kind == "all":
                    self._clear_everything()
                elif kind == "memory":
                    self.memory.working.discard(rest)
                elif hot is None:
                    continue
                elif kind == "session-all":  # a deleted session took its tasks and context
                    hot.discard_where(_belongs_to(rest))
                elif kind == "recon-all":
                    hot.discard_where(_is_reconstruction)
                else:
                    hot.discard((kind, *rest.split(_SEP)))

    def _clear_everything(self) -> None:
        """After a recovery or restore any cached value may be wrong: drop them all,
        in this process and (through "all" on the bus) in the others."""
        if self.store.query_cache is not None:
            self.store.query_cache.clear()
        if self.hot is not None:
            self.hot.clear()
        self.memory.working.clear()
        for tier in (self.cache_layer, self.memory.short_term):
            if isinstance(tier, WarmTier):
                tier.clear()

    def _forget_all(self) -> None:
        """A backup restore or repair replaced the database under the store."""
        self.invalidate(Change("restore", "store", (), None))

    def _reset(self) -> None:
        """Invalidations may have been missed (the bus lost Redis): forget everything."""
        with self._fill_lock:
            self._generation += 1
            if self.hot is not None:
                self.hot.clear()
            self.memory.working.clear()
            if self.store.query_cache is not None:
                self.store.query_cache.clear()

    def _cached(self, key: tuple[str, ...]) -> Any:
        hot = self.hot
        if hot is None:
            return None
        try:
            return hot.get(key)
        except TypeError:  # an unhashable argument: the store will reject it properly
            return None

    def _fill(self, key: tuple[str, ...], value: Session | Task | ContextItem,
              generation: int) -> None:
        hot = self.hot
        if hot is None:
            return
        size = len(codec.dumps_trusted(value.to_dict()))
        with self._fill_lock:
            if generation == self._generation:
                hot.put(key, value, size)

    def get_session(self, session_id: str) -> Session:
        """The session, from the hot tier when it is there; an archived session is
        restored from its archive file transparently."""
        key = ("session", session_id)
        cached: Session | None = self._cached(key)
        if cached is not None:
            return cached
        generation = self._generation
        try:
            try:
                session = self.store.get_session(session_id)
            except NotFoundError:
                if not self.archive.is_archived(session_id):
                    raise
                try:
                    session = self.archive.restore(session_id)
                except NotFoundError:  # another process restored it first
                    session = self.store.get_session(session_id)
        except StatekeepError as exc:
            self._count_error(exc)
            raise
        self._fill(key, session, generation)
        return session

    @counts_errors
    def resume_session(self, session_id: str) -> Session:
        """Take a session back up: reactivate it (from paused or failed) and
        prefetch its active tasks and most relevant context into the hot tier,
        so the agent's first reads after a restart are served from memory."""
        session = self.get_session(session_id)
        if session.status in (SessionStatus.PAUSED, SessionStatus.FAILED):
            session = self.update_session(session_id, status=SessionStatus.ACTIVE)
        if self.hot is not None:
            # Held across the reads: a write committing meanwhile has its
            # invalidation wait for the lock, so it lands after these fills.
            with self._fill_lock:
                self.memory.optimizer.prefetch(session_id, self.hot)
        return session

    def get_task(self, task_id: str) -> Task:
        """The task, from the hot tier when it is there."""
        key = ("task", task_id)
        cached: Task | None = self._cached(key)
        if cached is not None:
            return cached
        generation = self._generation
        try:
            task = self.store.get_task(task_id)
        except StatekeepError as exc:
            self._count_error(exc)
            raise
        self._fill(key, task, generation)
        return task

    def get_context(self, session_id: str, context_type: str,
                    context_key: str) -> ContextItem | None:
        """The live item at (session, type, key), from the hot tier when it is there.

        A hit costs no lock on the store, no I/O and no thread hop; it still
        honours expiry and counts the access.
        """
        hit = self.peek_context(session_id, context_type, context_key)
        if hit is not MISS:
            return hit
        generation = self._generation
        try:
            item = self.store.get_context(session_id, context_type, context_key)
        except StatekeepError as exc:
            self._count_error(exc)
            raise
        if item is not None:
            self._fill(("ctx", session_id, context_type, context_key), item, generation)
        return item

    def peek_context(self, session_id: str, context_type: str,
                     context_key: str) -> ContextItem | Miss | None:
        """The hot tier's answer for an item, or MISS: never touches the store,
        so the async façade can call it on the event loop."""
        cached: ContextItem | None = self._cached(("ctx", session_id, context_type, context_key))
        if cached is None:
            return MISS
        now = self.store.now()
        if cached.expires_at is not None and cached.expires_at <= now:
            return None
        self.store.access_log.record(cached.id, now)
        return cached

    # -- the context engine --------------------------------------------------

    @counts_errors
    def capture_context(self, session_id: str, source: str, data: Mapping[str, Any], *,
                        root: str | Path | None = None,
                        progress: Progress | None = None) -> CaptureReport:
        """Capture context (files, code snippets, a task, the environment) into
        the session; see :meth:`ContextEngine.capture_context`."""
        self.get_session(session_id)  # restores an archived session first
        return self.context.capture_context(session_id, source, data, root=root,
                                            progress=progress)

    @counts_errors
    def capture_paths(self, session_id: str, paths: Sequence[str | Path], *,
                      root: str | Path | None = None, environment: bool = False,
                      git: bool = False, progress: Progress | None = None) -> CaptureReport:
        """Capture files and folders under the workspace root, all or nothing."""
        self.get_session(session_id)
        return self.context.capture_paths(session_id, paths, root=root,
                                          environment=environment, git=git,
                                          progress=progress)

    def reconstruct_context(self, session_id: str) -> SessionContext:
        """The session's working context, ranked: from the hot tier, else the
        warm tier (shared by every process), else rebuilt from the store.

        Any committed change in the session drops the cached copy, here and
        in other processes; scores in a cached copy are as of its ``built_at``.
        """
        cached = self.peek_reconstruction(session_id)
        if cached is not None:
            return cached
        try:
            return self._reconstruct(session_id)
        except StatekeepError as exc:
            self._count_error(exc)
            raise

    def _reconstruct(self, session_id: str) -> SessionContext:
        self.get_session(session_id)  # restores an archived session first
        generation = self._generation
        warm = self.cache_layer
        if warm is not None and (data := warm.get(recon_cache.warm_key(session_id))):
            found = recon_cache.decode(self.store, data)
            if found is not None:
                self._fill_reconstruction(session_id, found[0], found[1], generation)
                return found[0]
        ctx = self.context.reconstruct_context(session_id)
        stamp = recon_cache.preference_stamp(self.store, ctx.session.user_id)
        packed, size = recon_cache.encode(ctx, stamp)
        if self._fill_reconstruction(session_id, ctx, size, generation) and warm is not None:
            warm.put(recon_cache.warm_key(session_id), packed)
        return ctx

    def peek_reconstruction(self, session_id: str) -> SessionContext | None:
        """The hot tier's reconstruction, or None: never touches the store."""
        found: SessionContext | None = self._cached(("recon", session_id))
        return found

    def _fill_reconstruction(self, session_id: str, ctx: SessionContext, size: int,
                             generation: int) -> bool:
        """Cache a reconstruction unless an invalidation raced its build."""
        with self._fill_lock:
            if generation != self._generation:
                return False
            if self.hot is not None:
                self.hot.put(("recon", session_id), ctx, size)
            return True

    @counts_errors
    def explain_relevance(self, session_id: str, context_type: str,
                          context_key: str) -> RelevanceExplanation:
        """Every component of one item's relevance score, as ranking computes it."""
        return self.context.explain_relevance(session_id, context_type, context_key)

    @counts_errors
    def search_context(self, query: str, *, session_id: str | None = None,
                       limit: int = 20) -> list[SearchResult]:
        """Full-text search over context, blended with relevance."""
        return search_context(self.store, self.context.relevance_calculator, query,
                              session_id=session_id, limit=limit)

    @counts_errors
    def resume_brief(self, session_id: str, *, budget_tokens: int | None = None,
                     decisions: int = 10) -> Brief:
        """The Markdown brief an agent pastes into its prompt to pick up the work."""
        ctx = self.reconstruct_context(session_id)
        recent = self.store.list_decisions(session_id=session_id, limit=decisions)
        return render_brief(
            ctx, budget_tokens=(self.config.brief_budget_tokens if budget_tokens is None
                                else budget_tokens),
            decisions=recent, drift=self.analyzer.drift(session_id))

    def start_background(self) -> None:
        """Start the scheduled backups and the health monitor (seed 7.2: every 60 s).

        Opt-in, for the long-lived process that owns the store: a one-shot
        command would otherwise take a backup at once, since one is due
        whenever none exists.
        """
        if self.config.backup_interval_hours > 0:
            self.backup_scheduler.start()
        if self.config.health_check_interval > 0:
            self.health.start()

    @counts_errors
    def create_recovery_point(self, name: str | None = None, *,
                              session_id: str | None = None,
                              description: str | None = None) -> RecoveryPoint:
        """Cheap enough for every task boundary; see
        :meth:`RecoveryManager.create_recovery_point`."""
        return self.recovery_manager.create_recovery_point(name, session_id=session_id,
                                                           description=description)

    # -- metrics (seed 10) ------------------------------------------------------

    def _count_error(self, exc: StatekeepError) -> None:
        if self.metrics is not None:
            self.metrics.count_error(exc)

    def generate_performance_report(self) -> PerformanceReport:
        """This process's latencies, throughput, cache and memory figures, GC impact;
        see :meth:`StateMetrics.generate_performance_report`."""
        if self.metrics is None:
            from statekeep.errors import ConfigError
            raise ConfigError("metrics are off for this system (metrics = false)")
        return self.metrics.generate_performance_report()

    @counts_errors
    def recover(self, recovery_point_id: str, strategy: str = "full", *,
                sessions: Sequence[str] | None = None,
                entity_types: Sequence[str] | None = None,
                keys: Sequence[str] | None = None, dry_run: bool = False,
                progress: Callable[[int, int], None] | None = None) -> RecoveryResult:
        """Recover to a recovery point, timed; see :meth:`RecoveryManager.recover`."""
        return self._recovered(self.recovery_manager.recover(
            recovery_point_id, strategy, sessions=sessions, entity_types=entity_types,
            keys=keys, dry_run=dry_run, progress=progress))

    @counts_errors
    def recover_to_time(self, at: datetime, *, sessions: Sequence[str] | None = None,
                        dry_run: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> RecoveryResult:
        """Point-in-time recovery, timed; see :meth:`RecoveryManager.recover_to_time`."""
        return self._recovered(self.recovery_manager.recover_to_time(
            at, sessions=sessions, dry_run=dry_run, progress=progress))

    @counts_errors
    def restore_snapshot(self, snapshot_id: str, *, sessions: Sequence[str] | None = None,
                         entity_types: Sequence[str] | None = None,
                         keys: Sequence[str] | None = None,
                         dry_run: bool = False) -> RecoveryResult:
        """Restore a snapshot, timed; see :meth:`RecoveryManager.restore_snapshot`."""
        return self._recovered(self.recovery_manager.restore_snapshot(
            snapshot_id, sessions=sessions, entity_types=entity_types, keys=keys,
            dry_run=dry_run))

    @counts_errors
    def collect_garbage(self, force: bool = False, *, dry_run: bool = False,
                        vacuum: bool = False, limit: int | None = 1000,
                        progress: Callable[[int, int], None] | None = None,
                        ) -> CollectionResult:
        """Mark, sweep and compact, timed; see :meth:`GarbageCollector.collect`."""
        started = time.perf_counter()
        result = self.garbage_collector.collect(force, dry_run=dry_run, vacuum=vacuum,
                                                limit=limit, progress=progress)
        if self.metrics is not None and not (result.skipped or dry_run):
            self.metrics.observe_gc(time.perf_counter() - started)
        return result

    def _recovered(self, result: RecoveryResult) -> RecoveryResult:
        if self.metrics is not None and not result.dry_run:
            self.metrics.observe_recovery(result.elapsed_s)
        return result

    def close(self) -> None:
        """Flush pending bookkeeping and release the tiers, then the store."""
        if self.metrics is not None:
            self.metrics.close()
        self.query_optimizer.save_statistics()  # for `statekeep indexes` (never raises)
        self.health.stop()
        self.backup_scheduler.stop()
        if self._propagator is not None:  # sends what is still queued, then stops
            self._propagator.close()
        if self.bus is not None:
            self.bus.close()
        self.memory.close()
        for tier in (self.cache_layer, self.memory.short_term):
            if isinstance(tier, WarmTier):
                tier.close()
        self.store.close()

    def __enter__(self) -> StateSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # sessions
    create_session = _forward(Store.create_session)
    list_sessions = _forward(Store.list_sessions)
    update_session = _forward(Store.update_session)
    delete_session = _forward(Store.delete_session)
    # tasks
    create_task = _forward(Store.create_task)
    list_tasks = _forward(Store.list_tasks)
    task_tree = _forward(Store.task_tree)
    update_task = _forward(Store.update_task)
    transition_task = _forward(Store.transition_task)
    start_task = _forward(Store.start_task)
    complete_task = _forward(Store.complete_task)
    fail_task = _forward(Store.fail_task)
    cancel_task = _forward(Store.cancel_task)
    retry_task = _forward(Store.retry_task)
    delete_task = _forward(Store.delete_task)
    # context
    set_context = _forward(Store.set_context)
    set_context_many = _forward(Store.set_context_many)
    get_context_by_id = _forward(Store.get_context_by_id)
    list_context = _forward(Store.list_context)
    delete_context = _forward(Store.delete_context)
    # decisions and preferences
    record_decision = _forward(Store.record_decision)
    update_decision = _forward(Store.update_decision)
    get_decision = _forward(Store.get_decision)
    list_decisions = _forward(Store.list_decisions)
    set_preference = _forward(Store.set_preference)
    get_preference = _forward(Store.get_preference)
    list_preferences = _forward(Store.list_preferences)
    delete_preference = _forward(Store.delete_preference)
    # relations and blobs of captured content
    relate = _forward(Store.relate)
    unrelate = _forward(Store.unrelate)
    relations = _forward(Store.relations)
    neighbours = _forward(Store.neighbours)
    item_content = _forward(Store.item_content)
    # audit
    audit = _forward(Store.audit)

    # learning: the decision engine's main verbs, one call away
    @counts_errors
    def accept_decision(self, decision_id: str, *, outcome: str | None = None,
                        feedback: float | None = None) -> Settled:
        """The user accepted the decision; see :meth:`DecisionEngine.accept`."""
        return self.decisions.accept(decision_id, outcome=outcome, feedback=feedback)

    @counts_errors
    def override_decision(self, decision_id: str, chosen: str, *, outcome: str | None = None,
                          feedback: float | None = None) -> Settled:
        """The user chose otherwise; see :meth:`DecisionEngine.override`."""
        return self.decisions.override(decision_id, chosen, outcome=outcome,
                                       feedback=feedback)

    @counts_errors
    def should_act_autonomously(self, user_id: str, decision_type: str, context: Any, *,
                                threshold: float | None = None) -> AutonomyAnswer:
        """Yes or no, with the confidence and evidence; see
        :func:`statekeep.learning.autonomy.should_act_autonomously`."""
        return self.decisions.should_act_autonomously(user_id, decision_type, context,
                                                      threshold=threshold)

    # sync: the manager's methods, one call away
    @counts_errors
    def sync_state(self, component: str, state: Mapping[str, Any], *,
                   scope: str = "global", base_versions: Mapping[str, int] | None = None,
                   strategy: str | None = None) -> SyncResult:
        """Push a component's key/value state; see :meth:`SyncManager.sync_state`."""
        result = self.sync_manager.sync_state(component, state, scope=scope,
                                              base_versions=base_versions, strategy=strategy)
        if self.metrics is not None and result.resolutions:
            self.metrics.record_sync(result)
        return result

    @counts_errors
    def get_sync_state(self, scope: str = "global", keys: Sequence[str] | None = None, *,
                       component: str | None = None) -> dict[str, SyncEntry]:
        """The synchronised keys of a scope; see :meth:`SyncManager.get_state`."""
        return self.sync_manager.get_state(scope, keys, component=component)

    @counts_errors
    def resolve_conflict(self, conflict_id: str, choice: str, *, value: Any = UNSET,
                         resolved_by: str | None = None) -> ConflictResolution:
        """Settle a pending conflict; see :meth:`SyncManager.resolve_conflict`."""
        resolution = self.sync_manager.resolve_conflict(conflict_id, choice, value=value,
                                                        resolved_by=resolved_by)
        if self.metrics is not None:
            self.metrics.record_resolution(resolution)
        return resolution


def _offload(method: Callable[Concatenate[StateSystem, P], R]) -> Callable[
        Concatenate[StateManagementSystem, P], Coroutine[Any, Any, R]]:
    name = method.__name__

    @functools.wraps(method)
    async def call(self: StateManagementSystem, *args: P.args, **kwargs: P.kwargs) -> R:
        bound = getattr(self.sync, name)
        result: R = await asyncio.to_thread(bound, *args, **kwargs)
        return result

    return cast("Callable[Concatenate[StateManagementSystem, P], Coroutine[Any, Any, R]]", call)


class StateManagementSystem:
    """The seed's async API: ``async with StateManagementSystem(config) as sms: ...``.

    Blocking store calls run in worker threads so the event loop never waits
    on disk or network.
    """

    def __init__(self, config: StateConfig | None = None, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config or StateConfig.load()
        self._clock = clock
        self._sync: StateSystem | None = None

    @property
    def sync(self) -> StateSystem:
        """The synchronous core (opened by ``async with`` or :meth:`open`)."""
        if self._sync is None:
            from statekeep.errors import StoreError
            raise StoreError("StateManagementSystem is not open: use 'async with' or open()")
        return self._sync

    @property
    def persistent_store(self) -> Store:
        return self.sync.store

    @property
    def migrations(self) -> StateMigrationSystem:
        return self.sync.migrations

    async def open(self) -> StateManagementSystem:
        if self._sync is None:
            self._sync = await asyncio.to_thread(StateSystem, self.config, clock=self._clock)
        return self

    async def close(self) -> None:
        if self._sync is not None:
            sync, self._sync = self._sync, None
            await asyncio.to_thread(sync.close)

    async def __aenter__(self) -> StateManagementSystem:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    create_session = _offload(StateSystem.create_session)
    get_session = _offload(StateSystem.get_session)
    list_sessions = _offload(StateSystem.list_sessions)
    update_session = _offload(StateSystem.update_session)
    delete_session = _offload(StateSystem.delete_session)
    resume_session = _offload(StateSystem.resume_session)
    create_task = _offload(StateSystem.create_task)
    get_task = _offload(StateSystem.get_task)
    list_tasks = _offload(StateSystem.list_tasks)
    task_tree = _offload(StateSystem.task_tree)
    update_task = _offload(StateSystem.update_task)
    transition_task = _offload(StateSystem.transition_task)
    start_task = _offload(StateSystem.start_task)
    complete_task = _offload(StateSystem.complete_task)
    fail_task = _offload(StateSystem.fail_task)
    cancel_task = _offload(StateSystem.cancel_task)
    retry_task = _offload(StateSystem.retry_task)
    delete_task = _offload(StateSystem.delete_task)
    set_context = _offload(StateSystem.set_context)
    set_context_many = _offload(StateSystem.set_context_many)

    async def get_context(self, session_id: str, context_type: str,
                          context_key: str) -> ContextItem | None:
        """The live item at (session, type, key); a hot-tier hit is answered on the
        event loop, without a thread hop."""
        sync = self.sync
        hit = sync.peek_context(session_id, context_type, context_key)
        if hit is not MISS:
            return hit
        return await asyncio.to_thread(sync.get_context, session_id, context_type, context_key)

    get_context_by_id = _offload(StateSystem.get_context_by_id)
    list_context = _offload(StateSystem.list_context)
    delete_context = _offload(StateSystem.delete_context)
    record_decision = _offload(StateSystem.record_decision)
    update_decision = _offload(StateSystem.update_decision)
    get_decision = _offload(StateSystem.get_decision)
    list_decisions = _offload(StateSystem.list_decisions)
    set_preference = _offload(StateSystem.set_preference)
    get_preference = _offload(StateSystem.get_preference)
    list_preferences = _offload(StateSystem.list_preferences)
    delete_preference = _offload(StateSystem.delete_preference)
    audit = _offload(StateSystem.audit)
    capture_context = _offload(StateSystem.capture_context)
    capture_paths = _offload(StateSystem.capture_paths)
    explain_relevance = _offload(StateSystem.explain_relevance)
    search_context = _offload(StateSystem.search_context)
    resume_brief = _offload(StateSystem.resume_brief)
    relate = _offload(StateSystem.relate)
    unrelate = _offload(StateSystem.unrelate)
    relations = _offload(StateSystem.relations)
    neighbours = _offload(StateSystem.neighbours)
    item_content = _offload(StateSystem.item_content)
    create_recovery_point = _offload(StateSystem.create_recovery_point)
    recover = _offload(StateSystem.recover)
    recover_to_time = _offload(StateSystem.recover_to_time)
    collect_garbage = _offload(StateSystem.collect_garbage)
    accept_decision = _offload(StateSystem.accept_decision)
    override_decision = _offload(StateSystem.override_decision)
    should_act_autonomously = _offload(StateSystem.should_act_autonomously)
    sync_state = _offload(StateSystem.sync_state)
    get_sync_state = _offload(StateSystem.get_sync_state)
    resolve_conflict = _offload(StateSystem.resolve_conflict)
    generate_performance_report = _offload(StateSystem.generate_performance_report)

    def subscribe(self, component: str, callback: Callable[[SyncEvent], None], *,
                  keys: str = "*", scope: str | None = None,
                  queue_size: int | None = None) -> Subscription:
        """As :meth:`StateSystem.subscribe`; the callback runs on a worker thread
        (hand results to a loop with ``loop.call_soon_threadsafe``)."""
        return self.sync.subscribe(component, callback, keys=keys, scope=scope,
                                   queue_size=queue_size)

    async def reconstruct_context(self, session_id: str) -> SessionContext:
        """The session's reconstructed context; a hot-tier hit is answered on the
        event loop, without a thread hop."""
        sync = self.sync
        hit = sync.peek_reconstruction(session_id)
        if hit is not None:
            return hit
        return await asyncio.to_thread(sync.reconstruct_context, session_id)
