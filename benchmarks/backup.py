"""Backups against ``cp`` of the same file in the same run: create, unchanged, restore.

    python benchmarks/backup.py [--quick] [--dir DIR]

One random file (512 MiB; ``--quick``: 128 MiB) is read once so that every side copies it
from the page cache. Each round runs every measurement once, in an order that is reversed
every other round. Before each one, ``sync`` runs (so none starts with another's dirty pages
still being written back), the files the sides copy from are read again (so none reads from
the disk what proactive reclaim, e.g. DAMON, evicted meanwhile), and twice the file's size of
memory is written and freed: on a virtual machine that hands freed memory back to its host
(virtio-balloon free page reporting), the first touch of a page costs a trip to the host, and
without this whichever side happened to get such pages ran up to 5x slower. Even so the host
adds delays at random (a side's time varied up to 5x between rounds, never below a stable
floor), so sides are compared by their best round, the estimator that interference cannot
bias (as ``timeit`` advises); each side's median is shown beside it.

- ``create`` makes a full backup (a new backup directory each time, so nothing is deduped):
  with ``durable=False`` against ``cp SRC NEW``; with the default ``durable=True`` (the copy,
  its manifest and both directory entries fsynced) against ``cp SRC NEW`` followed by
  ``sync NEW`` (coreutils ``sync FILE`` fsyncs that file), and against plain ``cp``.
- *unchanged*: ``create`` again on a file backed up before: a stat, the manifest, one hash
  pass over the source, no copy. Against ``cp SRC NEW``.
- ``restore`` over an existing file (verify while copying, keep the old file aside, rename):
  against ``cp SRC EXISTING`` (truncates and rewrites in place, not atomic), with and without
  fsync likewise; and against the atomic way with coreutils, ``cp SRC TMP && mv TMP EXISTING``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _util import Row, command_line, exit_code, filesystem_of, fmt_ratio, machine, median, table

MIB = 1 << 20


def write_source(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for _ in range(size // (16 * MIB)):
            f.write(os.urandom(16 * MIB))
    path.read_bytes()  # warm: every side reads it from the page cache


def cp(src: Path, dst: Path, *, sync: bool) -> None:
    subprocess.run(["cp", str(src), str(dst)], check=True)
    if sync:
        subprocess.run(["sync", str(dst)], check=True)


def cp_mv(src: Path, dst: Path) -> None:
    """The atomic way with coreutils: copy to a temp name beside ``dst``, rename over it."""
    tmp = dst.with_name(dst.name + ".tmp")
    subprocess.run(["cp", str(src), str(tmp)], check=True)
    subprocess.run(["mv", str(tmp), str(dst)], check=True)


def settle(size: int, warm: list[Path]) -> None:
    """Start with no dirty pages, the ``warm`` files cached, free memory the host has backed."""
    os.sync()
    buf = bytearray(16 * MIB)
    for path in warm:
        with path.open("rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    touched = bytearray(b"\1") * (2 * size)
    del touched
    # Page cache for the step's output: this VM backs guest memory on first touch, slowly
    # (a first 512 MiB write took 1.3 s, the next 0.1 s). Written and freed here, pages the
    # host has backed are what the step's writes get, whichever side runs.
    scratch = warm[0].with_name("settle.scratch")
    with scratch.open("wb", buffering=0) as f:
        for _ in range(size // (16 * MIB) + 1):
            f.write(buf)
    scratch.unlink()
    os.sync()


def measure(directory: Path, size: int, rounds: int, note: Callable[[str], None]) -> dict:
    from resumable.backup import Backups

    src = directory / "source.bin"
    note(f"writing a {size // MIB} MiB source file")
    write_source(src, size)
    keeper = Backups(directory / "kept")  # durable: its backup is the one restored
    kept = keeper.create(src)
    fast_keeper = Backups(directory / "kept", durable=False)
    new, existing = directory / "new", directory / "existing"
    shutil.copyfile(src, existing)  # what restore and "cp over" replace

    def remove_new() -> None:  # the output of the steps that make a new file or directory
        if new.is_dir():
            shutil.rmtree(new)
        elif new.exists():
            new.unlink()

    steps: list[tuple[str, Callable[[], object]]] = [
        ("cp", lambda: cp(src, new, sync=False)),
        ("cp+sync", lambda: cp(src, new, sync=True)),
        ("cp over", lambda: cp(src, existing, sync=False)),
        ("cp over+sync", lambda: cp(src, existing, sync=True)),
        ("cp+mv over", lambda: cp_mv(src, existing)),
        ("create", lambda: Backups(new, durable=False).create(src)),
        ("create durable", lambda: Backups(new).create(src)),
        ("unchanged", lambda: keeper.create(src)),
        ("restore", lambda: fast_keeper.restore(kept.backup_id, existing)),
        ("restore durable", lambda: keeper.restore(kept.backup_id, existing)),
    ]
    times: dict[str, list[float]] = {}
    for i in range(rounds):
        note(f"round {i + 1}/{rounds}")
        for name, step in steps if i % 2 == 0 else steps[::-1]:
            settle(size, [src, Path(kept.backup_path)])
            started = time.perf_counter()
            step()
            times.setdefault(name, []).append(time.perf_counter() - started)
            remove_new()  # every step starts with the same files cached
    assert keeper.create(src) == kept  # the unchanged rounds made no new backup
    return times


def rows_for(times: dict[str, list[float]], size: int, rounds: int) -> list[Row]:
    mib = size // MIB
    best = {name: min(values) for name, values in times.items()}
    mid = {name: median(values) for name, values in times.items()}

    def row(figure: str, ours: str, base: str, limit: float, gated: bool = True) -> Row:
        return Row(
            figure=figure,
            measured=f"{best[ours] * 1e3:.0f} ms, {mib / best[ours]:.0f} MiB/s "
            f"(median {mid[ours] * 1e3:.0f} ms)",
            goal=f"<= {limit:g}x",
            compared=f"`{base}`: {best[base] * 1e3:.0f} ms (median {mid[base] * 1e3:.0f} ms); "
            f"{mib} MiB, best of {rounds} rounds",
            ratio=fmt_ratio(best[ours], best[base]),
            value=best[ours] / best[base],
            limit=limit,
            gated=gated,
        )

    return [
        row("`create`, durable=False", "create", "cp", 1.5),
        row("`create`, durable=True (default)", "create durable", "cp+sync", 1.5),
        row("`create`, durable=True, against plain cp", "create durable", "cp", 1.5, gated=False),
        row("`create` of the unchanged file (dedup)", "unchanged", "cp", 0.5),
        # cp rewrites in place, which is not atomic: the like-for-like baseline is cp + mv.
        row("`restore` over a file, durable=False", "restore", "cp over", 1.5, gated=False),
        row("`restore` over a file, durable=False, against cp + mv", "restore", "cp+mv over", 1.5),
        row("`restore` over a file, durable=True", "restore durable", "cp over+sync", 1.5),
    ]


def run(quick: bool, directory: Path) -> list[Row]:
    """Every figure of this script (128 MiB, 5 rounds when quick; else 512 MiB, 7)."""
    size, rounds = (128 * MIB, 5) if quick else (512 * MIB, 7)
    times = measure(directory, size, rounds, lambda w: print(f"... {w}", file=sys.stderr))
    return rows_for(times, size, rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB, 5 rounds (else 512, 7)")
    parser.add_argument("--dir", help="where to put the files (default: $TMPDIR)")
    args = parser.parse_args(argv)
    size, rounds = (128 * MIB, 5) if args.quick else (512 * MIB, 7)
    started = time.perf_counter()
    directory = Path(tempfile.mkdtemp(prefix="resumable-bench-backup-", dir=args.dir))
    try:
        times = measure(directory, size, rounds, lambda w: print(f"... {w}", file=sys.stderr))
        fs = filesystem_of(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    rows = rows_for(times, size, rounds)
    info = machine()
    print(table(rows))
    print()
    print(
        f"nproc {info['nproc']}, {info['cpu']}, {info['python']}, files on {fs}; "
        f"`{command_line()}` took {time.perf_counter() - started:.1f} s"
    )
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
