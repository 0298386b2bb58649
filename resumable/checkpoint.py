"""``checkpointed()`` and ``Checkpoint``: an operation as a ``with`` block.

The public face of the one lifecycle in :mod:`resumable._run`: entering a block starts a run
(lock, load the newest good checkpoint, RUNNING), loops commit position and state together at
item boundaries, and leaving commits once more and marks the operation COMPLETED, FAILED or
PAUSED. ``@resumable`` runs its calls through that same lifecycle.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, overload

from . import _block_code, _crashpoint, _trace, serializers
from ._checks import check_number, path_name
from ._lines import LineFile, check_encoding
from ._log import log
from ._loop import open_loop, run_loop
from ._outputs import Outputs, check_mode
from ._progress import ProgressSpec, check_progress
from ._run import BLOCK, SHARED, Run, Spec
from .errors import ResumableError
from .operation import ResultRecord, validate_op_id
from .serializers import Serializer
from .stores.base import Store

if TYPE_CHECKING:  # tenacity and concurrent.futures load with the first cp.map
    from concurrent.futures import Executor

    from .retry import RetrySpec

__all__ = ["Checkpoint", "checkpointed"]

T = TypeVar("T")
R = TypeVar("R")


class _StateAttribute:
    """The local state: restored on re-runs; attribute and item access for dict states.

    Still readable after the block: the final values, or after an exception, the values
    committed with ``cp.position``. (An exception exit commits the last finished item,
    the interrupted item's assignments undone, if the state holds only values that
    cannot change in place; otherwise, or with a ``cp.open`` file or a
    ``cp.before_commit`` function, it keeps the last commit.)
    """

    # Entering a block puts its run's state in the instance's __dict__, which wins over this
    # (a non-data descriptor): `cp.state` in a loop body is then a plain attribute read, not
    # a Python call (a property cost about as much as the undo log of an assignment).

    def __get__(self, cp: Checkpoint | None, owner: type | None = None) -> Any:
        if cp is None:
            return self
        raise RuntimeError("cp.state is available once `with checkpointed(...) as cp:` is entered")


class Checkpoint:
    """An operation entered with ``with checkpointed(...) as cp``; see :func:`checkpointed`."""

    state: Any = _StateAttribute()

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
        check_number("every", every, allow_zero=False, kind=int)
        check_number("every_seconds", every_seconds, allow_zero=True)
        if not isinstance(lock, bool):
            check_number("lock", lock, allow_zero=True)
        if not isinstance(fresh, bool):
            raise TypeError(f"fresh must be True or False, not {fresh!r}")
        _check_shared(shared, lock, fresh)
        if serializer is None:
            from ._config import current

            serializer = current().serializer
        self._spec = Spec(
            op_id, store, serializers.get_serializer(serializer), SHARED if shared else BLOCK,
            initial=state, every=1 if every_seconds == 0 else every,
            every_seconds=every_seconds or None, lock=lock is not False,
            lock_timeout=None if lock is True else float(lock), fresh=fresh, name=name,
        )  # fmt: skip
        self.op_id: str | None = op_id
        self._run: Run | None = None  # the run in progress, or the last one
        self._active = False
        self._span: _trace.OperationSpan | None = None  # with OpenTelemetry configured

    # --- read-only facts ------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Items whose loop body has finished, counted over all runs."""
        return 0 if self._run is None else self._run.done

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
        return self._run is not None and self._run.resumed

    @property
    def completed_before(self) -> bool:
        """True if the operation was already COMPLETED when the block was entered."""
        return self._run is not None and self._run.completed_before

    @property
    def progress(self) -> float:
        """Fraction done in [0, 1] where the total is known, else 0 (1 once completed)."""
        run = self._run
        if run is None:
            return 0.0
        if run.completed_before:
            return 1.0
        if run.total:
            return min(1.0, run.done / run.total)
        return 0.0

    @property
    def failed(self) -> frozenset[Any]:
        """Keys of items that ``cp.map(..., on_error="skip")`` set aside in this run."""
        return frozenset(() if self._run is None else self._run.failed)

    @property
    def store(self) -> Store | None:
        """The store this block writes to (None before it is entered)."""
        return None if self._run is None else self._run.store

    def __repr__(self) -> str:
        return f"<Checkpoint {self.op_id!r} position={self.position}>"

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "state":
            raise AttributeError("cp.state cannot be replaced; assign its fields (cp.state.x = 1)")
        object.__setattr__(self, name, value)

    def _show_state(self) -> None:
        """Make ``cp.state`` the run's state (see :class:`_StateAttribute`)."""
        run = self._run
        if run is None or run.state is None:
            self.__dict__.pop("state", None)
        else:
            self.__dict__["state"] = run.state

    def _active_run(self, what: str) -> Run:
        run = self._run
        if not self._active or run is None:
            raise RuntimeError(
                f"cp.{what} is only available inside `with checkpointed(...) as cp:`"
            )
        return run

    # --- entering and leaving -------------------------------------------------------------

    def __enter__(self) -> Checkpoint:
        return self._enter(sys._getframe(1))

    def _enter(self, caller: FrameType) -> Checkpoint:
        """Enter from ``caller``'s ``with`` (or ``async with``) statement."""
        if self._active:
            raise RuntimeError("this checkpointed() block is already active; make a new one")
        self._run, self.op_id = None, self._spec.op_id
        run = self._run = Run(self._spec)
        run.code = _block_code.digest(caller)
        self._show_state()
        self._span = _trace.start_operation(run.op_id, shared=run.mode.shared)
        try:
            run.__enter__()
            self._show_state()
            self.op_id, self._active = run.op_id, True
            return self  # noqa: TRY300 - in the try: an interrupt here must release the lock too
        except BaseException as exc:
            run.close()
            _trace.end_operation(self._span, run, exc)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._run is not None:
                self._run.__exit__(exc_type, exc, tb)
        except BaseException as error:
            exc = error  # leaving failed (its last commit did): the span says so
            raise
        finally:
            self._active = False
            self._show_state()  # leaving may have put the state back to the last commit
            _trace.end_operation(self._span, self._run, exc)

    async def __aenter__(self) -> Checkpoint:
        return self._enter(sys._getframe(1))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # --- committing -----------------------------------------------------------------------

    def commit(self) -> None:
        """Write a checkpoint now.

        Inside an ``iterate`` body, the current item counts as finished: call it once the
        state reflects that item.
        """
        run = self._active_run("commit()")
        if run.mode.shared:
            raise ValueError(
                "cp.commit() has nothing to commit in a shared block: cp.map and cp.step "
                "record each result as it finishes, and the state is not shared"
            )
        if run.completed_before:
            return
        in_body = run.in_body()
        run.commit(run.position + 1 if in_body else run.done, exact=in_body)

    def before_commit(self, fn: Callable[[], object]) -> Callable[[], object]:
        """Call ``fn()`` before every commit of this block, from now until it ends.

        For output that is not a ``cp.open`` file: flush a buffer, insert a batch of rows.
        What ``fn`` wrote then belongs to the checkpoint that follows. An exception in ``fn``
        fails that commit and propagates (the previous checkpoint stands). A block with such
        a function that ends in an exception keeps its last commit (see ``cp.state``).

        Returns:
            ``fn``, so that it can be used as a decorator.
        """
        run = self._active_run("before_commit()")
        if not callable(fn):
            raise TypeError(f"cp.before_commit(fn) needs a callable, not {fn!r}")
        if run.mode.shared:
            raise ValueError(
                "cp.before_commit() has no commit to run before in a shared block: its "
                "results are recorded as they finish"
            )
        run.hooks.append(fn)
        return fn

    def open(self, path: str | os.PathLike[str], mode: str = "a", **open_kwargs: Any) -> IO[Any]:
        """Open an output file that the block writes exactly once, whatever kills it.

        Its length is committed with every checkpoint (flushed first; fsynced under
        ``durability=full``); re-entering the unfinished operation truncates it back to that
        length before this returns, so what an interrupted run wrote after its last commit
        is gone, and the items that wrote it run again. Call it outside loop bodies, before
        the loop that writes (code before the loop runs again on a resume: write a header only
        if ``f.tell() == 0``). It returns a real file object, closed when the block ends
        (closing it earlier, or using it in a ``with``, is fine).

        Args:
            path: the file, named in the checkpoint as given (not resolved).
            mode: ``"a"`` (default: the first run appends to what is there), ``"w"`` (the
                first run starts the file empty), or ``"ab"``/``"wb"`` for bytes.
            **open_kwargs: passed to :func:`open` (``encoding``, ``newline``, ``buffering``).

        Raises:
            CheckpointCorrupt: the file is shorter than the length committed (or missing):
                something else changed it. Nothing was truncated.
        """
        run = self._active_run("open()")
        name = check_mode(path, mode)
        if run.mode.shared:
            raise ValueError(
                "cp.open() cannot be used in a shared block: its participants write at once "
                "and commit no position; write one file per item, or use a non-shared block"
            )
        if run.in_body():
            raise RuntimeError(
                f"cp.open({name!r}) must be called before the loop, not inside its body: the "
                "file is truncated back to its committed length when it is opened"
            )
        outputs = run.outputs
        if outputs is None:
            committed = run.restored_meta.get("files")
            outputs = run.outputs = Outputs(run.op_id, dict(committed or {}))
        first = name not in outputs.committed
        f = outputs.open(name, mode, open_kwargs, completed=run.completed_before)
        if first and not run.completed_before:
            run.commit(run.done)  # its starting length, before anything is written to it
        return f

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

    def lines(
        self,
        path: str | os.PathLike[str],
        *,
        encoding: str = "utf-8",
        errors: str = "strict",
        progress: ProgressSpec = False,
    ) -> Iterator[str]:
        """Yield the lines of a text file that earlier runs did not finish.

        Like :meth:`iterate` over ``open(path)``, but a re-run starts at the first
        unfinished line in O(1), however large the file: the byte offset past the last
        finished line is committed with the position, with a digest of that line, which a
        re-run checks before it seeks. Each line ends in a newline (a CRLF is read as
        one newline, as :func:`open` does), except a last line without one. Works under
        ``csv.reader(cp.lines(path))`` when every record fits on one line (the position
        counts lines, and a quoted field holding a newline makes a row span two).

        Args:
            path: the file.
            encoding: its encoding: one in which a newline is the byte 0x0A (UTF-8, Latin-1,
                Shift JIS, ...; not UTF-16 or UTF-32).
            errors: how undecodable bytes are handled, as for :func:`open`.
            progress: as for :meth:`iterate`.

        Raises:
            InputChanged: the line before the committed offset is not the one an earlier
                run finished there: the file was edited.
        """
        name = path_name("cp.lines", path)
        check_encoding(encoding, errors)
        return self._iterate(name, None, progress, numbered=False, lines=(encoding, errors))

    def _iterate(
        self,
        iterable: Any,
        total: Any,
        progress: Any,
        *,
        numbered: bool,
        lines: tuple[str, str] | None = None,
    ) -> Iterator[Any]:
        what = "lines()" if lines else "iterate()"
        run = self._active_run(what)
        if run.mode.shared:
            raise ValueError(
                f"cp.{what} cannot run in a shared block (checkpointed(shared=True)): a "
                "sequential loop cannot be split among processes; use cp.map(fn, items), "
                "which does"
            )
        check_number("total", total, allow_zero=True, kind=int)
        check_progress(progress)
        if run.in_body():
            raise RuntimeError(
                f"cp.{what} loops cannot nest in one block; open a nested "
                "`with checkpointed() as inner:` for the inner loop"
            )
        if not lines and not isinstance(iterable, Iterable):
            raise TypeError(f"cp.iterate() needs an iterable, not {type(iterable).__name__}")
        if run.loop is not None:
            run.loop.close()
            run.loop = None
        if run.completed_before:
            return iter(())
        source = None if lines is None else LineFile(iterable, *lines)
        try:
            loop = run.loop = open_loop(run, iterable, source, numbered=numbered)
        except BaseException:
            if source is not None:
                source.close()
            raise
        if total is None and not lines and hasattr(iterable, "__len__"):
            total = len(iterable)
        gen = loop.gen = run_loop(run, loop, total, progress)
        return gen

    # --- parallel maps ---------------------------------------------------------------------

    @overload
    def map(
        self,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        *,
        key: Callable[[T], Any] | Literal["index"] | None = None,
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
        key: Callable[[T], Any] | Literal["index"] | None = None,
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
        key: Callable[[T], Any] | Literal["index"] | None = None,
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
            key: names an item across runs. Default: a digest of the item (the digest
                ``@resumable`` takes of arguments), so reordered, grown or edited input still
                returns each item's own result; equal items run once and share the result.
                A function of the item (``key=lambda row: row["id"]``) names it by a str,
                int, bytes or other digestible value, which must differ from item to item.
                ``"index"``: by position (how maps stored results before digest keys).
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
        run = self._active_run("map()")
        from resumable._map import run_map
        from resumable.retry import validate_retry

        return run_map(
            run, fn, iterable, key=key, executor=executor, workers=workers,
            retry=validate_retry(retry), on_error=on_error, progress=progress,
        )  # fmt: skip

    # --- steps ----------------------------------------------------------------------------

    def step(self, name: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run ``fn(*args, **kwargs)`` once per operation; later runs return its stored result.

        Raises:
            ResumableError: the operation completed without this step, so it cannot run now.
        """
        run = self._active_run("step()")
        if not isinstance(name, str) or not name:
            raise TypeError(f"a step needs a non-empty str name, not {name!r}")
        if not callable(fn):
            raise TypeError(f"cp.step({name!r}, fn): fn must be callable, not {fn!r}")
        store, op_id, key = run.store, run.op_id, f"step:{name}"
        rec = store.load_result(op_id, key)
        if rec is not None:
            log.debug("resumable.step.skipped", op_id=op_id, step=name)
            value: R = serializers.decode(rec.serializer, rec.payload)
            return value
        if run.completed_before:
            raise ResumableError(
                f"step {name!r} is not part of the completed operation {op_id!r}, and a "
                "completed operation runs no step; reset it (fresh=True) to run it again"
            )
        started = time.perf_counter()
        if run.mode.shared:
            from ._map.shared import run_shared_step

            value = run_shared_step(run, name, fn, *args, **kwargs)
        else:
            value = fn(*args, **kwargs)
            ser, payload = serializers.encode(run.serializer, value, f"result of step {name!r}")
            if _crashpoint.ARMED:
                _crashpoint.reached("before", "step", op_id)
            store.put_result(ResultRecord.create(op_id, key, ser, payload))
            if _crashpoint.ARMED:
                _crashpoint.reached("after", "step", op_id)
        log.debug(
            "resumable.step.done", op_id=op_id, step=name,
            seconds=round(time.perf_counter() - started, 6),
        )  # fmt: skip
        return value


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
        The block to enter with ``with`` (or ``async with``): a :class:`Checkpoint`.
    """
    return Checkpoint(
        op_id, store=store, serializer=serializer, state=state, every=every,
        every_seconds=every_seconds, lock=lock, shared=shared, fresh=fresh, name=name,
    )  # fmt: skip
