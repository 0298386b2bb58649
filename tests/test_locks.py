"""Both kinds of operation lock: one holder, freed by the kernel, never fooled by a new file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resumable import OperationLocked
from resumable.locks import FileLock, Lock, LockFile, RangeLock

HOLD = """
import sys, time
sys.path.insert(0, {src!r})
from resumable.locks import FileLock, LockFile, RangeLock
path = {path!r}
lock = FileLock(__import__("pathlib").Path(path), "op") if {kind!r} == "file" else RangeLock(
    LockFile(__import__("pathlib").Path(path)), "op", "key")
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""

SRC = str(Path(__file__).resolve().parent.parent)


def make(kind: str, path: Path, file: LockFile | None = None) -> Lock:
    if kind == "file":
        return FileLock(path, "op")
    return RangeLock(file or LockFile(path), "op", "key")


@pytest.fixture(params=["file", "range"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "range" and not hasattr(__import__("fcntl"), "F_OFD_SETLK"):
        pytest.skip("open file description locks are Linux-only")
    return str(request.param)


def test_one_holder_in_a_process(kind: str, tmp_path: Path) -> None:
    """A second lock on the same operation is refused until the first is released."""
    shared = LockFile(tmp_path / "l.lock")
    first, second = make(kind, tmp_path / "l.lock", shared), make(kind, tmp_path / "l.lock", shared)
    first.acquire()
    with pytest.raises(OperationLocked):
        second.acquire()
    started = time.monotonic()
    with pytest.raises(OperationLocked, match="waited"):
        second.acquire(timeout=0.2)
    assert time.monotonic() - started >= 0.2
    first.release()
    second.acquire()
    second.release()


def test_a_lock_held_by_a_killed_process_is_free_at_once(kind: str, tmp_path: Path) -> None:
    """The kernel frees a lock whose holder was SIGKILLed: the next taker gets it at once."""
    path = tmp_path / "l.lock"
    code = HOLD.format(src=SRC, path=str(path), kind=kind)
    args = [sys.executable, "-c", code]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(OperationLocked, match="another process"):
                make(kind, path).acquire()
            holder.kill()
            holder.wait(timeout=10)
            lock = make(kind, path)
            lock.acquire()
            lock.release()
        finally:
            holder.kill()


def test_a_replaced_lock_file_is_not_trusted(kind: str, tmp_path: Path) -> None:
    """A lock taken on a file that was then removed and recreated is retaken on the new one."""
    path = tmp_path / "l.lock"
    shared = LockFile(path)
    old = make(kind, path, shared)
    old.acquire()
    os.unlink(path)  # someone (a careless cleanup) removes the lock file meanwhile
    new = make(kind, path, LockFile(path))
    new.acquire()  # the new file is free: the old holder's lock no longer guards anything
    new.release()
    old.release()
    again = make(kind, path, shared)
    again.acquire()  # the shared descriptor notices the new inode and locks the live file
    other = make(kind, path, LockFile(path))
    with pytest.raises(OperationLocked):
        other.acquire()
    again.release()


def test_forked_child_does_not_keep_the_parents_lock(kind: str, tmp_path: Path) -> None:
    """A child forked while a lock is held does not hold it once the parent lets go."""
    path = tmp_path / "l.lock"
    lock = make(kind, path)
    lock.acquire()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: waits until the parent has released, then exits
        os.close(write)
        os.read(read, 1)
        os._exit(0)
    try:
        os.close(read)
        lock.release()
        other = make(kind, path)
        other.acquire()  # free although the child (which inherited descriptors) is alive
        other.release()
    finally:
        os.write(write, b"x")
        os.close(write)
        os.waitpid(pid, 0)


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_stores_closed_or_dropped_leave_no_descriptor_open(kind: str, tmp_path: Path) -> None:
    """A program that opens a store per task must not run out of file descriptors."""
    import gc

    from resumable import checkpointed, open_store

    url = f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"file://{tmp_path}/store"

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with checkpointed("warm-up", store=open_store(url)):
        pass
    gc.collect()
    before = open_fds()
    for i in range(40):
        store = open_store(url)
        with checkpointed(f"op{i}", store=store):
            pass
        if i % 2:
            store.close()
        del store
    gc.collect()
    assert open_fds() - before <= 2


def test_closing_a_store_keeps_the_locks_its_blocks_hold(tmp_path: Path) -> None:
    from resumable import checkpointed, open_store

    url = f"sqlite:///{tmp_path}/s.db"
    store = open_store(url)
    with checkpointed("held", store=store):
        store.close()  # the block still runs: its lock must stand
        with pytest.raises(OperationLocked), checkpointed("held", store=open_store(url)):
            pass
    with checkpointed("held", store=open_store(url), fresh=True):
        pass
