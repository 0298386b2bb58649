"""The terminal sessions docs/ quotes are what the library and its CLI print today.

``docs/capture.py --check`` runs every session again (``thumbs.py`` in a pseudo-terminal, each
command of the CLI page in the state the page describes) and compares each marked block of a
page with the fresh capture once numbers, times, ids, digests and tqdm's rates are taken out
(``capture.shape``): a changed message or column fails, a slower machine does not. After a
change that shows, ``python docs/capture.py`` writes the pages again.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "capture.py"
PAGES = ["getting-started.md", "cli.md"]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capture", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


capture = _load()


@pytest.fixture(scope="module")
def checks() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """``capture.py --check PAGE`` for every page, started together (they take seconds each)."""
    procs = {
        page: subprocess.Popen(
            [sys.executable, str(SCRIPT), "--check", page],
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for page in PAGES
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("page", PAGES)
def test_each_captured_session_has_the_shape_of_a_fresh_one(
    page: str, checks: dict[str, subprocess.Popen[str]]
) -> None:
    """Each block between capture markers matches a fresh capture, numbers and times aside."""
    _, err = checks[page].communicate(timeout=240)
    assert checks[page].returncode == 0, err


def test_every_console_block_of_the_cli_page_is_captured() -> None:
    """A session typed by hand on the CLI page would go stale unseen."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    captured = "".join(capture.page_sections(text).values())
    blocks = re.findall(r"^```console\n.*?^```\n", text, re.M | re.S)
    assert len(blocks) > 30
    assert [b for b in blocks if b not in captured] == []


def test_the_shape_keeps_words_and_drops_numbers_times_and_ids() -> None:
    """Two runs' lines differ only in noise; one changed word makes another shape."""
    shape = capture.shape
    one = "nightly-etl  failed  73%   731  1  2026-12-05T05:07:49+00:00  owner pid 27141 on vm"
    two = "nightly-etl  failed   9%  1731  12  2027-01-30T15:17:09+00:00  owner pid 3 on vm"
    assert shape(one) == shape(two)
    assert shape(one) != shape(one.replace("owner", "holder"))
    digests = ["__main__.thumbnail:b119a20a4fcab430eb191541", "__main__.thumbnail:06ae5197c0eabe"]
    assert shape(digests[0]) == shape(digests[1])
    bar = "thumbnails:  43%|███▉      | 130/300 [00:02<00:03, 49.36item/s]"
    assert shape(bar) == shape("thumbnails:  44%|████▏     | 131/300 [00:03<00:04, 8.1item/s]")
    assert shape(bar) != shape(bar.replace("thumbnails", "thumbnail"))


def test_the_screen_keeps_the_last_content_of_each_line() -> None:
    """Carriage returns overwrite, long lines wrap and come back whole, erase-line erases."""
    screen = capture.Screen()
    screen.feed("10%|#  |\r20%|## |\r\nx" + "y" * capture.COLUMNS + "\r\nabcdef\r\x1b[Kab\r\n")
    assert screen.text() == "20%|## |\nx" + "y" * capture.COLUMNS + "\nab"
