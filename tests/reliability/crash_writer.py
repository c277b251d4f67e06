"""Child process for the crash tests: write forever, acknowledge each committed write.

Usage: ``python crash_writer.py DB_PATH DURABILITY``. Prints ``ready`` once the
store is open, then loops: create a session, print ``S <session id>``; set a
context item in it, print ``C <item id> <session id> <key>``. A line is printed
(and flushed) only after the call that made the write has returned, so every
line the parent reads is a write the store acknowledged as committed.
"""

from __future__ import annotations

import sys

from statekeep import StateConfig, open_store


def main() -> None:
    db, durability = sys.argv[1], sys.argv[2]
    store = open_store(StateConfig(db=db, durability=durability, access_flush_interval=0))
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    i = 0
    while True:
        session = store.create_session("crash", metadata={"i": i})
        out.write(f"S {session.id}\n")
        out.flush()
        key = f"step-{i}"
        item = store.set_context(session.id, "progress", key, {"i": i, "pad": "x" * (i % 500)})
        out.write(f"C {item.id} {session.id} {key}\n")
        out.flush()
        i += 1


if __name__ == "__main__":
    main()
