"""Processes the backup tests run, kill and race against.

    python backup_worker.py restore BACKUP_DIR BACKUP_ID DEST CRASH_AT
    python backup_worker.py write-db PATH JOURNAL_MODE SECONDS
    python backup_worker.py leave-wal PATH

``restore`` restores a backup with every file operation counted: each function of
``resumable._fs`` and ``os.replace``, ``os.link``, ``os.fsync``, ``os.unlink``. Operation
number CRASH_AT ends the process with ``os._exit(CRASHED)`` before it runs, as a power cut
or a SIGKILL would at that instant. A restore that completes prints ``restored N`` (N: the
operations it made) and exits 0.

``write-db`` creates a database of 2,000 rows and two accounts holding 1,000 in all, prints
``ready``, then for SECONDS keeps committing transactions that rewrite random rows, insert and
delete rows (their count stays 2,000) and move money between the accounts (the total stays
1,000). Any consistent snapshot shows both invariants.

``leave-wal`` commits a row into a WAL-mode database and exits without closing it, the way a
crashed program leaves a ``-wal`` file holding committed changes.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CRASHED = 86
ROWS = 2_000
TOTAL = 1_000


def restore(backup_dir: str, backup_id: str, dest: str, crash_at: int) -> None:
    from resumable import _fs
    from resumable.backup import Backups

    count = 0

    def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal count
            count += 1
            if count == crash_at:
                os._exit(CRASHED)
            return fn(*args, **kwargs)

        return wrapper

    backups = Backups(backup_dir)
    for name in _fs.__all__:
        value = getattr(_fs, name)
        if callable(value):
            setattr(_fs, name, counted(value))
    for name in ("replace", "link", "fsync", "unlink"):
        setattr(os, name, counted(getattr(os, name)))
    backups.restore(backup_id, dest)
    print(f"restored {count}", flush=True)


def write_db(path: str, journal_mode: str, seconds: float) -> None:
    rng = random.Random(1)
    con = sqlite3.connect(path, isolation_level=None, timeout=30)
    con.execute(f"PRAGMA journal_mode={journal_mode}")
    con.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, v BLOB)")
    con.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)")
    con.execute("BEGIN")
    blobs = ((rng.randbytes(1000),) for _ in range(ROWS))
    con.executemany("INSERT INTO rows (v) VALUES (?)", blobs)
    con.executemany("INSERT INTO accounts VALUES (?, ?)", [(1, TOTAL), (2, 0)])
    con.execute("COMMIT")
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        con.execute("BEGIN IMMEDIATE")
        low, high = con.execute("SELECT min(id), max(id) FROM rows").fetchone()
        for _ in range(20):
            con.execute(
                "UPDATE rows SET v = ? WHERE id = ?", (rng.randbytes(1000), rng.randint(low, high))
            )
        con.execute("DELETE FROM rows WHERE id IN (SELECT id FROM rows ORDER BY id LIMIT 5)")
        blobs = ((rng.randbytes(1000),) for _ in range(5))
        con.executemany("INSERT INTO rows (v) VALUES (?)", blobs)
        amount = rng.randint(-50, 50)
        con.execute("UPDATE accounts SET balance = balance - ? WHERE id = 1", (amount,))
        con.execute("UPDATE accounts SET balance = balance + ? WHERE id = 2", (amount,))
        con.execute("COMMIT")
    con.close()
    print("done", flush=True)


def leave_wal(path: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("INSERT INTO t VALUES ('from the crashed program')")
    assert Path(path + "-wal").stat().st_size > 0
    os._exit(0)


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "restore":
        restore(args[0], args[1], args[2], int(args[3]))
    elif command == "write-db":
        write_db(args[0], args[1], float(args[2]))
    elif command == "leave-wal":
        leave_wal(args[0])
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
