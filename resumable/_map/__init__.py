"""``cp.map``: a parallel map that records each item's result as it finishes.

A re-run runs only the items without a good stored result and returns every result in input
order. The parts: :mod:`.items` (arguments, item keys, stored results, the pool, and
:class:`~.items.MapHost`, all a map sees of its block), :mod:`.local` (a map run by one process),
:mod:`.shared` (a map split among the participants of a shared block), :mod:`.worker` (what
runs where the items run).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from resumable._log import DEBUG, INFO, log
from resumable._progress import check_progress, open_progress
from resumable.errors import ResumableError
from resumable.retry import RetrySpec

from .items import ItemKeys, MapHost, check, item_keys, load_done
from .local import MapRun
from .shared import SharedMap
from .worker import Task

__all__ = ["run_map"]


def run_map(
    host: MapHost,
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
    check(fn, iterable, key, executor, workers, on_error)
    check_progress(progress)
    if host.in_body():
        raise RuntimeError(
            "cp.map() cannot run inside a cp.iterate() loop body (its results would be found "
            "under another item on a re-run); open a nested `with checkpointed() as inner:` "
            "in the body and call inner.map()"
        )
    assert isinstance(iterable, Iterable) and callable(fn)  # noqa: S101 - checked just above
    items = list(iterable)
    keys = item_keys(items, key)

    store, op_id = host.store, host.op_id
    number = host.next_map()
    prefix = f"map{number}:"
    results: list[Any] = [None] * len(items)
    pending = load_done(store, op_id, prefix, results, keys)
    repeated = 0 if keys is None else len(keys.copies)
    done_before = len(items) - repeated - len(pending)
    log.log(
        # A map that resumes says so; one that starts does not, nor one of a completed
        # operation (the block's skip line said it all).
        INFO if done_before and not host.completed_before else DEBUG,
        "resumable.map.started", op_id=op_id, map=number, items=len(items),
        done_before=done_before, repeated=repeated,
    )  # fmt: skip
    if host.completed_before:
        if pending:
            raise ResumableError(
                f"map {number} of the completed operation {op_id!r} has {len(pending)} "
                "item(s) without a stored result (was it added after the operation completed?); "
                "a completed operation runs nothing: reset it (fresh=True) to run it again"
            )
        return _filled(results, keys)
    if len(items) > repeated:  # an empty map has no progress to show
        host.note_map(number, len(items) - repeated)
    raising = on_error == "raise"
    task = Task(fn, retry, host.serializer, raising)
    started = time.perf_counter()
    if not pending and not host.owner:
        return _filled(results, keys)
    skipped = len(items) - len(pending)
    reporter = open_progress(progress, op_id, skipped=skipped, total=len(items))  # type: ignore[arg-type] # checked above
    try:
        if host.owner:  # a participant of a shared block
            shared = SharedMap(host, number, items, results, keys, raising=raising)
            shared.reporter = reporter
            ran, failures = shared.run(pending, task, executor, workers)
        else:
            run = MapRun(host, number, items, results, keys, raising=raising)
            run.reporter, run.skipped = reporter, skipped
            run.execute(pending, task, executor, workers)
            ran, failures = len(pending), run.failures
    finally:
        if reporter is not None:
            reporter.close()
    log.debug(
        "resumable.map.done", op_id=op_id, map=number, items=len(items), ran=ran,
        failed=failures, seconds=round(time.perf_counter() - started, 6),
    )  # fmt: skip
    return _filled(results, keys)


def _filled(results: list[Any], keys: ItemKeys | None) -> list[Any]:
    """``results``, each repeated item given its first occurrence's result."""
    if keys is not None:
        keys.fill(results)
    return results
