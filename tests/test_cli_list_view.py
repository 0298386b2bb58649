"""What a user sees in ``resumable list`` and ``show``: calls hidden, filters, maps, wide ids.

The CLI runs as a real subprocess of the installed console script (``test_cli.cli``) over real
SQLite, file and PostgreSQL stores; the records come from real ``@resumable`` calls and real
``cp.map`` runs, some of them in processes killed mid-way.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import url_for
from test_cli import cli, cli_json

from resumable import checkpointed, resumable
from resumable._map_records import ERROR
from resumable.cli._format import display_width
from resumable.stores import resolve_store


@pytest.fixture(params=["sqlite", "file", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL that the test process and the CLI both open."""
    return url_for(request.param, tmp_path)


def blocks(url: str, *op_ids: str) -> None:
    """A finished three-item loop under each of ``op_ids``."""
    for op_id in op_ids:
        with checkpointed(op_id, store=url) as cp:
            for _ in cp.iterate(range(3)):
                pass


def in_subprocess(code: str) -> subprocess.Popen[str]:
    """``code`` run by a new interpreter; it prints ``ready`` when the test may go on."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"


def killed(proc: subprocess.Popen[str]) -> int:
    """SIGKILL ``proc`` (unless it has ended) and reap it; its exit status."""
    proc.kill()
    status = proc.wait(timeout=60)
    assert proc.stdout is not None
    proc.stdout.close()
    return status


# --- @resumable calls are hidden ---------------------------------------------------------------


def test_calls_are_hidden_and_counted_in_every_state(url: str) -> None:
    """Completed, failed (with a chosen op_id), counted-and-failed and running calls are left
    out of `list`, counted on one line; `--calls` lists them, and `--json` follows both."""

    @resumable(store=url)
    def square(x: int) -> int:
        return x * x

    @resumable(store=url, op_id="nightly-report-{day}")  # reads like a block's id
    def report(day: str) -> None:
        raise ValueError(f"no data for {day}")

    @resumable(store=url, max_attempts=3)
    def fetch(n: int) -> None:
        raise KeyError(n)

    for i in range(4):
        square(i)
    with pytest.raises(ValueError, match="no data"):
        report("2026-12-01")
    with pytest.raises(KeyError):
        fetch(1)
    blocks(url, "nightly-etl", "photos")
    # A call that is running right now: its record (RUNNING, written on entry because of
    # max_attempts) is in the store while the process holds it.
    running = in_subprocess(f"""
        import time
        from resumable import resumable
        @resumable(store={url!r}, max_attempts=2)
        def slow(x):
            print("ready", flush=True)
            time.sleep(60)
        slow(1)
    """)
    try:
        wait_ready(running)
        listed = cli_json("list", "--store", url)
        assert [op["op_id"] for op in listed["operations"]] == ["nightly-etl", "photos"]
        assert listed["hidden_calls"] == 7 and listed["count"] == 2
        out = cli("list", "--store", url).stdout
        assert "2 operations in" in out and "+ 7 calls hidden (--calls shows them)" in out
        assert "nightly-report" not in out and "square" not in out

        every = cli_json("list", "--calls", "--store", url)
        assert every["hidden_calls"] == 0 and every["count"] == 9
        kinds = {op["op_id"]: (op["call"], op["state"]) for op in every["operations"]}
        assert kinds["nightly-report-2026-12-01"] == (True, "failed")
        assert kinds["nightly-etl"] == kinds["photos"] == (False, "completed")
        calls = {state for call, state in kinds.values() if call}
        assert calls == {"completed", "failed", "running"}
        text = cli("list", "--calls", "--store", url).stdout
        assert "nightly-report-2026-12-01" in text and "calls hidden" not in text
        assert cli_json("show", "nightly-report-2026-12-01", "--store", url)["call"] is True
    finally:
        killed(running)
    # A state filter counts only the calls it would have listed.
    failed = cli_json("list", "--state", "failed", "--store", url)
    assert failed["operations"] == [] and failed["hidden_calls"] == 2
    assert "+ 2 calls hidden" in cli("list", "--state", "failed", "--store", url).stdout


def test_thousands_of_calls_leave_a_short_listing(tmp_path: Path) -> None:
    """2,000 calls and one block: the table has one row, the count line says 2,000."""
    url = url_for("sqlite", tmp_path)

    @resumable(store=url)
    def double(x: int) -> int:
        return 2 * x

    for i in range(2000):
        double(i)
    blocks(url, "import")
    lines = cli("list", "--store", url).stdout.splitlines()
    assert len(lines) == 4, lines  # header, one row, the count, the hidden calls
    assert lines[1].startswith("import ")
    assert lines[-1] == "+ 2,000 calls hidden (--calls shows them)"


# --- filters -----------------------------------------------------------------------------------


def test_prefix_state_and_limit(url: str) -> None:
    """An op id prefix and --state select; --limit keeps the N updated last, in id order,
    and says how many it left out."""
    blocks(url, "nightly-a", "other", "nightly-c", "nightly-b")  # b is the newest
    with pytest.raises(RuntimeError), checkpointed("nightly-z", store=url) as cp:
        for _ in cp.iterate(range(3)):
            raise RuntimeError("down")

    def ids(*args: str) -> list[str]:
        return [op["op_id"] for op in cli_json("list", *args, "--store", url)["operations"]]

    assert ids("nightly-") == ["nightly-a", "nightly-b", "nightly-c", "nightly-z"]
    assert ids("nightly-", "--state", "completed") == ["nightly-a", "nightly-b", "nightly-c"]
    assert ids("--limit", "2") == ["nightly-b", "nightly-z"]  # the two updated last
    assert ids("nightly-", "--limit", "3", "--state", "completed") == [
        "nightly-a", "nightly-b", "nightly-c",
    ]  # fmt: skip
    cut = cli_json("list", "nightly-", "--limit", "1", "--store", url)
    assert (cut["count"], cut["not_shown"]) == (1, 3)
    text = cli("list", "nightly-", "--limit", "1", "--store", url).stdout
    assert "+ 3 more not shown (--limit 1 keeps the 1 updated last)" in text
    none = cli("list", "weekly-", "--store", url).stdout
    assert none.startswith("no operations matching 'weekly-' in ")
    cli("list", "--limit", "0", "--store", url, code=2)


# --- maps and shared operations ----------------------------------------------------------------


def flaky(i: int) -> int:
    """Items 7, 107 and 207 fail."""
    if i % 100 == 7:
        raise ValueError(f"bad item {i}")
    return i


def test_a_map_with_three_items_set_aside_reads_297_of_300(url: str) -> None:
    """A map of 300 items, 3 set aside: 297/300 and 99 %, not 0 % at position 0; `show` names
    the 3 items and their errors."""
    with checkpointed("resize", store=url) as cp:
        cp.map(flaky, range(300), on_error="skip", key=lambda i: f"img-{i}.jpg")
    (op,) = cli_json("list", "--store", url)["operations"]
    assert op["state"] == "failed"
    assert op["items"] == {"done": 297, "failed": 3, "total": 300}
    assert op["progress"] == pytest.approx(0.99)
    row = cli("list", "--store", url).stdout.splitlines()[1].split()
    assert row[:4] == ["resize", "failed", "99%", "297/300"]

    shown = cli_json("show", "resize", "--store", url)
    assert shown["items"] == {"done": 297, "failed": 3, "total": 300}
    assert [(f["item"], f["error"]) for f in shown["failed_items"]] == [
        ("img-107.jpg", "ValueError: bad item 107"),
        ("img-207.jpg", "ValueError: bad item 207"),
        ("img-7.jpg", "ValueError: bad item 7"),
    ]
    text = cli("show", "resize", "--store", url).stdout
    assert "items       297 of 300 done, 3 set aside" in text
    assert re.search(r"map 0  'img-7\.jpg'  +ValueError: bad item 7", text), text

    # The next run retries the 3 (they succeed now): completed, 300/300, nothing set aside.
    with checkpointed("resize", store=url) as cp:
        cp.map(abs, range(300), key=lambda i: f"img-{i}.jpg")
    (op,) = cli_json("list", "--store", url)["operations"]
    assert (op["state"], op["items"]) == ("completed", {"done": 300, "failed": 0, "total": 300})
    assert cli_json("show", "resize", "--store", url)["failed_items"] == []


def test_repeated_items_count_once_and_index_keys_are_positions(tmp_path: Path) -> None:
    """A map over [1, 1, 2, ...] records each distinct item once; key="index" names positions."""
    url = url_for("sqlite", tmp_path)
    with checkpointed("dupes", store=url) as cp:
        cp.map(abs, [1, 1, 2, 3])
    with checkpointed("by-index", store=url) as cp:
        cp.map(flaky, range(10), key="index", on_error="skip")
    ops = {op["op_id"]: op for op in cli_json("list", "--store", url)["operations"]}
    assert ops["dupes"]["items"] == {"done": 3, "failed": 0, "total": 3}
    assert ops["by-index"]["items"] == {"done": 9, "failed": 1, "total": 10}
    assert "map 0  #7  ValueError: bad item 7" in cli("show", "by-index", "--store", url).stdout


MAP_KILLED_AT_150 = """
    import os, sys, time
    from resumable import checkpointed
    def work(i):
        if i == 150:
            time.sleep(0.6)  # past the map's flush interval: what finished is written
            os.kill(os.getpid(), 9)
        return i
    with checkpointed("embed", store={url!r}, shared={shared}) as cp:
        print("ready", flush=True)
        cp.map(work, range(300), workers=1)
"""


@pytest.mark.parametrize(
    ("kind", "shared"),
    [("sqlite", False), ("file", False), ("postgres", False), ("sqlite", True), ("postgres", True)],
    ids=["sqlite", "file", "postgres", "sqlite-shared", "postgres-shared"],
)  # the file store is not shared by several processes
def test_a_map_killed_midway_shows_what_it_recorded(
    kind: str, shared: bool, tmp_path: Path
) -> None:
    """A map (or a shared one) SIGKILLed at item 150 of 300: running, its owner gone, and as
    many items done as it recorded, not 0 %."""
    url = url_for(kind, tmp_path)
    proc = in_subprocess(MAP_KILLED_AT_150.format(url=url, shared=shared))
    wait_ready(proc)
    proc.wait(timeout=60)  # it kills itself at item 150
    assert killed(proc) == -signal.SIGKILL
    recorded = len(resolve_store(url).load_results("embed", "map0:"))
    assert 0 < recorded <= 150
    (op,) = cli_json("list", "--store", url)["operations"]
    assert op["state"] == "running" and op["owner"]["pid"] == proc.pid
    assert op["items"] == {"done": recorded, "failed": 0, "total": 300}
    row = cli("list", "--store", url).stdout.splitlines()[1]
    assert f"{recorded}/300" in row and f"{recorded / 300:.0%}" in row and "recoverable" in row


def test_a_shared_map_with_items_set_aside(tmp_path: Path) -> None:
    """A shared operation's map: items done / total and its set-aside items, as a local map's."""
    url = url_for("sqlite", tmp_path)
    with checkpointed("shared-resize", store=url, shared=True) as cp:
        cp.map(flaky, range(300), on_error="skip")
    (op,) = cli_json("list", "--store", url)["operations"]
    assert (op["state"], op["items"]) == ("failed", {"done": 297, "failed": 3, "total": 300})
    failed = cli_json("show", "shared-resize", "--store", url)["failed_items"]
    assert sorted(f["error"] for f in failed) == [
        f"ValueError: bad item {i}" for i in (107, 207, 7)
    ]
    assert all(f["item"] is None and f["key"].startswith("d") for f in failed)  # digest keys
    assert "digest d" in cli("show", "shared-resize", "--store", url).stdout


def test_failure_records_are_what_the_map_writes(tmp_path: Path) -> None:
    """The listing counts records of serializer ERROR as set aside: the map writes those."""
    url = url_for("sqlite", tmp_path)
    with checkpointed("m", store=url) as cp:
        cp.map(flaky, range(10), on_error="skip", key="index")
    stored = resolve_store(url).load_results("m", "map0:")
    assert {k for k, r in stored.items() if r.serializer == ERROR} == {"map0:7"}


# --- wide and long op ids ----------------------------------------------------------------------


def columns_of(line: str, word: str) -> int:
    """The terminal column where ``word`` starts in ``line``."""
    return display_width(line[: line.index(word)])


#: Op ids and the terminal columns they take, counted by hand (not by the code under test).
WIDE_IDS = {
    "plain-id": 8,
    "cafe\u0301-resize": 11,  # 12 characters: the accent combines with the e
    "\uff46\uff55\uff4c\uff4c": 8,  # fullwidth "full": 4 characters
    "写真の処理-2026": 15,  # 5 CJK characters of 2 columns, then 5 of 1
}


def test_wide_and_combining_ids_keep_the_table_aligned(tmp_path: Path) -> None:
    """CJK, fullwidth and combining-mark op ids: each is padded to the widest (15 columns),
    so every row's STATE and UPDATED start at the header's columns."""
    url = url_for("sqlite", tmp_path)
    blocks(url, *WIDE_IDS)
    head, *rows, _ = cli("list", "--store", url).stdout.splitlines()
    assert head.startswith("OPERATION" + " " * 8 + "STATE")  # 15 columns, then 2 spaces
    for row in rows:
        op_id = row.split("  ")[0]
        assert row.startswith(op_id + " " * (15 - WIDE_IDS[op_id]) + "  completed"), row
    updated = columns_of(head, "UPDATED")
    times = [display_width(row[: re.search(r"\d{4}-\d\d-\d\dT", row).start()]) for row in rows]
    assert times == [updated] * 4, rows


def test_a_long_id_is_cut_in_tables_and_whole_in_json(tmp_path: Path) -> None:
    """A 1,024-character id is cut to 60 columns with `…` (both ends kept) in `list` and
    `recover`; `--json` and `show` give it whole."""
    url = url_for("sqlite", tmp_path)
    long_id = "batch-" + "x" * 1010 + "-00017"
    blocks(url, "short")
    with pytest.raises(RuntimeError), checkpointed(long_id, store=url) as cp:
        for _ in cp.iterate(range(3)):
            raise RuntimeError("down")
    lines = cli("list", "--store", url).stdout.splitlines()
    cut = lines[1].split()[0]
    assert display_width(cut) == 60 and "…" in cut
    assert cut.startswith("batch-xxx") and cut.endswith("xxx-00017")
    assert max(map(display_width, lines[:3])) < 200  # the 1,024 characters widen no row
    assert lines[2].startswith("short ")
    assert cli_json("list", "--store", url)["operations"][0]["op_id"] == long_id
    assert cli_json("show", long_id, "--store", url)["op_id"] == long_id
    recover = cli("recover", "--store", url).stdout.splitlines()
    assert recover[1].split()[0] == cut
