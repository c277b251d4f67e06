"""Child process for the backup and damage tests: write, acknowledging each commit.

Usage: ``python damage_writer.py DB stream`` writes forever;
``python damage_writer.py DB idle N`` writes N rounds, prints ``idle`` and then
sleeps until it is killed -- with automatic checkpoints off, so every
committed transaction of the run is still in the WAL when SIGKILL lands.

Prints ``ready`` once the store is open. Each round creates a session, a task
and a context item, each in its own transaction, and prints ``S``, ``T`` and
``C`` lines with the ids only after the call returned: every line the parent
reads is a write the store acknowledged as committed.
"""

from __future__ import annotations

import sys
import time

from statekeep import StateConfig, open_store


def main() -> None:
    db, mode = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if mode == "idle" else 0
    store = open_store(StateConfig(db=db, access_flush_interval=0))
    if mode == "idle":
        with store.reading() as conn:  # this thread's connection does every write
            conn.execute("PRAGMA wal_autocheckpoint = 0")
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    i = 0
    while True:
        session = store.create_session("writer", metadata={"i": i})
        out.write(f"S {session.id}\n")
        out.flush()
        task = store.create_task(session.id, "step", parameters={"i": i})
        out.write(f"T {task.id}\n")
        out.flush()
        item = store.set_context(session.id, "progress", f"k{i}", {"i": i, "pad": "x" * (i % 300)})
        out.write(f"C {item.id}\n")
        out.flush()
        i += 1
        if mode == "idle" and i == rounds:
            out.write("idle\n")
            out.flush()
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
