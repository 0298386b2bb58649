"""A map run by this process alone: chunks on an executor, results recorded as they finish.

Items go to the executor in chunks, run by :func:`~resumable._map.worker.run_chunk` with the
per-item retries. A chunk is sized to take about :data:`_CHUNK_SECONDS` (measured as chunks come
back), to give every worker several chunks, and to hold at most :data:`_MAX_CHUNK` items:
executor overhead is paid per chunk, and a crash loses at most one chunk of work per worker.
At most ``2 * workers`` chunks are in flight, so ``on_error="raise"`` can stop early. Finished
records are buffered and written with one ``put_results`` (one transaction on SQLite) every
:data:`_FLUSH_SECONDS`, or sooner once they hold :data:`_FLUSH_RECORDS` records or
:data:`_FLUSH_BYTES` of results, at the end, and on every way out.

Why groups this large: digest keys are random, so each record of a group lands on another
page of the store's key index, and every group rewrites about one index page per record until
it holds more records than the index has pages. Groups of 1,000 doubled the time of a map of
100k trivial items, and more as the index outgrew SQLite's page cache. A group is bounded by
time anyway, so a crash loses no more work than with small groups.
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from typing import Any, Final

from resumable import _crashpoint, _trace
from resumable._log import log
from resumable.operation import ResultRecord

from .items import ItemKeys, MapHost, MapItems, open_pool
from .worker import ChunkResult, Task, run_chunk

__all__ = ["MapRun"]

#: Flush the buffered records once it holds this many, or this many bytes of results ...
_FLUSH_RECORDS: Final = 16384
_FLUSH_BYTES: Final = 16 << 20
#: ... or when this many seconds have passed since the last flush.
_FLUSH_SECONDS: Final = 0.25
#: Most items in one chunk, and the time one chunk should take.
_MAX_CHUNK: Final = 256
_CHUNK_SECONDS: Final = 0.05


class MapRun(MapItems):
    """One execution of the items a map still has to run."""

    def __init__(
        self, host: MapHost, number: int, items: list[Any], results: list[Any],
        keys: ItemKeys | None, *, raising: bool,
    ) -> None:  # fmt: skip
        super().__init__(host, number, items, results, keys, raising=raising)
        self.buffer: list[ResultRecord] = []
        self.buffered = 0  # bytes of results in the buffer
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

        def submit(chunk: list[tuple[int, Any]], slots: Sequence[int]) -> Future[ChunkResult]:
            return _trace.submit_batch(
                pool, run_chunk, task, chunk, op_id=self.op_id, number=self.number, slots=slots
            )

        try:
            self._drive(submit, pending, width)
            self._flush()
        except BaseException:
            self._abort(pool if own else None)
            raise
        if own:
            pool.shutdown()

    def _drive(
        self, submit: Callable[[list[tuple[int, Any]], Sequence[int]], Future[ChunkResult]],
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
                fut = submit([(s, items[s]) for s in slots], slots)
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
            if (
                len(self.buffer) >= _FLUSH_RECORDS
                or self.buffered >= _FLUSH_BYTES
                or (self.buffer and time.monotonic() - self.last_flush >= _FLUSH_SECONDS)
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
        error: BaseException | None = None
        for out in outcomes:
            failure = out.failure()
            if failure is None:
                self.results[out.slot], record = self.success(out, local)
                self.buffer.append(record)
                self.buffered += len(record.payload)
            elif self.raising:
                error = error or failure
            else:
                self._set_aside(out.slot, failure)
        return error

    def _set_aside(self, slot: int, exc: BaseException) -> None:
        """on_error="skip": record the failure; the slot's result is the exception."""
        self.results[slot] = exc
        self.buffer.append(self.failure_record(slot, exc))

    def _flush(self) -> None:
        if self.buffer:
            if _crashpoint.ARMED:
                _crashpoint.reached("before", "map", self.op_id, len(self.buffer))
            self.store.put_results(self.buffer)
            if _crashpoint.ARMED:
                _crashpoint.reached("after", "map", self.op_id, len(self.buffer))
            self.buffer, self.buffered = [], 0  # only once written: a failed write is retried
        self.last_flush = time.monotonic()
