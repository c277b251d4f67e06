"""Shared runner for the scripts in ``bench/``: the rules of docs/benchmarks.md in code.

A script builds a :class:`Bench`, then for each figure hands :meth:`Bench.measure`
two *cases* -- statekeep's and the baseline's -- and a target. The runner

* alternates the cases in rounds (the order rotates every round, A B / B A / ...,
  so neither side always runs first), after warm-up rounds that are thrown away;
* times only the work: a case is a *prepare* function that does its untimed
  setup and returns the *run* to time (``time.perf_counter_ns`` around the run
  alone); cleanup registered on the ``ExitStack`` it is given runs untimed after
  the run;
* reports throughput medians with min-max, the ratio of the medians, and the
  range of the per-round (paired) ratios;
* prints one line per figure: ``name  ours  baseline  ratio  target  ok|SHORT``
  (``info`` for a figure without a target, ``skipped: reason`` for one that
  could not run), then a summary line;
* writes everything to ``bench/results/<script>.json``.

``--quick`` is a smoke check (small sizes, few rounds, under 30 s);
``--rounds N`` overrides the number of measured rounds; ``--only a,b`` runs only
figures whose name contains one of the words; ``--profile [cprofile|pyinstrument]``
runs statekeep's side of each figure once under a profiler instead of timing it
and prints the hot spots (``.prof`` / ``.html`` files land next to the JSON
results; pyinstrument, a sampling profiler, distorts small calls less).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import re
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

__all__ = ["Bench", "Figure", "Prepare", "Run", "Stats", "ready"]

#: Does the timed work and returns how many operations it did.
Run = Callable[[], int]
#: Untimed setup for one sample; registers its cleanup on the stack, returns the run.
Prepare = Callable[[ExitStack], Run]

Kind = Literal["throughput", "time"]
Status = Literal["ok", "SHORT", "info", "skipped"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_BUDGET_S = 30.0


def ready(run: Run) -> Prepare:
    """A case that needs no per-sample setup."""
    return lambda _stack: run


@dataclass(frozen=True)
class Stats:
    """Median, min and max of per-sample throughputs (operations per second)."""

    median: float
    low: float
    high: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        return cls(statistics.median(samples), min(samples), max(samples), tuple(samples))


@dataclass
class Figure:
    """One reported comparison."""

    name: str
    kind: Kind
    status: Status
    target: float | None = None
    ours: Stats | None = None
    baseline: Stats | None = None
    #: ours / baseline throughput ("throughput"), or ours / baseline time ("time").
    ratio: float | None = None
    #: Range of the ratios taken round by round (ours and baseline of the same round).
    ratio_low: float | None = None
    ratio_high: float | None = None
    ops_per_sample: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    note: str = ""


def _si(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _duration(seconds: float) -> str:
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class Bench:
    """One benchmark script's run: arguments, measurements, output, JSON."""

    def __init__(self, name: str, description: str,
                 argv: Sequence[str] | None = None) -> None:
        parser = argparse.ArgumentParser(prog=f"{name}.py", description=description)
        parser.add_argument("--quick", action="store_true",
                            help="small sizes and few rounds: a smoke check under 30 s")
        parser.add_argument("--rounds", type=int, default=None, metavar="N",
                            help="measured rounds per figure (default: 7, or 3 with --quick)")
        parser.add_argument("--only", default="", metavar="WORDS",
                            help="comma-separated words; run only figures whose name has one")
        parser.add_argument("--profile", nargs="?", const="cprofile", default=None,
                            choices=["cprofile", "pyinstrument"],
                            help="profile statekeep's side of each figure instead of timing"
                                 " (cprofile, the default, or pyinstrument if installed)")
        parser.add_argument("--no-json", action="store_true",
                            help="do not write bench/results/NAME.json")
        args = parser.parse_args(argv)
        if args.rounds is not None and args.rounds < 1:
            parser.error("--rounds must be at least 1")
        self.name = name
        self.description = description
        self.quick: bool = args.quick
        self.rounds: int = args.rounds or (3 if self.quick else 7)
        self._rounds_given = args.rounds is not None
        self.profiling: bool = args.profile is not None
        self.profiler: str = args.profile or "cprofile"
        self.write_json: bool = not args.no_json
        self._only = [w.strip().lower() for w in args.only.split(",") if w.strip()]
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        self._started = time.perf_counter()
        self._started_at = datetime.now(UTC)
        self._name_width = 44
        self._header()

    # -- sizes and selection --------------------------------------------------

    def size(self, full: int, quick: int) -> int:
        """``quick`` under --quick, else ``full``."""
        return quick if self.quick else full

    def rounds_for(self, full: int) -> int:
        """Measured rounds for an expensive figure: ``full`` unless --quick or --rounds."""
        return self.rounds if self._rounds_given or self.quick else min(full, self.rounds)

    def wants(self, name: str) -> bool:
        """False if --only excludes the figure (check before an expensive setup)."""
        return not self._only or any(w in name.lower() for w in self._only)

    # -- measuring ----------------------------------------------------------

    def _sample(self, prepare: Prepare) -> float:
        """One timed run: operations per second."""
        with ExitStack() as stack:
            run = prepare(stack)
            gc.collect()
            start = time.perf_counter_ns()
            ops = run()
            elapsed = time.perf_counter_ns() - start
        if ops <= 0 or elapsed <= 0:
            raise RuntimeError(f"a run reported {ops} operations in {elapsed} ns")
        return ops * 1e9 / elapsed

    def interleave(self, cases: Mapping[str, Prepare], *, rounds: int | None = None,
                   warmup: int = 1) -> dict[str, list[float]]:
        """Run the cases in rotating order, round after round; ops/s samples per case."""
        labels = list(cases)
        samples: dict[str, list[float]] = {label: [] for label in labels}
        measured = rounds or self.rounds
        for r in range(warmup + measured):
            shift = r % len(labels)
            for label in labels[shift:] + labels[:shift]:
                rate = self._sample(cases[label])
                if r >= warmup:
                    samples[label].append(rate)
        return samples

    def measure(
        self,
        name: str,
        ours: Prepare,
        baseline: Prepare,
        *,
        target: float | None,
        kind: Kind = "throughput",
        ops: Mapping[str, int] | None = None,
        extra: Mapping[str, Prepare] | None = None,
        rounds: int | None = None,
        warmup: int = 1,
        note: str = "",
    ) -> Figure | None:
        """Time ``ours`` against ``baseline`` interleaved and report the figure.

        ``extra`` maps further figure names to alternative baselines, timed in
        the same rounds and reported as informational figures (no target).
        Returns None when --only excludes the figure or under --profile.
        """
        if not self.wants(name):
            return None
        if self.profiling:
            self.profile(name, ours)
            return None
        cases: dict[str, Prepare] = {"ours": ours, "baseline": baseline}
        for i, alt in enumerate((extra or {}).values()):
            cases[f"extra{i}"] = alt
        samples = self.interleave(cases, rounds=rounds, warmup=warmup)
        fig = self.report(name, samples["ours"], samples["baseline"], target=target,
                          kind=kind, ops=ops, note=note)
        for i, extra_name in enumerate(extra or {}):
            self.report(extra_name, samples["ours"], samples[f"extra{i}"], target=None,
                        kind=kind, ops=ops)
        return fig

    def report(
        self,
        name: str,
        ours: Sequence[float],
        baseline: Sequence[float],
        *,
        target: float | None,
        kind: Kind = "throughput",
        ops: Mapping[str, int] | None = None,
        note: str = "",
    ) -> Figure:
        """Record and print a figure from ops/s samples taken in the same rounds."""
        o, b = Stats.of(ours), Stats.of(baseline)
        if kind == "throughput":
            ratio = o.median / b.median
            paired = [x / y for x, y in zip(ours, baseline, strict=True)]
            met = target is None or ratio >= target
        else:  # time per operation: ours / baseline, lower is better
            ratio = b.median / o.median
            paired = [y / x for x, y in zip(ours, baseline, strict=True)]
            met = target is None or ratio <= target
        status: Status = "info" if target is None else ("ok" if met else "SHORT")
        fig = Figure(name=name, kind=kind, status=status, target=target, ours=o,
                     baseline=b, ratio=ratio, ratio_low=min(paired), ratio_high=max(paired),
                     ops_per_sample=dict(ops or {}), note=note)
        self.figures.append(fig)
        self._print(fig)
        return fig

    def skip(self, name: str, reason: str) -> Figure:
        """Record a figure that could not be measured, with the reason."""
        fig = Figure(name=name, kind="throughput", status="skipped", reason=reason)
        self.figures.append(fig)
        self._print(fig)
        return fig

    def note(self, text: str) -> None:
        """An informational line, kept in the JSON too."""
        self.notes.append(text)
        print(f"# {text}", flush=True)

    # -- profiling ------------------------------------------------------------

    def profile(self, name: str, prepare: Prepare, *, top: int = 18) -> None:
        """Run one sample of ``prepare`` under the profiler; print and save the hot spots."""
        with ExitStack() as stack:  # one untimed warm-up sample first
            prepare(stack)()
        print(f"\n=== profile: {name} ===", flush=True)
        if self.profiler == "pyinstrument":
            self._pyinstrument(name, prepare)
            return
        prof = cProfile.Profile()
        with ExitStack() as stack:
            run = prepare(stack)
            gc.collect()
            prof.enable()
            ops = run()
            prof.disable()
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        print(f"{ops} operations")
        print(out.getvalue(), flush=True)
        if self.write_json:
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            prof.dump_stats(RESULTS_DIR / f"{self.name}.{_slug(name)}.prof")

    def _pyinstrument(self, name: str, prepare: Prepare) -> None:
        try:
            from pyinstrument import Profiler
        except ImportError:
            print("pyinstrument is not installed (pip install pyinstrument)")
            return
        profiler = Profiler(interval=0.0002)
        with ExitStack() as stack:
            run = prepare(stack)
            gc.collect()
            profiler.start()
            ops = run()
            profiler.stop()
        print(f"{ops} operations")
        print(profiler.output_text(unicode=False, color=False, show_all=False), flush=True)
        if self.write_json:
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            (RESULTS_DIR / f"{self.name}.{_slug(name)}.html").write_text(profiler.output_html())

    # -- output ---------------------------------------------------------------

    def _header(self) -> None:
        mode = "quick" if self.quick else "full"
        print(f"{self.name}: {self.description}")
        print(f"mode {mode}, {self.rounds} measured rounds + warm-up, "
              f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
              f"{os.cpu_count()} cpus", flush=True)
        if not self.profiling:
            print(f"{'figure':<{self._name_width}}  {'ours (median, min-max)':<24}  "
                  f"{'baseline':<24}  {'ratio (rounds)':<20}  {'target':<8}  result")

    def _print(self, fig: Figure) -> None:
        name = f"{fig.name:<{self._name_width}}"
        if fig.status == "skipped":
            print(f"{name}  skipped: {fig.reason}", flush=True)
            return
        assert fig.ours is not None and fig.baseline is not None and fig.ratio is not None

        def cell(s: Stats) -> str:
            if fig.kind == "throughput":
                return f"{_si(s.median)}/s ({_si(s.low)}-{_si(s.high)})"
            return (f"{_duration(1 / s.median)} ({_duration(1 / s.high)}-"
                    f"{_duration(1 / s.low)})")

        ratio = f"{fig.ratio:.2f} ({fig.ratio_low:.2f}-{fig.ratio_high:.2f})"
        if fig.target is None:
            target = "-"
        else:
            target = (">= " if fig.kind == "throughput" else "<= ") + f"{fig.target:g}"
        print(f"{name}  {cell(fig.ours):<24}  {cell(fig.baseline):<24}  {ratio:<20}  "
              f"{target:<8}  {fig.status}", flush=True)

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "SHORT": 0, "info": 0, "skipped": 0}
        for fig in self.figures:
            out[fig.status] += 1
        return out

    def finish(self) -> int:
        """Print the summary line, write the JSON; the process exit code (0)."""
        elapsed = time.perf_counter() - self._started
        if self.profiling:
            print(f"profiled in {elapsed:.1f} s")
            return 0
        c = self.counts()
        targeted = c["ok"] + c["SHORT"]
        extras = [f"{c['info']} informational"] if c["info"] else []
        if c["skipped"]:
            extras.append(f"{c['skipped']} skipped")
        tail = f" ({', '.join(extras)})" if extras else ""
        print(f"summary: {c['ok']}/{targeted} figures meet their target{tail}; "
              f"{elapsed:.1f} s", flush=True)
        if self.quick and elapsed > QUICK_BUDGET_S:
            print(f"warning: --quick took {elapsed:.0f} s, over its {QUICK_BUDGET_S:.0f} s "
                  "budget", file=sys.stderr)
        if self.write_json:
            path = self.save(elapsed)
            print(f"results: {path.relative_to(RESULTS_DIR.parent.parent)}")
        return 0

    def save(self, elapsed: float) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.json"
        data: dict[str, Any] = {
            "bench": self.name,
            "description": self.description,
            "mode": "quick" if self.quick else "full",
            "rounds": self.rounds,
            "started": self._started_at.isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed, 2),
            "machine": {
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "sqlite": sqlite3.sqlite_version,
                "platform": platform.platform(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
            },
            "summary": self.counts(),
            "figures": [asdict(f) for f in self.figures],
            "notes": self.notes,
        }
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path


# -- regenerating the docs table ---------------------------------------------------


def markdown_table(path: Path) -> str:
    """The figures of a results JSON file as the Markdown table docs/benchmarks.md uses."""
    data = json.loads(path.read_text())
    lines = ["| figure | ours | baseline | ratio (per-round range) | target | result |",
             "|---|---|---|---|---|---|"]
    for f in data["figures"]:
        if f["status"] == "skipped":
            lines.append(f"| {f['name']} | - | - | - | - | skipped: {f['reason']} |")
            continue
        time_kind = f["kind"] == "time"

        def cell(s: dict[str, Any], time_kind: bool = time_kind) -> str:
            if time_kind:
                return (f"{_duration(1 / s['median'])} ({_duration(1 / s['high'])}-"
                        f"{_duration(1 / s['low'])})")
            return f"{s['median']:,.0f}/s ({s['low']:,.0f}-{s['high']:,.0f})"

        target = "-" if f["target"] is None else (
            ("<= " if time_kind else ">= ") + f"{f['target']:g}")
        lines.append(f"| {f['name']} | {cell(f['ours'])} | {cell(f['baseline'])} | "
                     f"{f['ratio']:.2f} ({f['ratio_low']:.2f}-{f['ratio_high']:.2f}) | "
                     f"{target} | {f['status']} |")
    m = data["machine"]
    lines.append("")
    lines.append(f"{data['mode']} run, {data['rounds']} rounds, {data['started'][:10]};"
                 f" python {m['python']}, sqlite {m['sqlite']}, {m['cpus']} cpus.")
    return "\n".join(lines)


if __name__ == "__main__":
    # python bench/_harness.py bench/results/NAME.json  -> Markdown table on stdout
    for arg in sys.argv[1:]:
        print(markdown_table(Path(arg)))
