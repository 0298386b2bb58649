"""Entering a run of a ``checkpointed`` block (modes BLOCK and SHARED), and what it says.

The twin of :mod:`resumable._run_call`. A block's run loads the operation's record and its
newest good checkpoint, restores the state from it, and lets :func:`~resumable._explain.decide`
say what this run does: skip a completed operation, resume an unfinished one, or start. It
then marks the operation RUNNING (recovering it from a process that died holding it), and
says in one line what matters to a person: a resume and why, a recovery, a skip, an edit of
the block's code since its last run (:mod:`resumable._block_code`).
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Final

from ._explain import decide, stopped_why
from ._log import INFO, log
from ._owner import Owner
from .operation import OperationRecord, ProcessState

if TYPE_CHECKING:
    from ._run import Run

__all__ = ["SKIP_LINES", "open_block"]

#: Completed blocks skipped with a line each (at info level) in one process; the next ones,
#: after one line that says so, at debug level: a job of many small blocks, run again, would
#: otherwise print a line per block.
SKIP_LINES: Final = 3
_skipped = itertools.count()  # next() is atomic: threads share it


def open_block(run: Run) -> None:
    """:meth:`Run._open` for a block: load, restore, decide, mark RUNNING (or skip)."""
    store, op_id, mode = run.store, run.op_id, run.mode
    if run.spec.fresh:
        with store.errors(f"discard operation {op_id!r}"):
            store.delete_operation(op_id)
        log.info("resumable.operation.discarded", op_id=op_id)
    op = store.load_operation(op_id)
    ckpt = store.latest_checkpoint(op_id) if mode.keeps_state else None
    if ckpt is not None:
        run.seq = ckpt.seq
        run.restored = run.committed = ckpt.position
        run.restored_meta = ckpt.metadata
        run.ckpt_meta = dict(ckpt.metadata)  # nested values are replaced, never changed
    run.set_state(run.state_in(ckpt))
    # What this run does, and why: the words `resumable show` prints too.
    decision = decide(op_id, op, ckpt)
    reason = decision.reason if log.wants(INFO) else ""
    if op is not None and ckpt is not None and decision.reopen:
        # COMPLETED, but its final checkpoint failed its checksum and an older one was
        # loaded: that is not the final state, so the operation is not done. Resume from it
        # (the items after it run again; stored step and map results are reused) rather
        # than report completion with it. COMPLETED -> RECOVERING -> RUNNING.
        log.warning(
            "resumable.operation.reopened", op_id=op_id, using_seq=ckpt.seq,
            position=ckpt.position,
        )  # fmt: skip
        op = op.to(ProcessState.RECOVERING)
    if decision.action == "skip":
        _skip(run, op, reason)
        return
    me = Owner.current()
    now = time.time()
    earlier = op  # the record of an earlier run that did not complete (that returned above)
    progress = ckpt.progress if ckpt is not None else 0.0
    recovered = False
    code_meta = {"code": run.code} if run.code is not None else {}
    if op is None:
        op = OperationRecord.new(
            op_id, run.spec.name or op_id, ProcessState.RUNNING, owner=me, heartbeat=now,
            attempts=1, meta=code_meta,
        )  # fmt: skip
    else:
        if op.state is ProcessState.RUNNING and op.owner != me and not mode.shared:
            # Its lock was free, so the process that ran it is gone: one line says so.
            recovered = True
            log.warning(
                "resumable.operation.recovered", op_id=op_id, dead_owner=op.owner,
                position=run.restored, progress=progress,
            )  # fmt: skip
        op = op.to(
            ProcessState.RUNNING, owner=me, heartbeat=now, attempts=op.attempts + 1,
            error=None, meta={**op.meta, **code_meta},
        )  # fmt: skip
    if mode.record_on_entry:
        store.save(op)
    run.op = op
    # An earlier run's progress is a checkpoint, or results it recorded (cp.map items,
    # cp.step values) even if it died before its first checkpoint (see `resumed`).
    run.resumed = ckpt is not None or (
        earlier is not None and store.record_counts(op_id)["results"] > 0
    )
    _log_entry(run, earlier, progress, reason, recovered=recovered)
    if run.resumed and _code_changed(run, earlier):
        log.info(
            "resumable.operation.code_changed", op_id=op_id, action="resumed",
            position=run.restored,
        )  # fmt: skip


def _skip(run: Run, op: OperationRecord | None, reason: str) -> None:
    """Enter a completed operation: nothing of it runs again (``reason``: why it is done)."""
    run.completed_before = True
    done = ProcessState.COMPLETED
    if op is not None and op.state is not done:
        # The final checkpoint was written and the process died before the record (the file
        # store writes them one after the other): finish the record now.
        op = op.to(done, heartbeat=time.time(), error=None)
        run.store.save(op)
        log.info("resumable.operation.repaired", op_id=run.op_id, state=done.value)
    run.op = op
    if _code_changed(run, op):
        log.warning("resumable.operation.code_changed", op_id=run.op_id, action="skipped")
    else:
        _log_skipped(run.op_id, reason)


def _code_changed(run: Run, earlier: OperationRecord | None) -> bool:
    """True if an earlier run recorded its block's code and it differs from this run's."""
    if run.code is None or earlier is None:
        return False
    stored = earlier.meta.get("code")
    return stored is not None and stored != run.code


def _log_skipped(op_id: str, reason: str) -> None:
    n = next(_skipped)
    if n < SKIP_LINES:
        log.info("resumable.operation.skipped", op_id=op_id, reason=reason)
        return
    if n == SKIP_LINES:
        log.info("resumable.operation.skipped_more", shown=SKIP_LINES)
    log.debug("resumable.operation.skipped", op_id=op_id, reason=reason)


def _log_entry(
    run: Run, earlier: OperationRecord | None, progress: float, reason: str, *, recovered: bool
) -> None:
    """Say that the run started, or resumed and why (the earlier run's record: ``earlier``).

    ``recovered``: the earlier run's process died, and a warning said so already.
    """
    op_id, attempt = run.op_id, run.op.attempts if run.op is not None else 1
    if not run.resumed:
        log.debug(
            "resumable.operation.started", op_id=op_id, position=0, attempt=attempt,
            reason=reason,
        )  # fmt: skip
        return
    log.info(
        "resumable.operation.resumed", op_id=op_id, position=run.restored,
        progress=progress, attempt=attempt, reason=reason,
        # Not when recovered: that warning said why, and its line stands for this one.
        # (Participants of a shared block run it together: no earlier run "stopped".)
        why=stopped_why(earlier) if reason and not (recovered or run.mode.shared) else "",
        recovered=recovered,
    )  # fmt: skip
