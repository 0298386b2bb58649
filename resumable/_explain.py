"""What the next run of an operation will do, and why, in words.

One function, :func:`decide`, turns what a store holds (the operation record, its newest good
checkpoint, the checkpoints that failed their checksum) into a :class:`Decision`. The library
logs that decision's reason when it enters a block (``resumable.operation.decided``), and
``resumable show OP`` prints the same text, so what a user reads before a run is what the run
then does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .operation import CheckpointRecord, OperationRecord, ProcessState

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["Action", "Decision", "decide", "effective_state", "explain", "final_lost"]

#: ``run``: from the start; ``resume``: from a committed position; ``skip``: completed, runs
#: nothing; ``blocked``: cannot run until someone acts (every checkpoint is corrupt).
Action = Literal["run", "resume", "skip", "blocked"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What entering the operation would do now."""

    op_id: str
    action: Action
    reason: str
    position: int = 0
    #: Seqs of newer checkpoints that failed their checksum and were passed over.
    corrupt: tuple[int, ...] = ()


def final_lost(op: OperationRecord | None, ckpt: CheckpointRecord | None) -> bool:
    """Whether ``op`` says COMPLETED but its newest good checkpoint ``ckpt`` is not the final one.

    Its final checkpoint failed its checksum (or is gone) and an older one was fallen back
    to: that checkpoint's state is not the final result, so the operation is not done. The
    next run resumes from ``ckpt`` (COMPLETED -> RECOVERING -> RUNNING) and runs the items
    after it again.
    """
    done = ProcessState.COMPLETED
    return op is not None and op.state is done and ckpt is not None and ckpt.state is not done


def effective_state(op: OperationRecord, ckpt: CheckpointRecord | None) -> ProcessState:
    """The state to show: COMPLETED only with a final checkpoint (or none, when stateless).

    COMPLETED if the newest good checkpoint says so (the record may lag behind it); the
    record's state otherwise, except RECOVERING for a completion whose final checkpoint was
    lost (see :func:`final_lost`): the next run recovers it.
    """
    if ckpt is not None and ckpt.state is ProcessState.COMPLETED:
        return ProcessState.COMPLETED
    if final_lost(op, ckpt):
        return ProcessState.RECOVERING
    return op.state


def decide(
    op_id: str,
    op: OperationRecord | None,
    ckpt: CheckpointRecord | None,
    corrupt: tuple[int, ...] = (),
) -> Decision:
    """The decision for ``op`` with newest good checkpoint ``ckpt``.

    Args:
        op_id: the operation.
        op: its verified record, or None.
        ckpt: its newest checkpoint that passed its checksum, or None.
        corrupt: seqs of the checkpoints that failed theirs.
    """
    done = ProcessState.COMPLETED
    if corrupt and ckpt is None:
        return Decision(
            op_id, "blocked",
            f"every checkpoint failed its checksum (seqs {list(corrupt)}): a run raises "
            "CheckpointCorrupt; reset the operation or restore the store from a backup",
            corrupt=corrupt,
        )  # fmt: skip
    fallback = (
        f"; the newest checkpoint{'s' if len(corrupt) > 1 else ''} (seq "
        f"{', '.join(map(str, corrupt))}) failed the checksum, so it falls back to seq "
        f"{ckpt.seq}"
        if corrupt and ckpt is not None
        else ""
    )
    if ckpt is not None and final_lost(op, ckpt):
        lost = (
            f"failed its checksum (seq {', '.join(map(str, corrupt))})"
            if corrupt
            else "is gone or failed its checksum"
        )
        return Decision(
            op_id, "resume",
            f"completed, but its final checkpoint {lost}, so seq {ckpt.seq} (position "
            f"{ckpt.position}) is not the final state: a run resumes at position "
            f"{ckpt.position} and runs the items after it again (stored step and map results "
            "are reused)",
            ckpt.position, corrupt,
        )  # fmt: skip
    if (op is not None and op.state is done) or (ckpt is not None and ckpt.state is done):
        result = op.meta.get("result") if op is not None else None
        if isinstance(result, str) and result.startswith("return:"):
            reason = (
                f"completed: its stored result is returned without calling the function, "
                f"while the function's code fingerprint is {result[len('return:') :]}; "
                "a call with changed code warns, re-runs or fails as on_code_change says"
            )
        else:
            reason = "completed: a run runs no loop body or step and restores the final state"
        position = ckpt.position if ckpt is not None else 0
        return Decision(op_id, "skip", reason + fallback, position, corrupt)
    if ckpt is not None:
        return Decision(
            op_id, "resume", f"resumable at position {ckpt.position}{_why(op)}{fallback}",
            ckpt.position, corrupt,
        )  # fmt: skip
    if op is None:
        return Decision(op_id, "run", "never run: a run starts at the beginning")
    return Decision(
        op_id, "run",
        f"no checkpoint yet{_why(op)}: a run starts at the beginning (any cp.map or cp.step "
        "results the earlier run stored are reused)",
    )  # fmt: skip


def _why(op: OperationRecord | None) -> str:
    """Why the operation stopped, as a clause (empty if unknown)."""
    s = ProcessState
    if op is None or op.state not in (s.RUNNING, s.RECOVERING):
        if op is not None and op.state is s.FAILED:
            return f" (it failed: {op.error})" if op.error else " (it failed)"
        if op is not None and op.state is s.PAUSED:
            return " (it was paused: Ctrl-C or SIGTERM)"
        return ""
    alive = op.owner.is_alive() if op.owner is not None else False
    who = f"process {op.owner.pid} on {op.owner.host}" if op.owner else "an unknown process"
    if alive is False:
        return f" ({who}, which ran it, died)"
    if alive is None:
        return f" ({who} runs it, or ran it: it is on another host)"
    return (
        f" ({who} runs it now; a second block gets OperationLocked, a second @resumable call "
        "waits for its result)"
    )


def explain(store: Store, op_id: str) -> Decision:
    """The decision for ``op_id`` in ``store``, reading and verifying what it holds.

    Raises:
        CheckpointCorrupt: the operation record itself fails its checksum.
    """
    op = store.load_operation(op_id)
    ckpt, corrupt = store.find_good_checkpoint(op_id)
    return decide(op_id, op, ckpt, corrupt)
