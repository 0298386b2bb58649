"""A checkpointed loop that the PostgreSQL tests run as a real process, pause and take over.

    python postgres_worker.py --store URL --op ID --n N [--sleep S] [--lock true|SECONDS]
                              [--stop-at K]

Runs ``with checkpointed(ID, store=URL, every_seconds=0) as cp`` over ``range(N)``: each item
sets ``cp.state.n = i``, prints ``i`` (flushed) and sleeps ``--sleep`` seconds, so every item is
committed and the test can follow the positions on stdout. ``--stop-at K`` raises SystemExit
at the start of item K, leaving the operation PAUSED at position K.

Exit codes: 0 when the loop ended (or stopped at K); 3, printing ``locked``, when the operation
was locked; a traceback (exit 1) for anything else, such as ``LeaseLost``.
"""

from __future__ import annotations

import argparse
import sys
import time

from resumable import OperationLocked, checkpointed

LOCKED_EXIT = 3


def _lock(value: str) -> bool | float:
    return True if value == "true" else float(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--op", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--sleep", type=float, default=0.01)
    parser.add_argument("--lock", type=_lock, default=True)
    parser.add_argument("--stop-at", type=int, default=None)
    args = parser.parse_args()
    try:
        block = checkpointed(
            args.op, store=args.store, state={"n": -1}, every_seconds=0, lock=args.lock
        )
        with block as cp:
            print("entered", cp.position, flush=True)
            for i in cp.iterate(range(args.n)):
                if i == args.stop_at:
                    raise SystemExit(0)
                cp.state.n = i
                print(i, flush=True)
                time.sleep(args.sleep)
    except OperationLocked as exc:
        if type(exc) is not OperationLocked:
            raise  # LeaseLost: the traceback on stderr is what the test looks for
        print("locked", flush=True)
        print(exc, file=sys.stderr, flush=True)
        return LOCKED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
