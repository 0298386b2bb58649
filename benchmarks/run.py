"""Every benchmark of ``resumable``, side by side with its baseline, in one command.

    python benchmarks/run.py              # the full run (several minutes)
    python benchmarks/run.py --quick      # the reduced run CI does (about two minutes)
    python benchmarks/run.py --write      # also rewrites docs/benchmarks.md and its charts
    python benchmarks/run.py --only core peers   # some groups only

Groups: ``core`` (loop overhead, commits, resume, memory, import, ``cp.map``,
FailsafeManager, ``@resumable`` against joblib.Memory and diskcache), ``exactly-once``
(``cp.open`` against ``open()``, ``cp.lines`` against a plain read, and its resume), ``peers`` (a
hand-written checkpoint loop, a raw atomic file write, DBOS), ``scaling`` (resume and list
as operations and items grow), ``backup`` (against ``cp``), ``postgres`` (a commit against
a raw psycopg upsert), ``shared`` (several processes on one operation; takeover), ``cli``
(``resumable list`` over 10,000 operations), ``testing`` (``assert_crash_safe`` per crash
point, against a run of the job), ``large`` (peak memory of re-entering an
operation whose state is 100 MiB, 40 with ``--quick``). Every figure runs both sides in this
process (or in subprocesses it starts), interleaved, and is reported as a ratio, because the
machine is noisy. The exit code is 1 if a gated goal is missed by more than 1.5x: a regression
fails, noise does not.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _util
from _util import Row

DOC = _util.REPO / "docs" / "benchmarks.md"
IMAGES = _util.REPO / "docs" / "img"


@dataclass(frozen=True)
class Group:
    name: str
    title: str
    measure: Callable[[bool, Path], list[Row]]
    #: Writes this group's figures into another page, from its rows and the command line;
    #: returns the page's path (see :func:`table_section`).
    page: Callable[[list[Row], str], Path] | None = None


def table_section(page: str, section: str) -> Callable[[list[Row], str], Path]:
    """A ``Group.page`` that puts the group's table in ``section`` of ``docs/<page>``."""

    def write(rows: list[Row], command: str) -> Path:
        info = _util.machine()
        path = _util.REPO / "docs" / page
        _util.replace_section(
            path,
            section,
            f"Last run: {_util.now_utc()}, nproc {info['nproc']}, {info['cpu']}, "
            f"{info['python']}, SQLite {info['sqlite']}; written by `{command}`.\n\n"
            f"{_util.table(rows)}",
        )
        return path

    return write


def _core(quick: bool, directory: Path) -> list[Row]:
    import core

    plan = core.QUICK if quick else core.FULL
    return core.run_all(plan, directory, lambda w: print(f"... {w}", file=sys.stderr))


def _peers(quick: bool, directory: Path) -> list[Row]:
    import peers

    return peers.run(directory, quick)


_SCALING: dict[str, dict[int, float]] = {}


def _scaling(quick: bool, directory: Path) -> list[Row]:
    import scaling

    series = scaling.measure(directory, quick)
    _SCALING.update(series)
    return scaling.rows_for(series)


def _backup(quick: bool, directory: Path) -> list[Row]:
    import backup

    return backup.run(quick, directory)


def _backup_page(rows: list[Row], command: str) -> Path:
    import backup

    del command  # backup.render names the command line itself
    return backup.write_doc(rows)


def _postgres(quick: bool, directory: Path) -> list[Row]:
    import postgres

    return postgres.run(quick)


def _shared(quick: bool, directory: Path) -> list[Row]:
    import shared

    return shared.run(quick, directory)


def _large(quick: bool, directory: Path) -> list[Row]:
    del directory  # each store's figures use a directory of their own
    import large_state

    return large_state.run(quick)


def _exactly_once(quick: bool, directory: Path) -> list[Row]:
    import exactly_once

    return exactly_once.run(quick, directory)


def _testing(quick: bool, directory: Path) -> list[Row]:
    import crash_safe

    return crash_safe.run(quick, directory)


def _cli(quick: bool, directory: Path) -> list[Row]:
    import cli

    if not cli.SCRIPT.exists():
        raise SystemExit(f"no console script at {cli.SCRIPT}: pip install -e . first")
    plan = cli.QUICK if quick else cli.FULL
    return cli.measure(plan, directory, lambda w: print(f"... {w}", file=sys.stderr))


GROUPS = (
    Group("core", "Core: loops, commits, resume, calls", _core),
    # Before the groups that write hundreds of MB to the disk: its cp baseline and the
    # copies are timed best when no other writeback is pending.
    Group("backup", "Backups against cp", _backup, _backup_page),
    Group("exactly-once", "Exactly once: output files and input files", _exactly_once),
    Group("peers", "Against what a user would write by hand", _peers),
    Group("scaling", "Scaling with operations and items", _scaling),
    Group("postgres", "PostgreSQL commit", _postgres, table_section("scaling.md", "postgres")),
    Group("shared", "Shared operations", _shared, table_section("scaling.md", "shared")),
    Group("cli", "The command line", _cli, table_section("cli.md", "cli-benchmark")),
    Group("testing", "Testing a job's crash safety", _testing),
    Group("large", "Large state: memory of re-entry", _large),
)


# --- the report ------------------------------------------------------------------------------


def chart(group: Group, rows: list[Row]) -> str | None:
    """A PNG of the group's figures against their goals; its path under docs/ (or None)."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    IMAGES.mkdir(exist_ok=True)
    path = IMAGES / f"bench-{group.name}.png"
    if group.name == "scaling" and _SCALING:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for name, points in _SCALING.items():
            sizes = sorted(points)
            ax.plot(sizes, [points[n] * 1e6 for n in sizes], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (operations, or items)")
        ax.set_ylabel("microseconds")
        ax.legend(fontsize=7)
    else:
        shown = [r for r in rows if r.limit > 0 and r.value > 0 and r.measured != "skipped"]
        if not shown:
            return None
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.2))
        ratios = [r.value / r.limit for r in shown]
        colours = [
            "tab:green" if q <= 1 else ("tab:orange" if not r.gated else "tab:red")
            for q, r in zip(ratios, shown, strict=True)
        ]
        # Numbered: two figures whose names start alike must not share one bar.
        labels = [
            f"{i}. " + (r.figure if len(r.figure) <= 56 else r.figure[:53] + "...")
            for i, r in enumerate(shown, 1)
        ]
        ax.barh(labels, ratios, color=colours)
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("measured / goal (left of the line: goal met)")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    ax.set_title(group.title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(DOC.parent))


def render(results: list[tuple[Group, list[Row], float]], command: str, elapsed: float) -> str:
    import core

    info = _util.machine()
    parts = [
        "# Benchmarks\n\n"
        "Every performance goal of `resumable`, each measured against its baseline in the same "
        "run, as a ratio: the machines are noisy, and both sides move alike. This page is "
        "written by `benchmarks/run.py --write`: do not edit the figures by hand. A gated goal "
        f"missed by more than {_util.HARD_FACTOR:g}x fails the run (CI runs `--quick`); a row "
        'marked *known* is not gated, and "Known misses" below says why.\n\n'
        "## Last run\n\n"
        f"- Date: {_util.now_utc()}\n"
        f"- Machine: nproc {info['nproc']}, {info['cpu']}, {info['os']}\n"
        f"- Python: {info['python']}, SQLite {info['sqlite']}\n"
        f"- Command (from the repository root): `{command}` ({elapsed:.0f} s)\n"
    ]
    for group, rows, seconds in results:
        parts.append(f"\n## {group.title}\n\n")
        image = chart(group, rows)
        if image is not None:
            parts.append(f"![{group.title}]({image})\n\n")
        if rows:
            parts.append(_util.table(rows) + "\n")
        else:
            parts.append("Not measured in this run (see the command's output).\n")
        parts.append(f"\n`{group.name}`: {seconds:.0f} s.\n")
    parts.append("\n" + core.METHOD)
    parts.append(known_misses([r for _, rows, _ in results for r in rows]))
    return "".join(parts)


def known_misses(rows: list[Row]) -> str:
    """The rows left out of the gate, each with its own figures and the reason it gives."""
    free = [r for r in rows if not r.gated]
    if not free:
        return "\n## Known misses\n\nNone: every row of this run is gated.\n"
    lines = [
        "\n## Known misses\n\nRows whose goal is not met yet, with this run's figures; each "
        "still fails the run past a regression guard:\n"
    ]
    for r in free:
        lines.append(
            f"- **{r.figure}**: {r.measured} against a goal of {r.goal} ({r.ratio}; "
            f"{r.result}). {r.why} It fails the run above {r.guard:.3g}, in the goal's units."
        )
    return "\n".join(lines) + "\n"


# --- the other pages that quote figures -------------------------------------------------------


def _amount(row: Row) -> str:
    """The leading figure of a row's ``measured`` text: ``17.2 us`` of ``17.2 us (p90 ...)``."""
    found = re.match(r"[\d.,]+ ?[^\s(;/]+", row.measured)
    if found is None:
        raise ValueError(f"row {row.figure!r} starts with no figure: {row.measured!r}")
    return found.group(0).replace(" us", " µs")


def _yardstick(row: Row) -> str:
    """The plain loop a per-item row is compared with: ``10 ns`` of ``plain `for`: 10 ns/item``."""
    found = re.search(r"([\d.,]+ ns)/item", row.compared)
    return found.group(1) if found else "?"


def speed_line(rows: list[Row], benchmarks_link: str) -> str:
    """README's and the docs index's "Cheap enough for tight loops" bullet, from this run."""
    keyed = {r.key: r for r in rows if r.key}
    missing = {"commit", "iterate", "state"} - set(keyed)
    if missing:
        raise SystemExit(f"--write: no row keyed {sorted(missing)} in this run")
    return (
        f"- **Cheap enough for tight loops.** A commit is one SQLite write: "
        f'{_amount(keyed["commit"])} at the median (`durability="normal"`). By default a '
        f"loop commits at most once a second; `cp.iterate` adds {_amount(keyed['iterate'])} "
        f"per item, and each `cp.state` assignment {_amount(keyed['state'])} over a plain dict, "
        f"on a machine where a plain `for` takes {_yardstick(keyed['iterate'])} per item "
        f"([benchmarks]({benchmarks_link}), measured {_util.now_utc()[:10]})."
    )


def write_pages(results: list[tuple[Group, list[Row], float]], command: str) -> list[Path]:
    """Every page other than benchmarks.md whose figures this run measured."""
    import checksums

    docs = _util.REPO / "docs"
    every = [r for _, found, _ in results for r in found]
    written: list[Path] = []

    def put(path: Path, section: str, text: str) -> None:
        _util.replace_section(path, section, text)
        written.append(path)

    put(_util.REPO / "README.md", "speed", speed_line(every, "docs/benchmarks.md"))
    put(docs / "index.md", "speed", speed_line(every, "benchmarks.md"))
    put(docs / "security.md", checksums.SECTION, checksums.table())
    written.extend(
        group.page(found, command) for group, found, _ in results if group.page and found
    )
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the reduced run CI does")
    parser.add_argument("--write", action="store_true", help="rewrite docs/benchmarks.md")
    parser.add_argument("--only", nargs="+", choices=[g.name for g in GROUPS], metavar="GROUP")
    args = parser.parse_args(argv)
    groups = [g for g in GROUPS if not args.only or g.name in args.only]
    if args.write and args.only:
        parser.error("--write rewrites the whole page: run every group (no --only)")
    began = time.perf_counter()
    results: list[tuple[Group, list[Row], float]] = []
    for group in groups:
        print(f"== {group.name}", file=sys.stderr)
        os.sync()  # no writeback left over from the group before slows this one's writes
        directory = Path(tempfile.mkdtemp(prefix=f"resumable-bench-{group.name}-"))
        started = time.perf_counter()
        try:
            rows = group.measure(args.quick, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        results.append((group, rows, time.perf_counter() - started))
        print(_util.table(rows) if rows else "(no rows)", flush=True)
    elapsed = time.perf_counter() - began
    command = _util.command_line()
    print(f"\n`{command}` took {elapsed:.0f} s")
    if args.write:
        DOC.write_text(render(results, command, elapsed), encoding="utf-8")
        print(f"wrote {DOC.relative_to(_util.REPO)} and its charts in docs/img/")
        for page in write_pages(results, command):
            print(f"wrote {page.relative_to(_util.REPO)}")
    return _util.exit_code([r for _, rows, _ in results for r in rows])


if __name__ == "__main__":
    sys.exit(main())
