"""``statekeep stats`` (the performance report) and ``statekeep metrics serve``
(a Prometheus exporter for a store).

A command-line process has just started, so its own latencies say little.
``stats`` therefore reports two things, labelled apart: the store as every
process has used it, read from the store itself (rows, size, the audit log's
write rate, conflicts, recoveries, GC runs), and this process's live metrics
after a short read-only probe -- N primary-key reads -- which measures how
fast the store answers *from here*, the one latency a fresh process can
honestly report.
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from types import FrameType
from typing import Annotated, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import typer
from prometheus_client import make_wsgi_app
from rich.table import Table

from statekeep.cli.render import listing
from statekeep.cli.shared import (
    ConfigOption,
    DbOption,
    JsonOption,
    Output,
    display_location,
    local_time,
    open_system,
)
from statekeep.errors import ConfigError
from statekeep.memory.warm import WarmTier
from statekeep.metrics import (
    MB,
    PerformanceReport,
    StateMetrics,
    StoreCollector,
    StoreFigures,
    read_store_figures,
)
from statekeep.system import StateSystem

__all__ = ["metrics_app", "stats"]

metrics_app = typer.Typer(no_args_is_help=True,
                          help="Expose the store's metrics to Prometheus.")

#: Sessions whose ids the probe reads by primary key (cycled).
_PROBE_IDS = 20


@contextmanager
def _metrics(sk: StateSystem) -> Iterator[StateMetrics]:
    """The system's own metrics when it keeps them, else ones made for this command.

    A config with ``metrics = false`` turns off recording in agents; asking
    for ``stats`` or an exporter is asking for metrics all the same.
    """
    existing: Any = getattr(sk, "metrics", None)
    if isinstance(existing, StateMetrics):
        yield existing
        return
    made = StateMetrics.for_system(sk)
    try:
        yield made
    finally:
        made.close()


def _probe(sk: StateSystem, reads: int) -> None:
    """``reads`` primary-key reads of sessions (of an absent id on an empty store)."""
    if reads <= 0:
        return
    store = sk.store
    with store.reading() as conn:
        ids = [str(r[0]) for r in conn.execute(
            "SELECT id FROM sessions ORDER BY start_time DESC LIMIT ?",
            (_PROBE_IDS,)).fetchall()] or ["ses_probe"]
    for i in range(reads):
        store.query_one("SELECT id FROM sessions WHERE id = ?", (ids[i % len(ids)],))


def _shared_tiers(sk: StateSystem) -> dict[str, WarmTier | None]:
    short = sk.memory.short_term
    return {"warm": sk.cache_layer,
            "short_term": short if isinstance(short, WarmTier) else None}


def _ms(seconds: float | None) -> str:
    """A latency in the unit that suits it: point reads are microseconds."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds:,.2f} s"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _size(n: float | None) -> str:
    """Bytes in the largest unit that keeps the number under 1024."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024:
            return f"{value:,.0f} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TB"


def _mb(value: float | None) -> str:
    return _size(None if value is None else value * MB)


def _conflicts(by_strategy: dict[str, dict[str, int]] | Any) -> str:
    parts = [f"{strategy}: " + ", ".join(f"{n} {action}" for action, n in sorted(actions.items()))
             for strategy, actions in sorted(by_strategy.items())]
    return "; ".join(parts) or "none"


def _last_gc(record: Mapping[str, Any] | None) -> str:
    if not record:
        return "none recorded"
    try:
        at = local_time(datetime.fromisoformat(str(record["at"])))
    except (KeyError, ValueError):
        at = "?"
    return (f"{at}: {int(record.get('items_collected', 0)):,} rows,"
            f" {_size(record.get('space_reclaimed'))} reclaimed")


def _store_table(location: str, f: StoreFigures) -> Table:
    table = listing(f"Store, all processes -- {location}")
    table.add_column("figure")
    table.add_column("value", overflow="fold")
    table.add_row("backend", f.backend)
    table.add_row("size", _size(f.size_bytes))
    table.add_row("rows", ", ".join(f"{t} {n:,}" for t, n in f.rows.items() if n) or "empty")
    table.add_row("changes (audit rows)",
                  f"{f.audit_position:,} in all; {f.changes_last_hour:,} last hour,"
                  f" {f.changes_last_day:,} last day")
    table.add_row("write throughput", f"{f.write_throughput:,.3f} changes/s (last hour)")
    table.add_row("sync conflicts (last day)", _conflicts(dict(f.conflicts_last_day)))
    table.add_row("pending conflicts", str(f.pending_conflicts))
    table.add_row("recoveries (last day)", str(f.recoveries_last_day))
    table.add_row("GC runs that collected (last day)",
                  f"{f.gc_runs_last_day} ({f.gc_frequency:.2f}/h)")
    table.add_row("last GC run", _last_gc(f.gc_last_run))
    for tier, used in f.shared_cache_bytes.items():
        table.add_row(f"{tier} tier (Redis)", _size(used))
    return table


def _process_table(r: PerformanceReport, probe: int) -> Table:
    title = "This process" + (f" -- after a probe of {probe} point reads" if probe else "")
    table = listing(title)
    table.add_column("figure")
    table.add_column("value", overflow="fold")
    table.add_row("query latency",
                  f"avg {_ms(r.avg_query_latency)}, p95 {_ms(r.p95_query_latency)}"
                  f" ({r.queries:,} reads)")
    table.add_row("write latency", f"avg {_ms(r.avg_write_latency)} ({r.writes:,} writes)")
    table.add_row("write throughput", f"{r.write_throughput:,.1f} writes/s since start")
    table.add_row("cache hit rate", _pct(r.cache_hit_rate))
    table.add_row("cache size", _mb(r.cache_size_mb))
    table.add_row("memory usage", _mb(r.memory_usage_mb))
    table.add_row("memory efficiency", _pct(r.memory_efficiency))
    table.add_row("GC", f"{r.gc_runs} runs ({r.gc_frequency:.2f}/h),"
                        f" avg {_ms(r.avg_gc_duration)}")
    if r.errors:
        table.add_row("errors", ", ".join(f"{k} {n}" for k, n in sorted(r.errors.items())))
    return table


def stats(
    ctx: typer.Context,
    probe: Annotated[int, typer.Option(
        "--probe", min=0, max=1_000_000,
        help="Point reads this process makes first, to measure the store's read latency"
             " from here (0: none).")] = 100,
    json: JsonOption = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show the performance report: store-wide figures and this process's metrics."""
    out = Output(json=json)
    with open_system(ctx) as sk, _metrics(sk) as metrics:
        _probe(sk, probe)
        # Before the store figures: their COUNT(*)s would swamp the probe's p95.
        report = metrics.generate_performance_report()
        figures = read_store_figures(sk.store, shared=_shared_tiers(sk))
        location = display_location(sk.store.location)
    if out.json:
        out.emit_json({"store": {"location": location, **figures.to_dict()},
                       "process": {"probe_reads": probe, **report.to_dict()}})
        return
    out.console.print(_store_table(location, figures))
    out.console.print()
    out.console.print(_process_table(report, probe))


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per scrape on stderr (one every 15 s, forever)."""

    def log_message(self, format: str, *args: Any) -> None:
        return


def _server_class(host: str, port: int) -> type[WSGIServer]:
    """A WSGIServer of the address family ``host`` resolves to (IPv4 or IPv6)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve --host {host!r}: {exc}") from None

    class Server(WSGIServer):
        address_family = family

    return Server


#: How often the serving loop looks at the stop flag (seconds).
_POLL = 0.25


@contextmanager
def _stop_requested() -> Iterator[list[bool]]:
    """A flag SIGINT and SIGTERM set, instead of raising in whatever code runs.

    wsgiref's request handler catches *everything* (a bare ``except``) and
    logs it, so an exception raised by a signal landing mid-scrape -- even
    KeyboardInterrupt -- would be swallowed and the exporter would go on
    serving. Setting a flag the loop checks cannot be lost.
    """
    flag = [False]

    def stop(_signum: int, _frame: FrameType | None) -> None:
        flag[0] = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@metrics_app.command("serve")
def serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535,
        help="TCP port of the /metrics endpoint (0: any free port, printed).")],
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve Prometheus metrics of the store on http://HOST:PORT/metrics until stopped."""
    out = Output()
    with open_system(ctx) as sk, _metrics(sk) as metrics:
        collector = StoreCollector(sk.store)
        metrics.registry.register(collector)
        try:
            try:
                # Single-threaded on purpose: the SQLite backend keeps a
                # connection per thread, and scrapes are rare and quick.
                server = make_server(host, port, make_wsgi_app(metrics.registry),
                                     server_class=_server_class(host, port),
                                     handler_class=_QuietHandler)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                                  ) from None
            shown = f"[{host}]" if ":" in host else host
            out.console.print(
                f"serving metrics of {display_location(sk.store.location)} at"
                f" http://{shown}:{server.server_port}/metrics (Ctrl-C to stop)",
                soft_wrap=True, highlight=False)
            sys.stdout.flush()
            server.timeout = _POLL
            try:
                with _stop_requested() as stopping:
                    while not stopping[0]:
                        server.handle_request()  # one scrape, or none within _POLL
            finally:
                server.server_close()
        finally:
            metrics.registry.unregister(collector)
