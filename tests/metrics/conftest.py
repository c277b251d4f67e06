"""Fixtures for the metrics tests: systems on either backend with metrics attached.

The systems are opened with ``metrics=False`` and given a
:class:`~statekeep.metrics.StateMetrics` here, so the tests hold whether or
not the façade builds its own; ``test_metrics_wiring.py`` covers the façade's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from statekeep import StateConfig, StateSystem
from statekeep.metrics import StateMetrics


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No STATEKEEP_* settings from the caller; private user dirs (subprocesses too)."""
    for key in list(os.environ):
        if key.startswith("STATEKEEP_") or key in ("FORCE_COLOR", "NO_COLOR", "COLUMNS"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
def open_system(db_url: str) -> Iterator[Callable[..., tuple[StateSystem, StateMetrics]]]:
    """``open_system(**config)``: a system on the test's store and metrics watching it."""
    opened: list[tuple[StateSystem, StateMetrics]] = []

    def factory(**overrides: Any) -> tuple[StateSystem, StateMetrics]:
        sk = StateSystem(StateConfig(db=db_url, metrics=False, **overrides))
        metrics = StateMetrics.for_system(sk)
        opened.append((sk, metrics))
        return sk, metrics

    yield factory
    for sk, metrics in reversed(opened):
        metrics.close()
        sk.close()
