"""Child process for test_capture_crash: captures a tree again and again.

Each capture goes into a new session; a line ``A <session> <files>`` is
printed only after ``capture_paths`` returned, i.e. after it committed.
Half the captures edit one file first, so re-captures rewrite items,
content links and relations too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from statekeep import StateConfig, StateSystem


def main() -> None:
    db, root = sys.argv[1], Path(sys.argv[2])
    with StateSystem(StateConfig(db=db, workspace_root=str(root))) as sk:
        print("ready", flush=True)
        sid = sk.create_session("crash").id
        n = 0
        while True:
            n += 1
            if n % 2:
                sid = sk.create_session("crash").id
            else:
                (root / "pkg/mod0.py").write_text(f"import pkg.mod1\nX = {n}\n")
            report = sk.capture_paths(sid, [root])
            files = sum(1 for t, _k in report.keys if t == "file")
            print(f"A {sid} {files}", flush=True)


if __name__ == "__main__":
    main()
