"""ids: generation (time-ordered, unique) and validation of ids, names and keys."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from statekeep import InvalidIdError, ValidationError
from statekeep import ids as ids_module
from statekeep.ids import (
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    new_id,
    validate_id,
    validate_key,
    validate_name,
    validate_text,
)


def test_new_id_shape_and_validity() -> None:
    for prefix in ("ses", "tsk", "ctx", "dec", "prf"):
        value = new_id(prefix)
        assert value.startswith(prefix + "_")
        assert validate_id(value, "id") == value
        assert len(value) <= MAX_ID_LENGTH


def test_new_ids_are_unique() -> None:
    values = [new_id("x") for _ in range(20_000)]
    assert len(set(values)) == len(values)


def test_new_ids_sort_by_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.0]
    monkeypatch.setattr(ids_module, "time", SimpleNamespace(time=lambda: now[0]))
    made = []
    for k in range(50):
        # Two milliseconds apart, so float rounding cannot merge neighbours.
        now[0] = 1_700_000_000.0 + k * 0.002
        made.append(new_id("ses"))
    assert made == sorted(made)
    # Within one millisecond the random part still keeps them distinct.
    same_ms = {new_id("ses") for _ in range(100)}
    assert len(same_ms) == 100


def test_new_id_keeps_fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fixed width is what makes string order equal time order.
    widths = set()
    for t in (0.0, 1.0, 1_700_000_000.0, 4_000_000_000.0):
        monkeypatch.setattr(ids_module, "time", SimpleNamespace(time=lambda t=t: t))
        widths.add(len(new_id("ses")))
    assert len(widths) == 1


@pytest.mark.parametrize("value", [
    "a", "A1", "ses_01ABC", "user@example.com", "a.b:c+d-e_f", "9", "x" * MAX_ID_LENGTH,
])
def test_valid_ids(value: str) -> None:
    assert validate_id(value, "f") == value


@pytest.mark.parametrize("value", [
    "", "x" * (MAX_ID_LENGTH + 1), "_a", "-a", ".a", "@a", "a b", "a'b", 'a"b', "a;b",
    "a/b", "../etc/passwd", "a\\b", "a\x00", "a\n", "\uff41", "\u0430", "a\u200b", "\u202ea",
    "x'; DROP TABLE sessions;--", "a%", "a*", "a#b", "\ud800",
])
def test_invalid_ids(value: str) -> None:
    with pytest.raises(InvalidIdError) as info:
        validate_id(value, "session_id")
    assert info.value.field == "session_id"
    assert "session_id" in str(info.value)


@pytest.mark.parametrize("value", [None, 1, 1.0, b"a", ["a"], True])
def test_ids_must_be_strings(value: object) -> None:
    with pytest.raises(InvalidIdError, match="must be a string"):
        validate_id(value, "task_id")


def test_long_bad_values_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidIdError) as info:
        validate_id("!" * 10_000, "f")
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("value", ["file", "a", "Tool_choice", "x.y:z-w", "a" * 64])
def test_valid_names(value: str) -> None:
    assert validate_name(value, "context_type") == value


@pytest.mark.parametrize("value", [
    "", "1a", "_a", "a b", "a" * 65, "a/b", "a@b", "a+b", "fïle", "a'", "a\x00", 3, None,
])
def test_invalid_names(value: object) -> None:
    with pytest.raises(InvalidIdError) as info:
        validate_name(value, "context_type")
    assert info.value.field == "context_type"


@pytest.mark.parametrize("value", [
    "k", "x'; DROP TABLE sessions;--", "../../etc/passwd", "%", "ключ 🔑",
    " spaced ", "k" * MAX_KEY_LENGTH, "\u202e",
])
def test_keys_accept_printable_text_verbatim(value: str) -> None:
    assert validate_key(value, "context_key") == value


@pytest.mark.parametrize("value", [
    "", "k" * (MAX_KEY_LENGTH + 1), "a\x00b", "\x01", "\x08", "\x0b", "\x0c", "\r", "\x1b[0m",
    "\x1f", "\x7f", "\ud800", "a\udfff", "tab\there", "line\nbreak", "\x85", "\x80\x9f",
])
def test_keys_refuse_empty_long_control_and_surrogates(value: str) -> None:
    with pytest.raises(InvalidIdError) as info:
        validate_key(value, "context_key")
    assert info.value.field == "context_key"


@pytest.mark.parametrize("value", [None, 1, b"k"])
def test_keys_must_be_strings(value: object) -> None:
    with pytest.raises(InvalidIdError):
        validate_key(value, "preference_key")


def test_text() -> None:
    assert validate_text(None, "description") is None
    assert validate_text("", "description") == ""
    assert validate_text("multi\nline\ttext ✓", "description") == "multi\nline\ttext ✓"
    assert validate_text("x" * 10, "d", max_length=10) == "x" * 10
    for bad in [5, b"x", "x" * 11, "a\x00b", "\ud800"]:
        with pytest.raises(ValidationError) as info:
            validate_text(bad, "description", max_length=10)
        assert info.value.field == "description"


def test_messages_name_the_rule() -> None:
    with pytest.raises(InvalidIdError, match=re.escape(str(MAX_KEY_LENGTH))):
        validate_key("k" * (MAX_KEY_LENGTH + 1), "context_key")


def test_ids_do_not_repeat_when_the_application_seeds_random(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    monkeypatch.setattr(ids_module, "time", SimpleNamespace(time=lambda: 1_700_000_000.0))
    state = random.getstate()
    try:
        random.seed(42)
        first = new_id("ses")
        random.seed(42)
        second = new_id("ses")
    finally:
        random.setstate(state)
    assert first != second


def test_forked_children_do_not_replay_the_parents_ids(tmp_path) -> None:
    import subprocess
    import sys

    script = tmp_path / "fork_ids.py"
    script.write_text(
        "import os\n"
        "from types import SimpleNamespace\n"
        "import statekeep.ids as ids\n"
        "ids.time = SimpleNamespace(time=lambda: 1_700_000_000.0)\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, ids.new_id('x').encode())\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "child = os.read(r, 200).decode()\n"
        "print(child, ids.new_id('x'))\n"
    )
    if not hasattr(__import__("os"), "fork"):
        pytest.skip("needs fork")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert len(out) == 2 and out[0] != out[1]
