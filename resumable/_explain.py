"""What the next run of an operation will do, and why, in words.

One function, :func:`decide`, turns what a store holds (the operation record, its newest good
checkpoint, the checkpoints that failed their checksum) into a :class:`Decision`. Entering a
block acts on that decision (``_run.Run``) and logs its reason with the
``resumable.operation.started``, ``.resumed`` or ``.skipped`` event; ``resumable show OP``
prints the same text, so what a user reads before a run is what the run then does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, overload

from .operation import CheckpointRecord, OperationRecord, ProcessState

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = [
    "Action",
    "Decision",
    "decide",
    "effective_state",
    "explain",
    "final_lost",
    "stopped_why",
]

#: ``run``: from the start; ``resume``: from a committed position; ``skip``: completed, runs
#: nothing; ``blocked``: cannot run until someone acts (every checkpoint is corrupt).
Action = Literal["run", "resume", "skip", "blocked"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What entering the operation would do now; :attr:`reason` says why, in words."""

    op_id: str
    action: Action
    position: int = 0
    #: Seqs of newer checkpoints that failed their checksum and were passed over.
    corrupt: tuple[int, ...] = ()
    #: COMPLETED, but its final checkpoint is lost: the run reopens it and resumes.
    reopen: bool = False
    op: OperationRecord | None = field(default=None, repr=False)
    checkpoint: CheckpointRecord | None = field(default=None, repr=False)

    @property
    def reason(self) -> str:
        """Why, in the words ``resumable show`` prints.

        Built when asked: it may look up whether the owner process is alive.
        """
        return _reason(self)


def final_lost(op: OperationRecord | None, ckpt: CheckpointRecord | None) -> bool:
    """Whether ``op`` says COMPLETED but its newest good checkpoint ``ckpt`` is not the final one.

    Its final checkpoint failed its checksum (or is gone) and an older one was fallen back
    to: that checkpoint's state is not the final result, so the operation is not done. The
    next run resumes from ``ckpt`` (COMPLETED -> RECOVERING -> RUNNING) and runs the items
    after it again.
    """
    done = ProcessState.COMPLETED
    return op is not None and op.state is done and ckpt is not None and ckpt.state is not done


@overload
def effective_state(op: OperationRecord, ckpt: CheckpointRecord | None) -> ProcessState: ...


@overload
def effective_state(
    op: OperationRecord | None, ckpt: CheckpointRecord | None
) -> ProcessState | None: ...


def effective_state(
    op: OperationRecord | None, ckpt: CheckpointRecord | None
) -> ProcessState | None:
    """The state an operation is in: the one rule, for runs, ``list`` and ``show``.

    COMPLETED if the newest good checkpoint says so (the record may lag behind it: the file
    store writes them one after the other); RECOVERING for a completion whose final
    checkpoint was lost (see :func:`final_lost`): the next run recovers it; else the record's
    state (None: no record, no final checkpoint).
    """
    if ckpt is not None and ckpt.state is ProcessState.COMPLETED:
        return ProcessState.COMPLETED
    if final_lost(op, ckpt):
        return ProcessState.RECOVERING
    return op.state if op is not None else None


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
    position = ckpt.position if ckpt is not None else 0
    if corrupt and ckpt is None:
        action: Action = "blocked"
    elif final_lost(op, ckpt):
        return Decision(op_id, "resume", position, corrupt, reopen=True, op=op, checkpoint=ckpt)
    elif effective_state(op, ckpt) is ProcessState.COMPLETED:
        action = "skip"
    elif ckpt is not None:
        action = "resume"
    else:
        action = "run"
    return Decision(op_id, action, position, corrupt, op=op, checkpoint=ckpt)


def _reason(d: Decision) -> str:
    """The words for decision ``d``."""
    op, ckpt, corrupt = d.op, d.checkpoint, d.corrupt
    if d.action == "blocked":
        return (
            f"every checkpoint failed its checksum (seqs {list(corrupt)}): a run raises "
            "CheckpointCorrupt; reset the operation or restore the store from a backup"
        )
    fallback = (
        f"; the newest checkpoint{'s' if len(corrupt) > 1 else ''} (seq "
        f"{', '.join(map(str, corrupt))}) failed the checksum, so it falls back to seq "
        f"{ckpt.seq}"
        if corrupt and ckpt is not None
        else ""
    )
    if d.reopen and ckpt is not None:
        lost = (
            f"failed its checksum (seq {', '.join(map(str, corrupt))})"
            if corrupt
            else "is gone or failed its checksum"
        )
        return (
            f"completed, but its final checkpoint {lost}, so seq {ckpt.seq} (position "
            f"{ckpt.position}) is not the final state: a run resumes at position "
            f"{ckpt.position} and runs the items after it again (stored step and map results "
            "are reused)"
        )
    if d.action == "skip":
        result = op.meta.get("result") if op is not None else None
        if isinstance(result, str) and result.startswith("return:"):
            reason = (
                f"completed: its stored result is returned without calling the function, "
                f"while the function's code fingerprint is {result[len('return:') :]}; "
                "a call with changed code warns, re-runs or fails as on_code_change says"
            )
        else:
            reason = "completed: a run runs no loop body or step and restores the final state"
        return reason + fallback
    if ckpt is not None:
        return f"resumable at position {ckpt.position}{_why(op)}{fallback}"
    if op is None:
        return "never run: a run starts at the beginning"
    return (
        f"no checkpoint yet{_why(op)}: a run starts at the beginning (any cp.map or cp.step "
        "results the earlier run stored are reused)"
    )


def _why(op: OperationRecord | None) -> str:
    """Why the operation stopped, as a clause in parentheses (empty if unknown)."""
    why = stopped_why(op)
    return f" ({why})" if why else ""


def stopped_why(op: OperationRecord | None) -> str:
    """Why the operation stopped, as a clause: ``it failed: ValueError: ...`` (empty if unknown).

    The one whose state is RUNNING is looked up: its process may still run it.
    """
    s = ProcessState
    if op is None or op.state not in (s.RUNNING, s.RECOVERING):
        if op is not None and op.state is s.FAILED:
            return f"it failed: {op.error}" if op.error else "it failed"
        if op is not None and op.state is s.PAUSED:
            return "it was paused: Ctrl-C or SIGTERM"
        return ""
    alive = op.owner.is_alive() if op.owner is not None else False
    who = f"process {op.owner.pid} on {op.owner.host}" if op.owner else "an unknown process"
    if alive is False:
        return f"{who}, which ran it, died"
    if alive is None:
        return f"{who} runs it, or ran it: it is on another host"
    return (
        f"{who} runs it now; a second block gets OperationLocked, a second @resumable call "
        "waits for its result"
    )


def explain(store: Store, op_id: str) -> Decision:
    """The decision for ``op_id`` in ``store``, reading and verifying what it holds.

    Raises:
        CheckpointCorrupt: the operation record itself fails its checksum.
    """
    op = store.load_operation(op_id)
    ckpt, corrupt = store.find_good_checkpoint(op_id)
    return decide(op_id, op, ckpt, corrupt)
