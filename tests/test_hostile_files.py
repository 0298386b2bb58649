"""A hostile local user against the file store (issue 13, items 5 to 8: the ``file://`` half).

Another user (uid 65534: the ``attacker`` fixture) plants symlinks, FIFOs, devices, hard links
and files or folders of their own in and around a ``file://`` store; jobs and the command line
run as root. What must hold: nothing outside the store changes or appears, every run ends
within seconds (each runs in a subprocess under a timeout, the command line with at most 1 GiB
of address space), and a refusal names the path. The outcome per planted path is the one
``resumable/stores/files.py`` documents: a folder or an operation record is refused, a
checkpoint or result file counts as damaged.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Attacker

from resumable import CheckpointCorrupt, StoreError, checkpointed, configure, open_store
from resumable._trust import SHARED_ENV
from resumable.errors import UnsafePath
from resumable.operation import CheckpointRecord, op_key
from resumable.stores import _file_records as files
from resumable.stores._file_records import RECORD_LIMIT

OP = "job"
KEY = op_key(OP)
#: Seconds any run below may take: a planted path must not make one hang.
TIMEOUT = 30
#: Address space the command line may use: reading /dev/zero or a 100 GB file whole fails.
MEMORY = 1 << 30
SECRET = "a secret the attacker does not have, long enough: 5d1e"


class Boom(Exception):
    pass


def seed(root: Path, op_id: str = OP, *, fail_at: int | None = 3) -> None:
    """A run of ``op_id`` in ``file://root``: its record, checkpoints and a step's result.

    It fails at item ``fail_at`` (None: completes), committing after every item.
    """
    url = f"file://{root}"
    try:
        with checkpointed(op_id, store=url, state={"n": 0}, every_seconds=0) as cp:
            cp.step("s", lambda: 42)
            for i in cp.iterate(range(6)):
                if i == fail_at:
                    raise Boom
                cp.state.n += i
    except Boom:
        pass


class Outside:
    """What lies beside the store, root's: what the attacker's links point at."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(mode=0o755)
        self.file = base / "victim.txt"
        self.file.write_bytes(b"precious\n")
        self.file.chmod(0o640)
        self.dir = base / "victim-dir"
        self.dir.mkdir(mode=0o755)
        (self.dir / "keep.txt").write_bytes(b"keep\n")
        #: Where a dangling link points: it must never come to exist.
        self.missing = base / "not-there"

    def snapshot(self) -> dict[str, tuple[int, int, bytes | None]]:
        """Every path below ``base``: mode, owner and (for files) content, links not followed."""
        found = {}
        for path in sorted(self.base.rglob("*")):
            st = path.lstat()
            data = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            found[str(path.relative_to(self.base))] = (st.st_mode, st.st_uid, data)
        return found


def limited() -> None:
    """In the child, before it runs: at most MEMORY bytes of address space."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def cli(*args: str, secret: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m resumable ARGS`` in a subprocess, under TIMEOUT and MEMORY."""
    env = dict(os.environ)
    if secret is not None:
        env["RESUMABLE_SECRET"] = secret
    proc = subprocess.run(
        [sys.executable, "-m", "resumable", *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env,
        preexec_fn=limited,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1), (proc.returncode, proc.stderr)
    return proc


#: A run of OP, then the commands a user would try on the store, in one process (each case
#: in turn: ``python -c RUNNER URL...``). Prints one JSON line per URL: what each step did.
RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from resumable import checkpointed
    from resumable.cli import cli

    def job(url):
        try:
            with checkpointed("job", store=url, state={"n": 0}, every_seconds=0) as cp:
                cp.step("s", lambda: 42)
                for i in cp.iterate(range(6)):
                    cp.state.n += i
            return ["ok", [], ""]
        except Exception as exc:
            return ["error", [t.__name__ for t in type(exc).__mro__], str(exc)]

    for url in sys.argv[1:]:
        steps = {"job": job(url)}
        for args in (["list"], ["show", "job"], ["verify"], ["gc", "--min-age", "0"],
                     ["reset", "job"]):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    cli.main([*args, "--store", url], prog_name="resumable")
                    code = 0
                except SystemExit as exc:
                    code = exc.code
                except BaseException as exc:
                    code = f"crashed: {exc!r}"
            steps[" ".join(args)] = [code, out.getvalue() + err.getvalue()]
        print(json.dumps(steps), flush=True)
    """
)


# --- item 6: no folder below the root is reached through a symlink ---------------------------


@pytest.mark.parametrize(
    "where", ["ops", f"ops/{KEY}", f"ops/{KEY}/checkpoints", f"ops/{KEY}/results"]
)
def test_a_folder_swapped_for_a_link_is_never_read_or_written_through(
    tmp_path: Path, attacker: Attacker, where: str
) -> None:
    """A store folder moved elsewhere and replaced by a link to it: a run refuses the link,
    naming it; it neither resumes from what lies there nor writes anything into it."""
    root = tmp_path / "store"
    seed(root)
    outside = Outside(tmp_path / "outside")
    moved = outside.base / "moved"
    (root / where).rename(moved)  # the records are there, valid: a run that follows resumes
    attacker.symlink(root / where, moved)
    before = outside.snapshot()

    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, f"file://{root}"],
        capture_output=True, text=True, timeout=TIMEOUT, check=True,
    )  # fmt: skip
    steps = json.loads(proc.stdout)
    outcome, mro, message = steps["job"]
    assert outcome == "error" and "UnsafePath" in mro and "StoreError" in mro, steps["job"]
    assert f"refusing {root / where}: it is a symbolic link" in message
    assert outside.snapshot() == before  # nothing read there was changed, nothing written
    assert (root / where).is_symlink()  # and the link is still there for the user to see
    assert (moved / "checkpoints" if where == f"ops/{KEY}" else moved).exists()


def test_an_operation_folder_link_is_refused_by_every_read_and_write(
    tmp_path: Path, attacker: Attacker
) -> None:
    """In process, every store method that reaches ops/<key> through the planted link raises
    UnsafePath; the store-wide reads leave the operation out."""
    root = tmp_path / "store"
    seed(root)
    seed(root, "other", fail_at=None)
    outside = Outside(tmp_path / "outside")
    (root / "ops" / KEY).rename(outside.base / "moved")
    attacker.symlink(root / "ops" / KEY, outside.base / "moved")
    before = outside.snapshot()
    store = open_store(f"file://{root}")
    good = store.latest_checkpoint("other")
    assert good is not None
    ckpt = CheckpointRecord.create(OP, 99, 9, good.state, 0.5, "pickle", b"x")
    for attempt in (
        lambda: store.load_operation(OP),
        lambda: store.latest_checkpoint(OP),
        lambda: store.load_results(OP, ""),
        lambda: store.last_seq(OP),
        lambda: store.add_checkpoint(ckpt),
        lambda: store.record_counts(OP),
        lambda: store.checkpoint_by_id(f"{KEY}-1"),
    ):
        with pytest.raises(UnsafePath, match="symbolic link"):
            attempt()
    assert [op.op_id for op in store.list_operations()] == ["other"]
    assert store.stored_op_ids() == ["other"]
    assert list(store.checkpoint_heads()) == ["other"]
    assert store.record_counts()["operations"] == 1
    store.sweep(time.time() + 60)
    assert outside.snapshot() == before


# --- item 5: a folder another user made, or one every user can write, is refused -------------


@pytest.mark.parametrize("where", ["", "ops", "locks", f"ops/{KEY}", f"ops/{KEY}/checkpoints"])
def test_a_folder_another_user_made_is_refused_and_nothing_is_written_into_it(
    tmp_path: Path, attacker: Attacker, where: str
) -> None:
    """The store folder (or its ops, locks, an operation's folder) made first by another user,
    not even writable by others: the run stops with a StoreError naming it, and writes
    nothing there."""
    root = tmp_path / "store"
    if where.startswith("ops/"):
        open_store(f"file://{root}")  # the store exists, the operation's folders do not yet
        for depth in range(1, where.count("/")):
            (root / "/".join(where.split("/")[: depth + 1])).mkdir(mode=0o700)
    elif where:
        root.mkdir(mode=0o700)
    planted = attacker.dir(root / where, mode=0o755)
    with (
        pytest.raises(
            StoreError, match=f"refusing {re.escape(str(planted))}: it is owned by .*uid 65534"
        ),
        checkpointed(OP, store=f"file://{root}", state={"n": 0}) as cp,
    ):
        for _ in cp.iterate(range(3)):
            pass
    assert list(planted.iterdir()) == []


@pytest.mark.parametrize("mode", [0o777, 0o1777])
def test_a_folder_every_user_can_write_needs_the_sticky_bit_or_sharing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    """A store folder of mode 0777 is refused (chmod o-w, or share it); with the sticky bit, or
    listed in RESUMABLE_SHARED_DIRS, it is used."""
    root = tmp_path / "store"
    root.mkdir()
    root.chmod(mode)

    def run() -> int:
        with checkpointed(OP, store=f"file://{root}", state={"n": 0}) as cp:
            for i in cp.iterate(range(3)):
                cp.state.n += i
        return int(cp.state.n)

    if mode & stat.S_ISVTX:
        assert run() == 3
        return
    refused = f"refusing {re.escape(str(root))}: every user can write it.*chmod o-w"
    with pytest.raises(StoreError, match=refused):
        run()
    assert list(root.iterdir()) == []
    monkeypatch.setenv(SHARED_ENV, str(root))
    assert run() == 3
    assert (root / "ops" / KEY / "operation.json").is_file()


@pytest.mark.parametrize("group", ["private", "shared"])
def test_a_group_writable_folder_only_if_the_group_is_its_owners_alone(
    tmp_path: Path, attacker: Attacker, group: str
) -> None:
    """Mode 0770 is what ``umask 002`` systems give a user's folders, the group being the
    user's private one (no other members): used. Group-writable by any other group (here
    ``nogroup``, uid 65534's, which root is not in): refused, naming the group."""
    root = tmp_path / "store"
    root.mkdir()
    root.chmod(0o770)
    if group == "shared":
        os.chown(root, os.geteuid(), attacker.uid)
    url = f"file://{root}"
    if group == "private":
        with checkpointed(OP, store=url) as cp:
            cp.commit()
        assert (root / "ops" / KEY / "operation.json").is_file()
        return
    with pytest.raises(StoreError, match=r"group .*can write it \(mode 0770\).*chmod g-w"):
        open_store(url)
    assert list(root.iterdir()) == []


# --- item 7: the command line on a record that is /dev/zero, a FIFO or 100 GB ---------------


@pytest.mark.parametrize("plant", ["dev-zero", "fifo", "sparse-100g", "checkpoint-dev-zero"])
def test_the_command_line_on_a_hostile_record_ends_at_once(
    tmp_path: Path, request: pytest.FixtureRequest, plant: str
) -> None:
    """An operation record (or its newest checkpoint) that is a link to /dev/zero, a FIFO or a
    100 GB sparse file: list, show, verify and gc end within seconds in 1 GiB, list skips it
    (or falls back), show and verify name it, reset removes it."""
    root = tmp_path / "store"
    url = f"file://{root}"
    seed(root)
    seed(root, "other", fail_at=None)
    *_, before, newest = sorted((root / "ops" / KEY / "checkpoints").glob("*.json"))
    fallback = json.loads(before.read_bytes())["position"]
    path = newest if plant == "checkpoint-dev-zero" else root / "ops" / KEY / "operation.json"
    path.unlink()
    if plant == "sparse-100g":  # yours, one link: only its size tells
        with path.open("wb") as f:
            f.truncate(100 << 30)
        why = f"it holds {100 << 30} bytes, more than the {RECORD_LIMIT} any record of the"
        why += " library can have"
    else:
        attacker: Attacker = request.getfixturevalue("attacker")
        if plant == "fifo":
            attacker.fifo(path)
            why = "it is not a regular file"
        else:
            attacker.symlink(path, "/dev/zero")
            why = "it is a symbolic link"

    listed = json.loads(cli("list", "--store", url, "--json").stdout)["operations"]
    shown = cli("show", OP, "--store", url)
    verified = cli("verify", "--store", url, "--json")
    assert verified.returncode == 1
    bad = json.loads(verified.stdout)["bad"]
    fix = "remove the link" if "dev-zero" in plant else "move it aside"
    assert [(b["name"], b["problem"]) for b in bad] == [(OP, f"refused: {why}; {fix}")]
    assert str(path.relative_to(root)) in bad[0]["what"]
    if plant == "checkpoint-dev-zero":  # the run falls back to the checkpoint before it
        assert [(op["op_id"], op["position"]) for op in listed] == [(OP, fallback), ("other", 6)]
        assert listed[0]["corrupt_checkpoints"] == [int(path.stem)]
        assert shown.returncode == 0
        assert f"resume: resumable at position {fallback}" in shown.stdout
    else:
        assert [op["op_id"] for op in listed] == ["other"]
        assert shown.returncode == 1
        assert shown.stderr.startswith(f"resumable: error: refusing {path}: {why}")
    assert cli("gc", "--min-age", "0", "--store", url).returncode == 0
    assert cli("reset", OP, "--store", url).returncode == 0
    assert not (root / "ops" / KEY).exists()
    assert [op["op_id"] for op in json.loads(cli("list", "--store", url, "--json").stdout)[
        "operations"
    ]] == ["other"]  # fmt: skip


# --- item 8: a checkpoint file under another seq's name ---------------------------------------


def test_an_older_signed_checkpoint_copied_over_a_newer_one_is_not_taken_for_it(
    tmp_path: Path,
) -> None:
    """With a secret, the checkpoint of seq N-2 copied over file N (a rollback its signature
    cannot tell): the run resumes from N-1, not from N-2; verify names the file and the seq
    mismatch; with every name holding older copies, the run raises CheckpointCorrupt."""
    configure(secret=SECRET)
    root = tmp_path / "store"
    url = f"file://{root}"
    seed(root, fail_at=5)
    folder = root / "ops" / KEY / "checkpoints"
    files = sorted(folder.glob("*.json"))
    assert len(files) == 3
    oldest, middle, newest = files
    positions = {int(p.stem): json.loads(p.read_bytes())["position"] for p in files}
    assert positions[int(oldest.stem)] < positions[int(middle.stem)]
    shutil.copyfile(oldest, newest)

    store = open_store(url)
    rec, bad = store.find_good_checkpoint(OP)
    assert rec is not None
    assert (rec.seq, bad) == (int(middle.stem), (int(newest.stem),))
    proc = cli("verify", "--store", url, secret=SECRET)
    assert proc.returncode == 1
    assert (
        f"checkpoint seq {int(oldest.stem)} ({newest.relative_to(root)}) of operation 'job': its "
        f"file name says seq {int(newest.stem)} but it holds seq {int(oldest.stem)}"
    ) in proc.stdout
    with checkpointed(OP, store=url, state={"n": 0}, every_seconds=0) as cp:
        assert cp.position == positions[int(middle.stem)]

    shutil.rmtree(root)
    seed(root, fail_at=5)
    oldest, middle, newest = sorted(folder.glob("*.json"))
    shutil.copyfile(oldest, middle)
    shutil.copyfile(oldest, newest)
    oldest.unlink()
    with (
        pytest.raises(CheckpointCorrupt, match="every stored checkpoint of 'job'"),
        checkpointed(OP, store=url, state={"n": 0}),
    ):
        pass


# --- every kind of planted path at every path of a job, list, show, verify, gc and reset -------

LOCATIONS = [
    f"ops/{KEY}",
    f"ops/{KEY}/operation.json",
    f"ops/{KEY}/checkpoints",
    f"ops/{KEY}/checkpoints/NEWEST",
    f"ops/{KEY}/results",
    f"ops/{KEY}/results/RESULT",
    "locks/operations.lock",
]
KINDS = [
    "link-to-file", "link-to-dir", "dangling-link", "fifo", "device", "hard-link",
    "foreign-file", "foreign-dir",
]  # fmt: skip


def plant(attacker: Attacker, path: Path, kind: str, outside: Outside) -> None:
    """Put a ``kind`` of thing at ``path`` (whatever was there is removed first)."""
    original = path.read_bytes() if path.is_file() else b"{}"
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if kind == "link-to-file":
        attacker.symlink(path, outside.file)
    elif kind == "link-to-dir":
        attacker.symlink(path, outside.dir)
    elif kind == "dangling-link":
        attacker.symlink(path, outside.missing)
    elif kind == "fifo":
        attacker.fifo(path)
    elif kind == "device":  # /dev/zero's numbers
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))
        attacker.own(path)
    elif kind == "hard-link":  # root's file, under a second name
        os.link(outside.file, path)
    elif kind == "foreign-file":  # the very record, but the attacker's
        attacker.file(path, original, mode=0o644)
    else:
        attacker.dir(path, mode=0o755)


@pytest.mark.parametrize("location", LOCATIONS)
def test_every_planted_path_changes_nothing_outside_and_every_run_ends(
    tmp_path: Path, attacker: Attacker, location: str
) -> None:
    """At ``location``, each kind of planted path in turn: a run of the job, then list, show,
    verify, gc and reset, all end within seconds with no crash; no file outside the store
    changes or appears; a run that stops names the planted path."""
    cases: dict[str, tuple[Path, Outside, Path]] = {}
    for kind in KINDS:
        root = tmp_path / kind / "store"
        seed(root)
        outside = Outside(tmp_path / kind / "outside")
        newest = max((root / "ops" / KEY / "checkpoints").glob("*.json")).name
        result = min((root / "ops" / KEY / "results").glob("*.json")).name
        path = root / location.replace("NEWEST", newest).replace("RESULT", result)
        plant(attacker, path, kind, outside)
        cases[kind] = (root, outside, path)
    before = {kind: outside.snapshot() for kind, (_, outside, _) in cases.items()}

    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *(f"file://{root}" for root, _, _ in cases.values())],
        capture_output=True, text=True, timeout=TIMEOUT * 3, check=False, preexec_fn=limited,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(KINDS), proc.stdout
    for (kind, (_, outside, path)), line in zip(cases.items(), lines, strict=True):
        steps: dict[str, Any] = json.loads(line)
        assert outside.snapshot() == before[kind], kind
        assert not outside.missing.exists(), kind
        outcome, mro, message = steps.pop("job")
        if outcome == "error":
            assert "StoreError" in mro or "CheckpointCorrupt" in mro, (kind, message)
            assert str(path) in message, (kind, message)
        for step, (code, output) in steps.items():
            assert code in (0, 1), (kind, step, code, output)
            assert "Traceback" not in output, (kind, step, output)
        assert steps["reset job"][0] == 0 or str(path) in steps["reset job"][1], (kind, steps)


def test_gc_removes_planted_leftovers_without_following_them(
    tmp_path: Path, attacker: Attacker
) -> None:
    """Temp-named links (to a folder, to a file) and a temp-named folder holding a link, all
    old: gc removes the links themselves and the folder; what they point at stays."""
    root = tmp_path / "store"
    seed(root)
    outside = Outside(tmp_path / "outside")
    ops = root / "ops"
    leftovers = [
        attacker.symlink(ops / "a.tmp-deleted.1", outside.dir),
        attacker.symlink(ops / KEY / "checkpoints" / "9.json.tmp-0123456789ab.1", outside.file),
        attacker.dir(ops / "b.tmp-deleted.2"),
    ]
    attacker.symlink(ops / "b.tmp-deleted.2" / "inside", outside.dir)
    before = outside.snapshot()
    removed = json.loads(cli("gc", "--min-age", "0", "--store", f"file://{root}", "--json").stdout)
    assert sorted(item["what"] for item in removed["removed"]) == sorted(
        str(p.relative_to(root)) for p in leftovers
    )
    assert not any(os.path.lexists(p) for p in leftovers)
    assert outside.snapshot() == before


def test_a_record_too_large_to_read_back_is_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads stop at RECORD_LIMIT, so writes stop at PAYLOAD_LIMIT (4/3 of it, base64, fits):
    a larger state fails its commit with StoreError, and the last commit stays the newest.
    (The limit is lowered here: 4 GiB of state is too much for a test.)"""
    assert files.PAYLOAD_LIMIT * 4 // 3 + 4096 < RECORD_LIMIT
    monkeypatch.setattr(files, "PAYLOAD_LIMIT", 1000)
    url = f"file://{tmp_path / 'store'}"
    too_large = pytest.raises(StoreError, match=r"at most 1000 per record.*nothing was written")
    with too_large, checkpointed("big", store=url, state={"blob": b""}) as cp:
        cp.commit()
        cp.state.blob = b"x" * 2000
        cp.commit()
    with checkpointed("big", store=url) as cp:
        assert cp.state.blob == b""
