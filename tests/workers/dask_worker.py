"""A ``cp.map`` job on a Dask ``LocalCluster``, run as a real process that the Dask tests kill.

    python dask_worker.py --store URL --op ID --n N --log PATH [--cost SECONDS] [--workers W]

Starts a ``LocalCluster`` of ``W`` single-threaded worker processes, then, inside
``checkpointed(ID)``, runs ``cp.map(work, range(N), executor=client.get_executor())``. When
the block is done, stdout gets one JSON line: ``results`` and ``completed_before``.

The module also holds what the in-process tests send to Dask workers: :func:`work` and
:class:`ItemBroken` live here, not in the test module, so a worker that unpickles them
imports this small module (found on the ``sys.path`` the workers inherit) rather than the
test module with pytest and its fixtures.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from resumable import checkpointed


class ItemBroken(ValueError):
    """Raised by :func:`work` for the item it is told to fail."""


def note(log: str, line: str) -> None:
    """Append one line to ``log`` with one ``write`` in append mode: lines never mix."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def work(log: str, cost: float, fail_item: int | None, marker: str | None, x: int) -> int:
    """One item: log ``START x pid``, take ``cost`` seconds, log ``END x pid``, return x * x.

    Item ``fail_item`` raises :class:`ItemBroken` (after its END line) while the file
    ``marker`` exists.
    """
    pid = os.getpid()
    note(log, f"START {x} {pid}")
    time.sleep(cost)
    note(log, f"END {x} {pid}")
    if x == fail_item and marker is not None and os.path.exists(marker):
        raise ItemBroken(f"item {x} is broken while {marker} exists")
    return x * x


def held_work(log: str, cost: float, hold: str, x: int) -> int:
    """:func:`work`, except that the process whose pid is in the file ``hold`` keeps its item.

    After its ``START`` line and ``cost`` seconds, an item in that process logs
    ``HOLD x pid`` and waits (up to a minute) without ever logging ``END``: a test that
    SIGKILLs the process once it sees that line knows, with no timing involved, which item
    the kill interrupted.
    """
    pid = os.getpid()
    note(log, f"START {x} {pid}")
    time.sleep(cost)
    try:
        held = int(Path(hold).read_text())
    except (FileNotFoundError, ValueError):
        held = None
    if held == pid:
        note(log, f"HOLD {x} {pid}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the test kills this process long before
            time.sleep(0.01)
        raise TimeoutError(f"item {x} was held and its process never killed")
    note(log, f"END {x} {pid}")
    return x * x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--op", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--cost", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    fn = functools.partial(work, args.log, args.cost, None, None)
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            # The scheduler's HTTP server (/health, /metrics) runs even without a dashboard,
            # on port 8787 unless told otherwise: another cluster there means a warning,
            # an error under filterwarnings=error. Any free port on loopback, no dashboard.
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
        checkpointed(args.op, store=args.store) as cp,
    ):
        results: list[Any] = cp.map(fn, range(args.n), executor=client.get_executor())
    print(
        json.dumps({"results": results, "completed_before": cp.completed_before}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
