"""One run of an operation: entering it, committing, leaving it. The one lifecycle.

Entering a :class:`Run` (``with Run(spec)``; ``Checkpoint`` and ``@resumable`` both do) takes
the operation's lock, loads the newest good checkpoint, decides from it what this run does
(:func:`~resumable._explain.decide`) and marks the operation RUNNING. Loops commit position
and state together at item boundaries (:meth:`Run.commit`); leaving commits once more
and marks the operation COMPLETED, FAILED or PAUSED, then releases what entering took.

What kind of block a run belongs to is its :class:`Mode`, fixed when the block is made: a
``checkpointed()`` block keeps a state; a shared one splits its maps among processes and keeps
none; a ``@resumable`` call keeps none either, and writes its record at the end only unless
its attempts must be counted first. How each kind enters is in :mod:`resumable._run_block`
and :mod:`resumable._run_call`.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import _crashpoint, _run_block, _run_call, _signals, serializers
from ._log import DEBUG, INFO, log
from ._loop import NOTHING, Loop, item_digest
from ._outputs import Outputs
from ._owner import Owner
from ._state import State, forget, rollback, track, undoable
from .errors import LeaseLost
from .operation import (
    CheckpointRecord,
    OperationRecord,
    ProcessState,
    ResultRecord,
    validate_op_id,
)
from .serializers import Serializer, error_text, short_repr
from .stores import resolve_store
from .stores.base import Store

__all__ = ["BLOCK", "CALL", "COUNTED_CALL", "SHARED", "Mode", "Run", "Spec", "current"]

#: The states a commit compares with, looked up once: reading ProcessState.RUNNING goes
#: through the enum class's machinery (0.1 us, twice per commit).
_RUNNING, _COMPLETED = ProcessState.RUNNING, ProcessState.COMPLETED

_current: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "resumable_current_run", default=None
)


def current() -> Run | None:
    """The innermost run entered in this thread or task, if any."""
    return _current.get()


@dataclass(frozen=True, slots=True)
class Mode:
    """Which parts of the lifecycle a kind of block uses."""

    #: Loads the newest checkpoint on entry and commits the state with the position.
    keeps_state: bool
    #: Participants run at once under claims: no lock, no loops, maps split among them.
    shared: bool
    #: Has a position to save on SIGTERM (a @resumable call has none; its blocks do).
    saves_position: bool
    #: Writes the RUNNING record on entry (else with the final commit only).
    record_on_entry: bool


BLOCK = Mode(keeps_state=True, shared=False, saves_position=True, record_on_entry=True)
SHARED = Mode(keeps_state=False, shared=True, saves_position=True, record_on_entry=True)
#: A @resumable call: its record is written once, at the end ...
CALL = Mode(keeps_state=False, shared=False, saves_position=False, record_on_entry=False)
#: ... unless it has max_attempts, whose count must survive a crash.
COUNTED_CALL = Mode(keeps_state=False, shared=False, saves_position=False, record_on_entry=True)


@dataclass(frozen=True, slots=True)
class Spec:
    """What a block was made with, checked: the same for each of its runs."""

    op_id: str | None
    store: str | Store | None
    serializer: Serializer
    mode: Mode = BLOCK
    initial: Any = None
    every: int | None = None
    every_seconds: float | None = None
    lock: bool = True
    lock_timeout: float | None = None
    fresh: bool = False
    name: str | None = None


class Run:
    """What one run of an operation knows, from entering its block to leaving it."""

    __slots__ = (
        "abandoned", "began", "children", "ckpt_meta", "code", "committed", "completed_before",
        "failed", "hooks",
        "last_commit", "lock", "loop", "maps", "meta", "mode", "op", "op_id",
        "outputs", "owner", "parent", "payload_of", "position", "restored", "restored_meta",
        "results", "resumed", "seq", "serializer", "signals", "spec", "state", "store", "token",
        "total",
    )  # fmt: skip

    def __init__(self, spec: Spec) -> None:
        parent = _current.get()
        if spec.op_id is not None:
            op_id = spec.op_id
        elif parent is not None:
            op_id = parent.child_id(spec.name)
        else:
            raise ValueError(
                "checkpointed() needs an op_id, such as checkpointed('resize-photos'), "
                "unless it is nested in a @resumable call or another checkpointed block"
            )
        self.spec, self.mode, self.parent, self.op_id = spec, spec.mode, parent, op_id
        self.serializer = spec.serializer
        self.store: Store = resolve_store(spec.store)
        self.lock: Any = None
        self.op: OperationRecord | None = None
        self.state: Any = None
        self.payload_of: Any = None
        self.seq = 0
        self.restored = 0  # position the previous run committed
        self.position = 0  # items accounted for in this run (skipped or finished)
        self.committed = 0  # position of the newest checkpoint
        self.last_commit = time.monotonic()
        self.total: int | None = None
        self.resumed = False
        self.completed_before = False
        self.loop: Loop | None = None  # the newest cp.iterate/cp.lines loop, if any
        self.abandoned = False  # the loop was closed mid-item (`break`, an exception)
        #: The newest checkpoint's metadata (input identity, cp.lines offsets, cp.open
        #: lengths), and what the next commit records: the same, updated as the run goes.
        self.restored_meta: dict[str, Any] = {}
        self.ckpt_meta: dict[str, Any] = {}
        self.outputs: Outputs | None = None  # cp.open files
        self.hooks: list[Callable[[], object]] = []  # cp.before_commit functions
        self.children: dict[str, int] = {}
        self.failed: set[Any] = set()  # item keys cp.map set aside
        self.maps = 0  # cp.map calls so far in this run: each has its own result namespace
        self.results: list[ResultRecord] = []  # stored with the final commit (@resumable)
        self.meta: dict[str, Any] = {}  # merged into the operation record at the final commit
        self.token: contextvars.Token[Run | None] | None = None
        self.signals: _signals.Entered | None = None  # see _install_sigterm
        self.owner = ""  # this participant's name in claims (shared blocks)
        self.began = 0.0  # when a call's first run entered (its record is made at the end)
        #: The digest of the block's code (see resumable._block_code), set by Checkpoint.
        self.code: str | None = None

    # --- entering -------------------------------------------------------------------------

    def __enter__(self) -> Run:
        """Enter the run: lock, load, decide, mark RUNNING.

        Everything it took is given back if entering fails or is interrupted.
        """
        store, op_id, mode = self.store, self.op_id, self.mode
        if mode.shared:
            if not store.shares:
                raise store.cannot_share()
            self.owner = Owner.current().token()
        self.lock = store.lock(op_id) if self.spec.lock and not mode.shared else None
        try:  # everything after taking the lock undoes itself if interrupted
            if self.lock is not None:
                self.lock.acquire(self.spec.lock_timeout)
            self._open()
            self._install_sigterm()
            self.token = _current.set(self)
            return self  # noqa: TRY300 - in the try: an interrupt here must release the lock too
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        if self.mode is CALL or self.mode is COUNTED_CALL:
            _run_call.open_call(self)
        else:
            _run_block.open_block(self)

    def state_in(self, ckpt: CheckpointRecord | None) -> Any:
        """The state ``ckpt`` holds, or the first run's without one."""
        if ckpt is None:
            return self._initial_state()
        return serializers.decode(ckpt.serializer, ckpt.payload)

    def _initial_state(self) -> Any:
        """This run's copy of ``state=``, made by a round trip through the serializer.

        Not ``copy.deepcopy``: a state that cannot be checkpointed (a generator; a lock
        under pickle) must fail here, at entry, with the SerializationError that names its
        field (``state.g``), as a commit would name it, and not with deepcopy's TypeError or
        at the first commit. The first run also sees just what a resumed one would load.
        """
        if self.spec.initial is None:
            return None
        written_by, payload = serializers.encode(self.serializer, self.spec.initial, "state")
        return serializers.decode(written_by, payload)

    def set_state(self, value: Any) -> None:
        """Make ``value`` this run's state (a dict becomes a :class:`State`).

        Called on entering and leaving only: ``Checkpoint`` copies the state into ``cp.state``
        (an instance attribute, for speed) after each.
        """
        if value is None or isinstance(value, dict):
            value = State(value)
        elif isinstance(value, Mapping):
            value = State(dict(value))
        self.state = value
        # What gets serialized: a State's plain dict (so loading never needs this class).
        self.payload_of = value.to_dict() if isinstance(value, State) else value
        if isinstance(value, State):
            track(value, self)

    def child_id(self, name: str | None) -> str:
        """A stable id for a block nested in this one.

        Made of the parent's id, the item in flight (a digest of it, so that the same item
        finds its child's progress wherever it moved in the input; its position where it has
        no digest, or outside a loop body), and the child's name or its order of entry at
        that item: the same on every re-run of that item.
        """
        loop, digest = self.loop, None
        if loop is not None and loop.in_body():
            item = loop.item_out()
            digest = None if item is NOTHING else item_digest(item)
        at = str(self.position) if digest is None else f"i{digest[:16]}"
        if name is None:
            k = self.children.get(at, 0)
            self.children[at] = k + 1
            name = str(k)
        return validate_op_id(f"{self.op_id}/{at}:{name}")

    def _install_sigterm(self) -> None:
        # Only the outermost run that has a position to save installs it: a @resumable call
        # has none, and nested blocks are covered by the outer one's.
        parent = self.parent
        while parent is not None and not parent.mode.saves_position:
            parent = parent.parent
        if self.mode.saves_position and parent is None:
            self.signals = _signals.enter()

    # --- leaving --------------------------------------------------------------------------

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leave the run: commit the outcome (unless completed before), then let go."""
        try:
            if not self.completed_before:
                self._leave(exc)
        finally:
            self.close()

    def _leave(self, exc: BaseException | None) -> None:
        if exc is None and self.op is None and not (self.hooks or self.failed or self.loop):
            _run_call.complete(self)  # a call's first run: it made no record (see _run_call)
            return
        if exc is None:
            if self.abandoned or self.in_body():
                self.position += 1  # left with `break`: that item's body ended normally
            self._before_last_commit()
            if self.failed:
                # Items were set aside: not COMPLETED, so the next run retries them.
                error = (
                    f"{len(self.failed)} item(s) failed and were set aside: {self.failed_text()}"
                )
                self.commit(self.done, ProcessState.FAILED, error=error, exact=True, hooks=False)
                log.warning("resumable.operation.failed", op_id=self.op_id, error=error)
                return
            self.commit(self.done, ProcessState.COMPLETED, exact=True, hooks=False)
            log.debug("resumable.operation.completed", op_id=self.op_id, position=self.done)
            return
        if isinstance(exc, LeaseLost):  # another process runs it now: write nothing more
            # Debug: the exception says all this to whoever catches it, and the store said
            # when it found the lease gone.
            log.debug("resumable.operation.lease_lost", op_id=self.op_id, error=str(exc))
            return
        exc = _signals.as_raised(exc)  # a cancellation by SIGTERM or SIGINT under asyncio
        paused = isinstance(exc, KeyboardInterrupt | SystemExit)
        new_state = ProcessState.PAUSED if paused else ProcessState.FAILED
        error = error_text(exc)
        event = "resumable.operation.paused" if paused else "resumable.operation.failed"
        # A call's exception reaches its caller, who decides: a line per failed call is noise.
        level = INFO if self.mode.saves_position else DEBUG
        if not self._can_undo():
            # The item in flight may have changed what no undo log sees (a list appended to,
            # an output file, a buffer): keep the last commit, and the items since run again.
            self._mark_only(new_state, error)
            self._restore_committed()
            log.log(
                level, event, op_id=self.op_id, position=self.committed, error=error,
                kept="last commit",
            )  # fmt: skip
            return
        undone = rollback(self.state) if isinstance(self.state, State) else []
        try:
            self.commit(self.done, new_state, error=error)
        except Exception as commit_exc:  # noqa: BLE001 - the user's exception must win
            log.error(
                "resumable.checkpoint.failed", op_id=self.op_id, error=repr(commit_exc),
                note="the previous checkpoint stands",
            )  # fmt: skip
            self._mark_only(new_state, error)
        # The position committed: the new one, or the last one if this commit failed.
        log.log(
            level, event, op_id=self.op_id, position=self.committed, error=error,
            rolled_back=undone,
        )  # fmt: skip

    def _before_last_commit(self) -> None:
        """Run the before_commit functions of the final commit; if one fails, say so.

        Nothing is written then: the last commit stands, and the operation is FAILED (PAUSED
        for Ctrl-C or SIGTERM) rather than left RUNNING by a live process.
        """
        try:
            for fn in self.hooks:
                fn()
        except BaseException as exc:
            paused = isinstance(exc, KeyboardInterrupt | SystemExit)
            error = f"a before_commit function failed: {type(exc).__name__}: {exc}"
            self._mark_only(ProcessState.PAUSED if paused else ProcessState.FAILED, error)
            self._restore_committed()
            raise

    def _can_undo(self) -> bool:
        """True if what the item in flight did can be taken back before committing.

        So it can when the state holds only immutable values, whose assignments the undo log
        puts back, and the run has no cp.open file and no cp.before_commit function.
        """
        if self.hooks or (self.outputs is not None and self.outputs.tracked):
            return False
        return not self.mode.keeps_state or undoable(self.payload_of)

    def _restore_committed(self) -> None:
        """Make the state the one the last commit holds (the first run's, if none)."""
        if not self.mode.keeps_state:
            return
        self.position = self.committed
        try:
            ckpt = self.store.latest_checkpoint(self.op_id) if self.seq else None
            self.set_state(self.state_in(ckpt))
        except Exception as exc:  # noqa: BLE001 - best effort while another error propagates
            log.error("resumable.state.unrestored", op_id=self.op_id, error=repr(exc))

    def _mark_only(self, new_state: ProcessState, error: str) -> None:
        """Record the outcome without a new checkpoint (when the checkpoint itself failed)."""
        try:
            self.op = self._record().to(new_state, error=error, heartbeat=time.time())
            self.store.save(self.op)
        except Exception as exc:  # noqa: BLE001 - best effort while another error propagates
            log.error("resumable.operation.unrecorded", op_id=self.op_id, error=repr(exc))

    def close(self) -> None:
        """Give back what entering took: the loop's file, cp.open files, SIGTERM, the lock."""
        if self.loop is not None:
            self.loop.close()  # closes an abandoned loop now, not whenever GC finds the cycle
        if self.outputs is not None:
            self.outputs.close()
        if self.token is not None:
            _current.reset(self.token)
            self.token = None
        if self.signals is not None:
            _signals.leave(self.signals)
            self.signals = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # --- what a @resumable call does inside its run ---------------------------------------

    def rerun(self) -> None:
        """Run a COMPLETED operation again (its code changed): back to RUNNING, in this run."""
        op = self._record().to(ProcessState.INITIALIZED)
        self.op = op.to(
            ProcessState.RUNNING, owner=Owner.current(), heartbeat=time.time(),
            attempts=op.attempts + 1, error=None,
        )  # fmt: skip
        if self.mode.record_on_entry:
            self.store.save(self.op)
        self.completed_before = False
        log.debug("resumable.operation.rerun", op_id=self.op_id)

    def count_attempt(self) -> None:
        """Record one more attempt on the operation, so it survives a crash."""
        op = self._record()
        self.op = op.with_changes(attempts=op.attempts + 1, heartbeat=time.time())
        self.store.save(self.op)

    def keep_result(self, record: ResultRecord, **meta: Any) -> None:
        """Store ``record`` with the final commit, and merge ``meta`` into the record then."""
        self.results.append(record)
        self.meta.update(meta)

    # --- committing -----------------------------------------------------------------------

    @property
    def done(self) -> int:
        """Items whose loop body has finished, counted over all runs."""
        return max(self.position, self.committed)

    def in_body(self) -> bool:
        """True while a loop has an item out, that is, inside the loop body."""
        return self.loop is not None and self.loop.in_body()

    def commit(  # noqa: PLR0912 - two of the branches are the crash points (_crashpoint)
        self,
        position: int,
        new_state: ProcessState = ProcessState.RUNNING,
        error: str | None = None,
        *,
        item: Any = NOTHING,
        exact: bool = False,
        hooks: bool = True,
    ) -> None:
        """Write a checkpoint at ``position`` (and the record, unless the run goes on).

        ``item`` is the loop's item finished at ``position``, where the caller knows it;
        ``exact``: every item the loop read has finished (see :meth:`Loop.record`);
        ``hooks``: run the before_commit functions first (unless the caller just did).
        """
        store = self.store
        debug = log.wants(DEBUG)
        started = time.perf_counter() if debug else 0.0
        total = self.total
        if new_state is _COMPLETED:
            progress = 1.0
        elif total:
            progress = position / total
            progress = progress if progress < 1.0 else 1.0  # not min(): a call, on every commit
        else:
            progress = 0.0
        ckpt: CheckpointRecord | None = None
        payload = b""
        lengths = None
        if self.mode.keeps_state:
            for fn in self.hooks if hooks else ():
                fn()  # an exception fails this commit
            meta = self.ckpt_meta
            if self.loop is not None:
                self.loop.record(meta, position, item, exact=exact)
            if self.outputs is not None and self.outputs.tracked:
                lengths = self.outputs.lengths(durable=store.durability == "full")
                meta["files"] = lengths
            ser, payload = serializers.encode(self.serializer, self.payload_of, "state")
            ckpt = CheckpointRecord.create(
                self.op_id, self.seq + 1, position, new_state, progress, ser, payload,
                dict(meta) if meta else None,
            )  # fmt: skip
        if _crashpoint.ARMED:  # a test of the job's crash safety (resumable.testing)
            _crashpoint.reached("before", "checkpoint" if ckpt else "record", self.op_id, position)
        if ckpt is not None and new_state is _RUNNING:
            store.add_checkpoint(ckpt)
        else:
            op = self._record()
            meta = {**op.meta, **self.meta} if self.meta else op.meta
            new_op = op.to(new_state, error=error, heartbeat=time.time(), meta=meta)
            results = self.results if new_state is _COMPLETED else ()
            store.save(new_op, ckpt, results)
            self.op = new_op
        self.seq += 1
        self.committed = position
        self.last_commit = time.monotonic()
        if lengths is not None:
            self.outputs.committed = lengths  # type: ignore[union-attr] # set with lengths
        if isinstance(self.state, State):
            forget(self.state)
        if _crashpoint.ARMED:
            _crashpoint.reached("after", "checkpoint" if ckpt else "record", self.op_id, position)
        if debug:
            log.debug(
                "resumable.checkpoint.saved", op_id=self.op_id, seq=self.seq, position=position,
                state=new_state.value, bytes=len(payload),
                seconds=round(time.perf_counter() - started, 6),
            )  # fmt: skip

    def _record(self) -> OperationRecord:
        """The operation record this run holds (set on entry: a run that entered has one)."""
        op = self.op
        if op is None:
            if self.mode is not CALL:  # pragma: no cover - _open sets it for the others
                raise RuntimeError(f"the run of {self.op_id!r} has no operation record")
            # A call's first run makes its RUNNING record only now (see _run_call).
            op = self.op = _run_call.first_record(self, ProcessState.RUNNING, self.began)
        return op

    # --- what cp.map reports ------------------------------------------------------------

    def next_map(self) -> int:
        """The number of the next ``cp.map`` of this run (its result namespace)."""
        number = self.maps
        self.maps += 1
        return number

    def note_map(self, number: int, items: int) -> None:
        """Note in the record that map ``number`` records ``items`` items (``resumable list``).

        As ``meta["maps"]`` (see :mod:`resumable._map_records`), written at once if it changed:
        the listing shows the map's items done / total while it runs and after a crash.
        """
        op = self._record()
        maps = op.meta.get("maps")
        maps = maps if isinstance(maps, dict) else {}
        if maps.get(str(number)) != items:
            self.op = op.with_changes(meta={**op.meta, "maps": {**maps, str(number): items}})
            self.store.save(self.op)

    def set_aside(self, key: Any) -> None:
        """Note an item that ``cp.map(..., on_error="skip")`` set aside (``cp.failed``)."""
        self.failed.add(key)

    def failed_text(self) -> str:
        """The keys set aside, for a message (the first ten)."""
        keys = sorted(map(short_repr, self.failed))
        return ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
