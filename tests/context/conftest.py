"""Fixtures for the context engine: a sample workspace and a façade rooted in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sample_workspace import make_workspace
from statekeep import StateConfig, StateSystem


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def system(db_url: str, workspace: Path) -> Iterator[StateSystem]:
    """A façade on the parametrised backend whose workspace root is the fixture's."""
    sk = StateSystem(StateConfig(db=db_url, workspace_root=str(workspace)))
    yield sk
    sk.close()
