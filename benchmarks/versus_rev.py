"""This checkout's hot paths against another revision's, as same-run ratios.

    python benchmarks/versus_rev.py REV            # e.g. main~5, a tag, a commit id
    python benchmarks/versus_rev.py REV --rounds 9
    python benchmarks/versus_rev.py REV --write docs/security.md   # the table into a page

For a change that must not make the hot paths slower (the file checks of issue 13, say): the
other revision is checked out into a temporary git worktree; a child process measures
``cp.commit()`` on SQLite and on the file store, an ``@resumable`` hit and miss on SQLite,
and a ``cp.iterate`` loop's cost per item with a ``pass`` body and with two state assignments,
with one tree or the other first on its path, the two alternating round by round so the
machine's noise falls on both. Each figure is the median of the rounds' medians; the ratio is
this checkout's over the other's (below 1: faster now). ``--write PAGE`` puts the table, with
the command and the machine, between the page's ``<!-- versus_rev -->`` and
``<!-- /versus_rev -->`` lines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
from statistics import median

import resumable
from resumable import checkpointed, resumable as cached

clock = time.perf_counter_ns


def commits(url, n=1500):
    out = []
    with checkpointed("op", store=url, state={"done": 0, "bytes": 0}) as cp:
        for i in cp.iterate(range(n)):
            cp.state.done = i
            t0 = clock()
            cp.commit()
            out.append(clock() - t0)
    return median(out[200:]) / 1e3


def loop(url, op, n=500_000, state=False):
    # Per item: a `pass` body, or two assignments of immutable values (the undo log's cost).
    with checkpointed(op, store=url, state={"done": 0, "total": 0}) as cp:
        t0 = clock()
        if state:
            for i in cp.iterate(range(n)):
                cp.state.done = i
                cp.state.total += i
        else:
            for i in cp.iterate(range(n)):
                pass
        return (clock() - t0) / n


def calls(url, n=600):
    def f(x):
        return x + 1

    g = cached(store=url)(f)
    miss, hit = [], []
    for i in range(n):
        t0 = clock()
        g(i)
        miss.append(clock() - t0)
    for i in range(n):
        t0 = clock()
        g(i)
        hit.append(clock() - t0)
    return median(miss[50:]) / 1e3, median(hit[50:]) / 1e3


with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    miss, hit = calls(f"sqlite:///{d}/calls.db")
    print(json.dumps({
        "cp.commit() sqlite (us)": commits(f"sqlite:///{d}/c.db"),
        "cp.commit() file store (us)": commits(f"file://{d}/fs", 600),
        "@resumable miss (us)": miss,
        "@resumable hit (us)": hit,
        "cp.iterate per item, pass body (ns)": loop(f"sqlite:///{d}/l.db", "pass"),
        "cp.iterate per item, two state assignments (ns)": loop(
            f"sqlite:///{d}/l.db", "state", state=True
        ),
    }))
"""


def _run(tree: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the other revision (anything git rev-parse takes)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", metavar="PAGE", help="write the table into PAGE's block")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other), args.rev],
            check=True,
        )
        try:
            rounds: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
            for i in range(args.rounds):
                order = [("this", ROOT), ("other", other)]
                for name, tree in order if i % 2 == 0 else order[::-1]:
                    rounds[name].append(_run(tree))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)],
                check=False,
            )
    command = "python benchmarks/versus_rev.py " + " ".join(sys.argv[1:])
    lines = [
        f"This checkout against `{args.rev}`, {args.rounds} alternating rounds (medians of "
        f"each round's medians), {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, nproc "
        f"{os.cpu_count()}, Python {sys.version.split()[0]}; written by `{command}`:",
        "",
        f"| figure | this checkout | `{args.rev}` | ratio |",
        "|---|---|---|---|",
    ]
    for key in rounds["this"][0]:
        now = statistics.median(r[key] for r in rounds["this"])
        then = statistics.median(r[key] for r in rounds["other"])
        lines.append(f"| {key} | {now:.1f} | {then:.1f} | {now / then:.2f}x |")
    print("\n".join(lines))
    if args.write:
        _write(Path(args.write), lines)


def _write(page: Path, lines: list[str]) -> None:
    """Replace what stands between the page's markers with ``lines``."""
    text = page.read_text()
    begin, end = "<!-- versus_rev -->\n", "<!-- /versus_rev -->"
    head, found, rest = text.partition(begin)
    if not found or end not in rest:
        raise SystemExit(f"{page} has no {begin.strip()} ... {end} block to write into")
    page.write_text(head + begin + "\n".join(lines) + "\n" + end + rest.partition(end)[2])


if __name__ == "__main__":
    main()
