"""Child process for the propagation tests: commit sync writes, publish them, exit.

Usage: ``python propagation_child.py DB REDIS_URL|- SPEC_JSON``. SPEC is
``{"component": str, "events": [[scope, key, version, value], ...],
"max_value_bytes": int | null}``. Each event is committed the way the sync core
commits a write -- its audit row (entity ``sync``, id ``scope:key``, the
SyncEntry as new value) in one transaction -- and published from the
after-commit hook. Closing the propagator flushes what it still has to send;
the last line printed is its stats as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from typing import Any

from statekeep import StateConfig, open_store
from statekeep.sync.events import SyncEvent
from statekeep.sync.propagation import Propagator


def main() -> None:
    db, redis_url, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    settings: dict[str, Any] = {"db": db, "redis_url": None if redis_url == "-" else redis_url}
    if spec.get("max_value_bytes"):
        settings["max_value_bytes"] = spec["max_value_bytes"]
    store = open_store(StateConfig(**settings))
    propagator = Propagator(store)
    component = spec["component"]
    for scope, key, version, value in spec["events"]:
        at = datetime.now(UTC)
        entry = {"scope": scope, "key": key, "value": value, "version": version,
                 "component": component, "updated_at": at.isoformat()}
        event = SyncEvent(scope, key, value, version, component, at)
        with store.atomic() as conn:
            store.audit_row(conn, "update", "sync", f"{scope}:{key}", None, entry,
                            user_id=None, session_id=None, at=at, notify=False)
            store.after_commit(lambda e=event: propagator.publish([e]))
    propagator.close(timeout=30)
    stats = dataclasses.asdict(propagator.stats())
    store.close()
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
