"""Prometheus metrics, the performance report and store-wide figures (seed 10).

* :class:`StateMetrics` -- one system's metrics in its own registry; hot-path
  counters are read at scrape time, so recording costs nothing per hot read.
* :class:`PerformanceReport` -- the seed's report, from those metrics.
* :func:`read_store_figures` / :class:`StoreCollector` -- what every process
  did to the store, read from the store (``statekeep stats``, the exporter).

docs/metrics.md lists every metric and defines every figure.
"""

from statekeep.metrics.registry import (
    GC_BUCKETS,
    LATENCY_BUCKETS,
    METRIC_NAMES,
    RECOVERY_BUCKETS,
    LatencyHistogram,
    StateMetrics,
    counts_errors,
)
from statekeep.metrics.report import (
    MB,
    HistogramSnapshot,
    PerformanceReport,
    TierFigures,
    cache_hit_rate,
    histogram_quantile,
    memory_efficiency,
)
from statekeep.metrics.store import StoreCollector, StoreFigures, read_store_figures

__all__ = [
    "GC_BUCKETS",
    "LATENCY_BUCKETS",
    "MB",
    "METRIC_NAMES",
    "RECOVERY_BUCKETS",
    "HistogramSnapshot",
    "LatencyHistogram",
    "PerformanceReport",
    "StateMetrics",
    "StoreCollector",
    "StoreFigures",
    "TierFigures",
    "cache_hit_rate",
    "counts_errors",
    "histogram_quantile",
    "memory_efficiency",
    "read_store_figures",
]
