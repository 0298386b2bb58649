"""What exactly-once output and input cost: ``cp.open`` and ``cp.lines`` against plain files.

Usage (from the repository root)::

    python benchmarks/exactly_once.py            # full run, prints a Markdown table
    python benchmarks/exactly_once.py --quick    # reduced run

``benchmarks/run.py`` runs these with every other group and writes docs/benchmarks.md.

Each pair runs the same loop in the same process, the two sides alternating in order from one
round to the next, so that a noisy machine moves both alike:

- a ``cp.iterate`` loop writing one line per item to a ``cp.open`` file, against the same loop
  writing to a plain ``open()`` file (the commits, every second, are in both);
- a ``cp.lines`` loop over a text file, against ``for line in open(path)`` over it;
- re-entering a ``cp.lines`` loop stopped near the end of a 2M-line file, up to its first
  item, against one plain read of the file (what a loop resumed by counting lines pays).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import _util
from _util import Row, fmt_ratio, median

perf = time.perf_counter


@dataclass(frozen=True)
class Plan:
    """How much work each figure does."""

    write_items: int
    lines: int
    rounds: int
    resume_rounds: int


FULL = Plan(write_items=1_000_000, lines=2_000_000, rounds=7, resume_rounds=7)
QUICK = Plan(write_items=300_000, lines=2_000_000, rounds=3, resume_rounds=3)
LINE = "2026-12-04T10:00:00,customer-0042,order-%07d,129.95,EUR,shipped\n"


def _write_loop(url: str, op_id: str, path: Path, n: int, *, library: bool) -> float:
    from resumable import checkpointed

    with checkpointed(op_id, store=url) as cp:
        f = cp.open(path, "w") if library else open(path, "w")  # noqa: SIM115 - closed below
        started = perf()
        for i in cp.iterate(range(n)):
            f.write(LINE % i)
        elapsed = perf() - started
        f.close()
    return elapsed


def _alternate(
    rounds: int, plain: Callable[[int], float], library: Callable[[int], float]
) -> tuple[list[float], list[float]]:
    """Each side's seconds per round, the two run in turns, the first one alternating."""
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        gc.collect()
        if r % 2:
            b.append(library(r))
            a.append(plain(r))
        else:
            a.append(plain(r))
            b.append(library(r))
    return a, b


def bench_open(directory: Path, plan: Plan) -> Row:
    url = f"sqlite:///{directory / 'open.db'}"
    _write_loop(url, "open-warmup", directory / "warm.txt", 10_000, library=True)

    def side(library: bool) -> Callable[[int], float]:
        def run(r: int) -> float:
            path = directory / f"out-{r}-{library}.txt"
            took = _write_loop(url, f"open-{r}-{library}", path, plan.write_items, library=library)
            path.unlink()
            return took

        return run

    plain, lib = _alternate(plan.rounds, side(library=False), side(library=True))
    n = plan.write_items
    a, b = median(plain) / n * 1e9, median(lib) / n * 1e9
    return Row(
        figure=f"A `cp.iterate` loop writing a line per item through `cp.open` ({n:,} lines)",
        measured=f"{b:.0f} ns/item",
        goal="<= 1.3x the same loop over `open()`",
        compared=f"`open()`: {a:.0f} ns/item",
        ratio=fmt_ratio(b, a),
        value=b / a,
        limit=1.3,
    )


def write_lines(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.writelines(LINE % i for i in range(n))


def _plain_read(path: Path) -> float:
    started = perf()
    with path.open(encoding="utf-8") as f:
        for _ in f:
            pass
    return perf() - started


def _lines_loop(url: str, op_id: str, path: Path) -> float:
    from resumable import checkpointed

    with checkpointed(op_id, store=url) as cp:
        started = perf()
        for _ in cp.lines(path):
            pass
        return perf() - started


def bench_lines(directory: Path, path: Path, plan: Plan) -> Row:
    url = f"sqlite:///{directory / 'lines.db'}"
    _lines_loop(url, "lines-warmup", path)  # and the file is in the page cache for both
    plain, lib = _alternate(
        plan.rounds, lambda r: _plain_read(path), lambda r: _lines_loop(url, f"lines-{r}", path)
    )
    n = plan.lines
    a, b = median(plain) / n * 1e9, median(lib) / n * 1e9
    return Row(
        figure=f"`cp.lines` over a {n:,}-line file (`pass` body)",
        measured=f"{b:.0f} ns/line",
        goal="<= 2x `for line in open(path)`",
        compared=f"`for line in open(path)`: {a:.0f} ns/line",
        ratio=fmt_ratio(b, a),
        value=b / a,
        limit=2.0,
    )


class _Stop(Exception):
    pass


def _stop_near_end(url: str, op_id: str, path: Path, at: int) -> None:
    from resumable import checkpointed

    with suppress(_Stop), checkpointed(op_id, store=url, every=at) as cp:
        for n, _ in enumerate(cp.lines(path), 1):
            if n > at:
                raise _Stop


def _resume_first(url: str, op_id: str, path: Path, expect: str) -> float:
    from resumable import checkpointed

    started = perf()
    with checkpointed(op_id, store=url) as cp:
        first = next(iter(cp.lines(path)))
        took = perf() - started
    if first != expect:
        raise AssertionError(f"resumed at {first!r}, not at {expect!r}")
    return took


def bench_resume(directory: Path, path: Path, plan: Plan) -> Row:
    url = f"sqlite:///{directory / 'resume.db'}"
    n = plan.lines
    at = n - 1000
    expect = LINE % at

    def resume(r: int) -> float:
        _stop_near_end(url, f"resume-{r}", path, at)
        return _resume_first(url, f"resume-{r}", path, expect)

    plain, lib = _alternate(plan.resume_rounds, lambda r: _plain_read(path), resume)
    a, b = median(plain), median(lib)
    return Row(
        figure=f"Re-entering a `cp.lines` loop stopped at line {at:,} of {n:,}, to its first item",
        measured=f"{b * 1e3:.2f} ms",
        goal="<= 0.05x one plain read of the file",
        compared=f"`for line in open(path)`: {a * 1e3:.0f} ms",
        ratio=fmt_ratio(b, a),
        value=b / a,
        limit=0.05,
    )


def run(quick: bool, directory: Path) -> list[Row]:
    plan = QUICK if quick else FULL
    say = lambda what: print(f"... {what}", file=sys.stderr)  # noqa: E731
    rows: list[Row] = []
    say("cp.open against open()")
    rows.append(bench_open(directory, plan))
    path = directory / "input.txt"
    write_lines(path, plan.lines)
    say("cp.lines against for line in open()")
    rows.append(bench_lines(directory, path, plan))
    say("re-entering a cp.lines loop near the end of the file")
    rows.append(bench_resume(directory, path, plan))
    return rows


def main(argv: list[str] | None = None) -> int:
    return _util.run_alone(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
