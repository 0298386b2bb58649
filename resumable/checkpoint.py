"""``checkpointed()`` and ``Checkpoint``: the one lifecycle of an operation.

Entering a block takes the operation's lock, loads its newest good checkpoint and marks it
RUNNING; loops commit position and state together at item boundaries; leaving the block
commits once more and marks the operation COMPLETED, FAILED or PAUSED. ``@resumable`` opens
its operations through this same class.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

from . import serializers
from ._explain import decide, final_lost
from ._log import log
from ._loop import open_source
from ._owner import Owner
from ._progress import ProgressSpec, check_progress, open_progress
from ._state import State
from .errors import LeaseLost, ResumableError
from .operation import (
    CheckpointRecord,
    OperationRecord,
    ProcessState,
    ResultRecord,
    validate_op_id,
)
from .serializers import Serializer
from .stores import resolve_store
from .stores.base import Store

if TYPE_CHECKING:  # tenacity and concurrent.futures load with the first cp.map
    from concurrent.futures import Executor

    from .retry import RetrySpec

__all__ = ["Checkpoint", "checkpointed"]

T = TypeVar("T")
R = TypeVar("R")

_current: contextvars.ContextVar[Checkpoint | None] = contextvars.ContextVar(
    "resumable_current_checkpoint", default=None
)

#: How often (seconds of loop time) a loop looks at the clock, whatever its item rate.
_CHECK_INTERVAL: Final = 0.01
_MAX_CHECK_STEP: Final = 1 << 16


def _check_number(name: str, value: object, *, allow_zero: bool, kind: type = float) -> None:
    if value is None:
        return
    ok_types: tuple[type, ...] = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        raise TypeError(f"{name} must be a {'whole ' if kind is int else ''}number, not {value!r}")
    number = float(value)  # type: ignore[arg-type] # checked just above
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, not {value!r}")


class Checkpoint:
    """An operation entered with ``with checkpointed(...) as cp``; see :func:`checkpointed`."""

    def __init__(
        self,
        op_id: str | None = None,
        *,
        store: str | Store | None = None,
        serializer: str | Serializer | None = None,
        state: Any = None,
        every: int | None = None,
        every_seconds: float | None = 1.0,
        lock: bool | float = True,
        shared: bool = False,
        fresh: bool = False,
        name: str | None = None,
    ) -> None:
        if op_id is not None:
            validate_op_id(op_id)
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty str, not {name!r}")
        if store is not None and not isinstance(store, str | Store):
            raise TypeError(f"store must be a URL or a Store, not {type(store).__name__}")
        _check_number("every", every, allow_zero=False, kind=int)
        _check_number("every_seconds", every_seconds, allow_zero=True)
        if not isinstance(lock, bool):
            _check_number("lock", lock, allow_zero=True)
        if not isinstance(fresh, bool):
            raise TypeError(f"fresh must be True or False, not {fresh!r}")
        _check_shared(shared, lock, fresh)
        if serializer is None:
            from ._config import current

            serializer = current().serializer
        self._serializer = serializers.get_serializer(serializer)
        self._store_spec = store
        self._op_id_arg = op_id
        self._name = name
        self._initial = state
        self._every = 1 if every_seconds == 0 else every
        self._every_seconds = every_seconds or None
        self._lock_timeout: float | None = None if lock is True else float(lock)
        self._locking = lock is not False
        self._fresh = fresh
        self._shared = shared
        # Set by @resumable: its operations keep no state checkpoints (stateless), and write
        # their record at the end only, unless attempts must be counted first (lazy).
        self._stateless = False
        self._lazy = False
        self._active = False
        self._reset_run()

    def _reset_run(self) -> None:
        self.op_id: str | None = self._op_id_arg
        self._store: Store | None = None
        self._lock: Any = None
        self._op: OperationRecord | None = None
        self._state: Any = None
        self._payload_of: Any = None
        self._seq = 0
        self._restored = 0  # position the previous run committed
        self._position = 0  # items accounted for in this run (skipped or finished)
        self._committed = 0  # position of the newest checkpoint
        self._last_commit = time.monotonic()
        self._total: int | None = None
        self._resumed = False
        self._completed_before = False
        self._gen: Generator[Any, None, None] | None = None
        self._abandoned = False
        self._children: dict[int, int] = {}
        self._failed: set[Any] = set()  # item keys cp.map set aside
        self._maps = 0  # cp.map calls so far in this run: each has its own result namespace
        self._results: list[ResultRecord] = []  # stored with the final commit (@resumable)
        self._meta: dict[str, Any] = {}  # merged into the operation record at the final commit
        self._token: contextvars.Token[Checkpoint | None] | None = None
        self._parent: Checkpoint | None = None
        self._old_sigterm: Any = None
        self._owner = ""  # this participant's name in claims (shared blocks)

    # --- read-only facts ------------------------------------------------------------------

    @property
    def state(self) -> Any:
        """The local state: restored on re-runs; attribute and item access for dict states.

        Still readable after the block, with the final values.
        """
        if self._state is None:
            raise RuntimeError(
                "cp.state is available once `with checkpointed(...) as cp:` is entered"
            )
        return self._state

    @property
    def position(self) -> int:
        """Items whose loop body has finished, counted over all runs."""
        return max(self._position, self._committed)

    @property
    def resumed(self) -> bool:
        """True if this run continues progress that an earlier, unfinished run left.

        Progress is a checkpoint (the state and position a loop committed) or a result an
        earlier run recorded: a ``cp.map`` item's or a ``cp.step``'s, which are stored as
        they finish, so a run killed before its first checkpoint counts too. Decided at
        entry, so it can be read before the work starts. False for a first run, and for an
        operation that had already completed (see :attr:`completed_before`). In a shared
        block, results other participants recorded before this one entered count too.
        """
        return self._resumed

    @property
    def completed_before(self) -> bool:
        """True if the operation was already COMPLETED when the block was entered."""
        return self._completed_before

    @property
    def progress(self) -> float:
        """Fraction done in [0, 1] where the total is known, else 0 (1 once completed)."""
        if self._completed_before:
            return 1.0
        if self._total:
            return min(1.0, self.position / self._total)
        return 0.0

    @property
    def failed(self) -> frozenset[Any]:
        """Keys of items that ``cp.map(..., on_error="skip")`` set aside in this run."""
        return frozenset(self._failed)

    @property
    def store(self) -> Store | None:
        """The store this block writes to (None before it is entered)."""
        return self._store

    def __repr__(self) -> str:
        return f"<Checkpoint {self.op_id!r} position={self.position}>"

    def _require_active(self, what: str) -> None:
        if not self._active:
            raise RuntimeError(
                f"cp.{what} is only available inside `with checkpointed(...) as cp:`"
            )

    # --- entering -------------------------------------------------------------------------

    def __enter__(self) -> Checkpoint:
        if self._active:
            raise RuntimeError("this checkpointed() block is already active; make a new one")
        self._reset_run()
        parent = self._parent = _current.get()
        if self.op_id is None:
            if parent is None:
                raise ValueError(
                    "checkpointed() needs an op_id, such as checkpointed('resize-photos'), "
                    "unless it is nested in a @resumable call or another checkpointed block"
                )
            self.op_id = parent._child_id(self._name)
        op_id = self.op_id
        store = self._store = resolve_store(self._store_spec)
        if self._shared:
            if not store.shares:
                raise store._cannot_share()
            from ._shared import owner_token

            self._owner = owner_token()
        self._lock = store.lock(op_id) if self._locking and not self._shared else None
        try:  # everything after taking the lock undoes itself if interrupted
            if self._lock is not None:
                self._lock.acquire(self._lock_timeout)
            self._open(store, op_id)
            self._install_sigterm(parent)
            self._token = _current.set(self)
            self._active = True
            return self  # noqa: TRY300 - in the try: an interrupt here must release the lock too
        except BaseException:
            self._active = False
            if self._token is not None:
                _current.reset(self._token)
                self._token = None
            self._release()
            raise

    def _open(self, store: Store, op_id: str) -> None:
        if self._fresh:
            with store.errors(f"discard operation {op_id!r}"):
                store.delete_operation(op_id)
            log.info("resumable.operation.discarded", op_id=op_id)
        op = store.load_operation(op_id)
        ckpt = None if self._stateless or self._shared else store.latest_checkpoint(op_id)
        if ckpt is not None:
            self._seq = ckpt.seq
            self._restored = self._committed = ckpt.position
            self._set_state(serializers.decode(ckpt.serializer, ckpt.payload))
        else:
            self._set_state(self._initial_state())
        # Why this run skips, resumes or starts: the words `resumable show` prints too.
        reason = decide(op_id, op, ckpt).reason if log.wants(logging.INFO) else ""
        done = ProcessState.COMPLETED
        if op is not None and final_lost(op, ckpt):
            # COMPLETED, but its final checkpoint failed its checksum and an older one was
            # loaded: that is not the final state, so the operation is not done. Resume from
            # it (the items after it run again; stored step and map results are reused)
            # rather than report completion with it. COMPLETED -> RECOVERING -> RUNNING.
            assert ckpt is not None  # noqa: S101 - final_lost says so
            log.warning(
                "resumable.operation.reopened", op_id=op_id, using_seq=ckpt.seq,
                position=ckpt.position,
            )  # fmt: skip
            op = op.to(ProcessState.RECOVERING)
        if (op is not None and op.state is done) or (ckpt is not None and ckpt.state is done):
            self._completed_before = True
            if op is not None and op.state is not done:
                # The final checkpoint was written and the process died before the record
                # (the file store writes them one after the other): finish the record now.
                op = op.to(done, heartbeat=time.time(), error=None)
                store.save(op)
                log.info("resumable.operation.repaired", op_id=op_id, state=done.value)
            self._op = op
            log.info("resumable.operation.skipped", op_id=op_id, reason=reason)
            return
        me = Owner.current()
        now = time.time()
        earlier_run = op is not None  # and it did not complete (that returned above)
        if op is None:
            op = OperationRecord.new(
                op_id, self._name or op_id, ProcessState.RUNNING, owner=me, heartbeat=now,
                attempts=1,
            )  # fmt: skip
        else:
            if op.state is ProcessState.RUNNING and op.owner != me and not self._shared:
                log.warning(
                    "resumable.operation.recovered", op_id=op_id, dead_owner=op.owner,
                    position=self._restored,
                )  # fmt: skip
            op = op.to(
                ProcessState.RUNNING, owner=me, heartbeat=now, attempts=op.attempts + 1,
                error=None,
            )  # fmt: skip
        if not self._lazy:
            store.save(op)
        self._op = op
        # An earlier run's progress is a checkpoint, or results it recorded (cp.map items,
        # cp.step values) even if it died before its first checkpoint (see `resumed`).
        self._resumed = ckpt is not None or (earlier_run and _has_results(store, op_id))
        log.info(
            "resumable.operation.resumed" if self._resumed else "resumable.operation.started",
            op_id=op_id, position=self._restored, attempt=op.attempts, reason=reason,
        )  # fmt: skip

    def _initial_state(self) -> Any:
        """This run's copy of ``state=``, made by a round trip through the serializer.

        Not ``copy.deepcopy``: a state that cannot be checkpointed (a generator; a lock
        under pickle) must fail here, at entry, with the SerializationError that names its
        field (``state.g``), as a commit would name it, and not with deepcopy's TypeError or
        at the first commit. The first run also sees just what a resumed one would load.
        """
        if self._initial is None:
            return None
        written_by, payload = serializers.encode(self._serializer, self._initial, "state")
        return serializers.decode(written_by, payload)

    def _set_state(self, value: Any) -> None:
        if value is None or isinstance(value, dict):
            value = State(value)
        elif isinstance(value, Mapping):
            value = State(dict(value))
        self._state = value
        # What gets serialized: a State's plain dict (so loading never needs this class).
        self._payload_of = value.to_dict() if isinstance(value, State) else value
        if isinstance(value, State):
            value._track(self)

    def _child_id(self, name: str | None) -> str:
        """A stable id for a block nested in this one.

        Made of the parent's id, the position of the item in flight, and the child's name
        or its order of entry at that position: the same on every re-run of that item.
        """
        at = self._position
        if name is None:
            k = self._children.get(at, 0)
            self._children[at] = k + 1
            name = str(k)
        return validate_op_id(f"{self.op_id}/{at}:{name}")

    def _install_sigterm(self, parent: Checkpoint | None) -> None:
        # Only the outermost block that has a position to save installs it: a @resumable
        # call (stateless) has none, and nested blocks are covered by the outer one's.
        while parent is not None and parent._stateless:
            parent = parent._parent
        if self._stateless or parent is not None:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
            return  # the application handles SIGTERM itself; leave its handler alone
        self._old_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)

    # --- leaving --------------------------------------------------------------------------

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._completed_before:
                self._leave(exc)
        finally:
            self._active = False
            self._gen = None  # closes an abandoned loop now, not whenever GC finds the cycle
            if self._token is not None:
                _current.reset(self._token)
            self._release()

    async def __aenter__(self) -> Checkpoint:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _leave(self, exc: BaseException | None) -> None:
        if exc is None:
            if self._abandoned or self._in_body():
                self._position += 1  # left with `break`: that item's body ended normally
            if self._failed:
                # Items were set aside: not COMPLETED, so the next run retries them.
                error = (
                    f"{len(self._failed)} item(s) failed and were set aside: {self._failed_text()}"
                )
                self._commit(self.position, ProcessState.FAILED, error=error)
                log.warning("resumable.operation.failed", op_id=self.op_id, error=error)
                return
            self._commit(self.position, ProcessState.COMPLETED)
            log.info("resumable.operation.completed", op_id=self.op_id, position=self.position)
            return
        if isinstance(exc, LeaseLost):  # another process runs it now: write nothing more
            log.warning("resumable.operation.lease_lost", op_id=self.op_id, error=str(exc))
            return
        undone = self._state._rollback() if isinstance(self._state, State) else []
        paused = isinstance(exc, KeyboardInterrupt | SystemExit)
        new_state = ProcessState.PAUSED if paused else ProcessState.FAILED
        error = f"{type(exc).__name__}: {exc}"
        try:
            self._commit(self.position, new_state, error=error)
        except Exception as commit_exc:  # noqa: BLE001 - the user's exception must win
            log.error(
                "resumable.checkpoint.failed", op_id=self.op_id, error=repr(commit_exc),
                note="the previous checkpoint stands",
            )  # fmt: skip
            self._mark_only(new_state, error)
        log.info(
            "resumable.operation.paused" if paused else "resumable.operation.failed",
            op_id=self.op_id, position=self.position, error=error, rolled_back=undone,
        )  # fmt: skip

    def _rerun(self) -> None:
        """Run a COMPLETED operation again (its code changed): back to RUNNING, in this block."""
        assert self._store is not None and self._op is not None  # noqa: S101 - set on enter
        op = self._op.to(ProcessState.INITIALIZED)
        self._op = op.to(
            ProcessState.RUNNING, owner=Owner.current(), heartbeat=time.time(),
            attempts=op.attempts + 1, error=None,
        )  # fmt: skip
        if not self._lazy:
            self._store.save(self._op)
        self._completed_before = False
        log.info("resumable.operation.rerun", op_id=self.op_id)

    def _count_attempt(self) -> None:
        """Record one more attempt on the operation, so it survives a crash."""
        assert self._store is not None and self._op is not None  # noqa: S101 - set on enter
        self._op = self._op.with_changes(attempts=self._op.attempts + 1, heartbeat=time.time())
        self._store.save(self._op)

    def _failed_text(self) -> str:
        keys = sorted(map(repr, self._failed))
        return ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")

    def _mark_only(self, new_state: ProcessState, error: str) -> None:
        """Record the outcome without a new checkpoint (when the checkpoint itself failed)."""
        assert self._store is not None and self._op is not None  # noqa: S101 - set on enter
        try:
            self._op = self._op.to(new_state, error=error, heartbeat=time.time())
            self._store.save(self._op)
        except Exception as exc:  # noqa: BLE001 - best effort while another error propagates
            log.error("resumable.operation.unrecorded", op_id=self.op_id, error=repr(exc))

    def _release(self) -> None:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- committing -----------------------------------------------------------------------

    def commit(self) -> None:
        """Write a checkpoint now.

        Inside an ``iterate`` body, the current item counts as finished: call it once the
        state reflects that item.
        """
        self._require_active("commit()")
        if self._shared:
            raise ValueError(
                "cp.commit() has nothing to commit in a shared block: cp.map and cp.step "
                "record each result as it finishes, and the state is not shared"
            )
        if self._completed_before:
            return
        self._commit(self._position + 1 if self._in_body() else self.position)

    def _in_body(self) -> bool:
        """True while a loop has an item out, that is, inside the loop body."""
        return self._gen is not None and bool(getattr(self._gen, "gi_suspended", False))

    def _commit(
        self,
        position: int,
        new_state: ProcessState = ProcessState.RUNNING,
        error: str | None = None,
    ) -> None:
        store, op = self._store, self._op
        assert store is not None and op is not None and self.op_id is not None  # noqa: S101 - set on enter
        debug = log.wants(logging.DEBUG)
        started = time.perf_counter() if debug else 0.0
        if new_state is ProcessState.COMPLETED:
            progress = 1.0
        else:
            progress = min(1.0, position / self._total) if self._total else 0.0
        ckpt: CheckpointRecord | None = None
        payload = b""
        if not (self._stateless or self._shared):  # a @resumable call has no state to save
            ser, payload = serializers.encode(self._serializer, self._payload_of, "state")
            ckpt = CheckpointRecord.create(
                self.op_id, self._seq + 1, position, new_state, progress, ser, payload
            )
        if ckpt is not None and new_state is ProcessState.RUNNING:
            store.add_checkpoint(ckpt)
        else:
            meta = {**op.meta, **self._meta} if self._meta else op.meta
            new_op = op.to(new_state, error=error, heartbeat=time.time(), meta=meta)
            results = self._results if new_state is ProcessState.COMPLETED else ()
            store.save(new_op, ckpt, results)
            self._op = new_op
        self._seq += 1
        self._committed = position
        self._last_commit = time.monotonic()
        if isinstance(self._state, State):
            self._state._forget()
        if debug:
            log.debug(
                "resumable.checkpoint.saved", op_id=self.op_id, seq=self._seq, position=position,
                state=new_state.value, bytes=len(payload),
                seconds=round(time.perf_counter() - started, 6),
            )  # fmt: skip

    # --- loops ----------------------------------------------------------------------------

    def iterate(
        self, iterable: Iterable[T], *, total: int | None = None, progress: ProgressSpec = False
    ) -> Iterator[T]:
        """Yield the items of ``iterable`` that earlier runs did not finish.

        The position counts items whose loop body has finished; it is committed together
        with the state. A ``Sequence`` resumes by index in O(1); an object with
        ``seek(position)`` resumes by seeking; any other iterable is fast-forwarded without
        running the body.

        Args:
            iterable: the items.
            total: the number of items, for progress, where ``len()`` cannot tell.
            progress: True: a tqdm bar that starts at the resumed position, its rate and time
                left counting only this run's items; or a callable, called with a
                :class:`~resumable.Progress` at most ten times a second and at the end.
        """
        return self._iterate(iterable, total, progress, numbered=False)

    def enumerate(
        self, iterable: Iterable[T], *, total: int | None = None, progress: ProgressSpec = False
    ) -> Iterator[tuple[int, T]]:
        """Like :meth:`iterate`, yielding ``(index, item)`` with the absolute index."""
        return self._iterate(iterable, total, progress, numbered=True)

    def _iterate(
        self, iterable: Any, total: Any, progress: Any, *, numbered: bool
    ) -> Iterator[Any]:
        self._require_active("iterate()")
        if self._shared:
            raise ValueError(
                "cp.iterate() cannot run in a shared block (checkpointed(shared=True)): a "
                "sequential loop cannot be split among processes; use cp.map(fn, items), "
                "which does"
            )
        _check_number("total", total, allow_zero=True, kind=int)
        check_progress(progress)
        if self._in_body():
            raise RuntimeError(
                "cp.iterate() loops cannot nest in one block; open a nested "
                "`with checkpointed() as inner:` for the inner loop"
            )
        if not isinstance(iterable, Iterable):
            raise TypeError(f"cp.iterate() needs an iterable, not {type(iterable).__name__}")
        if self._completed_before:
            self._gen = None
            return iter(())
        gen = self._loop(iterable, total, progress, numbered)
        self._gen = gen
        return gen

    def _loop(
        self, iterable: Any, total: int | None, progress: ProgressSpec, numbered: bool
    ) -> Generator[Any, None, None]:
        start = self._position
        skip = max(0, self._restored - start)
        source, skipped = open_source(iterable, skip, self.op_id)
        pos = self._position = start + skipped
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self._total = None if total is None else start + total
        assert self.op_id is not None  # noqa: S101 - set on enter
        reporter = open_progress(progress, self.op_id, skipped=pos, total=self._total)
        if numbered:
            source = zip(itertools.count(pos), source, strict=False)
        every = self._every
        check_at, check_pos, check_time = pos + 1, pos, time.monotonic()
        self._abandoned = False
        try:
            for item in source:
                try:
                    yield item
                except GeneratorExit:
                    self._abandoned = True  # closed mid-item: `break`, or an exception
                    raise
                pos += 1
                self._position = pos  # one store marks the item finished (see _state.py)
                if pos >= check_at:
                    now = time.monotonic()
                    if (every is not None and pos - self._committed >= every) or (
                        self._every_seconds is not None
                        and now - self._last_commit >= self._every_seconds
                    ):
                        self._commit(pos)
                    check_at = pos + self._next_step(pos - check_pos, now - check_time, pos)
                    check_pos, check_time = pos, now
                    if reporter is not None:
                        reporter.update(pos)
        finally:
            if reporter is not None:
                reporter.update(self._position)
                reporter.close()

    def _next_step(self, items: int, elapsed: float, pos: int) -> int:
        """Items until the next look at the clock: about 10 ms of loop time."""
        step = int(items * _CHECK_INTERVAL / elapsed) if elapsed > 0 else items * 2
        step = max(1, min(step, items * 2, _MAX_CHECK_STEP))
        if self._every is not None:
            step = max(1, min(step, self._committed + self._every - pos))
        return step

    # --- parallel maps ---------------------------------------------------------------------

    @overload
    def map(
        self,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        *,
        key: Callable[[T], Any] | None = None,
        executor: Executor | None = None,
        workers: int | None = None,
        retry: RetrySpec = None,
        on_error: Literal["raise"] = "raise",
        progress: ProgressSpec = False,
    ) -> list[R]: ...

    @overload
    def map(
        self,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        *,
        key: Callable[[T], Any] | None = None,
        executor: Executor | None = None,
        workers: int | None = None,
        retry: RetrySpec = None,
        on_error: Literal["skip"],
        progress: ProgressSpec = False,
    ) -> list[R | BaseException]: ...

    def map(
        self,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        *,
        key: Callable[[T], Any] | None = None,
        executor: Executor | None = None,
        workers: int | None = None,
        retry: RetrySpec = None,
        on_error: str = "raise",
        progress: ProgressSpec = False,
    ) -> list[R] | list[R | BaseException]:
        """Apply ``fn`` to every item, in parallel, recording each item's result as it finishes.

        A re-run (after a crash, or a failure) runs only the items whose result was not
        recorded, and returns all results in input order.

        Args:
            fn: called once per item (it must pickle for a process pool).
            iterable: the items.
            key: names an item across runs (default: its index); must give a str, int,
                bytes or other digestible value.
            executor: any ``concurrent.futures.Executor`` (threads, processes, a cluster's);
                default: a thread pool of ``workers`` threads made for this call.
            workers: threads for the default pool (default: ``min(32, cpu count + 4)``).
            retry: per-item retries: attempts (int), tenacity keyword arguments (dict), or a
                tenacity ``Retrying``.
            on_error: ``"raise"`` (default): the first failure stops the map and is
                re-raised; ``"skip"``: failures are set aside in ``cp.failed``, their slots in
                the result hold the exception, the rest finish, and the block ends FAILED so
                that the next run retries only those items.
            progress: True: a tqdm bar from the items done before, its rate and time left
                counting only this call's items; or a callable, called with a
                :class:`~resumable.Progress` at most ten times a second and at the end.

        Returns:
            The results, in the order of ``iterable``.
        """
        self._require_active("map()")
        from resumable._map import run_map
        from resumable.retry import validate_retry

        return run_map(
            self, fn, iterable, key=key, executor=executor, workers=workers,
            retry=validate_retry(retry), on_error=on_error, progress=progress,
        )  # fmt: skip

    # --- steps ----------------------------------------------------------------------------

    def step(self, name: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run ``fn(*args, **kwargs)`` once per operation; later runs return its stored result.

        Raises:
            ResumableError: the operation completed without this step, so it cannot run now.
        """
        self._require_active("step()")
        if not isinstance(name, str) or not name:
            raise TypeError(f"a step needs a non-empty str name, not {name!r}")
        if not callable(fn):
            raise TypeError(f"cp.step({name!r}, fn): fn must be callable, not {fn!r}")
        store, op_id, key = self._store, self.op_id, f"step:{name}"
        assert store is not None and op_id is not None  # noqa: S101 - set on enter
        rec = store.load_result(op_id, key)
        if rec is not None:
            log.debug("resumable.step.skipped", op_id=op_id, step=name)
            value: R = serializers.decode(rec.serializer, rec.payload)
            return value
        if self._completed_before:
            raise ResumableError(
                f"step {name!r} is not part of the completed operation {op_id!r}, and a "
                "completed operation runs no step; reset it (fresh=True) to run it again"
            )
        started = time.perf_counter()
        if self._shared:
            from ._shared import run_shared_step

            value = run_shared_step(self, name, fn, *args, **kwargs)
        else:
            value = fn(*args, **kwargs)
            ser, payload = serializers.encode(self._serializer, value, f"result of step {name!r}")
            store.put_result(ResultRecord.create(op_id, key, ser, payload))
        log.info(
            "resumable.step.done", op_id=op_id, step=name,
            seconds=round(time.perf_counter() - started, 6),
        )  # fmt: skip
        return value


def _has_results(store: Store, op_id: str) -> bool:
    """Whether the store holds any result record of ``op_id`` (counted, not read)."""
    return store.record_counts(op_id)["results"] > 0


def _check_shared(shared: object, lock: object, fresh: bool) -> None:
    if not isinstance(shared, bool):
        raise TypeError(f"shared must be True or False, not {shared!r}")
    if shared and lock is not True:
        raise ValueError(
            "shared=True takes no operation lock (its participants run at once, claiming "
            "batches of items under leases); leave lock= at its default"
        )
    if shared and fresh:
        raise ValueError(
            "fresh=True cannot be combined with shared=True: one participant would discard "
            "the others' work. Reset the operation before starting the participants"
        )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def checkpointed(
    op_id: str | None = None,
    *,
    store: str | Store | None = None,
    serializer: str | Serializer | None = None,
    state: Any = None,
    every: int | None = None,
    every_seconds: float | None = 1.0,
    lock: bool | float = True,
    shared: bool = False,
    fresh: bool = False,
    name: str | None = None,
) -> Checkpoint:
    """Open a resumable operation as a ``with`` (or ``async with``) block.

    Args:
        op_id: the operation's id, any non-empty string up to 1,024 characters. Optional
            inside a ``@resumable`` call or another block, which derive a child id.
        store: a store URL or :class:`Store` (default: ``configure()``, ``RESUMABLE_STORE``
            or ``sqlite:///.resumable/state.db``).
        serializer: ``"auto"`` (default), ``"pickle"``, ``"dill"``, ``"json"`` or an object.
        state: the initial state, used only on the first run; a dict becomes ``cp.state``
            with attribute access. It must be serializable by ``serializer``: the first run
            gets a copy made through it, and entering raises SerializationError naming the
            field (``state.g``) that cannot be written.
        every: commit at least every ``every`` items.
        every_seconds: commit at least this often (default 1.0; 0 commits every item).
        lock: True (default): raise OperationLocked if another process runs this operation;
            a number: wait up to that many seconds for it; False: do not lock.
        shared: let several processes (on one machine with SQLite, on many with
            PostgreSQL) enter this operation at once: ``cp.map`` splits the items among them
            and each returns all results; ``cp.step`` runs once across them; ``cp.iterate``
            and ``cp.commit`` are refused, and the state is not saved. A participant that dies
            loses its claims when its lease (the store's ``?lease=``, default 10 s) runs out.
        fresh: discard earlier progress and start over.
        name: a human-readable name (default: the op id); names a child block's id.

    Returns:
        A :class:`Checkpoint` to enter.
    """
    return Checkpoint(
        op_id, store=store, serializer=serializer, state=state, every=every,
        every_seconds=every_seconds, lock=lock, shared=shared, fresh=fresh, name=name,
    )  # fmt: skip
