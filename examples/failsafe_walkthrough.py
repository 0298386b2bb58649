"""The FailsafeManager of the specification, step by step, on a photo batch and its database.

    python examples/failsafe_walkthrough.py

1. lists the operations an earlier, killed run left unfinished (``get_recoverable_operations``);
2. backs up the SQLite database ``data/junmai.db`` before the batch (``create_backup``) and
   checks the copy against its checksum (``verify_backup``);
3. processes 100 photos, recording each in the database and saving a checkpoint every 10
   (``save_checkpoint``); if an earlier run was killed, it resumes from its last checkpoint
   instead (``can_resume``, ``resume_operation``);
4. backs the database up again after the batch, then has an "accident" (every row deleted)
   and puts the database back from that backup (``restore_backup``);
5. prints the manager's statistics (``get_statistics``).

Kill it during step 3 (Ctrl-C, ``kill -9``) and run it again: step 1 reports the batch, step 3
resumes it, and the last line is the same as after an uninterrupted run. Checkpoints and
backups live in ``data/checkpoints`` and ``data/backups`` (JSON and copies you can look at).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

from resumable import CheckpointData, ProcessState, get_failsafe_manager

DB = Path("data/junmai.db")
OPERATION = "batch_001"
TOTAL = 100


def process_photos(start: int) -> str:
    """Record photos ``start`` .. TOTAL-1, saving a checkpoint every 10."""
    manager = get_failsafe_manager()
    with closing(sqlite3.connect(DB)) as db:
        for i in range(start, TOTAL):
            time.sleep(0.02)  # the real work on photo i
            with db:  # idempotent: a photo processed again after a kill is not counted twice
                db.execute("INSERT OR REPLACE INTO photos VALUES (?, ?)", (i, f"IMG_{i:04d}.jpg"))
            if (i + 1) % 10 == 0:
                manager.save_checkpoint(
                    operation_id=OPERATION,
                    operation_name="Photo Processing",
                    state=ProcessState.RUNNING,
                    progress=(i + 1) / TOTAL,
                    data={"processed": i + 1, "total": TOTAL},
                )
                print(f"  checkpoint: {i + 1}/{TOTAL} photos", flush=True)
    manager.save_checkpoint(
        operation_id=OPERATION,
        operation_name="Photo Processing",
        state=ProcessState.COMPLETED,
        progress=1.0,
        data={"processed": TOTAL, "total": TOTAL},
    )
    return f"{TOTAL - start} photos processed"


def resume_callback(checkpoint: CheckpointData) -> str:
    start_from = checkpoint.data["processed"]
    print(f"  resuming at photo {start_from} ({checkpoint.progress:.0%} done)", flush=True)
    return process_photos(start_from)


def count_rows() -> int:
    with closing(sqlite3.connect(DB)) as db:
        rows: int = db.execute("SELECT count(*) FROM photos").fetchone()[0]
        return rows


def main() -> None:
    manager = get_failsafe_manager()
    DB.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(DB)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS photos (id INTEGER PRIMARY KEY, name TEXT)")

    print("1. unfinished operations:")
    for op in manager.get_recoverable_operations():
        print(f"  {op['operation_name']}: {op['progress']:.0%}, strategy {op['strategy']}")

    print("2. backup before the batch:")
    before = manager.create_backup(DB)
    print(f"  {before.backup_id}: {before.size_bytes} bytes, checksum {before.checksum[:12]}…")
    print(f"  verified: {manager.verify_backup(before.backup_id)}")

    print("3. the batch:")
    latest = manager.latest_checkpoint(OPERATION)
    if manager.can_resume(OPERATION):
        print(f"  {manager.resume_operation(OPERATION, resume_callback)}")
    elif latest is not None and latest.state is ProcessState.COMPLETED and count_rows() == TOTAL:
        print("  already completed by an earlier run")
    else:
        print(f"  {process_photos(0)}")

    print("4. backup after the batch, an accident, and a restore:")
    after = manager.create_backup(DB)
    with closing(sqlite3.connect(DB)) as db, db:
        db.execute("DELETE FROM photos")
    print(f"  after the accident: {count_rows()} rows")
    restored = manager.restore_backup(after.backup_id)
    print(f"  restored {restored} from {after.backup_id}: {count_rows()} rows")

    stats = manager.get_statistics()
    print("5. statistics:")
    print(f"  checkpoints: {stats['checkpoints']['total']}")
    print(f"  active operations: {stats['checkpoints']['active_operations']}")
    print(f"  backups: {stats['backups']['total']} ({stats['backups']['total_size_mb']:.2f} MB)")

    print(f"Photo Processing complete: {count_rows()} of {TOTAL} photos in {DB} after the restore.")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\nInterrupted. Run me again: the batch resumes from its last checkpoint.")
        sys.exit(130)
