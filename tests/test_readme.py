"""The README's examples are part of the product: they must run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})
    if index == 0:
        assert "refused:" in capsys.readouterr().out
        assert (tmp_path / "agent.db").exists()


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text().split("---", 1)[0]
    assert "make demo" in head and "make test" in head
