"""Three processes share one job: each takes batches of the work, all get every result.

    python examples/shared_workers.py

starts three copies of itself (``--participant``) on one SQLite store under the working
directory. Each runs the same ``checkpointed("hash-files", shared=True)`` block: ``cp.step``
makes the file list once, and ``cp.map`` splits the hashing among the three. Kill any of them
(or all) and run the command again: finished files are not hashed twice, and the claims of a
killed process pass to the others when its lease runs out (2 s here).

On several machines, point ``STORE`` at PostgreSQL (``postgresql://user@host/db``) and start
the participant command on each machine.
"""

from __future__ import annotations

import collections
import hashlib
import os
import subprocess
import sys
import time

from resumable import checkpointed

STORE = "sqlite:///.resumable/shared-example.db?lease=2&heartbeat=0.5"


def list_files() -> list[str]:
    """The work: 240 made-up file names (a real job would list a directory or a bucket)."""
    return [f"photos/{i:04d}.jpg" for i in range(240)]


def digest(name: str) -> tuple[str, int]:
    """Hash one "file" (here, its name, slowly), and say which process did it."""
    time.sleep(0.01)
    return hashlib.sha256(name.encode()).hexdigest()[:16], os.getpid()


def participant() -> None:
    with checkpointed("hash-files", store=STORE, shared=True) as cp:
        files = cp.step("list files", list_files)
        results = cp.map(digest, files, workers=4)
    mine = sum(1 for _, pid in results if pid == os.getpid())
    print(f"participant {os.getpid()}: {len(results)} results, {mine} hashed here", flush=True)


def main() -> None:
    if sys.argv[1:] == ["--participant"]:
        participant()
        return
    procs = [
        subprocess.Popen([sys.executable, __file__, "--participant"], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    lines = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a participant failed")
    print("\n".join(lines))
    with checkpointed("hash-files", store=STORE, shared=True) as cp:  # a fourth, late one
        results = cp.map(digest, cp.step("list files", list_files))
    by_process = collections.Counter(pid for _, pid in results)
    print(f"all {len(results)} files hashed once, by {len(by_process)} process(es):")
    for pid, count in sorted(by_process.items()):
        print(f"  {pid}: {count}")


if __name__ == "__main__":
    main()
