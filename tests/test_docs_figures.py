"""No measured figure is typed by hand into README.md or docs/.

A time per call or item (``17 µs``, ``45 ns``), an approximate time (``~0.9 ms``), a speed
(``MiB/s``) or a measured ratio (``1.21x``) may stand only inside a section a script writes
(``<!-- begin:NAME ... -->`` ... ``<!-- end:NAME -->``, or ``benchmarks/versus_rev.py``'s
``<!-- versus_rev -->`` block) or in a code block. Settings and limits (``every 10 ms``,
``lease 10 s``, ``16 MiB``) are not measurements and are not matched.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Written whole by ``benchmarks/run.py --write`` (its header says so).
WRITTEN_WHOLE = {"benchmarks.md"}
PAGES = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in WRITTEN_WHOLE),
]

MEASURED = re.compile(
    r"(?<![\w.])("
    r"~?\d[\d,]*(?:\.\d+)?(?:[-\u2013]\d[\d,]*(?:\.\d+)?)?\s?(?:µs|us|ns)"  # a time per call
    r"|~\d[\d,]*(?:\.\d+)?\s?(?:ms|s)"  # an approximate time
    r"|\d[\d,]*(?:\.\d+)?\s?[MG]i?B/s"  # a speed
    r"|\d+\.\d+\s?[x\u00d7]"  # a measured ratio
    r")(?!\w)"
)


def typed_by_hand(text: str) -> list[tuple[int, str]]:
    """(line number, match) of every measured-looking figure outside generated sections."""
    found: list[tuple[int, str]] = []
    generated = fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(("<!-- begin:", "<!-- versus_rev -->")):
            generated = True
        elif stripped.startswith(("<!-- end:", "<!-- /versus_rev -->")):
            generated = False
        elif stripped.startswith("```"):
            fenced = not fenced
        elif not (generated or fenced):
            found.extend((number, m.group(1)) for m in MEASURED.finditer(line))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_figure_typed_by_hand(page: Path) -> None:
    found = typed_by_hand(page.read_text(encoding="utf-8"))
    assert not found, (
        f"{page.relative_to(ROOT)} quotes measured figures outside a generated section: "
        f"{found}; let a benchmark script write them (benchmarks/run.py --write) or state none"
    )


def test_the_scan_finds_figures_typed_by_hand() -> None:
    text = (
        "A commit is one SQLite write (~15 µs), 1.21x raw.\n"
        "<!-- begin:speed (written by a script; do not edit) -->\n"
        "A commit: 17.2 µs, 2086 MiB/s, 0.99x.\n"
        "<!-- end:speed -->\n"
        "Leases last 10 s and a loop looks at the clock every 10 ms.\n"
        "```python\nx = 1  # one read, ~15 µs\n```\n"
        "It took ~0.9 ms and 1,374 MiB/s.\n"
    )
    assert typed_by_hand(text) == [(1, "~15 µs"), (1, "1.21x"), (9, "~0.9 ms"), (9, "1,374 MiB/s")]
