"""Reading a scrape in tests: samples keyed by name and labels (a plain module,
so test files can import it; conftest modules cannot be imported by name)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

#: (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed for exact lookups."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def family_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet (a counter never bumped)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
