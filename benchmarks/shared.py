"""Shared operations: throughput of several participant processes, and takeover after a kill.

    python benchmarks/shared.py            # the full run (a minute or so)
    python benchmarks/shared.py --quick    # what CI runs
    python benchmarks/shared.py --write    # also rewrites the figures in docs/

Each figure runs both sides in one run, on one machine:

- throughput: a shared map of items that each sleep 10 ms, run by 4 participant processes,
  against the same map run by one process with the same threads per process; on SQLite and,
  when the server answers, on PostgreSQL. The items sleep, so the processes overlap even on
  two cores. The participants enter the operation, wait until all have, and start the map
  together; time runs from the first one's map start to the last one's end, so interpreter
  start-up is left out of both sides.
- takeover: two participants; one halts mid-map; the time from its last item start to the
  first re-run of one of its unrecorded items by the other, against the lease + 1 s. Halted
  by SIGKILL, it is known dead on this host and its claims move at once; halted by SIGSTOP
  (as a machine cut off from the network would look: alive, silent), they move when the
  lease runs out.

The PostgreSQL URL comes from ``RESUMABLE_TEST_POSTGRES`` (default: the local server,
``postgresql://postgres@127.0.0.1:5432/test``); without a server those rows are skipped with a
note (CI has one, and sets ``CI=true``, where a missing server fails the run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import _util
from _util import Row

LEASE = 2.0


@dataclass(frozen=True)
class Plan:
    items: int
    participants: int
    threads: int
    cost: float


FULL = Plan(items=2000, participants=4, threads=4, cost=0.01)
QUICK = Plan(items=1200, participants=4, threads=4, cost=0.01)


# --- the participant (this script, run with --child) ----------------------------------------


def child(argv: list[str]) -> int:
    url, op_id, n, cost, threads, log, halt = argv
    how, _, at = halt.partition(":")
    from resumable import checkpointed

    started_items = [0]

    def item(x: int) -> int:
        started_items[0] += 1
        line = f"{os.getpid()} {x} {time.time():.6f}\n".encode()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        if how != "none" and started_items[0] == int(at):
            # Between two store calls: a process stopped inside an SQLite write transaction
            # blocks every writer of the file until it continues (docs/scaling.md).
            with getattr(cp.store, "_guard", contextlib.nullcontext()):
                os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        time.sleep(float(cost))
        return x

    with checkpointed(op_id, store=url, shared=True) as cp:
        print("ready", flush=True)  # then wait for the others: all start the map at once
        go = Path(log).with_suffix(".go")
        deadline = time.monotonic() + 60
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        begin = time.time()
        results = cp.map(item, range(int(n)), workers=int(threads))
        end = time.time()
    assert results == list(range(int(n)))
    print(json.dumps({"begin": begin, "end": end}))
    return 0


def start(url: str, op_id: str, plan: Plan, log: Path, halt: str = "none") -> subprocess.Popen[str]:
    """A participant of ``op_id``; ``halt="kill:30"`` SIGKILLs it as its 30th item starts,
    ``"stop:30"`` SIGSTOPs it there."""
    numbers = (plan.items, plan.cost, plan.threads)
    args = [url, op_id, *map(str, numbers), str(log), halt]
    return subprocess.Popen(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True
    )


def release(procs: list[subprocess.Popen[str]], log: Path) -> None:
    """Wait until every participant has entered the operation, then let them all start."""
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"participant failed to start (exit code {proc.wait()})")
    log.with_suffix(".go").touch()


def finish(procs: list[subprocess.Popen[str]]) -> list[dict[str, float]]:
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"participant failed with exit code {proc.returncode}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


# --- figures -----------------------------------------------------------------------------------


def run_map(url: str, plan: Plan, participants: int, directory: Path) -> float:
    """Items per second of one shared map run by ``participants`` processes."""
    op_id = f"throughput-{uuid.uuid4().hex[:8]}"
    log = directory / f"{op_id}.log"
    procs = [start(url, op_id, plan, log) for _ in range(participants)]
    release(procs, log)
    outs = finish(procs)
    seconds = max(o["end"] for o in outs) - min(o["begin"] for o in outs)
    return plan.items / seconds


def bench_throughput(kind: str, url: str, plan: Plan, directory: Path) -> Row:
    # Two runs of each side, in turns (one, many, many, one); each side's rate is the mean.
    rates: dict[int, list[float]] = {1: [], plan.participants: []}
    for count in (1, plan.participants, plan.participants, 1):
        rates[count].append(run_map(url, plan, count, directory))
    one, many = (sum(rates[n]) / 2 for n in (1, plan.participants))
    speedup = many / one
    return Row(
        f"shared map, {plan.participants} processes vs 1 ({kind})",
        f"{many:,.0f} items/s ({speedup:.2f}x)",
        ">= 3x one process",
        f"one process, same {plan.threads} threads: {one:,.0f} items/s; "
        f"{plan.items:,} items of {plan.cost * 1000:g} ms",
        f"{speedup:.2f}x",
        value=3.0 / speedup,  # smaller is better: 1.0 at the goal
        limit=1.0,
    )


def bench_takeover(kind: str, url: str, plan: Plan, directory: Path, how: str) -> Row:
    op_id = f"takeover-{uuid.uuid4().hex[:8]}"
    log = directory / f"{op_id}.log"
    small = Plan(items=min(plan.items, 400), participants=2, threads=2, cost=0.02)
    halted = start(url, op_id, small, log, halt=f"{how}:30")
    other = start(url, op_id, small, log)
    release([halted, other], log)
    try:
        finish([other])
    finally:
        halted.kill()  # a stopped one is still there
        halted.wait(timeout=60)
    runs = [line.split() for line in log.read_text().splitlines()]
    by_item: dict[str, list[tuple[int, float]]] = {}
    for pid, item, at in runs:
        by_item.setdefault(item, []).append((int(pid), float(at)))
    halt_at = max(float(at) for pid, _, at in runs if int(pid) == halted.pid)
    retaken = [
        at for starts in by_item.values() if len(starts) > 1 for pid, at in starts[1:]
        if pid != halted.pid
    ]  # fmt: skip
    delay = min(retaken) - halt_at if retaken else float("nan")
    what = "SIGKILLed (dead on this host)" if how == "kill" else "SIGSTOPped (silent)"
    return Row(
        f"takeover of a {what} participant's items ({kind})",
        f"{delay:.2f} s",
        f"<= lease + 1 s = {LEASE + 1:g} s",
        f"lease {LEASE:g} s, heartbeat {LEASE / 4:g} s; {len(retaken)} item(s) re-run",
        f"{delay / (LEASE + 1):.2f}x",
        value=delay if retaken else float("inf"),
        limit=LEASE + 1,
    )


def fresh_schema(url: str) -> tuple[str, str]:
    """A URL of ``url`` in a new schema (the store creates it), and the schema's name."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}schema={schema}&lease={LEASE:g}&heartbeat={LEASE / 4:g}", schema


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


SECTION = "shared"


def run(quick: bool, directory: Path) -> list[Row]:
    """Every figure of this script, on SQLite and (when the server answers) PostgreSQL."""
    plan = QUICK if quick else FULL
    rows: list[Row] = []
    sqlite = f"sqlite:///{directory}/state.db?lease={LEASE:g}&heartbeat={LEASE / 4:g}"
    print("... SQLite: throughput", file=sys.stderr)
    rows.append(bench_throughput("SQLite", sqlite, plan, directory))
    for how in ("kill", "stop"):
        print(f"... SQLite: takeover ({how})", file=sys.stderr)
        rows.append(bench_takeover("SQLite", sqlite, plan, directory, how))
    base = _util.postgres_url()
    if base is not None:
        url, schema = fresh_schema(base)
        try:
            print("... PostgreSQL: throughput", file=sys.stderr)
            rows.append(bench_throughput("PostgreSQL", url, plan, directory))
            for how in ("kill", "stop"):
                print(f"... PostgreSQL: takeover ({how})", file=sys.stderr)
                rows.append(bench_takeover("PostgreSQL", url, plan, directory, how))
        finally:
            drop_schema(base, schema)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run (what CI runs)")
    parser.add_argument("--write", action="store_true", help="rewrite the figures in docs/")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    directory = Path(tempfile.mkdtemp(prefix="resumable-shared-"))
    try:
        rows = run(args.quick, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    elapsed = time.perf_counter() - began
    command = _util.command_line()
    table = _util.table(rows)
    print(table)
    print(f"\n`{command}` took {elapsed:.1f} s")
    if args.write:  # docs/benchmarks.md is benchmarks/run.py's
        info = _util.machine()
        text = (
            f"Last run: {_util.now_utc()}, nproc {info['nproc']}, {info['python']}; "
            f"command (from the repository root): `{command}` ({elapsed:.0f} s).\n\n{table}\n"
        )
        _util.replace_section(_util.REPO / "docs" / "scaling.md", SECTION, text)
    return _util.exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
