"""Plants hostile files at every path a job, a backup, a restore, gc, reset and verify touch.

    python hostile_worker.py WORKDIR [KINDS]

Run as root (the attacker's files belong to uid 65534). For each path the library uses — the
SQLite store (database, sidecars, lock directory and file), the file store (root, operation
folders, records, locks), the backup directory (manifests, copies, lock) and the restored
files — and each kind of plant (a symlink to a victim file, to a victim directory, a dangling
symlink, a FIFO, a character device, a hard link to a root file, the file or directory given
to another user, a directory opened to every user), it builds the stores afresh, plants, runs
every step (a job on each store, ``list``, ``show``, ``verify``, ``gc``, ``reset``, a backup,
``verify`` and two restores of backups) and prints one JSON line per case::

    {"case": "sq/jobs.db symlink-file", "steps": {"job sqlite": "ok", ...},
     "outside": [changes outside the stores], "setuid": [...], "seconds": 0.12}

A step's outcome is ``ok``, ``refused <type>`` (an error of the library, or the one the
specification names) or ``crash <type>: <message>`` (any other exception). Before each step
its case and name go to stderr; a step that runs past STEP_SECONDS (a hang: an open that waits
for a FIFO's writer, a read of an endless device) ends the process through ``faulthandler``,
its stack on stderr after that line. ``outside`` lists every file of the victims' folder
that appeared, disappeared or changed (bytes, mode, owner). KINDS (comma-separated) limits
the kinds.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import json
import os
import resource
import shutil
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from click.testing import CliRunner

from resumable import ResumableError, checkpointed, stores
from resumable.backup import Backups
from resumable.cli import cli
from resumable.operation import op_key

ATTACKER = 65534
STEP_SECONDS = 10
KINDS = (
    "symlink-file",
    "symlink-dir",
    "dangling",
    "fifo",
    "device",
    "hardlink",
    "foreign",
    "open-dir",
)


# --- the victims --------------------------------------------------------------------------


def make_outside(outside: Path) -> None:
    """Files another user would like the library to write: a file, a database, a folder."""
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"victim's bytes\n")
    (outside / "victim.txt").chmod(0o644)
    con = sqlite3.connect(outside / "victim.db")
    con.execute("CREATE TABLE v (x)")
    con.execute("INSERT INTO v VALUES ('victim')")
    con.commit()
    con.close()
    (outside / "victim_dir").mkdir()
    (outside / "victim_dir" / "inside.txt").write_bytes(b"inside\n")


def snapshot(outside: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below ``outside``: kind, mode, owner, and a digest of a file's bytes."""
    found: dict[str, tuple[object, ...]] = {}
    for root, dirs, files in os.walk(outside):
        for name in dirs + files:
            p = Path(root, name)
            st = p.lstat()
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            found[str(p.relative_to(outside))] = (st.st_mode, st.st_uid, st.st_size, digest)
    return found


# --- the stores, built afresh for each case -----------------------------------------------


def job(url: str, op_id: str, fail_at: int | None = None) -> None:
    """Five items, committed each; raises at item ``fail_at`` (a checkpoint stays behind)."""
    with checkpointed(op_id, store=url, state={"total": 0}) as cp:
        for i in cp.iterate(range(5)):
            if i == fail_at:
                raise RuntimeError("planned failure")
            cp.state.total += i
            cp.commit()


def build(case: Path) -> dict[str, str]:
    """Both local stores with a finished and a failed operation, a source and its backups."""
    case.mkdir(mode=0o700)
    urls = {"sqlite": f"sqlite:///{case / 'sq' / 'jobs.db'}", "file": f"file://{case / 'fs'}"}
    for url in urls.values():
        job(url, "done")
        with contextlib.suppress(RuntimeError):
            job(url, "half", fail_at=3)
    stores._close_cached()
    stores._cache.clear()
    src = case / "src"
    src.mkdir(mode=0o700)
    (src / "data.txt").write_bytes(b"source data\n")
    con = sqlite3.connect(src / "app.db")
    con.execute("CREATE TABLE a (x)")
    con.execute("INSERT INTO a VALUES (1)")
    con.commit()
    con.close()
    backups = Backups(case / "bk")
    backups.create(src / "data.txt")
    backups.create(src / "app.db")
    return urls


def paths(case: Path) -> list[Path]:
    """Every path the steps touch: what the build made, and what a run makes next to it."""
    found = [case / name for name in ("sq", "fs", "bk", "src")]
    for top in found[:]:
        for root, dirs, files in os.walk(top):
            found += [Path(root, n) for n in dirs + files]
    db = case / "sq" / "jobs.db"
    found += [db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal")]
    found.append(case / "fs" / "ops" / op_key("new"))  # the folder a new operation makes
    found.append(case / "src" / "restored.txt")  # a restore's chosen destination
    return sorted(set(found))


# --- the plants ---------------------------------------------------------------------------


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def plant(p: Path, kind: str, outside: Path) -> bool:
    """Plant ``kind`` at ``p``; False if the kind makes no sense there (nothing planted)."""
    was_dir = p.is_dir() and not p.is_symlink()
    victim = outside / ("victim.db" if p.name.startswith(("jobs.db", "app.db")) else "victim.txt")
    if kind == "foreign":
        if not p.exists():
            return False
        os.lchown(p, ATTACKER, ATTACKER)
        return True
    if kind == "open-dir":
        if not was_dir:
            return False
        p.chmod(0o777)
        return True
    _remove(p)
    if kind == "symlink-file":
        p.symlink_to(victim)
    elif kind == "symlink-dir":
        p.symlink_to(outside / "victim_dir")
    elif kind == "dangling":
        p.symlink_to(outside / "made-by-dangling")
    elif kind == "fifo":
        os.mkfifo(p, 0o666)
    elif kind == "device":
        os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    elif kind == "hardlink":
        os.link(victim, p)
    os.lchown(p, ATTACKER, ATTACKER)
    return True


# --- the steps ----------------------------------------------------------------------------

#: Ours, and what the specification names (a backup directory that is a file is a
#: NotADirectoryError naming it, as Python's own).
ACCEPTED = (ResumableError, ValueError, FileNotFoundError, NotADirectoryError)


def _cli(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=True)
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        raise exc
    if result.exit_code not in (0, 1, 2):
        raise RuntimeError(f"exit {result.exit_code}: {result.output[-300:]}")
    if result.exit_code:
        raise ResumableError(result.output.strip().splitlines()[-1][:200])


def steps(case: Path, urls: dict[str, str]) -> Iterator[tuple[str, Callable[[], object]]]:
    for kind, url in urls.items():
        yield f"job {kind}", lambda url=url: job(url, "new")
        yield f"resume {kind}", lambda url=url: job(url, "half")
        for args in (["list"], ["show", "half"], ["verify"], ["gc", "--min-age", "0"]):
            yield f"{args[0]} {kind}", lambda url=url, args=args: _cli(*args, "--store", url)
        yield f"reset {kind}", lambda url=url: _cli("reset", "done", "--store", url)
    bk, src = case / "bk", case / "src"
    yield "backup", lambda: Backups(bk).create(src / "data.txt")
    yield "backup db", lambda: Backups(bk).create(src / "app.db")
    yield "backups verify", lambda: [Backups(bk).verify(b.backup_id) for b in Backups(bk).list()]

    def restore(to: Path | None) -> None:
        for b in Backups(bk).list():
            Backups(bk).restore(b.backup_id, to)

    yield "restore", lambda: restore(None)
    yield "restore to", lambda: restore(src / "restored.txt")
    yield "gc backups", lambda: _cli("gc", "--min-age", "0", "--backup-dir", str(bk))
    yield "verify backups", lambda: _cli("verify", "--backup-dir", str(bk), "--store", urls["file"])


def run_case(case: Path, outside: Path, target: Path | None, kind: str) -> dict[str, object]:
    started = time.monotonic()
    urls = build(case)
    name = "pristine" if target is None else f"{target.relative_to(case)} {kind}"
    if target is not None and not plant(target, kind, outside):
        shutil.rmtree(case)
        return {}
    before = snapshot(outside)
    outcomes = {}
    for label, step in steps(case, urls):
        print(f"running {name}: {label}", file=sys.stderr, flush=True)
        faulthandler.dump_traceback_later(STEP_SECONDS, exit=True)
        try:
            step()
            outcome = "ok"
        except ACCEPTED as exc:
            outcome = f"refused {type(exc).__name__}"
        except Exception as exc:  # reported: the test fails on it
            outcome = f"crash {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            faulthandler.cancel_dump_traceback_later()
            stores._close_cached()
            stores._cache.clear()
        outcomes[label] = outcome
    after = snapshot(outside)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    setuid = [
        str(Path(root, n))
        for root, _, files in os.walk(case)
        for n in files
        if Path(root, n).lstat().st_mode & (stat.S_ISUID | stat.S_ISGID)
    ]
    shutil.rmtree(case)
    # A case may leave victims changed: put them back so the next case starts clean.
    shutil.rmtree(outside)
    make_outside(outside)
    return {
        "case": name,
        "steps": outcomes,
        "outside": changed,
        "setuid": setuid,
        "seconds": round(time.monotonic() - started, 2),
    }


def main() -> None:
    work = Path(sys.argv[1])
    kinds = sys.argv[2].split(",") if len(sys.argv) > 2 else list(KINDS)
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a blow-up fails fast
    os.chdir(work)
    outside = work / "outside"
    make_outside(outside)
    case = work / "case"
    print(json.dumps(run_case(case, outside, None, "")), flush=True)
    build(case)
    targets = [p.relative_to(case) for p in paths(case)]
    shutil.rmtree(case)
    for rel in targets:
        for kind in kinds:
            report = run_case(case, outside, case / rel, kind)
            if report:
                print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
