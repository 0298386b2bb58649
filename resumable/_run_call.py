"""Entering and completing a run of a ``@resumable`` call (modes CALL and COUNTED_CALL).

A call keeps no state and no checkpoints, so its run needs less than a block's
(:mod:`resumable._run`): the record alone decides what the run does. A first run without
``max_attempts`` (CALL) writes nothing until it ends, so its RUNNING record is not even made:
:meth:`Run._record <resumable._run.Run._record>` makes it when a failure or a retry needs it,
and a success writes its COMPLETED record, with the result, directly (:func:`complete`). With
``max_attempts`` (COUNTED_CALL) the RUNNING record is written on entry: the attempt must
survive a crash.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import _crashpoint
from ._explain import decide
from ._log import DEBUG, log
from ._owner import Owner
from .operation import OperationRecord, ProcessState

if TYPE_CHECKING:
    from ._run import Run

__all__ = ["complete", "first_record", "open_call"]


def open_call(run: Run) -> None:
    """:meth:`Run._open` for a ``@resumable`` call: the record alone decides.

    As :func:`decide` does without a checkpoint: COMPLETED is done, anything else runs.
    """
    store, op_id, mode = run.store, run.op_id, run.mode
    # The call read its result just before taking the lock: that read may prove there
    # is still no record (no connection changed the database since), saving this one.
    op = None if store.known_absent(op_id) else store.load_operation(op_id)
    # A call's events are at debug level: a line per call would drown what matters.
    wants = log.wants(DEBUG)
    if op is not None and op.state is ProcessState.COMPLETED:
        run.completed_before = True
        run.op = op
        reason = decide(op_id, op, None).reason if wants else ""
        log.debug("resumable.operation.skipped", op_id=op_id, reason=reason, kind="call")
        return
    now = time.time()
    run.began = now
    if op is not None:
        if op.state is ProcessState.RUNNING and op.owner != Owner.current():
            log.warning(
                "resumable.operation.recovered", op_id=op_id, dead_owner=op.owner, position=0,
                kind="call",
            )  # fmt: skip
        op = op.to(
            ProcessState.RUNNING, owner=Owner.current(), heartbeat=now,
            attempts=op.attempts + 1, error=None,
        )  # fmt: skip
        # An earlier run's progress: results it recorded (cp.step values in it).
        run.resumed = store.record_counts(op_id)["results"] > 0
    elif mode.record_on_entry:
        op = first_record(run, ProcessState.RUNNING, now)
    if op is not None and mode.record_on_entry:
        store.save(op)
    run.op = op
    if wants:
        attempt = op.attempts if op is not None else 1
        reason = decide(op_id, op, None).reason
        log.debug(
            "resumable.operation.resumed" if run.resumed else "resumable.operation.started",
            op_id=op_id, position=0, attempt=attempt, reason=reason, kind="call",
        )  # fmt: skip


def first_record(run: Run, state: ProcessState, now: float) -> OperationRecord:
    """The record of a call's first run, in ``state``: one attempt, begun at entry."""
    return OperationRecord.new(
        run.op_id, run.spec.name or run.op_id, state, owner=Owner.current(), heartbeat=now,
        attempts=1, created=run.began, updated=now,
        # "function" marks a call's record in every state (`resumable list` hides calls by it).
        meta=dict(run.meta) if state is ProcessState.COMPLETED else {"function": run.spec.name},
    )  # fmt: skip


def complete(run: Run) -> None:
    """A call's first run succeeded: its COMPLETED record and result, in one write."""
    op = first_record(run, ProcessState.COMPLETED, time.time())
    if _crashpoint.ARMED:
        _crashpoint.reached("before", "record", run.op_id)
    run.store.save(op, None, run.results)
    if _crashpoint.ARMED:
        _crashpoint.reached("after", "record", run.op_id)
    run.op = op
    run.seq += 1
    run.last_commit = time.monotonic()
    log.debug("resumable.operation.completed", op_id=run.op_id, position=0, kind="call")
