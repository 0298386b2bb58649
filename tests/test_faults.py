"""Faults: every file operation of the file store and the backups goes through one module,
where a test can fail any one of them (EIO, ENOSPC) or end the process just before it.

- In process: each operation of a commit, a FailsafeManager save, a backup and a restore is
  failed in turn; the call raises, the previous state is intact, no temp file is left, and
  the next call succeeds.
- Crash-point sweeps (as SQLite's own tests do): a worker process (``fault_worker.py``) ends
  with ``os._exit`` before its 1st, 2nd, ... n-th file operation until the work completes;
  after each, the store shows exactly the old or the new state, opens cleanly, ignores the
  temp files the crash left and a later run cleans them up.
- Hostile op, checkpoint and backup ids create nothing outside the store.

Every subprocess runs under a timeout, and every sweep is bounded.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_worker import CRASHED, Counter, fold, injected, uninterrupted

from resumable import (
    FailsafeManager,
    ProcessState,
    StoreError,
    _fs,
    checkpointed,
    open_store,
)
from resumable._fs import faults
from resumable.backup import Backups
from resumable.operation import CheckpointRecord, OperationRecord, ResultRecord, op_key
from resumable.serializers import decode
from resumable.stores.files import FileStore
from resumable.stores.sqlite import SQLiteStore

WORKER = Path(__file__).parent / "workers" / "fault_worker.py"
TIMEOUT = 60.0
#: No sweep below needs more crash points than this; reaching it fails the test.
MAX_POINTS = 200
ERRORS = [errno.EIO, errno.ENOSPC]
OP = "fault-job"


def temp_files(root: Path) -> list[str]:
    """Every name under ``root`` that carries the temp mark (a leftover of a write)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"*{_fs.TEMP_MARK}*"))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` with its content, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def run_worker(*args: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(WORKER), *map(str, args)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode in (0, CRASHED), proc.stderr
    return proc


def ops_of(proc: subprocess.CompletedProcess[str]) -> int:
    last = proc.stdout.split("\n")[-2]
    assert last.startswith("ops "), proc.stdout
    return int(last.split()[1])


# --- one module for every file operation -----------------------------------------------------

_WATCHED_OS = [
    "open", "mkdir", "makedirs", "replace", "rename", "renames", "unlink", "remove", "rmdir",
    "link", "symlink", "listdir", "scandir", "fsync", "fdatasync", "truncate", "ftruncate",
    "chmod", "utime",
]  # fmt: skip
_ALLOWED = ("resumable._fs", "resumable.locks")  # locks open their lock files themselves


@pytest.fixture
def bypasses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Calls of ``os`` file functions (and ``open``) made by resumable outside ``_fs``."""
    found: list[str] = []

    def watch(module: Any, name: str) -> None:
        real = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            while frame is not None:
                mod = frame.f_globals.get("__name__", "")
                if mod == "resumable" or mod.startswith("resumable."):
                    inside = mod in _ALLOWED or mod.startswith("resumable._fs.")  # its modules
                    if not inside and not str(args[:1]).startswith("('/proc/"):
                        found.append(f"{mod}:{frame.f_lineno} {name}{args[:1]}")
                    break
                frame = frame.f_back  # type: ignore[assignment]
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for name in _WATCHED_OS:
        watch(os, name)
    watch(builtins, "open")
    watch(io, "open")
    return found


def test_file_store_and_backups_do_every_file_operation_through_fs(
    tmp_path: Path, bypasses: list[str]
) -> None:
    """The file store, the FailsafeManager and the backups touch files only through _fs."""
    store = open_store(f"file://{tmp_path}/store?durability=full")
    with checkpointed(OP, store=store, state={"n": 0}, every=1) as cp:
        for _ in cp.iterate(range(3)):
            cp.state.n += 1
        cp.step("s", lambda: 42)
    assert store.latest_checkpoint(OP) is not None
    assert [o.op_id for o in store.list_operations()] == [OP]
    assert store.load_results(OP, "")
    folder = next((tmp_path / "store" / "ops").iterdir())
    (folder / "checkpoints" / f"9.json{_fs.TEMP_MARK}0123456789ab.1").write_bytes(b"{")
    (folder.parent / f"x{_fs.TEMP_MARK}deleted.1").mkdir()
    (folder.parent / f"x{_fs.TEMP_MARK}deleted.1" / "f").write_bytes(b"")
    assert len(store.sweep(time.time() + 1)) == 2
    assert store.delete_operation(OP)
    store.close()

    manager = FailsafeManager(tmp_path / "checkpoints", tmp_path / "backups", max_backups=1)
    cid = manager.save_checkpoint("m", "job", ProcessState.RUNNING, 0.5, {"v": 1})
    manager._cache.clear()
    assert manager.load_checkpoint(cid) is not None
    src = tmp_path / "data.bin"
    src.write_bytes(b"one" * 1000)
    first = manager.create_backup(src)
    src.write_bytes(b"two" * 1000)
    manager.create_backup(src)  # rotates the first one out
    assert manager.create_backup(src).backup_id != first.backup_id  # unchanged: deduped
    manager.restore_backup(manager.list_backups()[0].backup_id, tmp_path / "restored.bin")
    assert (tmp_path / "restored.bin").read_bytes() == b"two" * 1000
    assert manager.verify_backup(manager.list_backups()[0].backup_id)
    assert bypasses == []


def test_fault_hook_costs_nothing_when_unset() -> None:
    """Outside a test, the hook is None: each operation pays one global lookup."""
    assert faults.hook is None


# --- in process: fail each operation in turn ---------------------------------------------------


def _sweep(attempt: Callable[[Counter], None], error: int) -> int:
    """Call ``attempt`` with the n-th operation failing, n = 1, 2, ... until none fails."""
    for n in range(1, MAX_POINTS):
        counter = Counter(n, error)
        attempt(counter)
        if counter.hit is None:
            print(f"faults injected: {n - 1}")  # shown by -rP: docs/reliability.md counts
            return n - 1
    pytest.fail(f"still failing operations after {MAX_POINTS}")


def _ckpt(seq: int, value: bytes) -> CheckpointRecord:
    return CheckpointRecord.create(OP, seq, seq, ProcessState.RUNNING, 0.5, "pickle", value)


@pytest.mark.parametrize("error", ERRORS, ids=errno.errorcode.get)
@pytest.mark.parametrize("durability", ["normal", "full"])
def test_file_store_commit_failing_at_each_operation_keeps_last_checkpoint(
    tmp_path: Path, error: int, durability: str
) -> None:
    """A commit whose n-th file operation fails raises StoreError, leaves the last checkpoint
    byte-identical and no temp file, and the next commit succeeds; for every n."""
    tried = 0

    def attempt(counter: Counter) -> None:
        nonlocal tried
        root = tmp_path / f"store-{tried}"
        tried += 1
        store = FileStore(root, durability=durability, history=2)  # type: ignore[arg-type]
        op = OperationRecord.new(OP, "job", ProcessState.RUNNING)
        store.save(op, _ckpt(1, b"one"))
        store.add_checkpoint(_ckpt(2, b"two"))
        before = snapshot(root)
        new = _ckpt(3, b"three")
        done = op.to(ProcessState.COMPLETED)
        result = ResultRecord.create(OP, "step:x", "pickle", b"result")
        try:
            with injected(counter):
                store.save(done, new, [result])
            raised = ""
        except StoreError as exc:
            raised = str(exc)
        if counter.hit is not None and not raised:  # only a temp file's cleanup may fail
            assert counter.hit[0] == "unlink" and _fs.TEMP_MARK in counter.hit[1]
        else:
            assert ("injected" in raised) == (counter.hit is not None), raised
        assert temp_files(root) == []
        after = FileStore(root)
        latest = after.latest_checkpoint(OP)
        assert latest is not None
        assert latest.payload in (b"two", b"three")
        assert latest.verify()
        for name, data in before.items():  # old files are removed or intact, never changed
            now = root / name
            if now.exists() and not name.endswith("operation.json"):
                assert now.read_bytes() == data, name
        store.save(done, _ckpt(4, b"four"), [result])  # the next commit succeeds
        assert after.latest_checkpoint(OP).payload == b"four"  # type: ignore[union-attr]
        assert after.load_operation(OP).state is ProcessState.COMPLETED  # type: ignore[union-attr]
        assert after.load_result(OP, "step:x") is not None

    points = _sweep(attempt, error)
    assert points >= (13 if durability == "full" else 9)  # what is fsynced: the test below


def _writes(calls: list[tuple[str, Path]]) -> dict[Path, list[str]]:
    """Each file written atomically, and the operations on it in order: those on its temp
    file, its ``replace`` and, right after it, an ``fsync_dir`` of its folder."""
    seen: dict[Path, list[str]] = {}
    for i, (op, path) in enumerate(calls):
        if op != "replace":
            continue
        temps = [p for _, p in calls[:i] if p.name.startswith(path.name + _fs.TEMP_MARK)]
        temp = temps[-1]  # the attempt that succeeded (the first one fails in a new folder)
        after = calls[i + 1 : i + 2]
        seen[path] = [
            *(o for o, p in calls[:i] if p == temp),
            "replace",
            *(o for o, p in after if o == "fsync_dir" and p == path.parent),
        ]
    return seen


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_file_store_full_durability_fsyncs_each_record_and_its_folder(
    tmp_path: Path, durability: str
) -> None:
    """With full, every record file is fsynced before its rename and its folder after it (and
    the ops folder after a delete); with normal nothing is fsynced."""
    root = tmp_path / "store"
    store = FileStore(root, durability=durability, history=2)  # type: ignore[arg-type]
    op = OperationRecord.new(OP, "job", ProcessState.RUNNING)
    calls: list[tuple[str, Path]] = []
    with injected(lambda name, path: calls.append((name, path))):
        store.save(op, _ckpt(1, b"one"), [ResultRecord.create(OP, "step:a", "pickle", b"a")])
        store.add_checkpoint(_ckpt(2, b"two"))
        store.put_results([ResultRecord.create(OP, "step:b", "pickle", b"b")])
        store.save(op.to(ProcessState.COMPLETED), _ckpt(3, b"three"))
    writes = _writes(calls)
    folder = root / "ops" / op_key(OP)
    records = {
        folder / "operation.json", *(folder / "checkpoints").glob("*.json"),
        *(folder / "results").glob("*.json"), folder / "checkpoints" / f"{1:012d}.json",
    }  # fmt: skip
    assert set(writes) == records  # every record file, and the one the history dropped
    full = ["create", "write", "fsync", "replace", "fsync_dir"]
    expected = full if durability == "full" else [o for o in full if not o.startswith("fsync")]
    assert writes == dict.fromkeys(records, expected)
    fsynced = [op for op, _ in calls if op.startswith("fsync")]  # and nothing else
    replaced = [op for op, _ in calls if op == "replace"]
    assert len(fsynced) == (2 * len(replaced) if durability == "full" else 0)

    calls.clear()
    with injected(lambda name, path: calls.append((name, path))):
        assert store.delete_operation(OP)
    deleted = [("fsync_dir", root / "ops")] if durability == "full" else []
    assert [(op, p) for op, p in calls if op.startswith("fsync")] == deleted


@pytest.mark.parametrize(("durability", "synchronous"), [("normal", 1), ("full", 2)])
def test_sqlite_durability_sets_synchronous_on_every_connection(
    tmp_path: Path, durability: str, synchronous: int
) -> None:
    """SQLite's durability is its connection's ``PRAGMA synchronous`` (WAL: NORMAL survives a
    process crash, FULL syncs the WAL at every commit); set again on a reopened connection."""
    store = SQLiteStore(tmp_path / "state.db", durability=durability)  # type: ignore[arg-type]
    try:
        for _ in range(2):  # the first connection, then a new one after close()
            conn = store._connection()
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA synchronous").fetchone() == (synchronous,)
            store.close()
    finally:
        store.close()


@pytest.mark.parametrize("error", ERRORS, ids=errno.errorcode.get)
def test_checkpointed_loop_survives_a_failed_commit_at_each_operation(
    tmp_path: Path, error: int
) -> None:
    """A loop whose n-th file operation fails stops with StoreError; no acknowledged item is
    lost and a re-run ends as an uninterrupted run would; for every n."""
    tried = 0

    def attempt(counter: Counter) -> None:
        nonlocal tried
        url = f"file://{tmp_path}/store-{tried}?durability=full"
        tried += 1
        acked = 0
        ran: list[int] = []

        def run() -> Any:
            nonlocal acked
            with checkpointed(OP, store=url, state=uninterrupted(0), every_seconds=3600) as cp:
                for x in cp.iterate(range(5)):
                    ran.append(x)
                    cp.state.h = fold(cp.state.h, x)
                    cp.state.n += 1
                    cp.commit()
                    acked = max(acked, x + 1)
            return cp

        try:
            with injected(counter):
                run()
        except StoreError:
            assert counter.hit is not None
        store = FileStore(tmp_path / f"store-{tried - 1}")
        latest = store.latest_checkpoint(OP)
        position = 0 if latest is None else latest.position
        assert position >= acked  # nothing acknowledged is lost
        if latest is not None:
            assert decode(latest.serializer, latest.payload) == uninterrupted(position)
        before = len(ran)
        cp = run()
        assert dict(cp.state) == uninterrupted(5)
        assert ran[before:] == list(range(position, 5))  # each item once, from the position
        assert temp_files(tmp_path / f"store-{tried - 1}") == []

    assert _sweep(attempt, error) > 30


@pytest.mark.parametrize("error", ERRORS, ids=errno.errorcode.get)
def test_failsafe_save_failing_at_each_operation_raises_store_error(
    tmp_path: Path, error: int
) -> None:
    """A FailsafeManager save whose n-th operation fails raises StoreError; the previous
    checkpoint still loads, no temp file is left, and the next save succeeds."""
    tried = 0

    def attempt(counter: Counter) -> None:
        nonlocal tried
        base = tmp_path / f"m-{tried}"
        tried += 1
        manager = FailsafeManager(base / "checkpoints", base / "backups", max_checkpoints=2)
        first = manager.save_checkpoint(OP, "job", ProcessState.RUNNING, 0.1, {"v": 1})
        manager.save_checkpoint(OP, "job", ProcessState.RUNNING, 0.2, {"v": 2})
        try:
            with injected(counter):
                manager.save_checkpoint(OP, "job", ProcessState.PAUSED, 0.3, {"v": 3})
        except StoreError:
            assert counter.hit is not None
        except OSError:  # bug 1 (test_failsafe_save_listing_error_is_a_store_error)
            assert counter.hit is not None and counter.hit[0] == "listdir"
        assert temp_files(base) == []
        fresh = FailsafeManager(base / "checkpoints", base / "backups", max_checkpoints=2)
        latest = fresh.latest_checkpoint(OP)
        assert latest is not None
        assert latest.data in ({"v": 2}, {"v": 3})
        fresh.save_checkpoint(OP, "job", ProcessState.RUNNING, 0.4, {"v": 4})
        assert FailsafeManager(base / "checkpoints").latest_checkpoint(OP).data == {"v": 4}  # type: ignore[union-attr]
        if counter.hit is None or counter.hit[0] not in ("unlink", "fsync_dir"):  # bug 4
            assert fresh.load_checkpoint(first) is None  # rotated out (max_checkpoints=2)

    assert _sweep(attempt, error) >= 8


@pytest.mark.parametrize("error", ERRORS, ids=errno.errorcode.get)
def test_backup_failing_at_each_operation_leaves_old_backups(tmp_path: Path, error: int) -> None:
    """A backup whose n-th operation fails raises OSError and adds no backup (or a whole
    one); the older backups stay good, and the next backup cleans up the leftovers."""
    tried = 0
    src = tmp_path / "data.bin"
    broken: list[str] = []

    def attempt(counter: Counter) -> None:
        nonlocal tried
        backups = Backups(tmp_path / f"b-{tried}", max_backups=2)
        tried += 1
        src.write_bytes(b"one" * 5000)
        b1 = backups.create(src)
        src.write_bytes(b"two" * 5000)
        b2 = backups.create(src)
        src.write_bytes(b"three" * 5000)
        try:
            with injected(counter):
                backups.create(src)
        except OSError:
            assert counter.hit is not None
        ids = [b.backup_id for b in backups.list()]
        old = [b2.backup_id, b1.backup_id]
        assert ids in (old, [ids[0], *old], [ids[0], old[0]]), ids
        assert all(backups.verify(i) for i in ids if i in old)  # the acknowledged ones
        if ids[0] not in old and not backups.verify(ids[0]):
            # bug 3 (test_backup_whose_manifest_fsync_fails_is_not_left_broken)
            assert counter.hit is not None
            assert counter.hit[0] == "fsync_dir"
            broken.append(ids[0])
            backups.delete(ids[0])
        newest = backups.create(src)  # the next one succeeds (or finds the copy made)
        assert Path(newest.backup_path).read_bytes() == b"three" * 5000
        names = os.listdir(backups.dir)
        assert [n for n in names if _fs.TEMP_MARK in n] == []
        assert len([n for n in names if n.endswith(".bak")]) == len(backups.list())
        # 3 if the failure hit the rotation of a committed backup: the next *new* backup
        # rotates again (the unchanged source was deduped).
        assert len(backups.list()) in (2, 3)

    assert _sweep(attempt, error) >= 15
    assert len(broken) <= 1


@pytest.mark.parametrize("error", ERRORS, ids=errno.errorcode.get)
def test_restore_failing_at_each_operation_keeps_the_current_file(
    tmp_path: Path, error: int
) -> None:
    """A restore whose n-th operation fails raises OSError and leaves the current file as it
    was (rolled back) and nothing beside it; for every n."""
    dest = tmp_path / "dest" / "target.bin"
    dest.parent.mkdir()
    new, old = os.urandom(100_000), os.urandom(70_000)
    dest.write_bytes(new)
    backups = Backups(tmp_path / "backups")
    info = backups.create(dest)

    def attempt(counter: Counter) -> None:
        _fs.atomic_write(dest, old, durable=False)
        try:
            with injected(counter):
                backups.restore(info.backup_id)
        except (OSError, ValueError):  # ValueError: its manifest could not be read
            assert counter.hit is not None
            assert dest.read_bytes() == old
        else:
            assert dest.read_bytes() == new
            if counter.hit is not None and ".pre-restore" in counter.hit[1]:
                # A failed safety link was copied instead, or its removal after the swap
                # failed (logged, not raised): it stays, for a later restore to remove.
                _fs.remove(Path(counter.hit[1]))
        assert os.listdir(dest.parent) == ["target.bin"]

    assert _sweep(attempt, error) >= 8


# --- crash-point sweeps: a real process ends before its n-th file operation -------------------


def _crash_sweep(
    reset: Callable[[], None],
    run: Callable[[int], subprocess.CompletedProcess[str]],
    check: Callable[[subprocess.CompletedProcess[str], int], None],
) -> int:
    """For n = 1, 2, ...: reset, run with a crash at operation n, check; until one completes.

    Returns the number of crash points: the operations of the run that completed.
    """
    for n in range(1, MAX_POINTS):
        reset()
        proc = run(n)
        check(proc, n)
        if proc.returncode == 0:
            # Fewer when an earlier crash's temp files were there to clean up: those runs
            # had more crash points, and were swept too.
            assert ops_of(proc) <= n - 1
            print(f"crash points: {n - 1}")  # shown by -rP: docs/reliability.md counts
            return n - 1
    pytest.fail(f"the work never completed within {MAX_POINTS} crash points")


@pytest.mark.slow
def test_checkpoint_save_killed_at_each_operation_shows_old_or_new_state(tmp_path: Path) -> None:
    """A checkpointed loop killed before each of its file operations: the store opens, shows
    a committed state (never a mix) at least as new as the last acknowledged one, ignores the
    temp files the crash left, and the next run ends as an uninterrupted run and sweeps them."""
    pristine, root = tmp_path / "pristine", tmp_path / "store"
    url = f"file://{root}?durability=full"
    run_worker("save", f"file://{pristine}?durability=full", OP, 5, 0, 2)  # paused at 2
    leftovers = 0

    def reset() -> None:
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(pristine, root)

    def check(proc: subprocess.CompletedProcess[str], n: int) -> None:
        nonlocal leftovers
        acked = [int(line.split()[1]) for line in proc.stdout.split("\n") if line[:5] == "acked"]
        store = open_store(url)
        try:
            op = store.load_operation(OP)  # verified: raises if the record were damaged
            assert op is not None
            for rec in store.iter_checkpoints(OP):  # no visible file is ever half-written
                assert rec.verify(), f"crash at {n}: checkpoint {rec.seq} is damaged"
            latest = store.latest_checkpoint(OP)
            assert latest is not None
            assert latest.position >= max(acked, default=2), f"crash at {n} lost a commit"
            assert decode(latest.serializer, latest.payload) == uninterrupted(latest.position)
            leftovers += bool(temp_files(root))
            if proc.returncode == 0:
                assert op.state is ProcessState.COMPLETED
                return
            again = run_worker("save", url, OP, 5, 0)  # the next run, not killed
            assert again.returncode == 0
            final = store.latest_checkpoint(OP)
            assert final is not None
            assert decode(final.serializer, final.payload) == uninterrupted(5)
            assert store.load_operation(OP).state is ProcessState.COMPLETED  # type: ignore[union-attr]
            store.sweep(time.time() + 1)
            assert temp_files(root) == [], f"crash at {n}: leftovers not swept"
        finally:
            store.close()

    points = _crash_sweep(reset, lambda n: run_worker("save", url, OP, 5, n), check)
    assert points > 30
    print(f"crashes that left temp files: {leftovers}")
    assert leftovers > 0  # some crashes did leave temp files, which were ignored


@pytest.mark.slow
def test_failsafe_save_killed_at_each_operation_shows_old_or_new_checkpoint(
    tmp_path: Path,
) -> None:
    """A FailsafeManager save killed before each of its file operations leaves the previous
    checkpoint or the new one, and the store opens and takes the next save."""
    pristine, base = tmp_path / "pristine", tmp_path / "m"
    run_worker("failsafe", pristine, OP, 0)
    old_id = FailsafeManager(pristine / "checkpoints").latest_checkpoint(OP).checkpoint_id  # type: ignore[union-attr]
    seen = set()

    def reset() -> None:
        shutil.rmtree(base, ignore_errors=True)
        shutil.copytree(pristine, base)

    def check(proc: subprocess.CompletedProcess[str], n: int) -> None:
        manager = FailsafeManager(base / "checkpoints", base / "backups")
        latest = manager.latest_checkpoint(OP)
        assert latest is not None, f"crash at {n}"
        assert latest.data == {"v": 2}
        seen.add(latest.checkpoint_id)
        if "acked" in proc.stdout:
            assert latest.checkpoint_id == proc.stdout.split()[1]
        if proc.returncode == 0:
            return
        assert manager.can_resume(OP)
        manager.save_checkpoint(OP, "job", ProcessState.RUNNING, 0.9, {"v": 3})
        fresh = FailsafeManager(base / "checkpoints", base / "backups")
        assert fresh.latest_checkpoint(OP).data == {"v": 3}  # type: ignore[union-attr]
        fresh.store.sweep(time.time() + 1)
        assert temp_files(base) == []

    points = _crash_sweep(reset, lambda n: run_worker("failsafe", base, OP, n), check)
    assert points >= 8
    assert old_id in seen and len(seen) == 2


@pytest.mark.slow
def test_backup_killed_at_each_operation_keeps_committed_backups(tmp_path: Path) -> None:
    """A backup (with a rotation) killed before each of its file operations: the backups
    listed are whole and restore exactly, and the next backup removes the leftovers."""
    src, pristine, bdir = tmp_path / "data.bin", tmp_path / "pristine", tmp_path / "backups"
    versions = [os.urandom(30_000) for _ in range(3)]
    for v in versions[:2]:
        src.write_bytes(v)
        run_worker("backup", pristine, src, 2, 0)
    src.write_bytes(versions[2])
    old = [b.backup_id for b in Backups(pristine).list()]
    states = set()

    def reset() -> None:
        shutil.rmtree(bdir, ignore_errors=True)
        shutil.copytree(pristine, bdir)

    def check(proc: subprocess.CompletedProcess[str], n: int) -> None:
        backups = Backups(bdir, max_backups=2)
        listed = [b.backup_id for b in backups.list()]
        assert listed[-len(old) :] == old or listed[-1:] == old[:1], f"crash at {n}: {listed}"
        states.add(len(listed))
        contents = {old[1]: versions[0], old[0]: versions[1]}
        for info in backups.list():
            assert backups.verify(info.backup_id)
            content = contents.get(info.backup_id, versions[2])
            assert Path(info.backup_path).read_bytes() == content
        if proc.returncode == 0:
            return
        newest = backups.create(src)
        assert Path(newest.backup_path).read_bytes() == versions[2]
        names = os.listdir(bdir)
        assert [x for x in names if _fs.TEMP_MARK in x] == [], f"crash at {n}"
        assert len([x for x in names if x.endswith(".bak")]) == len(backups.list())
        assert len(backups.list()) in (2, 3)  # 3: killed before its rotation (see above)

    points = _crash_sweep(reset, lambda n: run_worker("backup", bdir, src, 2, n), check)
    assert points >= 15
    assert states == {2, 3}  # crashes landed before the commit, and between it and rotation


@pytest.mark.slow
def test_restore_killed_at_each_operation_leaves_old_or_new_file(tmp_path: Path) -> None:
    """A restore killed before each of its file operations leaves the old file or the new
    one at the destination, byte for byte, never a mix or nothing."""
    dest = tmp_path / "dest" / "target.bin"
    dest.parent.mkdir()
    new, old = os.urandom(200_000), os.urandom(150_000)
    dest.write_bytes(new)
    info = Backups(tmp_path / "backups").create(dest)
    found = set()

    def check(proc: subprocess.CompletedProcess[str], n: int) -> None:
        content = dest.read_bytes()
        assert content in (old, new), f"a mix after a crash at operation {n}"
        found.add(content)
        if proc.returncode == 0:
            assert content == new

    points = _crash_sweep(
        lambda: _fs.atomic_write(dest, old, durable=False),
        lambda n: run_worker("restore", tmp_path / "backups", info.backup_id, dest, n),
        check,
    )
    assert points >= 8
    assert found == {old, new}


# --- known bugs, each with its fix in docs/reliability.md ------------------------------------


def test_restore_temp_copies_are_cleaned_by_the_next_restore(tmp_path: Path) -> None:
    """The temp copy a killed restore left beside the destination is gone after the next."""
    dest = tmp_path / "dest" / "target.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"new" * 1000)
    info = Backups(tmp_path / "backups").create(dest)
    for n in range(1, MAX_POINTS):
        _fs.atomic_write(dest, b"old" * 1000, durable=False)
        if run_worker("restore", tmp_path / "backups", info.backup_id, dest, n).returncode == 0:
            break
        Backups(tmp_path / "backups").restore(info.backup_id)
        assert dest.read_bytes() == b"new" * 1000
        stray = [x for x in os.listdir(dest.parent) if x.startswith(f"target.bin{_fs.TEMP_MARK}")]
        assert stray == [], f"left by a crash at {n}"


def test_failsafe_save_listing_error_is_a_store_error(tmp_path: Path) -> None:
    """An I/O error while a save looks for the newest checkpoint is a StoreError."""
    manager = FailsafeManager(tmp_path / "c", tmp_path / "b")
    manager.save_checkpoint(OP, "job", ProcessState.RUNNING, 0.1, {"v": 1})
    only_listing = Counter(1, errno.EIO, only=frozenset({"listdir"}))
    with pytest.raises(StoreError), injected(only_listing):
        manager.save_checkpoint(OP, "job", ProcessState.RUNNING, 0.2, {"v": 2})


def test_backup_whose_manifest_fsync_fails_is_not_left_broken(tmp_path: Path) -> None:
    """A backup whose commit raised is either whole or not listed at all."""
    src = tmp_path / "data.bin"
    src.write_bytes(b"x" * 10_000)
    backups = Backups(tmp_path / "backups")
    manifest_dir_sync = Counter(2, errno.EIO, only=frozenset({"fsync_dir"}))  # 1: the copy's
    with pytest.raises(OSError, match="injected"), injected(manifest_dir_sync):
        backups.create(src)
    assert all(backups.verify(b.backup_id) for b in backups.list())


def test_checkpoint_missed_by_rotation_is_removed_by_the_next_save(tmp_path: Path) -> None:
    """A checkpoint whose rotation failed is removed by a later save: history stays bounded."""
    manager = FailsafeManager(tmp_path / "c", tmp_path / "b", max_checkpoints=2)
    for v in (1, 2):
        manager.save_checkpoint(OP, "job", ProcessState.RUNNING, 0.1, {"v": v})
    with pytest.raises(StoreError), injected(Counter(1, errno.EIO, only=frozenset({"unlink"}))):
        manager.save_checkpoint(OP, "job", ProcessState.RUNNING, 0.1, {"v": 3})
    for v in (4, 5):
        manager.save_checkpoint(OP, "job", ProcessState.RUNNING, 0.1, {"v": v})
    assert manager.get_statistics()["checkpoints"]["total"] == 2


def test_restore_that_happened_does_not_raise_for_its_cleanup(tmp_path: Path) -> None:
    """Failing to remove the safety link after the swap is logged, not raised."""
    dest = tmp_path / "target.bin"
    dest.write_bytes(b"new")
    backups = Backups(tmp_path / "backups")
    info = backups.create(dest)
    dest.write_bytes(b"old")
    only_safety = Counter(1, errno.EIO, only=frozenset({"unlink"}))
    with injected(only_safety):
        backups.restore(info.backup_id)
    assert dest.read_bytes() == b"new"


# --- hostile ids never escape the store -------------------------------------------------------

HOSTILE = [
    "../../etc/passwd", "/etc/passwd", "..", "/", "a/../../x", "\x00", "a\x00b",
    "../" * 50 + "x", "\U0001f600" * 1024, "~/x", "C:\\x", "\\\\server\\x",
]  # fmt: skip


def _everything(base: Path) -> set[str]:
    return {str(p) for p in base.rglob("*")}


@pytest.mark.parametrize("op_id", HOSTILE, ids=lambda s: ascii(s)[1:40])
def test_hostile_ids_stay_inside_the_failsafe_store(tmp_path: Path, op_id: str) -> None:
    """FailsafeManager checkpoints of a path-like or odd id live inside checkpoint_dir."""
    inside = tmp_path / "inside"
    inside.mkdir()
    outside_before = set(os.listdir(tmp_path)), set(os.listdir(tmp_path.parent))
    passwd = Path("/etc/passwd").stat()
    manager = FailsafeManager(inside / "c", inside / "b")
    cid = manager.save_checkpoint(op_id, op_id, ProcessState.RUNNING, 0.5, {"id": op_id})
    fresh = FailsafeManager(inside / "c", inside / "b")
    assert fresh.load_checkpoint(cid).data == {"id": op_id}  # type: ignore[union-attr]
    assert fresh.can_resume(op_id)
    assert (set(os.listdir(tmp_path)), set(os.listdir(tmp_path.parent))) == outside_before
    assert Path("/etc/passwd").stat() == passwd
    names = {p.name for p in (inside / "c").rglob("*")}
    assert all(n.isascii() and "\x00" not in n and op_id not in n for n in names), names


def test_hostile_checkpoint_and_backup_ids_are_never_paths(tmp_path: Path) -> None:
    """Checkpoint and backup ids that look like paths find nothing and touch nothing."""
    manager = FailsafeManager(tmp_path / "c", tmp_path / "b")
    cid = manager.save_checkpoint("x", "job", ProcessState.RUNNING, 0.5, {"v": 1})
    (tmp_path / "secret.json").write_text('{"v": "planted"}')
    before = _everything(tmp_path)
    odd = [*HOSTILE, "../secret", f"{cid}/../../../secret", "0" * 32 + "-1/../../x",
           str(tmp_path / "secret.json"), "../" * 3 + cid]  # fmt: skip
    for bad in odd:
        assert manager.load_checkpoint(bad) is None
        with pytest.raises(ValueError, match="no backup"):
            manager.restore_backup(bad)
        with pytest.raises(ValueError, match="no backup"):
            manager.verify_backup(bad)
        assert manager.delete_backup(bad) is False
    assert _everything(tmp_path) == before


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_too_long_or_empty_op_id_creates_nothing(tmp_path: Path, kind: str) -> None:
    """An op id over 1,024 characters (or empty) is refused before anything is written."""
    manager = FailsafeManager(tmp_path / "c", tmp_path / "b")
    for bad in ["x" * 1025, "\U0001f600" * 1025, ""]:
        with pytest.raises(ValueError, match=r"op_id|operation"):
            manager.save_checkpoint(bad, "job", ProcessState.RUNNING, 0.5, {})
        url = f"file://{tmp_path}/s" if kind == "file" else f"sqlite:///{tmp_path}/s.db"
        with pytest.raises(ValueError, match=r"op_id|1024"), checkpointed(bad, store=url):
            pass
    assert list((tmp_path / "c" / "ops").iterdir()) == []
    assert sorted(os.listdir(tmp_path)) == ["b", "c"] or sorted(os.listdir(tmp_path)) == ["c"]


def test_fault_helpers_restore_the_hook(tmp_path: Path) -> None:
    """injected() puts the previous hook back, even when the block raises."""
    with pytest.raises(OSError, match="injected"), injected(Counter(1, errno.EIO)):
        _fs.atomic_write(tmp_path / "x", b"x", durable=False)
    assert faults.hook is None
    assert not (tmp_path / "x").exists()
    assert os.listdir(tmp_path) == []


# --- a full disk: a 1 MiB tmpfs -----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (needs root; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(disk)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], timeout=30, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], timeout=30, check=True)


def _disk_url(kind: str, disk: Path) -> str:
    if kind == "file":
        return f"file://{disk}/store?durability=full"
    return f"sqlite:///{disk}/state.db?durability=full"


def _fill(disk: Path, leave: int) -> Path:
    """A file that takes all but about ``leave`` bytes of the disk's free space."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def _files_on(disk: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(disk).items() if k != "filler"}


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_commit_that_does_not_fit_raises_store_error_and_keeps_the_last_one(
    small_disk: Path, kind: str
) -> None:
    """On a full 1 MiB disk a commit raises StoreError, leaves the previous checkpoint
    byte-identical and no temp file; once space is freed the next commit succeeds."""
    store = open_store(_disk_url(kind, small_disk))
    try:
        op = OperationRecord.new(OP, "job", ProcessState.RUNNING)
        store.save(op, _ckpt(1, os.urandom(50_000)))
        good = store.latest_checkpoint(OP)
        assert good is not None
        before = _files_on(small_disk) if kind == "file" else None

        filler = _fill(small_disk, leave=100_000)
        medium = os.urandom(300_000)
        with pytest.raises(StoreError, match=r"(?i)space|full"):
            store.add_checkpoint(_ckpt(2, medium))  # fits the disk, not what is left of it
        with pytest.raises(StoreError, match=r"(?i)space|full"):
            store.save(op.to(ProcessState.COMPLETED), _ckpt(2, medium))
        with pytest.raises(StoreError, match=r"(?i)space|full"):
            store.add_checkpoint(_ckpt(2, os.urandom(1_500_000)))  # larger than the disk

        for reader in (store, open_store(_disk_url(kind, small_disk))):
            latest = reader.latest_checkpoint(OP)
            assert latest is not None
            assert (latest.seq, latest.payload, latest.checksum) == (1, good.payload, good.checksum)
            assert reader.load_operation(OP).state is ProcessState.RUNNING  # type: ignore[union-attr]
            if reader is not store:
                reader.close()
        assert temp_files(small_disk) == []
        if before is not None:
            assert _files_on(small_disk) == before  # byte-identical, nothing added
        else:
            names = {p.name for p in small_disk.iterdir()}
            assert "state.db-journal" not in names

        filler.unlink()  # space freed: the same commit now succeeds
        store.save(op.to(ProcessState.COMPLETED), _ckpt(2, medium))
        latest = store.latest_checkpoint(OP)
        assert latest is not None and latest.payload == medium
        assert store.load_operation(OP).state is ProcessState.COMPLETED  # type: ignore[union-attr]
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_loop_on_a_full_disk_stops_with_store_error_and_resumes_once_freed(
    small_disk: Path, kind: str
) -> None:
    """A checkpointed loop whose commits stop fitting raises StoreError, loses no
    acknowledged item, and a re-run after freeing space ends as an uninterrupted run."""
    url = _disk_url(kind, small_disk)
    acked = 0

    def run() -> Any:  # each item adds 30 kB of state: the commits soon stop fitting
        nonlocal acked
        state = {**uninterrupted(0), "pad": ""}
        with checkpointed(OP, store=url, state=state, every_seconds=3600) as cp:
            for x in cp.iterate(range(12)):
                cp.state.h = fold(cp.state.h, x)
                cp.state.n += 1
                cp.state.pad = os.urandom(15_000).hex()
                cp.commit()
                acked = x + 1
        return cp

    store = open_store(url)
    with checkpointed("other", store=store, state={"n": 0}) as other:
        other.state.n = 1  # the store exists and is in use before the disk fills
    filler = _fill(small_disk, leave=150_000)
    with pytest.raises(StoreError, match=r"(?i)space|full"):
        run()
    assert 0 < acked < 12
    stored = store.latest_checkpoint(OP)
    assert stored is not None and stored.position >= acked  # nothing acknowledged is lost
    saved = decode(stored.serializer, stored.payload)
    assert {k: saved[k] for k in ("h", "n")} == uninterrupted(stored.position)
    filler.unlink()
    cp = run()
    assert {k: cp.state[k] for k in ("h", "n")} == uninterrupted(12)
    assert temp_files(small_disk) == []
    store.close()


# --- a 200 MB state: commits or fails cleanly, within memory bounds ---------------------------

BIG_MIB = 200


def _commit_big(url: str, limit_mib: int = 0) -> dict[str, Any]:
    """Commit a state of BIG_MIB MiB in a fresh process; its memory figures (fault_worker)."""
    args = [sys.executable, str(WORKER), "rss", url, str(BIG_MIB), str(limit_mib)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    figures: dict[str, Any] = json.loads(proc.stdout)
    return figures


def _big_url(kind: str, tmp_path: Path) -> str:
    return f"file://{tmp_path}/store" if kind == "file" else f"sqlite:///{tmp_path}/state.db"


#: The figures of one unconstrained 200 MB commit per kind of store, measured once.
_MEASURED: dict[str, dict[str, Any]] = {}


def _measured(kind: str, tmp_path: Path) -> dict[str, Any]:
    if kind not in _MEASURED:
        _MEASURED[kind] = _commit_big(_big_url(kind, tmp_path))
    return _MEASURED[kind]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_200_mb_state_commits_or_fails_cleanly(tmp_path: Path, kind: str) -> None:
    """A 200 MB state that cannot get the memory to commit fails without damaging the store;
    with the memory, it commits and reads back whole."""
    url = _big_url(kind, tmp_path)
    starved = _commit_big(url, limit_mib=BIG_MIB // 2)  # not even room for its one copy
    assert not starved["ok"]
    assert "MemoryError" in starved["error"] or "StoreError" in starved["error"]
    store = open_store(url)
    try:
        assert store.latest_checkpoint("rss-job") is None  # nothing half-written is visible
        assert temp_files(tmp_path) == []
        fed = _MEASURED[kind] = _commit_big(url)
        assert fed["ok"], fed
        latest = store.latest_checkpoint("rss-job")  # verified against its checksum
        assert latest is not None
        assert len(latest.payload) > fed["size"]
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_200_mb_state_commits_without_extra_copies(tmp_path: Path, kind: str) -> None:
    """Committing a 200 MB state needs at most twice its size on top of it (its serialized
    payload and some slack), never three copies or more."""
    figures = _measured(kind, tmp_path)
    assert figures["ok"], figures
    extra = (figures["peak"] - figures["before"]) / figures["size"]
    assert extra < 2.0, f"the commit needed {extra:.1f}x the state's size on top of it"
