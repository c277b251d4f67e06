"""Where the test servers are, and the one rule for when one is missing.

A plain module (not a conftest) so that every conftest and test can import it:
a service test skips locally with the reason, and FAILS under CI=true, so that
CI can never go green by skipping.
"""

from __future__ import annotations

import os

import pytest
import redis

PG_URL = os.environ.get("STATEKEEP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("STATEKEEP_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(what: str, why: str) -> None:
    """Skip locally, fail under CI: a service test must never pass by skipping."""
    message = f"{what} is not reachable ({why})"
    if IN_CI:
        pytest.fail(message + " -- CI=true requires it", pytrace=False)
    pytest.skip(message)


def require_redis() -> str:
    """The shared Redis server's URL, after checking it answers."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        service_missing(f"Redis at {REDIS_URL}", str(exc))
    return REDIS_URL
