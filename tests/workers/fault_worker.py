"""Fault injection for the tests: helpers that set ``resumable._fs.faults.hook``, and the
processes the crash-point sweeps end at a chosen file operation.

    python fault_worker.py save URL OP TOTAL CRASH_AT [PAUSE_AT]
    python fault_worker.py failsafe DIR OP CRASH_AT
    python fault_worker.py backup BACKUP_DIR SOURCE MAX_BACKUPS CRASH_AT
    python fault_worker.py restore BACKUP_DIR BACKUP_ID DEST CRASH_AT
    python fault_worker.py rss URL MIB [LIMIT_MIB]
    python fault_worker.py power URL OP
    python fault_worker.py append PATH

Every file and directory operation of the file store and the backup code goes through
``resumable._fs``, which calls ``_fs.faults.hook(operation, path)`` just before it runs. The
workers install a hook that counts those calls and ends the process with
``os._exit(CRASHED)`` at number CRASH_AT, before it runs, as a power cut or a SIGKILL would at
that instant (0: never). A run that completes prints ``ops N`` (the operations it made) last
and exits 0.

``save`` runs a checkpointed loop over ``range(TOTAL)`` that folds each item into an
order-sensitive hash and commits after every item, printing ``acked P`` once the commit of
position P returned. With PAUSE_AT it stops (KeyboardInterrupt) at that item instead.
``failsafe`` saves one FailsafeManager checkpoint (``{"v": 2}``, progress 0.5) and prints
``acked ID``. ``backup`` backs up SOURCE and prints ``created ID``. ``restore`` restores a
backup and prints ``restored``.

``rss`` commits a state holding MIB MiB of bytes once, and prints one JSON line: the state's
size and the process's resident memory (``VmRSS``) just before the commit and its peak
(``VmHWM``) after it, in bytes; ``ok`` is false (and ``error`` says why) if it raised. With
LIMIT_MIB, the commit may use at most that much more address space (``RLIMIT_AS``).

``power`` is ``save`` without an end (it resumes where the store says and commits after
every item, printing ``acked P``) until its file system is shut down under it
(``tests/test_power.py``); the first failing commit ends it. ``append`` is the control
without resumable: it appends 4 KiB records numbered 1, 2, ... to PATH with ``write`` and
``fsync``, printing ``acked N`` after each, until a write or fsync fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from resumable._fs import faults

CRASHED = 86

Hook = Callable[[str, Path], None]


@contextlib.contextmanager
def injected(hook: Hook) -> Iterator[None]:
    """Install ``hook`` as the fault hook of ``resumable._fs`` for the block."""
    previous, faults.hook = faults.hook, hook
    try:
        yield
    finally:
        faults.hook = previous


class Counter:
    """A hook that counts operations and, at number ``at``, fails it or ends the process.

    Args:
        at: the operation (1-based) to act on; 0 never acts.
        error: the errno to raise there as an OSError; None ends the process instead.
        only: the operations counted (all if empty), e.g. ``{"write", "replace"}``.
    """

    def __init__(self, at: int = 0, error: int | None = None, only: frozenset[str] = frozenset()):
        self.at, self.error, self.only = at, error, only
        self.count = 0
        self.hit: tuple[str, str] | None = None

    def __call__(self, op: str, path: Path) -> None:
        if self.only and op not in self.only:
            return
        self.count += 1
        if self.count != self.at:
            return
        self.hit = (op, str(path))
        if self.error is None:
            os._exit(CRASHED)
        raise OSError(self.error, f"{os.strerror(self.error)} (injected at {op} {path.name})")


def fold(h: str, x: int) -> str:
    """The hash after item ``x``; the order of the items changes the result."""
    return hashlib.sha256((h + str(x)).encode()).hexdigest()


def uninterrupted(n: int) -> dict[str, object]:
    """The state of ``save`` after the items ``range(n)``."""
    h = ""
    for x in range(n):
        h = fold(h, x)
    return {"h": h, "n": n}


def save(url: str, op_id: str, total: int, pause_at: int | None) -> None:
    from resumable import checkpointed

    try:
        with checkpointed(op_id, store=url, state=uninterrupted(0), every_seconds=3600) as cp:
            for x in cp.iterate(range(total)):
                if x == pause_at:
                    raise KeyboardInterrupt
                cp.state.h = fold(cp.state.h, x)
                cp.state.n += 1
                cp.commit()
                print(f"acked {x + 1}", flush=True)
    except KeyboardInterrupt:
        print("paused", flush=True)


def failsafe(directory: str, op_id: str) -> None:
    from resumable import FailsafeManager, ProcessState

    manager = FailsafeManager(f"{directory}/checkpoints", f"{directory}/backups")
    cid = manager.save_checkpoint(op_id, "job", ProcessState.RUNNING, 0.5, {"v": 2})
    print(f"acked {cid}", flush=True)


def backup(backup_dir: str, source: str, max_backups: int) -> None:
    from resumable.backup import Backups

    info = Backups(backup_dir, max_backups=max_backups).create(source)
    print(f"created {info.backup_id}", flush=True)


def restore(backup_dir: str, backup_id: str, dest: str) -> None:
    from resumable.backup import Backups

    Backups(backup_dir).restore(backup_id, dest)
    print("restored", flush=True)


def _status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def rss(url: str, mib: int, limit: int) -> None:
    import json
    import resource

    from resumable import checkpointed

    blob = os.urandom(mib << 20)
    result: dict[str, object] = {"size": len(blob), "ok": True}
    with checkpointed(OP_RSS, store=url, state={"blob": b""}, every_seconds=3600) as cp:
        cp.state.blob = blob
        del blob
        result["before"] = _status("VmRSS")
        if limit:
            hard = resource.getrlimit(resource.RLIMIT_AS)[1]
            resource.setrlimit(resource.RLIMIT_AS, (_status("VmSize") + (limit << 20), hard))
        try:
            cp.commit()
        except Exception as exc:  # reported to the test, which judges it
            result.update(ok=False, error=repr(exc)[:300])
        result["peak"] = _status("VmHWM")
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        print(json.dumps(result), flush=True)
        os._exit(0)  # measured: skip the exit commit


OP_RSS = "rss-job"


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "rss":
        rss(args[0], int(args[1]), int(args[2]) if len(args) > 2 else 0)
        return
    if command == "append":
        fd = os.open(args[0], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        n = os.fstat(fd).st_size // 4096
        with contextlib.suppress(OSError):
            while True:
                n += 1
                os.write(fd, n.to_bytes(8, "little") * 512)
                os.fsync(fd)
                print(f"acked {n}", flush=True)
        os._exit(0)
    if command == "power":
        with contextlib.suppress(Exception):  # the shutdown fails every later operation
            save(args[0], args[1], 10**9, None)
        os._exit(0)
    crash_at = {"save": 3, "failsafe": 2, "backup": 3, "restore": 3}[command]
    counter = Counter(int(args[crash_at]))
    with injected(counter):
        if command == "save":
            pause = int(args[4]) if len(args) > 4 else None
            save(args[0], args[1], int(args[2]), pause)
        elif command == "failsafe":
            failsafe(args[0], args[1])
        elif command == "backup":
            backup(args[0], args[1], int(args[2]))
        else:
            restore(args[0], args[1], args[2])
    print(f"ops {counter.count}", flush=True)


if __name__ == "__main__":
    main()
