"""``cp.map``: a parallel map that records each item's result as it finishes.

Map number ``n`` of a block (counted from 0 in every run) stores one result record per item
under ``map<n>:<item key>``: the index (``"17"``) by default, else ``i<int>``, ``s<str>`` or
``d<digest>`` of the ``key=`` value. A re-run loads the records under its prefix, runs only
the items without a good one, and returns every result in input order. An item set aside by
``on_error="skip"`` is stored under its key as serializer ``"!error"`` with the error text, so
it counts as not done and a later success simply replaces it.

Items go to the executor in chunks, run by :func:`run_chunk` with the per-item retries. A
chunk is sized to take about :data:`_CHUNK_SECONDS` (measured as chunks come back), to give
every worker several chunks, and to hold at most :data:`_MAX_CHUNK` items: executor overhead
is paid per chunk, and a crash loses at most one chunk of work per worker. At most
``2 * workers`` chunks are in flight, so ``on_error="raise"`` can stop early. Finished records
are buffered and written with one ``put_results`` (one transaction on SQLite) every
:data:`_FLUSH_RECORDS` records or :data:`_FLUSH_SECONDS`, at the end, and on every way out.

Results are serialized where they are computed; a worker in another process sends back the
bytes, and its exceptions are checked to survive pickling (else a ``RuntimeError`` with their
repr comes back instead).
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import queue
import time
import traceback
from array import array
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ._log import log
from ._progress import Reporter, check_progress, open_progress
from .errors import ResumableError
from .keys import digest_value
from .operation import ResultRecord
from .retry import RetrySpec, make_retrying
from .serializers import Serializer, decode, encode

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .stores.base import Store

__all__ = ["run_map"]

#: Flush the buffered records once it holds this many ...
_FLUSH_RECORDS: Final = 1000
#: ... or when this many seconds have passed since the last flush.
_FLUSH_SECONDS: Final = 0.25
#: Most items in one chunk, and the time one chunk should take.
_MAX_CHUNK: Final = 256
_CHUNK_SECONDS: Final = 0.05
#: The serializer name of a record that says "this item failed" (its payload: the error).
ERROR: Final = "!error"
#: Identifies this process to a chunk, which tells from it whether it runs in another one.
_TOKEN: Final = os.urandom(8).hex()

#: What a chunk reports per item: ``(slot, ok, value, serializer, payload)``. For a failure:
#: ``(slot, False, exception, traceback text if remote, None)``; a remote success has no value.
Outcome = tuple[int, bool, Any, str | None, bytes | None]
ChunkResult = tuple[list[Outcome], float, bool]


def run_map(
    cp: Checkpoint,
    fn: object,
    iterable: object,
    *,
    key: object,
    executor: object,
    workers: object,
    retry: RetrySpec,
    on_error: object,
    progress: object = False,
) -> list[Any]:
    """Run ``cp.map``; see :meth:`Checkpoint.map`."""
    _check(fn, iterable, key, executor, workers, on_error)
    check_progress(progress)
    if cp._in_body():
        raise RuntimeError(
            "cp.map() cannot run inside a cp.iterate() loop body (its results would be found "
            "under another item on a re-run); open a nested `with checkpointed() as inner:` "
            "in the body and call inner.map()"
        )
    assert isinstance(iterable, Iterable) and callable(fn)  # noqa: S101 - checked just above
    items = list(iterable)
    texts, users = item_keys(items, key) if callable(key) else (None, None)

    store, op_id = cp.store, cp.op_id
    assert store is not None and op_id is not None  # noqa: S101 - set on enter
    number = cp._maps
    cp._maps += 1
    prefix = f"map{number}:"
    results: list[Any] = [None] * len(items)
    pending = load_done(store, op_id, prefix, results, texts)
    log.info(
        "resumable.map.started", op_id=op_id, map=number, items=len(items),
        done_before=len(items) - len(pending),
    )  # fmt: skip
    if cp._completed_before:
        if pending:
            raise ResumableError(
                f"map {number} of the completed operation {op_id!r} has {len(pending)} "
                "item(s) without a stored result (was it added after the operation completed?); "
                "a completed operation runs nothing: reset it (fresh=True) to run it again"
            )
        return results
    raising = on_error == "raise"
    task = Task(fn, retry, cp._serializer, raising)
    started = time.perf_counter()
    if not pending and not cp._shared:
        return results
    skipped = len(items) - len(pending)
    reporter = open_progress(progress, op_id, skipped=skipped, total=len(items))  # type: ignore[arg-type] # checked above
    try:
        if cp._shared:
            from ._shared import SharedMap

            shared = SharedMap(cp, number, items, results, texts, users, raising=raising)
            shared.reporter = reporter
            ran, failures = shared.run(pending, task, executor, workers)
        else:
            run = _MapRun(cp, number, items, results, texts, users, raising=raising)
            run.reporter, run.skipped = reporter, skipped
            run.execute(pending, task, executor, workers)
            ran, failures = len(pending), run.failures
    finally:
        if reporter is not None:
            reporter.close()
    log.info(
        "resumable.map.done", op_id=op_id, map=number, items=len(items), ran=ran,
        failed=failures, seconds=round(time.perf_counter() - started, 6),
    )  # fmt: skip
    return results


def _check(  # noqa: PLR0917 - the arguments of cp.map, checked together
    fn: object, iterable: object, key: object, executor: object, workers: object, on_error: object
) -> None:
    """Refuse bad arguments at the call, before anything runs."""
    if not callable(fn):
        raise TypeError(f"cp.map(fn, items): fn must be callable, not {fn!r}")
    if key is not None and not callable(key):
        raise TypeError(f"cp.map(key=...) must be a function of the item, not {key!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (a ThreadPoolExecutor, a "
            f"ProcessPoolExecutor, a cluster's executor), not {type(executor).__name__}"
        )
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be a whole number, not {workers!r}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if executor is not None:
            raise ValueError(
                "pass executor= or workers=, not both: workers= sizes the thread pool that "
                "cp.map makes when no executor is given"
            )
    if not isinstance(iterable, Iterable):
        raise TypeError(
            f"cp.map(fn, items) needs an iterable of items, not {type(iterable).__name__}"
        )


def item_keys(items: list[Any], key: Callable[[Any], Any]) -> tuple[list[str], list[Any]]:
    """Each item's key text and key value; refuses undigestable and duplicate keys."""
    texts: list[str] = []
    users: list[Any] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        value = key(item)
        t = type(value)
        if t is int:
            text = f"i{value}"
        elif t is str:
            text = f"s{value}"
        else:
            try:
                text = "d" + digest_value(value, "key")
            except TypeError as exc:
                raise TypeError(
                    f"cp.map: the key of item {i} cannot name it across runs: {exc}. Make key= "
                    "return a str, an int, bytes, or a tuple of those"
                ) from None
        first = seen.setdefault(text, i)
        if first != i:
            raise ValueError(
                f"cp.map: items {first} and {i} have the same key {value!r}; key= must give "
                "every item its own key"
            )
        texts.append(text)
        users.append(value)
    return texts, users


def load_done(
    store: Store, op_id: str, prefix: str, results: list[Any], texts: list[str] | None
) -> Sequence[int]:
    """Put the stored results into ``results``; return the slots that still have to run."""
    n = len(results)
    records = store.load_results(op_id, prefix)
    if not records:
        return range(n)
    slot_of = None if texts is None else {text: i for i, text in enumerate(texts)}
    done = bytearray((n + 7) >> 3)  # a bitmap: one bit per item
    cut = len(prefix)
    for name, rec in records.items():
        if rec.serializer == ERROR:
            continue  # set aside by an earlier run: runs again
        text = name[cut:]
        if slot_of is None:
            if not (text.isascii() and text.isdigit()) or (text[0] == "0" and text != "0"):
                continue  # not an index key: written by a map with key=
            slot = int(text)
            if slot >= n:
                continue
        else:
            found = slot_of.get(text)
            if found is None:
                continue  # an item no longer in the input
            slot = found
        results[slot] = decode(rec.serializer, rec.payload)
        done[slot >> 3] |= 1 << (slot & 7)
    return array("q", (i for i in range(n) if not done[i >> 3] >> (i & 7) & 1))


def open_pool(executor: object, workers: object) -> tuple[Executor, int, bool]:
    """The executor to use, how many chunks it runs at once, and whether the map owns it.

    Without ``executor``, a thread pool of ``workers`` threads (default ``cpu count + 4``, at
    most 32) made for this map.
    """
    if isinstance(executor, Executor):
        return executor, _executor_width(executor), False
    width = workers if isinstance(workers, int) else min(32, (os.cpu_count() or 1) + 4)
    return ThreadPoolExecutor(width, thread_name_prefix="resumable-map"), width, True


def _executor_width(executor: Executor) -> int:
    """How many calls ``executor`` runs at once.

    A thread or process pool's ``_max_workers``; for a Dask ``ClientExecutor``, the worker
    threads of its cluster (``client.nthreads()``); else this machine's CPU count.
    """
    size = getattr(executor, "_max_workers", None)  # thread and process pools say
    if isinstance(size, int) and size > 0:
        return size
    nthreads = getattr(getattr(executor, "_client", None), "nthreads", None)
    if callable(nthreads):  # distributed.cfexecutor.ClientExecutor
        try:
            total = sum(nthreads().values())
        except Exception:  # noqa: BLE001 - a cluster that cannot say: the fallback below
            total = 0
        if isinstance(total, int) and total > 0:
            return total
    return os.cpu_count() or 1


class MapItems:
    """What every way of running a map shares: its items, their record keys, the results."""

    def __init__(  # noqa: PLR0917 - private, called once by run_map
        self, cp: Checkpoint, number: int, items: list[Any], results: list[Any],
        texts: list[str] | None, users: list[Any] | None, *, raising: bool,
    ) -> None:  # fmt: skip
        assert cp.store is not None and cp.op_id is not None  # noqa: S101 - set on enter
        self.cp, self.store, self.op_id = cp, cp.store, cp.op_id
        self.number, self.prefix = number, f"map{number}:"
        self.items, self.results, self.texts, self.users = items, results, texts, users
        self.raising = raising  # on_error="raise"
        self.failures = 0
        self.reporter: Reporter | None = None

    def _key(self, slot: int) -> str:
        """The record key of the item in ``slot``."""
        return self.prefix + (str(slot) if self.texts is None else self.texts[slot])

    def _failure_record(self, slot: int, exc: BaseException) -> ResultRecord:
        """on_error="skip": count the failure, note it in ``cp.failed``; its record."""
        self.failures += 1
        user = slot if self.users is None else self.users[slot]
        return set_aside(self.cp, self.number, self._key(slot), user, exc)


class _MapRun(MapItems):
    """One execution of the items a map still has to run."""

    def __init__(  # noqa: PLR0917 - private, called once by run_map
        self, cp: Checkpoint, number: int, items: list[Any], results: list[Any],
        texts: list[str] | None, users: list[Any] | None, *, raising: bool,
    ) -> None:  # fmt: skip
        super().__init__(cp, number, items, results, texts, users, raising=raising)
        self.buffer: list[ResultRecord] = []
        self.last_flush = time.monotonic()
        self.inflight: dict[Future[ChunkResult], Sequence[int]] = {}
        self.done: queue.SimpleQueue[Future[ChunkResult]] = queue.SimpleQueue()
        self.singles: list[int] = []  # slots of a chunk that failed as a whole, to run alone
        self.skipped = 0  # items done before this map call
        self.finished = 0  # items of this call with an outcome
        self.measured_items = 0
        self.measured_seconds = 0.0

    # --- driving the executor -------------------------------------------------------------

    def execute(
        self, pending: Sequence[int], task: Task, executor: object, workers: object
    ) -> None:
        """Run ``pending`` on ``executor`` (else on ``workers`` threads); flush at the end."""
        pool, width, own = open_pool(executor, workers)

        def submit(chunk: list[tuple[int, Any]]) -> Future[ChunkResult]:
            return pool.submit(run_chunk, task, chunk)

        try:
            self._drive(submit, pending, width)
            self._flush()
        except BaseException:
            self._abort(pool if own else None)
            raise
        if own:
            pool.shutdown()

    def _drive(
        self, submit: Callable[[list[tuple[int, Any]]], Future[ChunkResult]],
        pending: Sequence[int], width: int,
    ) -> None:  # fmt: skip
        items, inflight, total, at = self.items, self.inflight, len(pending), 0
        error: BaseException | None = None
        while True:
            while error is None and len(inflight) < 2 * width and (at < total or self.singles):
                if self.singles:
                    slots: Sequence[int] = [self.singles.pop()]
                else:
                    size = self._chunk_size(total - at, width)
                    slots, at = pending[at : at + size], at + size
                fut = submit([(s, items[s]) for s in slots])
                inflight[fut] = slots
                fut.add_done_callback(self.done.put)
            if not inflight:
                break
            wait = None
            if self.buffer:
                wait = max(0.0, self.last_flush + _FLUSH_SECONDS - time.monotonic())
            try:
                fut = self.done.get(timeout=wait)
            except queue.Empty:
                self._flush()
                continue
            failure = self._collect(fut, inflight.pop(fut))
            if failure is not None and error is None:
                error = failure  # stop: submit nothing more, cancel what has not started
                for other in inflight:
                    other.cancel()
            if len(self.buffer) >= _FLUSH_RECORDS or (
                self.buffer and time.monotonic() - self.last_flush >= _FLUSH_SECONDS
            ):
                self._flush()
        if error is not None:
            raise error

    def _chunk_size(self, remaining: int, width: int) -> int:
        """Items for the next chunk: about ``_CHUNK_SECONDS`` of work, 4+ chunks per worker."""
        by_workers = math.ceil(remaining / (4 * width))
        if not self.measured_items:
            by_time = 1  # nothing known yet: the first chunks measure the items
        elif self.measured_seconds <= 0:
            by_time = _MAX_CHUNK
        else:
            by_time = int(_CHUNK_SECONDS * self.measured_items / self.measured_seconds)
        return max(1, min(_MAX_CHUNK, by_workers, by_time))

    def _abort(self, own_pool: Executor | None) -> None:
        """On the way out with an exception: cancel, keep what finished, flush it."""
        for fut in self.inflight:
            fut.cancel()
        if own_pool is not None:
            own_pool.shutdown(wait=False, cancel_futures=True)
        try:
            while True:
                try:
                    fut = self.done.get_nowait()
                except queue.Empty:
                    break
                slots = self.inflight.pop(fut, None)
                if slots is not None:
                    self._collect(fut, slots)
            self._flush()
        except Exception as exc:  # noqa: BLE001 - the exception on its way out must win
            log.error(
                "resumable.map.unrecorded", op_id=self.op_id, map=self.number,
                results=len(self.buffer), error=repr(exc),
            )  # fmt: skip

    # --- outcomes -------------------------------------------------------------------------

    def _collect(self, fut: Future[ChunkResult], slots: Sequence[int]) -> BaseException | None:
        """Record a chunk's outcomes; return the error that must stop the map, if any."""
        if fut.cancelled():
            return None
        exc = fut.exception()
        if exc is not None:  # the chunk itself failed: it did not pickle, the pool broke, ...
            if self.raising or isinstance(exc, BrokenExecutor) or not isinstance(exc, Exception):
                return exc
            if len(slots) > 1:
                self.singles.extend(reversed(slots))  # find the item at fault
            else:
                self._set_aside(slots[0], exc)
            return None
        outcomes, seconds, local = fut.result()
        self.finished += len(outcomes)
        if self.reporter is not None:
            self.reporter.update(self.skipped + self.finished)
        self.measured_items += len(outcomes)
        self.measured_seconds += seconds
        results, buffer, op_id, create = self.results, self.buffer, self.op_id, ResultRecord.create
        error: BaseException | None = None
        for slot, ok, value, ser, payload in outcomes:
            if ok:
                assert ser is not None and payload is not None  # noqa: S101 - set on success
                results[slot] = value if local else decode(ser, payload)
                buffer.append(create(op_id, self._key(slot), ser, payload))
                continue
            if ser is not None:  # the traceback of a remote worker
                value.__cause__ = RemoteTraceback(ser)
            if self.raising:
                error = error or value
            else:
                self._set_aside(slot, value)
        return error

    def _set_aside(self, slot: int, exc: BaseException) -> None:
        """on_error="skip": record the failure; the slot's result is the exception."""
        self.results[slot] = exc
        self.buffer.append(self._failure_record(slot, exc))

    def _flush(self) -> None:
        if self.buffer:
            self.store.put_results(self.buffer)
            self.buffer = []  # only once written: an interrupted write is tried again
        self.last_flush = time.monotonic()


def set_aside(cp: Checkpoint, number: int, key: str, user: Any, exc: BaseException) -> ResultRecord:
    """on_error="skip": note the item in ``cp.failed``; the record that says it failed."""
    assert cp.op_id is not None  # noqa: S101 - set on enter
    try:
        cp._failed.add(user)
    except TypeError:  # an unhashable key (a list, a dict): its key text stands for it
        cp._failed.add(key[len(f"map{number}:") :])
    text = f"{type(exc).__name__}: {exc}"
    log.warning("resumable.map.item_failed", op_id=cp.op_id, map=number, key=user, error=text)
    return ResultRecord.create(cp.op_id, key, ERROR, text.encode(errors="replace"))


class RemoteTraceback(Exception):
    """The traceback of an exception raised in another process (set as its ``__cause__``)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


# --- in the worker ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Task:
    """What every chunk of one map needs (sent along with each chunk: it must pickle)."""

    fn: Callable[[Any], Any]
    retry: RetrySpec
    serializer: Serializer
    stop_on_error: bool
    home: tuple[int, str] = field(default_factory=lambda: (os.getpid(), _TOKEN))  # the caller


def run_chunk(task: Task, chunk: list[tuple[int, Any]]) -> ChunkResult:
    """Run ``task.fn`` over a chunk of ``(slot, item)``, with retries; serialize each result.

    Returns the outcomes, the seconds the chunk took, and whether it ran in the caller's
    process (else the results travel as bytes only, and exceptions are made picklable).
    """
    started = time.perf_counter()
    local = task.home == (os.getpid(), _TOKEN)
    fn, serializer = task.fn, task.serializer
    call = fn if task.retry is None else functools.partial(make_retrying(task.retry), fn)
    out: list[Outcome] = []
    for slot, item in chunk:
        try:
            value = call(item)
            ser, payload = encode(serializer, value, f"the result of item {slot}")
        except Exception as exc:  # noqa: BLE001 - the item's failure, reported to the caller
            out.append(_failure(slot, exc, local))
            if task.stop_on_error:
                break
            continue
        out.append((slot, True, value if local else None, ser, payload))
    return out, time.perf_counter() - started, local


def _failure(slot: int, exc: Exception, local: bool) -> Outcome:
    if local:
        return (slot, False, exc, None, None)
    tb = "".join(traceback.format_exception(exc))
    try:
        sendable: BaseException = pickle.loads(pickle.dumps(exc, protocol=5))
    except Exception:  # noqa: BLE001 - whatever breaks the round trip, send its repr instead
        sendable = RuntimeError(f"{exc!r} (raised in a worker; it could not be pickled back)")
    return (slot, False, sendable, f'\n"""\n{tb}"""', None)
