"""Backups: create, dedup, rotation, verified and crash-safe restore, SQLite snapshots taken
while another process writes, and the auto-backup thread.

Every wait is bounded: a test polls for the outcome it expects until a deadline, and talks
to its subprocesses through their stdout, never by sleeping and hoping.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from resumable import _fs
from resumable._fs import write as fs_write
from resumable.backup import BackupInfo, Backups

WORKER = Path(__file__).parent / "workers" / "backup_worker.py"
CRASHED = 86  # backup_worker.CRASHED
ROWS, TOTAL = 2_000, 1_000  # backup_worker's invariants
TIMEOUT = 30.0


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.01)


def data_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".bak"))


def make_db(path: Path, rows: int = 3, *, wal: bool = True) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        if wal:
            con.execute("PRAGMA journal_mode=wal")
        con.execute("CREATE TABLE t (v TEXT)")
        con.executemany("INSERT INTO t VALUES (?)", [(f"row {i}",) for i in range(rows)])
    finally:
        con.close()


def rows_of(path: Path) -> list[str]:
    con = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
    try:
        return [v for (v,) in con.execute("SELECT v FROM t ORDER BY rowid")]
    finally:
        con.close()


def age(path: Path, seconds: float = 10.0) -> None:
    """Set the mtime of ``path`` ``seconds`` into the past (so its size and mtime are trusted)."""
    when = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(when, when))


@pytest.fixture
def backups(tmp_path: Path) -> Iterator[Backups]:
    """A Backups in ``tmp_path/backups``; its auto thread is stopped after the test."""
    b = Backups(tmp_path / "backups")
    yield b
    b.stop_auto()


# --- create and restore ---------------------------------------------------------------------


def test_damaged_file_is_restored_byte_identically(backups: Backups, tmp_path: Path) -> None:
    """A file damaged after its backup is restored byte for byte, in place and elsewhere."""
    original = os.urandom(300_000)
    src = tmp_path / "data.bin"
    src.write_bytes(original)
    info = backups.create(src)
    src.write_bytes(original[:1000] + b"damage" + original[1006:])

    assert backups.restore(info.backup_id) == str(src.resolve())
    assert src.read_bytes() == original
    elsewhere = tmp_path / "other" / "copy.bin"
    assert backups.restore(info.backup_id, elsewhere) == str(elsewhere)
    assert elsewhere.read_bytes() == original
    folder = tmp_path / "folder"
    folder.mkdir()
    assert backups.restore(info.backup_id, folder) == str(folder / "data.bin")
    assert (folder / "data.bin").read_bytes() == original


@pytest.mark.parametrize("size", [0, 1, 99, 511, 4096])
def test_small_files_are_copied_byte_for_byte(backups: Backups, tmp_path: Path, size: int) -> None:
    """Small files (which SQLite would open as empty databases) are backed up as they are."""
    src = tmp_path / "small.bin"
    content = os.urandom(size)
    src.write_bytes(content)
    info = backups.create(src)
    assert Path(info.backup_path).read_bytes() == content
    src.write_bytes(b"changed")
    backups.restore(info.backup_id)
    assert src.read_bytes() == content


def test_backup_info_has_the_specification_fields(backups: Backups, tmp_path: Path) -> None:
    """BackupInfo carries the specification's fields, describing the copy it names."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"hello")
    info = backups.create(src)
    assert list(BackupInfo.__dataclass_fields__) == [
        "backup_id", "source_path", "backup_path", "timestamp", "size_bytes", "checksum",
    ]  # fmt: skip
    assert info.source_path == str(src.resolve())
    assert Path(info.backup_path).read_bytes() == b"hello"
    assert info.size_bytes == 5
    assert info.timestamp[:4].isdigit() and "T" in info.timestamp
    assert len(info.checksum) == 32
    assert backups.list() == [info]
    assert backups.verify(info.backup_id)


def test_flipped_byte_is_refused_and_current_file_untouched(
    backups: Backups, tmp_path: Path
) -> None:
    """A backup with one flipped byte fails verify and restore; the current file stays as is."""
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(100_000))
    info = backups.create(src)
    current = os.urandom(50_000)
    src.write_bytes(current)
    copy = Path(info.backup_path)
    damaged = bytearray(copy.read_bytes())
    damaged[12345] ^= 0x01
    copy.write_bytes(bytes(damaged))

    assert backups.verify(info.backup_id) is False
    with pytest.raises(ValueError, match="corrupt"):
        backups.restore(info.backup_id)
    assert src.read_bytes() == current
    with pytest.raises(ValueError, match="corrupt"):
        backups.restore(info.backup_id, tmp_path / "new.bin")
    assert not (tmp_path / "new.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "data.bin"]


def test_restore_killed_at_each_step_leaves_old_or_new_file(
    backups: Backups, tmp_path: Path
) -> None:
    """A restore killed before each of its file operations leaves the old or the new file."""
    new, old = os.urandom(200_000), os.urandom(150_000)
    dest = tmp_path / "target.bin"
    dest.write_bytes(new)
    info = backups.create(dest)
    after_crash: set[bytes] = set()
    for crash_at in range(1, 60):
        _fs.atomic_write(dest, old, durable=False)
        proc = subprocess.run(
            [sys.executable, str(WORKER), "restore", str(backups.dir), info.backup_id,
             str(dest), str(crash_at)],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert dest.read_bytes() in (old, new), f"a mix after a crash at operation {crash_at}"
        if proc.returncode == 0:
            assert dest.read_bytes() == new
            word, ops = proc.stdout.split()
            # Fewer operations when no earlier crash left temp files to clean up.
            assert word == "restored" and int(ops) <= crash_at - 1
            break
        assert proc.returncode == CRASHED, proc.stderr
        after_crash.add(dest.read_bytes())
    else:
        pytest.fail("the restore never completed")
    assert crash_at > 10  # copy, fsync, safety link, rename, directory fsync, cleanup...
    assert after_crash == {old, new}  # crashes landed before and after the swap


def test_failed_restore_step_rolls_back(
    backups: Backups, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore whose directory fsync fails after the swap puts the old file back."""
    dest = tmp_path / "target.txt"
    dest.write_bytes(b"backed up")
    info = backups.create(dest)
    dest.write_bytes(b"current")
    real, calls = _fs.fsync_dir, []

    def failing(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "I/O error (injected)")
        real(path)

    monkeypatch.setattr(fs_write, "fsync_dir", failing)
    with pytest.raises(OSError, match="injected"):
        backups.restore(info.backup_id)
    assert dest.read_bytes() == b"current"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "target.txt"]


def test_restore_keeps_the_current_permissions(backups: Backups, tmp_path: Path) -> None:
    """A restored file keeps the current file's mode; a new one gets the source's mode."""
    src = tmp_path / "conf.txt"
    src.write_bytes(b"v1")
    src.chmod(0o640)
    info = backups.create(src)
    src.chmod(0o600)
    backups.restore(info.backup_id)
    assert src.stat().st_mode & 0o777 == 0o600
    backups.restore(info.backup_id, tmp_path / "fresh.txt")
    assert (tmp_path / "fresh.txt").stat().st_mode & 0o777 == 0o640


def test_files_and_directories_are_owner_only(backups: Backups, tmp_path: Path) -> None:
    """The backup directory is 0700 and every file in it 0600."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"x")
    src.chmod(0o644)
    backups.create(src)
    assert backups.dir.stat().st_mode & 0o777 == 0o700
    for path in backups.dir.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path.name


# --- dedup and rotation ---------------------------------------------------------------------


def test_unchanged_file_is_not_copied_again(backups: Backups, tmp_path: Path) -> None:
    """Backing up an unchanged file twice returns the same backup and keeps one copy."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"same")
    first = backups.create(src)
    assert backups.create(src) == first
    assert len(data_files(backups.dir)) == 1


def test_same_size_and_mtime_but_new_content_is_copied(backups: Backups, tmp_path: Path) -> None:
    """A change that keeps size and mtime is caught by the checksum and backed up."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"aaaa")
    age(src)
    mtime = src.stat().st_mtime_ns
    first = backups.create(src)
    src.write_bytes(b"bbbb")
    os.utime(src, ns=(mtime, mtime))
    second = backups.create(src)
    assert second.backup_id != first.backup_id
    assert Path(second.backup_path).read_bytes() == b"bbbb"


def test_rotation_keeps_max_backups_newest_first(tmp_path: Path) -> None:
    """With max_backups=2, four changed backups leave the newest two, listed newest first."""
    backups = Backups(tmp_path / "backups", max_backups=2)
    src = tmp_path / "a.txt"
    made = []
    for i in range(4):
        src.write_bytes(f"version {i}".encode())
        made.append(backups.create(src))
    assert [i.backup_id for i in backups.list(src)] == [made[3].backup_id, made[2].backup_id]
    assert len(data_files(backups.dir)) == 2
    assert made[3].backup_id > made[2].backup_id > made[1].backup_id  # ids sort by time


def test_rotation_is_per_source(tmp_path: Path) -> None:
    """Rotation counts backups per source; list(source) filters by source."""
    backups = Backups(tmp_path / "backups", max_backups=1)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    for i in range(2):
        a.write_bytes(f"a{i}".encode())
        b.write_bytes(f"b{i}".encode())
        backups.create(a)
        backups.create(b)
    assert [Path(i.backup_path).read_bytes() for i in backups.list(a)] == [b"a1"]
    assert [Path(i.backup_path).read_bytes() for i in backups.list(b)] == [b"b1"]
    assert len(backups.list()) == 2


def test_copy_without_manifest_does_not_exist_and_strays_are_cleaned(
    backups: Backups, tmp_path: Path
) -> None:
    """Leftovers (temp files, copies without manifest) are ignored, then removed by a create."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"one")
    kept = backups.create(src)
    src.write_bytes(b"two")
    orphan = backups.create(src)
    (backups.dir / f"{orphan.backup_id}.json").unlink()  # as if killed before the commit
    strays = [
        "20260101T000000.000000Z-0badcafe.json.tmp-0123456789ab.4242",
        "a.txt.20260101T000000.000000Z-0badcafe.bak.tmp-0123456789ab.4242",
        "a.txt.20260101T000000.000000Z-0badcafe.bak.tmp-0123456789ab.4242-journal",
    ]
    for name in strays:
        (backups.dir / name).write_bytes(b"half")
    (backups.dir / "notes.txt").write_bytes(b"not ours")

    assert backups.list() == [kept]
    with pytest.raises(ValueError, match="no backup"):
        backups.restore(orphan.backup_id)
    with _fs.locked(backups.dir / ".lock", exclusive=False):  # another creator at work
        src.write_bytes(b"three")
        backups.create(src)
    assert Path(orphan.backup_path).exists()  # might be that creator's copy: left alone
    src.write_bytes(b"four")
    backups.create(src)
    names = {p.name for p in backups.dir.iterdir()}
    assert not names & {*strays, Path(orphan.backup_path).name}
    assert "notes.txt" in names


# --- SQLite ---------------------------------------------------------------------------------


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_sqlite_backups_while_another_process_writes_are_consistent(
    tmp_path: Path, journal_mode: str
) -> None:
    """Ten backups of a database another process keeps writing all pass integrity_check."""
    db = tmp_path / "live.db"
    backups = Backups(tmp_path / "backups", max_backups=20, durable=False)
    writer = subprocess.Popen(
        [sys.executable, str(WORKER), "write-db", str(db), journal_mode, str(TIMEOUT)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready", writer.stderr
        made = [backups.create(db) for _ in range(10)]
        assert writer.poll() is None, "the writer ended before the backups did"
    finally:
        _, err = writer.communicate(timeout=TIMEOUT)  # closes its stdin: it stops
    assert writer.returncode == 0, err
    assert len({i.backup_id for i in made}) == 10
    for info in made:
        con = sqlite3.connect(f"{Path(info.backup_path).as_uri()}?immutable=1", uri=True)
        try:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert con.execute("SELECT count(*) FROM rows").fetchone() == (ROWS,)
            assert con.execute("SELECT sum(balance) FROM accounts").fetchone() == (TOTAL,)
        finally:
            con.close()
    restored = Path(backups.restore(made[-1].backup_id, tmp_path / "restored.db"))
    con = sqlite3.connect(restored)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("SELECT count(*) FROM rows").fetchone() == (ROWS,)
    finally:
        con.close()


def test_unchanged_database_is_not_copied_again(backups: Backups, tmp_path: Path) -> None:
    """An unchanged database (last written long enough ago) is backed up once."""
    db = tmp_path / "app.db"
    make_db(db)
    age(db)
    first = backups.create(db)
    assert backups.create(db) == first
    assert len(data_files(backups.dir)) == 1
    assert rows_of(Path(first.backup_path)) == ["row 0", "row 1", "row 2"]


def test_database_written_just_now_is_copied_again(backups: Backups, tmp_path: Path) -> None:
    """A database modified within the last two seconds is not trusted unchanged: copied again."""
    db = tmp_path / "app.db"
    make_db(db)
    first = backups.create(db)
    second = backups.create(db)
    assert second.backup_id != first.backup_id
    assert second.checksum == first.checksum  # the same snapshot, taken twice


def test_backup_in_process_keeps_sqlite_locks_of_this_process(
    backups: Backups, tmp_path: Path
) -> None:
    """Backing up a database this process holds a write lock on leaves that lock in force."""
    db = tmp_path / "app.db"
    make_db(db, wal=False)
    age(db)
    backups.create(db)  # dedup will compare, not copy, on the next call
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t VALUES ('pending')")
        backups.create(db)  # waits for nothing: the reserved lock lets readers in
        probe = (
            "import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
            "try:\n    c.execute('BEGIN IMMEDIATE')\nexcept sqlite3.OperationalError:\n"
            "    print('locked')\nelse:\n    print('free')\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe, str(db)], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "locked"
        con.execute("COMMIT")
    finally:
        con.close()


def test_restore_over_database_with_leftover_wal(backups: Backups, tmp_path: Path) -> None:
    """A -wal left by a crashed program is not applied to the restored database."""
    db = tmp_path / "app.db"
    make_db(db)
    info = backups.create(db)
    subprocess.run([sys.executable, str(WORKER), "leave-wal", str(db)], check=True)
    assert (tmp_path / "app.db-wal").stat().st_size > 0
    backups.restore(info.backup_id)
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert [v for (v,) in con.execute("SELECT v FROM t")] == ["row 0", "row 1", "row 2"]
    finally:
        con.close()


def test_restore_while_wal_is_in_use_goes_through_sqlite(backups: Backups, tmp_path: Path) -> None:
    """A database restored under an open reader and writer: the reader keeps its snapshot."""
    db = tmp_path / "app.db"
    make_db(db)
    info = backups.create(db)
    writer = sqlite3.connect(db, isolation_level=None)
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()  # holds a snapshot
        writer.execute("INSERT INTO t VALUES ('newer')")
        backups.restore(info.backup_id)
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (3,)  # its snapshot
        reader.execute("COMMIT")
        assert writer.execute("SELECT count(*) FROM t").fetchone() == (3,)  # the restored rows
        writer.execute("INSERT INTO t VALUES ('after')")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (4,)
    finally:
        reader.close()
        writer.close()
    assert rows_of(db) == ["row 0", "row 1", "row 2", "after"]


# --- automatic backups ----------------------------------------------------------------------


def test_auto_backup_picks_up_a_change_within_one_interval(
    backups: Backups, tmp_path: Path
) -> None:
    """A changed file is backed up by the next pass; stop_auto() returns within a second."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"first")
    interval = 0.5
    backups.start_auto([src], interval)
    assert backups.auto_running
    wait_for(lambda: len(backups.list(src)) == 1, what="the first pass")
    src.write_bytes(b"second version")
    changed = time.monotonic()
    wait_for(lambda: len(backups.list(src)) == 2, what="the change to be backed up")
    assert time.monotonic() - changed < interval + 0.5
    assert Path(backups.list(src)[0].backup_path).read_bytes() == b"second version"
    started = time.monotonic()
    backups.stop_auto()
    assert time.monotonic() - started < 1.0
    assert not backups.auto_running


MISSING = "resumable.backup.auto_missing"


def test_auto_backup_logs_a_missing_file_and_goes_on(
    backups: Backups, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A deleted file is logged as a warning; the thread keeps backing up the others."""
    caplog.set_level(logging.WARNING, logger="resumable")
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    backups.start_auto([a, b], 0.05)
    wait_for(lambda: len(backups.list()) == 2, what="the first pass")
    a.unlink()
    wait_for(
        lambda: any(getattr(r, "event", "") == MISSING for r in caplog.records),
        what="the warning",
    )
    assert str(a) in (backups.statistics()["auto_backup"]["last_error"] or "")
    b.write_bytes(b"b, changed")
    wait_for(lambda: len(backups.list(b)) == 2, what="the next backup of b")
    assert backups.auto_running
    missing = [r for r in caplog.records if getattr(r, "event", "") == MISSING]
    assert len(missing) == 1  # once, not on every pass


def test_start_auto_twice_replaces_the_thread(backups: Backups, tmp_path: Path) -> None:
    """A second start_auto() replaces the first thread; stop_auto() ends it."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"x")

    def threads() -> int:
        return sum(t.name == "resumable-auto-backup" for t in threading.enumerate())

    backups.start_auto([src], 0.05)
    backups.start_auto([src], 0.2)
    wait_for(lambda: threads() == 1, what="one auto thread")
    assert backups.statistics()["auto_backup"]["interval"] == 0.2
    backups.stop_auto()
    wait_for(lambda: threads() == 0, what="no auto thread")


# --- errors and statistics ------------------------------------------------------------------


def test_missing_source_and_directory_are_refused(backups: Backups, tmp_path: Path) -> None:
    """A missing source raises FileNotFoundError; a directory raises ValueError."""
    with pytest.raises(FileNotFoundError, match="no such file"):
        backups.create(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="back up files, not directories"):
        backups.create(tmp_path)


def test_unknown_backup_id(backups: Backups) -> None:
    """An unknown id: restore and verify raise ValueError, delete returns False."""
    for bad in ("20260101T000000.000000Z-0badcafe", "../../etc/passwd"):
        with pytest.raises(ValueError, match="no backup"):
            backups.restore(bad)
        with pytest.raises(ValueError, match="no backup"):
            backups.verify(bad)
        assert backups.delete(bad) is False


def test_delete_removes_the_backup(backups: Backups, tmp_path: Path) -> None:
    """delete() removes a backup's manifest and copy."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"x")
    info = backups.create(src)
    assert backups.delete(info.backup_id) is True
    assert backups.list() == []
    assert data_files(backups.dir) == []
    assert backups.delete(info.backup_id) is False


def test_bad_arguments_say_what_to_do(backups: Backups, tmp_path: Path) -> None:
    """Arguments of the wrong type or value raise TypeError or ValueError."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"x")
    cases: list[tuple[type[Exception], Callable[[], object]]] = [
        (TypeError, lambda: Backups(123)),  # type: ignore[arg-type]
        (ValueError, lambda: Backups(max_backups=0)),
        (TypeError, lambda: Backups(max_backups=True)),
        (TypeError, lambda: Backups(durable="yes")),  # type: ignore[arg-type]
        (TypeError, lambda: backups.create(42)),  # type: ignore[arg-type]
        (ValueError, lambda: backups.create("")),
        (TypeError, lambda: backups.restore(42)),  # type: ignore[arg-type]
        (TypeError, lambda: backups.start_auto(str(src), 1)),
        (ValueError, lambda: backups.start_auto([], 1)),
        (ValueError, lambda: backups.start_auto([tmp_path], 1)),
        (ValueError, lambda: backups.start_auto([src], 0)),
        (TypeError, lambda: backups.start_auto([src], "1")),  # type: ignore[arg-type]
    ]
    for kind, call in cases:
        with pytest.raises(kind):
            call()
    assert not backups.auto_running


def test_statistics(tmp_path: Path) -> None:
    """statistics() counts backups, their size and sources, and the auto thread's state."""
    backups = Backups(tmp_path / "backups")
    assert backups.statistics() == {
        "total": 0,
        "total_size_mb": 0.0,
        "sources": 0,
        "auto_backup": {"running": False, "interval": 0.0, "paths": [], "last_error": None},
    }
    for name, size in (("a", 1 << 20), ("b", 1 << 19)):
        (tmp_path / name).write_bytes(os.urandom(size))
        backups.create(tmp_path / name)
    stats = backups.statistics()
    assert (stats["total"], stats["total_size_mb"], stats["sources"]) == (2, 1.5, 2)
