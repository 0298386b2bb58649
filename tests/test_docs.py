"""The documentation site builds strictly, and its code examples are real code.

Every ``python`` block of the pages users copy from compiles; the blocks of
``getting-started.md`` marked with ``<!-- test: run -->`` on the line before them need no
service and run, each in a new interpreter in an empty working directory.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
COPIED_FROM = ("getting-started.md", "recipes.md")  # the pages whose snippets users copy
RUN_MARK = "<!-- test: run -->"

_BLOCK = re.compile(
    r"^(?P<fence>```+)(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^(?P=fence)\s*$", re.M | re.S
)


def python_blocks(page: str) -> list[tuple[int, str, bool]]:
    """(line, code, marked to run) of every ``python`` block of a page of docs/."""
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        if match["lang"] not in ("python", "py"):
            continue
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        blocks.append((line, match["code"], before == RUN_MARK))
    return blocks


def _cases(*, run_only: bool) -> list[object]:
    pages = ("getting-started.md",) if run_only else COPIED_FROM
    return [
        pytest.param(code, id=f"{page}:{line}")
        for page in pages
        for line, code, run in python_blocks(page)
        if run or not run_only
    ]


def test_the_pages_users_copy_from_have_python_blocks() -> None:
    """Each page has examples, and getting-started has some that run (the markers are seen)."""
    for page in COPIED_FROM:
        assert len(python_blocks(page)) >= 4, page
    assert sum(run for _, _, run in python_blocks("getting-started.md")) >= 3


@pytest.mark.parametrize("code", _cases(run_only=False))
def test_every_python_block_compiles(code: str) -> None:
    """A snippet a user copies is valid Python."""
    compile(code, "<snippet>", "exec")


@pytest.mark.parametrize("code", _cases(run_only=True))
def test_getting_started_snippets_run(code: str, tmp_path: Path) -> None:
    """A snippet marked to run succeeds in an empty directory, with the default store there."""
    env = {k: v for k, v in os.environ.items() if k not in ("RESUMABLE_STORE", "RESUMABLE_SECRET")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".resumable" / "state.db").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs and mkdocstrings are not installed (pip install -e '.[docs]')",
)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict`` passes: no broken link, no docstring mkdocstrings warns about."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "api" / "index.html").exists()
    assert (tmp_path / "site" / "spec" / "failsafe-manager.ja" / "index.html").exists()
