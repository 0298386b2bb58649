"""Processes the backup tests run, kill and race against.

    python backup_worker.py restore BACKUP_DIR BACKUP_ID DEST CRASH_AT
    python backup_worker.py write-db PATH JOURNAL_MODE MAX_SECONDS
    python backup_worker.py leave-wal PATH
    python backup_worker.py serve-writes PATH
    python backup_worker.py step-job N
    python backup_worker.py restore-capped BACKUP_DIR BACKUP_ID MAX_FILE_BYTES

``restore`` restores a backup with every file operation counted: each function of
``resumable._fs`` and ``os.replace``, ``os.link``, ``os.fsync``, ``os.unlink``. Operation
number CRASH_AT ends the process with ``os._exit(CRASHED)`` before it runs, as a power cut
or a SIGKILL would at that instant. A restore that completes prints ``restored N`` (N: the
operations it made) and exits 0.

``write-db`` creates a database of 2,000 rows and two accounts holding 1,000 in all, prints
``ready``, then keeps committing transactions that rewrite random rows, insert and delete
rows (their count stays 2,000) and move money between the accounts (the total stays 1,000),
until stdin closes (or MAX_SECONDS pass), then prints ``done N`` (N: the transactions).
Any consistent snapshot shows both invariants.

``leave-wal`` commits a row into a WAL-mode database and exits without closing it, the way a
crashed program leaves a ``-wal`` file holding committed changes.

``serve-writes`` opens the database (table ``t (v TEXT)``), prints ``ready`` and then serves
one command per line of stdin, answering each on stdout: a text inserts it as a row in its own
transaction (``ok``, or ``error <message>``); ``hold TEXT`` opens ``BEGIN IMMEDIATE`` and
inserts it, keeping the transaction open (``held``); ``commit`` ends it (``ok``); ``quit``
(or the end of stdin) closes the connection. It serves at most 1,000 commands.

``step-job`` runs a ``checkpointed`` job of N items on the default store
(``.resumable/state.db`` under the working directory), committing every item. At the start of
item i (items before i committed) it prints ``item i`` and waits for a line ``go`` on stdin;
after the block it closes the store and prints the final state as JSON.

``restore-capped`` restores a backup to its source with the process's file size limit
(``RLIMIT_FSIZE``) set to MAX_FILE_BYTES: a write past it fails (EFBIG), as on a full disk.
It prints ``restored`` or ``failed <exception type>: <message>``.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sqlite3
import sys
import threading
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
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
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
    deadline, count = time.monotonic() + seconds, 0
    while not stop.is_set() and time.monotonic() < deadline:
        count += 1
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
    print(f"done {count}", flush=True)


def leave_wal(path: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("INSERT INTO t VALUES ('from the crashed program')")
    assert Path(path + "-wal").stat().st_size > 0
    os._exit(0)


def serve_writes(path: str) -> None:
    con = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        print("ready", flush=True)
        for _ in range(1_000):
            line = sys.stdin.readline().rstrip("\n")
            if line in ("", "quit"):
                break
            try:
                if line.startswith("hold "):
                    con.execute("BEGIN IMMEDIATE")
                    con.execute("INSERT INTO t VALUES (?)", (line[5:],))
                    answer = "held"
                elif line == "commit":
                    con.execute("COMMIT")
                    answer = "ok"
                else:
                    con.execute("INSERT INTO t VALUES (?)", (line,))
                    answer = "ok"
            except sqlite3.Error as exc:
                answer = f"error {exc}"
            print(answer, flush=True)
    finally:
        con.close()


def step_job(n: int) -> None:
    from resumable import checkpointed
    from resumable.stores import resolve_store

    with checkpointed("job", state={"count": 0, "total": 0}, every_seconds=0) as cp:
        for i in cp.iterate(range(n)):
            print(f"item {i}", flush=True)
            if sys.stdin.readline().strip() != "go":
                raise SystemExit("the test stopped the job")
            cp.state.count += 1
            cp.state.total += i
    resolve_store(None).close()  # as a program that closes what it opened does
    print(json.dumps({"count": cp.state.count, "total": cp.state.total}), flush=True)


def restore_capped(backup_dir: str, backup_id: str, max_bytes: int) -> None:
    from resumable.backup import Backups

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    try:
        Backups(backup_dir).restore(backup_id)
    except Exception as exc:  # reported to the test, which checks it
        print(f"failed {type(exc).__name__}: {exc}", flush=True)
    else:
        print("restored", flush=True)


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "restore":
        restore(args[0], args[1], args[2], int(args[3]))
    elif command == "write-db":
        write_db(args[0], args[1], float(args[2]))
    elif command == "leave-wal":
        leave_wal(args[0])
    elif command == "serve-writes":
        serve_writes(args[0])
    elif command == "step-job":
        step_job(int(args[0]))
    elif command == "restore-capped":
        restore_capped(args[0], args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
