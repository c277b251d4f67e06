"""Child process for the sync concurrency test: one component syncing shared keys.

Usage: ``python sync_worker.py DB WORKER ROUNDS SEED``. Opens its own store on
DB (a SQLite file or a PostgreSQL URL), prints ``ready``, waits for ``go`` on
stdin so that every worker starts at once, then runs ROUNDS random operations
as component ``w<WORKER>`` and prints one JSON summary line of what the store
acknowledged:

* ``merge``: add a unique token to one or both of the list keys ``list.0`` and
  ``list.1``, to the component's own view of them (kept from the previous
  sync's result, or read afresh -- which makes the read its base). A
  concurrent write is a conflict; lists merge.
* ``keep``: increment ``counter.keep`` read-then-write with an explicit base;
  the rule ``counter.keep=keep_current`` rejects a stale increment, which is
  then retried on a fresh read -- so every acknowledged increment counts.
  One try in five reuses an old read (three reads back) on purpose: then the
  worker's own writes since make it stale, so conflicts happen however the
  processes happen to be scheduled.
* ``lww``: the same on ``counter.lww`` under ``last_write_wins``: a stale
  increment overwrites (and so may undo another); the audit log tells.
* ``critical``: write ``critical.flag``; a conflict there waits for a person.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter, deque
from typing import Any

from statekeep import StateConfig, open_store
from statekeep.sync.manager import SyncManager

RULES = ("counter.keep=keep_current", "counter.lww=last_write_wins")
LISTS = ("list.0", "list.1")


def main() -> None:
    db, worker, rounds, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed * 1000 + worker)
    store = open_store(StateConfig(db=db, sync_rules=RULES, access_flush_interval=0,
                                   busy_timeout_ms=60_000))
    m = SyncManager(store)
    me = f"w{worker}"
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return

    views: dict[str, list[Any]] = {key: [] for key in LISTS}
    tokens: dict[str, list[str]] = {key: [] for key in LISTS}
    keep_acks = keep_retries = lww_writes = 0
    resolutions: Counter[str] = Counter()
    pending: list[str] = []
    reads: dict[str, deque[tuple[int, int]]] = {"counter.keep": deque(maxlen=3),
                                                "counter.lww": deque(maxlen=3)}

    def read_counter(key: str) -> tuple[int, int]:
        """(value, version) to base an increment on: fresh, or now and then stale."""
        old = reads[key]
        if len(old) == old.maxlen and rng.random() < 0.2:
            return old[0]
        entry = m.get_state(keys=[key]).get(key)
        got = (0, 0) if entry is None else (entry.value, entry.version)
        old.append(got)
        return got

    def count(result: Any) -> None:
        for r in result.resolutions:
            resolutions[f"{r.strategy}/{r.action}"] += 1
        pending.extend(result.pending.values())

    for i in range(rounds):
        op = rng.choices(("merge", "keep", "lww", "critical"), (45, 25, 20, 10))[0]
        if op == "merge":
            keys = list(LISTS) if rng.random() < 0.3 else [rng.choice(LISTS)]
            if rng.random() < 0.5:
                read = m.get_state(keys=keys, component=me)
                for key in keys:
                    views[key] = list(read[key].value) if key in read else []
            token = f"{me}-{i}"
            result = m.sync_state(me, {key: [*views[key], token] for key in keys})
            count(result)
            for key in keys:
                got = result.applied[key]
                assert token in got, (key, token, got)
                views[key] = got
                tokens[key].append(token)
        elif op == "keep":
            while True:
                value, base = read_counter("counter.keep")
                result = m.sync_state(me, {"counter.keep": value + 1},
                                      base_versions={"counter.keep": base})
                count(result)
                if "counter.keep" in result.written:
                    keep_acks += 1
                    break
                keep_retries += 1  # rejected (kept) or already equal: read again
        elif op == "lww":
            value, base = read_counter("counter.lww")
            result = m.sync_state(me, {"counter.lww": value + 1},
                                  base_versions={"counter.lww": base})
            count(result)
            lww_writes += "counter.lww" in result.written
        else:
            result = m.sync_state(me, {"critical.flag": f"{me}-{i}"})
            count(result)
    store.close()
    print(json.dumps({
        "component": me, "tokens": tokens, "keep_acks": keep_acks,
        "keep_retries": keep_retries, "lww_writes": lww_writes,
        "resolutions": dict(resolutions), "pending": pending,
    }), flush=True)


if __name__ == "__main__":
    main()
