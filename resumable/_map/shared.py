"""Shared operations: several processes split one ``cp.map`` and run each ``cp.step`` once.

A map's items are cut into batches of :func:`batch_size` items, numbered alike in every
participant (they all see the same items). A participant claims a few batches at a time
(:meth:`Store.claim_batches`), runs each as one chunk on its executor, and records a batch's
results together with its "done" mark (:meth:`Store.finish_batch`), only if the claim is still
its own: a participant paused past its lease and taken over writes nothing and raises
:class:`~resumable.errors.LeaseLost`. A heartbeat thread renews the claims of a live
participant; those of a dead one run out, and the next participant that asks takes them over.
A participant with nothing left to claim polls until every batch is done, then loads all
results from the store, so that every participant returns the whole list, in order.

An item repeated in the input (default keys) runs in its first slot only; the others get its
result when the map returns.

Batches finished with items set aside (``on_error="skip"``) are reopened when a later map
call starts, so the next run retries exactly those items; a batch claimed for a second time
is checked against the store first, so no recorded item runs again.
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from typing import TYPE_CHECKING, Any, Final, TypeVar

from resumable import _crashpoint, _trace
from resumable._heartbeat import Heartbeat
from resumable._log import log
from resumable._owner import Owner
from resumable.errors import LeaseLost, ResumableError
from resumable.keys import digest_value
from resumable.operation import ResultRecord
from resumable.serializers import decode, encode, short_repr

from .items import ItemKeys, MapHost, MapItems, open_pool
from .worker import ERROR, ChunkResult, Outcome, Task, run_chunk

if TYPE_CHECKING:
    from resumable.stores.base import Store

__all__ = ["SharedMap", "batch_size", "free_dead_claims", "run_shared_step"]

R = TypeVar("R")

#: A map is cut into about this many batches, of at most :data:`_MAX_BATCH` items: enough
#: batches to spread over many participants, few enough that claiming costs little.
_BATCHES: Final = 256
_MAX_BATCH: Final = 64
#: Longest wait between two looks at the others' progress.
_POLL: Final = 0.05
#: How often a participant looks for claims of participants dead on this host.
_DEAD_CHECK: Final = 0.5


def batch_size(items: int) -> int:
    """Items per batch for a map of ``items`` items (the same in every participant)."""
    return max(1, min(_MAX_BATCH, math.ceil(items / _BATCHES)))


def free_dead_claims(store: Store, op_id: str, group: str) -> None:
    """Give back the claims of participants that died on this host, without waiting.

    A holder on another host is left to its lease: only its heartbeat says it lives.
    """
    for token in store.claim_holders(op_id, group):
        owner = Owner.from_token(token)
        if owner is not None and owner.is_alive() is False:
            store.release_batches(op_id, group, token)
            log.info("resumable.claims.taken_from_dead", op_id=op_id, group=group, dead=token)


class SharedMap(MapItems):
    """This participant's part of one shared map."""

    def __init__(
        self, host: MapHost, number: int, items: list[Any], results: list[Any],
        keys: ItemKeys | None, *, raising: bool,
    ) -> None:  # fmt: skip
        super().__init__(host, number, items, results, keys, raising=raising)
        # The claims of one input: batches are runs of slots, so an input that changed (in
        # size, or in order under keys that follow the items) gets new batches; its recorded
        # results, found by key, still count. Index keys are their slots: the size will do.
        self.group = f"map{number}/{len(items)}"
        if keys is not None:
            self.group += "/" + digest_value(keys.texts, "keys")[:16]
        self.copy_slots = frozenset(() if keys is None else (s for s, _ in keys.copies))
        self.owner = host.owner
        self.size = batch_size(len(items))
        self.count = math.ceil(len(items) / self.size)
        self.todo = bytearray(len(items))  # 1: no good record seen for this slot
        self.mine = bytearray(len(items))  # 1: this participant recorded the slot
        self.ran = 0

    def run(
        self, pending: Sequence[int], task: Task, executor: object, workers: object
    ) -> tuple[int, int]:
        """Take part until every batch is done; fill ``results``. Returns (ran, failed)."""
        self._task = task
        for slot in pending:
            self.todo[slot] = 1
        if not self.count:
            return 0, 0
        if pending:
            self.store.reopen_failed(self.op_id, self.group)
        pool, width, own = open_pool(executor, workers)
        beat = Heartbeat(
            f"resumable-claims:{self.op_id}", self.store.heartbeat,
            lambda: self.store.renew_claims(self.owner),
        ).start()  # fmt: skip
        inflight: dict[Future[ChunkResult], tuple[int, int, list[int]]] = {}
        try:
            self._drive(pool, inflight, width)
        except BaseException:
            for fut in inflight:
                fut.cancel()
            self._give_back()
            raise
        finally:
            beat.stop()
            if own:
                pool.shutdown(wait=not inflight, cancel_futures=True)
        self._gather()
        return self.ran, self.failures

    def _drive(
        self,
        pool: Executor,
        inflight: dict[Future[ChunkResult], tuple[int, int, list[int]]],
        width: int,
    ) -> None:
        done: queue.SimpleQueue[Future[ChunkResult]] = queue.SimpleQueue()
        store, op_id, group = self.store, self.op_id, self.group
        next_check = 0.0
        while True:
            if time.monotonic() >= next_check:  # claims of the dead need no lease to run out
                free_dead_claims(store, op_id, group)
                next_check = time.monotonic() + _DEAD_CHECK
            if len(inflight) < width:
                want = 2 * width - len(inflight)
                for batch, epoch in store.claim_batches(op_id, group, self.count, want, self.owner):
                    slots = self._slots(batch, epoch)
                    if not slots:  # all recorded already: nothing to run
                        store.finish_batch(op_id, group, batch, epoch, self.owner, ())
                        continue
                    fut = _trace.submit_batch(
                        pool, run_chunk, self._task, [(s, self.items[s]) for s in slots],
                        op_id=op_id, number=self.number, slots=slots, batch=batch,
                    )  # fmt: skip
                    inflight[fut] = (batch, epoch, slots)
                    fut.add_done_callback(done.put)
            if not inflight:
                left, wait = store.batches_left(op_id, group)
                if not left:
                    return
                time.sleep(min(_POLL, max(0.005, wait or 0.0)))  # others hold the rest
                continue
            try:
                fut = done.get(timeout=_POLL)
            except queue.Empty:
                continue  # look for batches freed meanwhile
            batch, epoch, slots = inflight.pop(fut)
            if not fut.cancelled():
                self._finish(fut, batch, epoch, slots)

    _task: Task

    def _slots(self, batch: int, epoch: int) -> list[int]:
        """The slots of ``batch`` to run: those without a good record."""
        start = batch * self.size
        span = range(start, min(len(self.items), start + self.size))
        if epoch > 1:  # claimed before (taken over, or reopened): the store knows more now
            found = self.store.load_results(self.op_id, self.prefix)
            copies = self.copy_slots  # a repeated item runs in its first slot only
            return [s for s in span if s not in copies and _unrecorded(found.get(self.key(s)))]
        return [s for s in span if self.todo[s]]

    def _finish(self, fut: Future[ChunkResult], batch: int, epoch: int, slots: list[int]) -> None:
        """Record a finished batch (if the claim is still ours), or raise its error."""
        exc = fut.exception()
        if exc is not None:  # the chunk itself failed: it did not pickle, the pool broke, ...
            if self.raising or isinstance(exc, BrokenExecutor) or not isinstance(exc, Exception):
                raise exc
            outcomes = [Outcome(s, error=exc) for s in slots]
            local = True
        else:
            outcomes, _, local = fut.result()
        values: dict[int, Any] = {}
        records: list[ResultRecord] = []
        failed = False
        for out in outcomes:
            failure = out.failure()
            if failure is None:
                values[out.slot], record = self.success(out, local)
                records.append(record)
                continue
            if self.raising:
                raise failure
            failed = True
            values[out.slot] = failure
            records.append(self.failure_record(out.slot, failure))
        if _crashpoint.ARMED:
            _crashpoint.reached("before", "map", self.op_id, len(records))
        if not self.store.finish_batch(
            self.op_id, self.group, batch, epoch, self.owner, records, failed=failed
        ):
            raise LeaseLost(self.op_id, f"its claim on items {slots[0]}-{slots[-1]}")
        if _crashpoint.ARMED:
            _crashpoint.reached("after", "map", self.op_id, len(records))
        self.ran += len(slots)
        if self.reporter is not None:
            self.reporter.update(len(self.items) - sum(self.todo) + self.ran)
        for slot, value in values.items():
            self.results[slot] = value
            self.mine[slot] = 1

    def _give_back(self) -> None:
        """On the way out with an error: let the others take this participant's claims now."""
        try:
            self.store.release_batches(self.op_id, self.group, self.owner)
        except Exception as exc:  # noqa: BLE001 - the error on its way out must win
            log.warning("resumable.map.release_failed", op_id=self.op_id, error=repr(exc))

    def _gather(self) -> None:
        """Every batch is done: load what the other participants recorded."""
        found = self.store.load_results(self.op_id, self.prefix)
        for slot in range(len(self.items)):
            if self.mine[slot] or not self.todo[slot]:
                continue  # recorded here, or loaded before the map began
            rec = found.get(self.key(slot))
            if rec is None:
                raise ResumableError(
                    f"shared map {self.number} of {self.op_id!r}: item {slot} is marked done "
                    "but has no result; reset the operation to run it again"
                )
            if rec.serializer == ERROR:
                user = slot if self.users is None else self.users[slot]
                self.results[slot] = error = ResumableError(
                    f"item {short_repr(user)} failed in another participant: {rec.payload.decode()}"
                )
                self.failure_record(slot, error)  # counted and in cp.failed; stored there
            else:
                self.results[slot] = decode(rec.serializer, rec.payload)


def _unrecorded(rec: ResultRecord | None) -> bool:
    return rec is None or rec.serializer == ERROR


def run_shared_step(host: MapHost, name: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run a step of a shared operation once across participants; return its result.

    One participant claims it and runs it; the others wait for its result (and take it over
    if the runner's lease runs out).
    """
    store, op_id, key = host.store, host.op_id, f"step:{name}"
    group = key
    while True:
        rec = store.load_result(op_id, key)
        if rec is not None:
            value: R = decode(rec.serializer, rec.payload)
            return value
        claimed = store.claim_batches(op_id, group, 1, 1, host.owner)
        if claimed:
            ((_, epoch),) = claimed
            return _run_step(host, name, fn, args, kwargs, epoch)
        _, wait = store.batches_left(op_id, group)
        if wait:
            free_dead_claims(store, op_id, group)
        time.sleep(min(_POLL, max(0.005, wait or 0.0)))


def _run_step(  # noqa: PLR0917 - the step, and the claim it runs under
    host: MapHost, name: str, fn: Callable[..., R], args: tuple[Any, ...],
    kwargs: dict[str, Any], epoch: int,
) -> R:  # fmt: skip
    store, op_id, key, owner = host.store, host.op_id, f"step:{name}", host.owner
    beat = Heartbeat(
        f"resumable-step:{op_id}", store.heartbeat, lambda: store.renew_claims(owner)
    ).start()
    try:
        value = fn(*args, **kwargs)
        ser, payload = encode(host.serializer, value, f"result of step {name!r}")
        record = ResultRecord.create(op_id, key, ser, payload)
        recorded = store.finish_batch(op_id, key, 0, epoch, owner, (record,))
    except BaseException:
        try:
            store.release_batches(op_id, key, owner)
        except Exception as exc:  # noqa: BLE001 - the step's error must win
            log.warning("resumable.step.release_failed", op_id=op_id, error=repr(exc))
        raise
    finally:
        beat.stop()
    if not recorded:
        raise LeaseLost(op_id, f"its claim on step {name!r}")
    return value
