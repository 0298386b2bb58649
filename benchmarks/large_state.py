"""Re-entering an operation with a large state: seconds and peak memory, per store.

Usage: ``python benchmarks/large_state.py [--mib 100] [--stores sqlite,file,postgres]``, or
the ``large`` group of ``benchmarks/run.py``
(PostgreSQL at ``RESUMABLE_TEST_POSTGRES``, default the local test server; its row is left out,
said on stderr, if none answers).

For each store, a first process commits a state of ``--mib`` MiB of random bytes a few
times (so several checkpoints of that size are in its history) and fails. A fresh process
then opens the store, takes its RSS as the baseline, re-enters the operation (which loads the
newest checkpoint), and commits once. It reports the seconds of each and the peak RSS growth
(``VmHWM`` minus the baseline) as a multiple of the state's size: the state itself, loaded,
is 1x; the goal is at most 2.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _util import Row, postgres_url, run_child

OP = "large-state"
HISTORY = 3
GOAL = 2.5
#: The state's size in MiB: the full run, and the quick one CI does.
FULL_MIB = 100
QUICK_MIB = 40


class Stop(Exception):
    """Leaves the writer's block as a failed run would."""


def _status(field: str) -> int:
    """A ``/proc/self/status`` figure, in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) << 10
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Make ``VmHWM`` start again from the current RSS (Linux 4.0+)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def _fail() -> None:
    raise Stop


def write(url: str, mib: int) -> None:
    """Commit a state of ``mib`` MiB ``HISTORY`` times, then fail: a resumable operation."""
    from resumable import checkpointed

    blob = bytearray(os.urandom(mib << 20))
    try:
        with checkpointed(OP, store=url, state={"blob": b"", "n": 0}, every_seconds=3600) as cp:
            for n in range(HISTORY):
                blob[0] = n  # each checkpoint a different payload
                cp.state.blob = bytes(blob)
                cp.state.n = n
                cp.commit()
            del blob
            _fail()
    except Stop:
        pass
    print(json.dumps({"ok": True}))


def reenter(url: str) -> None:
    """Re-enter the operation and commit once; seconds and peak RSS growth of each."""
    from resumable import checkpointed
    from resumable.stores import resolve_store

    resolve_store(url)  # connect (and import the driver) before the baseline
    base = _status("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    block = checkpointed(OP, store=url, every_seconds=3600)
    cp = block.__enter__()
    entered = time.perf_counter() - started
    enter_peak = _status("VmHWM") - base
    size = len(cp.state.blob)
    assert cp.resumed and cp.state.n == HISTORY - 1, (cp.resumed, cp.state.n)
    started = time.perf_counter()
    cp.commit()
    committed = time.perf_counter() - started
    peak = _status("VmHWM") - base
    result = {"size": size, "enter_s": entered, "enter_peak": enter_peak, "commit_s": committed}
    result["peak"] = peak
    print(json.dumps(result), flush=True)
    os._exit(0)  # measured: skip the exit commit


def _url(kind: str, root: Path) -> str | None:
    if kind == "sqlite":
        return f"sqlite:///{root}/state.db"
    if kind == "file":
        return f"file://{root}/store"
    server = postgres_url()
    if server is None:
        return None
    schema = f"bench_large_{secrets.token_hex(4)}"
    return server + ("&" if "?" in server else "?") + f"schema={schema}"


def _drop(url: str) -> None:
    if not url.startswith("postgres"):
        return
    import psycopg
    from psycopg import sql

    base, _, query = url.partition("?")
    schema = dict(p.split("=", 1) for p in query.split("&"))["schema"]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def measure(kind: str, mib: int) -> dict[str, Any] | None:
    """One store's figures (the writer and the re-entry each in a fresh process)."""
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="resumable-large-") as tmp:
        url = _url(kind, Path(tmp))
        if url is None:
            return None
        try:
            run_child(me, "write", url, str(mib))
            result = run_child(me, "reenter", url)
        finally:
            _drop(url)
    return {"store": kind, **result}


def run(quick: bool) -> list[Row]:
    """One gated row per store: peak memory growth of re-entry plus one commit, per state."""
    mib = QUICK_MIB if quick else FULL_MIB
    rows = []
    for kind in ("sqlite", "file", "postgres"):
        print(f"... {kind}, {mib} MiB state", file=sys.stderr)
        r = measure(kind, mib)
        if r is None:
            continue
        size = float(r["size"])
        growth = r["peak"] / size
        rows.append(
            Row(
                f"re-entry of a {mib} MiB state and one commit, {kind}: peak memory growth",
                f"{r['peak'] / 2**20:.0f} MiB = {growth:.2f}x the state "
                f"(re-entry {r['enter_s']:.2f} s, commit {r['commit_s']:.2f} s)",
                f"<= {GOAL}x the state",
                f"the state: {size / 2**20:.0f} MiB, {HISTORY} checkpoints of it in the history",
                f"{growth:.2f}x",
                growth,
                GOAL,
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=FULL_MIB)
    parser.add_argument("--stores", default="sqlite,file,postgres")
    args = parser.parse_args()
    print(f"state: {args.mib} MiB of random bytes, {HISTORY} checkpoints of it in the history")
    print(f"{'store':<10}{'re-entry':>10}{'peak':>12}{'x state':>9}{'+commit':>10}{'peak':>12}"
          f"{'x state':>9}")  # fmt: skip
    worst = 0.0
    for kind in args.stores.split(","):
        r = measure(kind, args.mib)
        if r is None:
            continue
        size = float(r["size"])
        worst = max(worst, r["peak"] / size)
        print(
            f"{kind:<10}{r['enter_s']:>9.2f}s{r['enter_peak'] / 2**20:>8.0f} MiB"
            f"{r['enter_peak'] / size:>8.2f}x{r['commit_s']:>9.2f}s"
            f"{r['peak'] / 2**20:>8.0f} MiB{r['peak'] / size:>8.2f}x"
        )
    print(f"worst peak growth: {worst:.2f}x the state (goal: at most {GOAL}x)")
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "reenter":
        reenter(sys.argv[2])
    else:
        sys.exit(main())
