"""A durable backup's copy reaches the disk: started as it is written, fsynced before its rename.

The copy starts the disk writing every ``WRITEBACK_STEP`` bytes (only a hint to the kernel);
what makes it durable is still the fsync of the whole copy before it is renamed to its final
name, then the directory's. These tests hold both, for a backup and for a restore.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resumable._fs import faults
from resumable._fs import write as fs_write
from resumable.backup import Backups

SIZE = 3 * fs_write.WRITEBACK_STEP + 12345  # several writeback steps and a partial one


def _record(monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[str, str]], list[tuple[int, int]]]:
    """The fault hook's operations (op, file name) and the writeback ranges, as they happen."""
    ops: list[tuple[str, str]] = []
    kicks: list[tuple[int, int]] = []
    real = fs_write.start_writeback

    def kick(fd: int, offset: int, length: int) -> None:
        kicks.append((offset, length))
        ops.append(("writeback", ""))
        real(fd, offset, length)

    monkeypatch.setattr(faults, "hook", lambda op, path: ops.append((op, Path(path).name)))
    monkeypatch.setattr(fs_write, "start_writeback", kick)
    return ops, kicks


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(SIZE))
    return src


def test_durable_backup_fsyncs_its_copy_after_the_last_write_and_before_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _source(tmp_path)
    backups = Backups(tmp_path / "backups")
    ops, kicks = _record(monkeypatch)
    info = backups.create(src)
    monkeypatch.setattr(faults, "hook", None)
    data = Path(info.backup_path).name
    tmp_name = next(name for op, name in ops if op == "write" and ".tmp-" in name)
    copy = [i for i, (op, name) in enumerate(ops) if op == "write" and name == tmp_name]
    fsync = ops.index(("fsync", tmp_name))
    rename = ops.index(("replace", data))
    assert copy[-1] < fsync < rename
    assert ops[rename + 1] == ("fsync_dir", "backups")
    # writeback started along the way, over consecutive ranges, all before the fsync
    assert [o for o, _ in kicks] == [i * fs_write.WRITEBACK_STEP for i in range(len(kicks))]
    assert len(kicks) == SIZE // fs_write.WRITEBACK_STEP
    assert all(i < fsync for i, (op, _) in enumerate(ops) if op == "writeback")
    assert Path(info.backup_path).read_bytes() == src.read_bytes()


def test_durable_restore_fsyncs_its_copy_before_the_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _source(tmp_path)
    backups = Backups(tmp_path / "backups")
    info = backups.create(src)
    expected = src.read_bytes()
    src.write_bytes(b"changed")
    ops, kicks = _record(monkeypatch)
    backups.restore(info.backup_id)
    monkeypatch.setattr(faults, "hook", None)
    tmp_name = next(name for op, name in ops if op == "write" and ".tmp-" in name)
    writes = [i for i, (op, name) in enumerate(ops) if op == "write" and name == tmp_name]
    fsync = ops.index(("fsync", tmp_name))
    assert writes[-1] < fsync < ops.index(("replace", src.name))
    assert len(kicks) == SIZE // fs_write.WRITEBACK_STEP
    assert src.read_bytes() == expected


def test_backup_without_durability_neither_fsyncs_nor_starts_writeback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _source(tmp_path)
    backups = Backups(tmp_path / "backups", durable=False)
    ops, kicks = _record(monkeypatch)
    info = backups.create(src)
    monkeypatch.setattr(faults, "hook", None)
    assert kicks == []
    assert not [op for op, _ in ops if op.startswith("fsync")]
    assert Path(info.backup_path).read_bytes() == src.read_bytes()
