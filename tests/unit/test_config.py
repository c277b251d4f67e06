"""StateConfig: kwargs > STATEKEEP_* env > TOML file > defaults, strictly typed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from statekeep import ConfigError, StateConfig
from statekeep import config as config_module


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No STATEKEEP_* variables and no user config file leak into these tests."""
    for name in list(os.environ):
        if name.startswith("STATEKEEP_"):
            monkeypatch.delenv(name)
    default = tmp_path / "no-such-dir" / "config.toml"
    monkeypatch.setattr(config_module, "default_config_path", lambda: default)
    return default


def _toml(tmp_path: Path, text: str, name: str = "statekeep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_seeds_numbers() -> None:
    cfg = StateConfig.load()
    assert cfg == StateConfig()
    mb = 1024 * 1024
    assert cfg.hot_cache_bytes == 512 * mb and cfg.hot_ttl_seconds == 300
    assert cfg.warm_cache_bytes == 2048 * mb and cfg.warm_ttl_seconds == 3600
    assert cfg.working_memory_bytes == 128 * mb and cfg.short_term_bytes == 512 * mb
    assert cfg.cold_retention_days == 90 and cfg.archive_retention_days == 365
    assert cfg.durability == "process" and cfg.auto_migrate is True
    assert cfg.redis_url is None


def test_file_values(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[statekeep]\ndb = "from-file.db"\nbusy_timeout_ms = 123\n'
                           'hot_ttl_seconds = 10\nredis_url = "redis://file"\n')
    cfg = StateConfig.load(path)
    assert (cfg.db, cfg.busy_timeout_ms, cfg.redis_url) == ("from-file.db", 123, "redis://file")
    assert cfg.hot_ttl_seconds == 10  # an int is fine where a float is expected


def test_file_without_table(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'db = "top.db"\ndurability = "power"\n')
    cfg = StateConfig.load(path)
    assert (cfg.db, cfg.durability) == ("top.db", "power")


def test_precedence_kwargs_over_env_over_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = _toml(tmp_path, '[statekeep]\ndb = "file.db"\nbusy_timeout_ms = 1\n'
                           'max_value_bytes = 1\nauto_migrate = false\n')
    assert StateConfig.load(path).db == "file.db"
    monkeypatch.setenv("STATEKEEP_DB", "env.db")
    monkeypatch.setenv("STATEKEEP_BUSY_TIMEOUT_MS", "2")
    cfg = StateConfig.load(path)
    assert (cfg.db, cfg.busy_timeout_ms, cfg.max_value_bytes) == ("env.db", 2, 1)
    assert cfg.auto_migrate is False  # from the file, untouched by env
    cfg = StateConfig.load(path, db="kw.db", max_value_bytes=3)
    assert (cfg.db, cfg.busy_timeout_ms, cfg.max_value_bytes) == ("kw.db", 2, 3)
    # A kwarg of None means "not given": the lower layers still apply.
    assert StateConfig.load(path, db=None).db == "env.db"


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _toml(tmp_path, 'db = "via-env.db"\n', "other.toml")
    monkeypatch.setenv("STATEKEEP_CONFIG", str(path))
    assert StateConfig.load().db == "via-env.db"


def test_default_file_is_read_when_present(clean_env: Path) -> None:
    clean_env.parent.mkdir()
    clean_env.write_text('busy_timeout_ms = 77\n')
    assert StateConfig.load().busy_timeout_ms == 77


def test_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A missing default file is fine; a file someone named must exist.
    assert StateConfig.load().db == StateConfig().db
    with pytest.raises(ConfigError, match="does not exist"):
        StateConfig.load(tmp_path / "nope.toml")
    monkeypatch.setenv("STATEKEEP_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError):
        StateConfig.load()


def test_malformed_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        StateConfig.load(_toml(tmp_path, "db = [unclosed\n"))


def test_unknown_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hot_cache_mb"):
        StateConfig.load(_toml(tmp_path, "hot_cache_mb = 5\n"))
    with pytest.raises(ConfigError, match="bogus"):
        StateConfig.load(bogus=1)
    with pytest.raises(ConfigError, match="bogus"):
        StateConfig().replace(bogus=1)


@pytest.mark.parametrize("line", [
    'busy_timeout_ms = "fast"', "busy_timeout_ms = 1.5", "busy_timeout_ms = true",
    'auto_migrate = "yes"', "auto_migrate = 1", 'hot_ttl_seconds = "long"',
    "hot_ttl_seconds = false", "redis_url = 5", "db = 3", "archive_dir = []",
    "pool_max_size = {}",
])
def test_wrong_types_in_file(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError):
        StateConfig.load(_toml(tmp_path, line + "\n"))


@pytest.mark.parametrize(("kwargs"), [
    {"busy_timeout_ms": "5"}, {"max_value_bytes": 1.0}, {"auto_migrate": 1},
    {"access_flush_interval": "2"}, {"db": 5}, {"pool_min_size": True},
])
def test_wrong_types_as_kwargs(kwargs) -> None:
    with pytest.raises(ConfigError):
        StateConfig.load(**kwargs)
    with pytest.raises(ConfigError):
        StateConfig(**kwargs)
    with pytest.raises(ConfigError):
        StateConfig().replace(**kwargs)


@pytest.mark.parametrize(("name", "raw"), [
    ("BUSY_TIMEOUT_MS", "abc"), ("BUSY_TIMEOUT_MS", "1.5"), ("HOT_TTL_SECONDS", "soon"),
    ("AUTO_MIGRATE", "maybe"), ("DURABILITY", "disk"), ("MAX_VALUE_BYTES", "-1"),
])
def test_wrong_env_values(monkeypatch: pytest.MonkeyPatch, name: str, raw: str) -> None:
    monkeypatch.setenv("STATEKEEP_" + name, raw)
    with pytest.raises(ConfigError):
        StateConfig.load()


@pytest.mark.parametrize(("raw", "value"), [
    ("1", True), ("true", True), ("YES", True), ("on", True),
    ("0", False), ("False", False), ("no", False), ("OFF", False),
])
def test_env_booleans(monkeypatch: pytest.MonkeyPatch, raw: str, value: bool) -> None:
    monkeypatch.setenv("STATEKEEP_AUTO_MIGRATE", raw)
    assert StateConfig.load().auto_migrate is value


def test_env_numbers_and_optional_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEKEEP_HOT_TTL_SECONDS", "2.5")
    monkeypatch.setenv("STATEKEEP_POOL_MAX_SIZE", "16")
    monkeypatch.setenv("STATEKEEP_REDIS_URL", "")
    monkeypatch.setenv("STATEKEEP_ARCHIVE_DIR", "/srv/archive")
    cfg = StateConfig.load()
    assert cfg.hot_ttl_seconds == 2.5 and cfg.pool_max_size == 16
    assert cfg.redis_url is None  # empty means unset for an optional setting
    assert cfg.archive_dir == "/srv/archive"


@pytest.mark.parametrize("kwargs", [
    {"busy_timeout_ms": -1}, {"hot_ttl_seconds": -0.5}, {"durability": "fsync"},
    {"pool_min_size": 4, "pool_max_size": 2}, {"pool_max_size": 0},
])
def test_invalid_values(kwargs) -> None:
    with pytest.raises(ConfigError):
        StateConfig(**kwargs)
    with pytest.raises(ConfigError):
        StateConfig.load(**kwargs)


def test_replace_and_immutability() -> None:
    cfg = StateConfig(db="a.db")
    other = cfg.replace(db="b.db", durability="power")
    assert (cfg.db, other.db, other.durability) == ("a.db", "b.db", "power")
    with pytest.raises(AttributeError):
        cfg.db = "c.db"  # type: ignore[misc]
