"""The PostgreSQL store's checkpoint commit against a raw psycopg upsert, in one run.

Usage (from the repository root; needs a server, by default the tests' one)::

    python benchmarks/postgres.py            # full run
    python benchmarks/postgres.py --quick    # reduced run, a few seconds
    python benchmarks/postgres.py --url postgresql://user@host/db

``store.add_checkpoint`` of a small checkpoint (a few hundred bytes of payload) runs through
a held lease, so the fenced statement is measured (durability normal:
``synchronous_commit=off``). The baseline is the upsert a user would write by hand with
psycopg: the same bytes into a table of the same shape, on one autocommit connection with the
same ``synchronous_commit``. The two sides alternate, each going first every other time, so a
noisy machine moves both alike. The unfenced path (an operation this process holds no lease
on, ``lock=False``) is measured the same way. Everything runs in a schema of its own, dropped
at the end. The exit code is 1 if a goal is missed by more than 1.5x, else 0.
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

import _util
from _util import Row, fmt_ratio, median, percentile

#: The fenced commit may cost this much more than the raw upsert, at the median.
GOAL = 1.5
#: Bytes of pickled state: a small dict of counters and a short string, as in a real loop.
PAYLOAD_BYTES = 300


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}&durability=normal"


def _raw_connection(url: str, schema: str) -> Any:
    import psycopg
    from psycopg import sql

    conn = psycopg.connect(url, autocommit=True)
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    conn.execute("SET synchronous_commit TO off")
    conn.execute("CREATE TABLE raw_checkpoints (LIKE checkpoints INCLUDING ALL)")
    return conn


_RAW_UPSERT = (
    'INSERT INTO raw_checkpoints (op_id, slot, seq, "position", state, progress, "timestamp", '
    "serializer, payload, metadata, checksum) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (op_id, slot) DO UPDATE SET seq = excluded.seq, "
    '"position" = excluded."position", state = excluded.state, progress = excluded.progress, '
    '"timestamp" = excluded."timestamp", serializer = excluded.serializer, '
    "payload = excluded.payload, metadata = excluded.metadata, checksum = excluded.checksum"
)


def _compare(
    lib: Callable[[int], None], raw: Callable[[int], None], samples: int, warmup: int
) -> tuple[list[int], list[int]]:
    """Alternate ``lib(i)`` and ``raw(i)``; their times in ns after the warmup."""
    clock = time.perf_counter_ns
    lib_ns: list[int] = []
    raw_ns: list[int] = []
    gc.collect()
    for i in range(warmup + samples):
        if i % 2:
            t0 = clock()
            lib(i)
            t1 = clock()
            raw(i)
            t2 = clock()
            a, b = t1 - t0, t2 - t1
        else:
            t0 = clock()
            raw(i)
            t1 = clock()
            lib(i)
            t2 = clock()
            b, a = t1 - t0, t2 - t1
        if i >= warmup:
            lib_ns.append(a)
            raw_ns.append(b)
    return lib_ns, raw_ns


def bench_add_checkpoint(url: str, samples: int, *, fenced: bool) -> Row:
    from resumable import ProcessState, open_store
    from resumable.operation import CheckpointRecord
    from resumable.stores._pg_sql import ROWS

    schema = f"bench_{secrets.token_hex(4)}"
    store = open_store(_with_schema(url, schema))
    raw = _raw_connection(url, schema)
    op_id = "bench-fenced" if fenced else "bench-unfenced"
    lock = store.lock(op_id)
    try:
        if fenced:
            lock.acquire()
        payload = os.urandom(PAYLOAD_BYTES)
        warmup = max(100, samples // 10)
        records = [
            CheckpointRecord.create(
                op_id, i + 1, i + 1, ProcessState.RUNNING, 0.0, "pickle", payload
            )
            for i in range(warmup + samples)
        ]
        rows = [ROWS.checkpoint_row(r, store.history) for r in records]

        def lib(i: int) -> None:
            store.add_checkpoint(records[i])

        def base(i: int) -> None:
            raw.execute(_RAW_UPSERT, rows[i])

        lib_ns, raw_ns = _compare(lib, base, samples, warmup)
    finally:
        lock.release()
        store.close()
        raw.execute(f'DROP SCHEMA "{schema}" CASCADE')
        raw.close()
    lib_p50, raw_p50 = median(lib_ns) / 1e3, median(raw_ns) / 1e3
    lib_p90, raw_p90 = percentile(lib_ns, 90) / 1e3, percentile(raw_ns, 90) / 1e3
    ratio = lib_p50 / raw_p50
    how = "through a held lease (fenced)" if fenced else "no lease held (lock=False, unfenced)"
    return Row(
        figure=f"`store.add_checkpoint` p50, {PAYLOAD_BYTES} B payload, {how}",
        measured=f"{lib_p50:.0f} us (p90 {lib_p90:.0f} us)",
        goal=f"<= {GOAL:g}x raw",
        compared=f"raw psycopg upsert, same bytes: {raw_p50:.0f} us (p90 {raw_p90:.0f} us)",
        ratio=fmt_ratio(lib_p50, raw_p50),
        value=ratio,
        limit=GOAL,
    )


def run(quick: bool, url: str | None = None) -> list[Row]:
    """Both commit figures; none (with a note) if no server answers outside CI."""
    url = _util.postgres_url(url)
    if url is None:
        return []
    samples = 1000 if quick else 10_000
    rows = []
    for fenced in (True, False):
        print(f"... add_checkpoint, fenced={fenced}", file=sys.stderr)
        rows.append(bench_add_checkpoint(url, samples, fenced=fenced))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run (a few seconds)")
    parser.add_argument(
        "--url",
        default=os.environ.get("RESUMABLE_TEST_POSTGRES") or _util.DEFAULT_POSTGRES,
        help="the server (default: $RESUMABLE_TEST_POSTGRES or the local test server)",
    )
    parser.add_argument("--write", action="store_true", help="put the figures in docs/")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = run(args.quick, args.url)
    elapsed = time.perf_counter() - started
    import psycopg

    with psycopg.connect(args.url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    info = _util.machine()
    summary = (
        f"nproc {info['nproc']}, {info['python']}, PostgreSQL {version[0] if version else '?'}, "
        f"psycopg {psycopg.__version__}; `{_util.command_line()}` took {elapsed:.1f} s"
    )
    print(_util.table(rows))
    print()
    print(summary)
    if args.write:  # docs/benchmarks.md is benchmarks/run.py's
        text = f"Last run: {_util.now_utc()}, {summary}.\n\n{_util.table(rows)}\n"
        _util.replace_section(_util.REPO / "docs" / "scaling.md", "postgres", text)
    return _util.exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
