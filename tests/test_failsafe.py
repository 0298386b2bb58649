"""The specification's FailsafeManager: its examples run as written, and recovery works."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

import resumable
from resumable import (
    BackupInfo,
    CheckpointCorrupt,
    CheckpointData,
    FailsafeManager,
    InvalidTransition,
    ProcessState,
    SerializationError,
    failsafe,
)

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "docs" / "spec" / "failsafe-manager.ja.md"
SHARED_SPEC = REPO.parent / "shared" / "spec" / "failsafe-manager.ja.md"


@pytest.fixture(autouse=True)
def _fresh_singleton() -> typing.Iterator[None]:
    failsafe._instance = None
    yield
    if failsafe._instance is not None:
        failsafe._instance.stop_auto_backup()
    failsafe._instance = None


def spec_blocks() -> list[str]:
    """The specification's Python code blocks, in order."""
    return re.findall(r"```python\n(.*?)```", SPEC.read_text(encoding="utf-8"), re.S)


def as_written(block: str) -> str:
    """The block with only its import line changed, as the contract allows."""
    return block.replace("from failsafe_manager import", "from resumable import")


def test_vendored_spec_is_the_shared_one() -> None:
    """docs/spec holds the specification exactly as shared with the developers."""
    if not SHARED_SPEC.exists():
        pytest.skip(f"no shared/ beside the repository ({SHARED_SPEC})")
    assert SPEC.read_bytes() == SHARED_SPEC.read_bytes()


def test_dataclasses_have_exactly_the_specification_fields() -> None:
    """CheckpointData, BackupInfo and ProcessState are the specification's, field for field."""
    blocks = spec_blocks()
    wanted = {}
    for name in ("CheckpointData", "BackupInfo"):
        (block,) = [b for b in blocks if f"class {name}:" in b]
        wanted[name] = re.findall(r"^    (\w+): ", block, re.M)
    assert [f.name for f in dataclasses.fields(CheckpointData)] == wanted["CheckpointData"]
    assert [f.name for f in dataclasses.fields(BackupInfo)] == wanted["BackupInfo"]
    (block,) = [b for b in blocks if "class ProcessState(Enum):" in b]
    values = dict(re.findall(r'^    (\w+) = "(\w+)"', block, re.M))
    assert {s.name: s.value for s in ProcessState} == values


def _make_inputs(root: Path) -> None:
    (root / "data").mkdir()
    (root / "config").mkdir()
    with sqlite3.connect(root / "data" / "junmai.db") as db:
        db.execute("CREATE TABLE photos (name TEXT)")
        db.executemany("INSERT INTO photos VALUES (?)", [(f"p{i}.jpg",) for i in range(50)])
    db.close()
    (root / "config" / "config.json").write_text('{"threads": 4}')


def test_every_specification_example_runs_as_written(tmp_path: Path) -> None:
    """Each code example of the specification runs with only its import line changed."""
    _make_inputs(tmp_path)
    processed: list[int] = []
    ns: dict[str, Any] = {
        # What the examples assume their surroundings provide.
        "logger": logging.getLogger("spec-example"),
        "process_item": processed.append,
        "file_path": "data/missing.db",
        "backup_id": "no-such-backup",
        "FailsafeManager": FailsafeManager,  # the configuration example imports nothing itself
    }
    restore_target = Path("/path/to/restore")
    made_path_dir = not Path("/path").exists()
    ran = 0
    try:
        for block in spec_blocks():
            if re.search(r"^(@dataclass|class )", block, re.M):
                continue  # data structure definitions: checked field by field above
            code = as_written(block)
            if "/path/to/restore" in code and not os.access("/", os.W_OK):
                pytest.skip("the restore example writes /path/to/restore, which needs root")
            exec(compile(code, "spec-example", "exec"), ns)
            ran += 1
            if "def safe_operation_with_checkpoints" in code:
                ns["resume_callback"] = lambda checkpoint: checkpoint.data
                ns["safe_operation_with_checkpoints"]()
                assert processed == list(range(100))
                assert not ns["manager"].can_resume("safe_op_001")
    finally:
        if made_path_dir:
            shutil.rmtree("/path", ignore_errors=True)
    assert ran >= 9
    assert ns["checkpoint"].data == {"processed": 50, "total": 100}
    assert ns["result"] == "Resumed successfully"
    assert ns["restored_path"] == str(restore_target)
    assert isinstance(ns["stats"]["backups"]["total_size_mb"], float)


def test_safe_operation_resumes_after_a_failure(tmp_path: Path) -> None:
    """The specification's best-practice flow: a failure is saved, the next run resumes."""
    manager = resumable.get_failsafe_manager()
    calls: list[int] = []

    def process(i: int) -> None:
        if i == 42 and not calls.count(42):
            calls.append(i)
            raise RuntimeError("disk hiccup")
        calls.append(i)

    def run() -> Any:
        if manager.can_resume("op"):
            return manager.resume_operation(
                "op", lambda cp: [process(i) for i in range(cp.data["current_index"], 100)]
            )
        try:
            for i in range(100):
                process(i)
                if i % 10 == 0:
                    manager.save_checkpoint(
                        "op", "Op", ProcessState.RUNNING, i / 100, {"current_index": i}
                    )
            manager.save_checkpoint(
                "op", "Op", ProcessState.COMPLETED, 1.0, {"status": "completed"}
            )
        except RuntimeError as e:
            manager.save_checkpoint(
                "op", "Op", ProcessState.FAILED, i / 100, {"current_index": 40, "error": str(e)}
            )
            raise
        return None

    with pytest.raises(RuntimeError):
        run()
    assert manager.can_resume("op")
    run()
    assert not manager.can_resume("op")
    assert manager.store.load_operation("op").state is ProcessState.COMPLETED  # type: ignore[union-attr]
    assert calls.count(41) == 2  # resumed from the saved index 40
    assert calls.count(30) == 1
    assert calls.count(45) == 1


def test_killed_running_operation_is_recoverable_in_a_new_process(tmp_path: Path) -> None:
    """A RUNNING checkpoint whose process was SIGKILLed is listed; COMPLETED ones are not."""
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(REPO)!r})
from resumable import FailsafeManager, ProcessState
m = FailsafeManager()
m.save_checkpoint("done", "Done", ProcessState.COMPLETED, 1.0, {{}})
m.save_checkpoint("crashed", "Photo Processing", ProcessState.RUNNING, 0.37, {{"processed": 37}})
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL
    found = FailsafeManager().get_recoverable_operations()
    assert [op["operation_id"] for op in found] == ["crashed"]
    (op,) = found
    assert op["operation_name"] == "Photo Processing"
    assert op["state"] == "running"
    assert op["progress"] == pytest.approx(0.37)
    assert op["strategy"] == "resume"
    assert op["owner_alive"] is False
    assert op["checkpoint_id"]


def test_running_operation_of_a_live_process_is_not_recoverable(tmp_path: Path) -> None:
    """An operation whose owner is alive (this process) is running, not recoverable."""
    m = FailsafeManager()
    m.save_checkpoint("mine", "Mine", ProcessState.RUNNING, 0.5, {})
    m.save_checkpoint("paused", "Paused", ProcessState.PAUSED, 0.2, {})
    assert [op["operation_id"] for op in m.get_recoverable_operations()] == ["paused"]


def test_resume_marks_recovering_then_completed_or_failed(tmp_path: Path) -> None:
    """resume_operation: RECOVERING during the callback; COMPLETED after, FAILED on error."""
    m = FailsafeManager()
    m.save_checkpoint("a", "A", ProcessState.PAUSED, 0.5, {"at": 5})
    seen: list[ProcessState] = []

    def callback(cp: CheckpointData) -> int:
        seen.append(m.store.load_operation("a").state)  # type: ignore[union-attr]
        return int(cp.data["at"])

    assert m.resume_operation("a", callback) == 5
    assert seen == [ProcessState.RECOVERING]
    assert m.store.load_operation("a").state is ProcessState.COMPLETED  # type: ignore[union-attr]
    assert not m.can_resume("a")
    with pytest.raises(ValueError, match="cannot be resumed"):
        m.resume_operation("a", callback)

    m.save_checkpoint("b", "B", ProcessState.PAUSED, 0.1, {})

    def boom(cp: CheckpointData) -> None:
        raise KeyError("lost")

    with pytest.raises(KeyError):
        m.resume_operation("b", boom)
    op = m.store.load_operation("b")
    assert op is not None
    assert op.state is ProcessState.FAILED
    assert "lost" in (op.error or "")
    assert m.can_resume("b")


def test_checkpoints_load_from_disk_and_rotate(tmp_path: Path) -> None:
    """Saved checkpoints load in a new manager; only max_checkpoints per operation are kept."""
    m = FailsafeManager(max_checkpoints=3)
    ids = [
        m.save_checkpoint("op", "Op", ProcessState.RUNNING, i / 10, {"i": i}, {"note": "x"})
        for i in range(6)
    ]
    fresh = FailsafeManager(max_checkpoints=3)
    assert fresh.load_checkpoint(ids[-1]) == m.load_checkpoint(ids[-1])
    loaded = fresh.load_checkpoint(ids[-1])
    assert loaded is not None
    assert loaded.data == {"i": 5}
    assert loaded.metadata == {"note": "x"}
    assert loaded.state is ProcessState.RUNNING
    assert fresh.load_checkpoint(ids[0]) is None  # rotated away
    assert fresh.load_checkpoint("not-an-id") is None
    files = list((tmp_path / "data" / "checkpoints").rglob("*.json"))
    checkpoint_files = [f for f in files if f.parent.name == "checkpoints"]
    assert len(checkpoint_files) == 3
    doc = json.loads(max(checkpoint_files).read_text())
    assert doc["data"] == {"i": 5}
    assert fresh.get_statistics()["checkpoints"]["total"] == 3


def test_a_damaged_checkpoint_is_never_loaded(tmp_path: Path) -> None:
    """A checkpoint file edited on disk fails its checksum: CheckpointCorrupt, not bad data."""
    m = FailsafeManager()
    cid = m.save_checkpoint("op", "Op", ProcessState.RUNNING, 0.5, {"processed": 50})
    (path,) = (tmp_path / "data" / "checkpoints").rglob("000000000001.json")
    path.write_text(path.read_text().replace('"processed":50', '"processed":99'))
    with pytest.raises(CheckpointCorrupt):
        FailsafeManager().load_checkpoint(cid)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"progress": 1.5}, ValueError),
        ({"progress": -0.1}, ValueError),
        ({"progress": "half"}, TypeError),
        ({"state": "sleeping"}, TypeError),
        ({"data": [1, 2]}, TypeError),
        ({"data": {"when": object()}}, SerializationError),
        ({"operation_id": ""}, ValueError),
        ({"metadata": "x"}, TypeError),
    ],
)
def test_save_checkpoint_validates(tmp_path: Path, kwargs: dict[str, Any], error: type) -> None:
    """Bad arguments are refused at the call, and nothing is written."""
    args: dict[str, Any] = {
        "operation_id": "op", "operation_name": "Op", "state": ProcessState.RUNNING,
        "progress": 0.5, "data": {},
    }  # fmt: skip
    args.update(kwargs)
    m = FailsafeManager()
    with pytest.raises(error):
        m.save_checkpoint(**args)
    assert m.get_statistics()["checkpoints"]["total"] == 0


def test_state_changes_follow_the_transition_table(tmp_path: Path) -> None:
    """A finished operation may start a new run; a forbidden change raises InvalidTransition."""
    m = FailsafeManager()
    m.save_checkpoint("op", "Op", ProcessState.COMPLETED, 1.0, {})
    m.save_checkpoint("op", "Op", ProcessState.RUNNING, 0.1, {})  # a new run
    assert m.can_resume("op")
    m.save_checkpoint("op", "Op", ProcessState.FAILED, 0.1, {})
    with pytest.raises(InvalidTransition):
        m.save_checkpoint("op", "Op", ProcessState.PAUSED, 0.1, {})


def test_statistics_have_the_specification_keys(tmp_path: Path) -> None:
    """get_statistics has checkpoints.total, active_operations, backups.total, total_size_mb."""
    m = FailsafeManager()
    m.save_checkpoint("a", "A", ProcessState.RUNNING, 0.1, {})
    m.save_checkpoint("b", "B", ProcessState.COMPLETED, 1.0, {})
    (tmp_path / "f.txt").write_text("x" * 1000)
    m.create_backup(tmp_path / "f.txt")
    stats = m.get_statistics()
    assert stats["checkpoints"]["total"] == 2
    assert stats["checkpoints"]["active_operations"] == 1
    assert stats["checkpoints"]["by_state"]["completed"] == 1
    assert stats["backups"]["total"] == 1
    assert isinstance(stats["backups"]["total_size_mb"], float)
    assert "running" in stats["auto_backup"]


def test_get_failsafe_manager_is_one_instance(tmp_path: Path) -> None:
    """get_failsafe_manager returns the same manager every time, from any thread."""
    import threading

    got: list[FailsafeManager] = []
    threads = [
        threading.Thread(target=lambda: got.append(resumable.get_failsafe_manager()))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in got}) == 1


def test_constructor_validates(tmp_path: Path) -> None:
    """FailsafeManager refuses nonsense limits at construction."""
    with pytest.raises(ValueError, match="max_checkpoints"):
        FailsafeManager(max_checkpoints=0)
    with pytest.raises(ValueError, match="auto_backup_interval"):
        FailsafeManager(auto_backup_interval=0)
