"""Shared helpers of the benchmark scripts: statistics, subprocesses, RSS, the report table.

Nothing here imports ``resumable``: a benchmark that measures import time or memory decides
itself when the library gets loaded.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: A figure that misses its goal by more than this factor fails the run (exit code 1).
HARD_FACTOR = 1.5


def _cache_bytecode() -> None:
    """Let every child Python this run starts keep compiled bytecode, as a user's has.

    pip compiles a package's bytecode when it installs it, and Python caches it for an
    editable install on first import. A shell with ``PYTHONDONTWRITEBYTECODE`` set (this
    project's CI machines have it) makes every child compile ``resumable`` from source
    again, so an import-time or CLI figure would time the compiler. The children inherit
    this process's environment: the variable is dropped there, and the cache goes to a
    directory of this run's own (``PYTHONPYCACHEPREFIX``), never into the source tree.
    The benchmarks run each command once untimed first, which fills it.
    """
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is None:
        return
    if "PYTHONPYCACHEPREFIX" not in os.environ:
        cache = tempfile.mkdtemp(prefix="resumable-bench-pyc-")
        os.environ["PYTHONPYCACHEPREFIX"] = cache
        atexit.register(shutil.rmtree, cache, ignore_errors=True)


_cache_bytecode()
# The library's lines on stderr (a block resumed, skipped as completed) would fill the run's
# output thousands of times over, as blocks are entered again and again: only warnings, here
# and in every child.
os.environ.setdefault("RESUMABLE_LOG", "quiet")


# --- statistics ---------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# --- process facts ------------------------------------------------------------------------


def run_child(*args: str, cwd: str | os.PathLike[str] | None = None) -> dict[str, object]:
    """Run this interpreter on ``args`` and parse the JSON object its last stdout line holds."""
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, cwd=cwd
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmark child {args!r} failed with exit code {proc.returncode}:\n{proc.stderr}"
        )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def filesystem_of(path: str | os.PathLike[str]) -> str:
    """The file system type of the mount that holds ``path`` (from /proc/mounts)."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1]
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": __import__("sqlite3").sqlite_version,
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
    }


def command_line() -> str:
    """The command that is running, as typed from the repository root."""

    def shown(path: str, fallback: str) -> str:
        absolute = Path(os.path.abspath(path))  # not resolve(): a venv's python is a symlink
        try:
            return str(absolute.relative_to(REPO))
        except ValueError:
            return fallback

    return shlex.join(
        [shown(sys.executable, "python"), shown(sys.argv[0], sys.argv[0]), *sys.argv[1:]]
    )


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- services -----------------------------------------------------------------------------

#: The PostgreSQL server of the tests and benchmarks, unless RESUMABLE_TEST_POSTGRES says.
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url(url: str | None = None) -> str | None:
    """The server's URL (``url``, else RESUMABLE_TEST_POSTGRES, else the local one) if it
    answers; None, said on stderr, if it does not (in CI, where it must, the run fails)."""
    url = url or os.environ.get("RESUMABLE_TEST_POSTGRES") or DEFAULT_POSTGRES
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise SystemExit(f"CI: the PostgreSQL server at {url} does not answer: {exc}") from exc
        print(f"... PostgreSQL rows skipped: {exc}", file=sys.stderr)
        return None
    return url


# --- absolute goals on a slower machine -----------------------------------------------------

#: The absolute goals (ns, us, ms per operation) were set on a machine where a plain
#: ``for x in range(N): pass`` took this long per item.
REFERENCE_NS = 10.0
_SLOWDOWN: list[float] = []


def slowdown() -> float:
    """How many times slower than :data:`REFERENCE_NS` this machine runs a plain loop (>= 1).

    Measured once per process (best of 5 loops of 1M items). A VM whose host throttles it
    runs everything several times slower; an absolute goal is scaled by this factor, and the
    row says so (:func:`goal`), so the gate compares like with like.
    """
    if not _SLOWDOWN:
        import time

        data = range(1_000_000)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _x in data:
                pass
            best = min(best, time.perf_counter() - started)
        _SLOWDOWN.append(max(1.0, best / len(data) * 1e9 / REFERENCE_NS))
    return _SLOWDOWN[0]


def goal(limit: float, unit: str) -> dict[str, Any]:
    """An absolute goal on this machine, as a :class:`Row`'s ``goal`` and ``limit`` fields:
    ``limit`` scaled by :func:`slowdown`, and the text that says so."""
    factor = slowdown()
    if factor < 1.05:  # within the noise of the reference machine: the goal as it was set
        return {"goal": f"<= {limit:g} {unit}", "limit": limit}
    return {
        "goal": f"<= {limit * factor:.3g} {unit} ({limit:g} x {factor:.1f}: a plain `for` runs "
        f"{factor:.1f}x slower here than where the goal was set)",
        "limit": limit * factor,
    }


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the report: ``value`` is checked against ``limit`` (smaller is better)."""

    figure: str
    measured: str
    goal: str
    compared: str
    ratio: str
    value: float
    limit: float
    #: False for a known miss: ``limit`` is a goal not met yet, and ``why`` says why. Such a
    #: row still fails the run above ``guard`` (a regression guard, in the units of ``value``).
    gated: bool = True
    #: Why a row is not gated: rendered under "Known misses" with the row's own figures.
    why: str = ""
    #: For a row not gated: the value above which the run fails all the same.
    guard: float = 0.0
    #: A short name for prose that quotes this row's figure (README's "Cheap enough" line).
    key: str = ""

    def __post_init__(self) -> None:
        # A row that cannot fail is not a measurement of a goal: no infinite or zero limits,
        # and no row left out of the gate without a reason and a regression guard.
        if not (math.isfinite(self.limit) and self.limit > 0):
            raise ValueError(f"row {self.figure!r}: its limit {self.limit!r} can never be missed")
        if not math.isfinite(self.value):
            raise ValueError(f"row {self.figure!r}: measured {self.value!r}")
        if not self.gated and not (self.why and math.isfinite(self.guard) and self.guard > 0):
            raise ValueError(
                f"row {self.figure!r} is not gated: say why (Row.why) and above which value "
                "it still fails the run (Row.guard)"
            )

    @property
    def result(self) -> str:
        if self.value <= self.limit:
            return "PASS"
        if not self.gated:
            if self.value > self.guard:
                return f"FAIL (known miss, and above its guard {self.guard:.3g})"
            return f"MISSED by {self.value / self.limit:.1f}x (known; see notes)"
        if self.value <= self.limit * HARD_FACTOR:
            return "FAIL"
        return f"FAIL (>{HARD_FACTOR:g}x goal)"

    @property
    def hard_fail(self) -> bool:
        if not self.gated:
            return self.value > self.guard
        return self.value > self.limit * HARD_FACTOR


def table(rows: Sequence[Row]) -> str:
    head = ("Figure", "Measured", "Goal", "Compared with (same run)", "Ratio", "Result")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines.extend(
        "| " + " | ".join((r.figure, r.measured, r.goal, r.compared, r.ratio, r.result)) + " |"
        for r in rows
    )
    return "\n".join(lines)


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


# --- sections of a page that another script writes -------------------------------------------


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- begin:{name} (written by a script; do not edit) -->", f"<!-- end:{name} -->"


def replace_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between the markers of section ``name`` of ``path`` (appended if absent)."""
    begin, end = _markers(name)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = f"{old.rstrip()}\n\n{block}\n" if old else f"{block}\n"
    path.write_text(new, encoding="utf-8")


def sections(path: Path) -> str:
    """Every marked section of ``path``, to carry over when a script rewrites the page."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    found = []
    at = 0
    while (start := text.find("<!-- begin:", at)) >= 0:
        name = text[start + len("<!-- begin:") :].split(" ", 1)[0]
        end_marker = _markers(name)[1]
        stop = text.find(end_marker, start)
        if stop < 0:
            break
        found.append(text[start : stop + len(end_marker)])
        at = stop + len(end_marker)
    return "\n\n".join(found)


def run_alone(
    run: Callable[[bool, Path], list[Row]], doc: str, argv: list[str] | None = None
) -> int:
    """A benchmark script's ``main``: ``run(quick, directory)`` in a temporary directory,
    its table printed, and :func:`exit_code` of its rows (``doc``: the script's docstring)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="resumable-bench-"))
    try:
        rows = run(args.quick, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(table(rows))
    return exit_code(rows)


def exit_code(rows: Sequence[Row]) -> int:
    """1, naming each on stderr, if a gated goal is missed by more than HARD_FACTOR; else 0."""
    hard = [r.figure for r in rows if r.hard_fail]
    for figure in hard:
        print(f"goal missed by more than {HARD_FACTOR:g}x: {figure}", file=sys.stderr)
    return 1 if hard else 0
