"""Another local user who can write where an SQLite store lives gets nothing (issue 13: 3, 4, 5).

The attacker plants files owned by uid 65534 (the ``attacker`` fixture, which needs root):
a symlink in place of the database, of one of its ``-wal``/``-shm``/``-journal`` files or of a
lock file; a database, a lock file or a lock directory of their own; a store directory they own
or that everyone may write. Each test runs the job as a user would (a real subprocess, with a
timeout) and asserts what that user needs: the run ends with an error naming the path, no file
outside the store is created or changed, and no planted record is read.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ATTACKER, Attacker, postgres_url_for, require_postgres, sticky_dir, with_query

from resumable import StoreError, checkpointed
from resumable.operation import CheckpointRecord, ProcessState
from resumable.stores import _sqlite_files as sqlite_files
from resumable.stores import open_store
from resumable.stores.sqlite import SQLiteStore

SRC = str(Path(__file__).resolve().parent.parent)

#: A job as a user runs it: ten items, a commit after each; prints "done <total>".
JOB = """
import sys
from resumable import checkpointed
url = sys.argv[1] if len(sys.argv) > 1 else None
with checkpointed("job", store=url, state={"total": 0}) as cp:
    for i in cp.iterate(range(10)):
        cp.state["total"] += i
        cp.commit()
print("done", cp.state["total"])
"""

#: The same through ``@resumable`` and the default store (``.resumable/state.db``).
CALL = """
from resumable import resumable

@resumable
def double(x):
    return 2 * x

print("done", double(21))
"""


#: How a refusal ends the traceback: a StoreError, or the one that names an unsafe path.
STORE_ERRORS = ("resumable.errors.StoreError", "resumable.errors.UnsafePath")


class Run:
    """A finished run of a job in its own process."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def refused(self) -> str:
        """The last line of the traceback: the error the user reads."""
        assert self.code != 0, f"the job ran: {self.out}"
        return self.err.strip().splitlines()[-1]


def run(code: str, *args: str, cwd: Path, shared: Path | None = None) -> Run:
    """Run ``code`` as the victim (root) would, in ``cwd``; it must end within 60 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")}
    env["PYTHONPATH"] = SRC
    if shared is not None:
        env["RESUMABLE_SHARED_DIRS"] = str(shared)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return Run(proc)


def theirs(path: Path, message: str) -> bool:
    """Whether ``message`` refuses ``path`` for being the attacker's."""
    return f"refusing {path}: it is owned by " in message and f"(uid {ATTACKER}), not" in message


def done(result: Run, total: int = 45) -> None:
    assert result.code == 0, result.err
    assert result.out.split() == ["done", str(total)]


class Victim:
    """A file outside the store that the attacker would like the job to change."""

    def __init__(self, path: Path, data: bytes | None) -> None:
        self.path = path
        self.data = data
        if data is not None:
            path.write_bytes(data)
            path.chmod(0o644)
        self.before = self._state()
        self.around = sorted(os.listdir(path.parent))

    def _state(self) -> tuple[bytes, int] | None:
        try:
            return self.path.read_bytes(), stat.S_IMODE(os.lstat(self.path).st_mode)
        except FileNotFoundError:
            return None

    def unchanged(self) -> None:
        """Same bytes, same mode (or still missing), and nothing new beside it."""
        assert self._state() == self.before
        assert sorted(os.listdir(self.path.parent)) == self.around


def an_sqlite_file(path: Path) -> bytes:
    """The bytes of a small SQLite database of somebody's (not a store)."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE accounts (name TEXT, balance INTEGER)")
    con.execute("INSERT INTO accounts VALUES ('root', 100)")
    con.commit()
    con.close()
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory of root's outside every store, where the victim files live."""
    folder = tmp_path / "outside"
    folder.mkdir(mode=0o755)
    return folder


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A directory every user may write, with the sticky bit (as /tmp): where stores are shared."""
    return sticky_dir(tmp_path / "scratch")


VICTIMS: dict[str, Callable[[Path], bytes | None]] = {
    "text": lambda p: b"root's precious data\n",
    "empty": lambda p: b"",
    "sqlite": an_sqlite_file,
    "dangling": lambda p: None,
}


# --- 3. a symlink in place of the database or of one of its files --------------------------


@pytest.mark.parametrize("kind", list(VICTIMS))
def test_a_symlinked_database_is_refused_and_its_target_untouched(
    attacker: Attacker, scratch: Path, outside: Path, kind: str
) -> None:
    """jobs.db -> VICTIM: refused; the victim keeps its bytes and mode (a dangling one: absent)."""
    target = outside / "victim.db"
    victim = Victim(target, VICTIMS[kind](target))
    db = attacker.symlink(scratch / "jobs.db", target)
    result = run(JOB, f"sqlite:///{db}", cwd=scratch.parent)
    victim.unchanged()
    assert result.refused.startswith(STORE_ERRORS)
    assert f"refusing {db}: it is a symbolic link" in result.refused
    assert sorted(os.listdir(scratch)) == ["jobs.db"]  # no -wal, -shm or lock directory either


def test_a_symlink_of_your_own_to_the_database_is_followed(tmp_path: Path) -> None:
    """data/jobs.db -> big/jobs.db made by you: the store is the real file, its sidecars and
    lock directory beside it, and the link stays as it was."""
    (tmp_path / "big").mkdir(mode=0o700)
    (tmp_path / "data").mkdir(mode=0o700)
    link = tmp_path / "data" / "jobs.db"
    link.symlink_to(tmp_path / "big" / "jobs.db")  # dangling until the store creates it
    store = SQLiteStore(link)
    try:
        assert store.get_operation("x") is None
        with checkpointed("op", store=store) as cp:
            cp.commit()
        other = SQLiteStore(tmp_path / "big" / "jobs.db")
        assert other.lock_dir == store.lock_dir  # one runner, whichever path is used
        other.close()
    finally:
        store.close()
    assert link.is_symlink()
    assert (tmp_path / "big" / "jobs.db").is_file()
    assert sorted(os.listdir(tmp_path / "data")) == ["jobs.db"]


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
@pytest.mark.parametrize("kind", ["text", "sqlite", "dangling"])
def test_a_symlinked_sidecar_is_refused_and_its_target_untouched(
    attacker: Attacker, scratch: Path, outside: Path, suffix: str, kind: str
) -> None:
    """jobs.db-wal (-shm, -journal) -> VICTIM beside a store of yours: refused naming the link;
    the victim intact. (SQLite opens these with O_NOFOLLOW itself, but says only "unable to open
    database file", or "database is locked" after the busy timeout for a -journal.)"""
    db = scratch / "jobs.db"
    done(run(JOB, f"sqlite:///{db}", cwd=scratch.parent))
    (scratch / "jobs.db-journal").unlink(missing_ok=True)  # left empty: see _sqlite_files
    target = outside / "victim"
    victim = Victim(target, VICTIMS[kind](target))
    side = attacker.symlink(scratch / f"jobs.db{suffix}", target)
    before = db.read_bytes()
    result = run(JOB, f"sqlite:///{db}", cwd=scratch.parent)
    victim.unchanged()
    assert f"refusing {side}: it is a symbolic link" in result.refused
    assert db.read_bytes() == before


@pytest.mark.parametrize("suffix", ["-wal", "-journal", "-shm"])
def test_an_attackers_sidecar_is_never_replayed(
    attacker: Attacker, scratch: Path, suffix: str
) -> None:
    """A -wal or -journal of another user's (which SQLite would replay into the database, a
    planted record with it) is refused before SQLite opens the database; so is a -shm."""
    db = scratch / "jobs.db"
    done(run(JOB, f"sqlite:///{db}", cwd=scratch.parent))
    (scratch / "jobs.db-journal").unlink(missing_ok=True)
    before = db.read_bytes()
    side = attacker.file(scratch / f"jobs.db{suffix}", b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" * 64)
    result = run(JOB, f"sqlite:///{db}", cwd=scratch.parent)
    assert theirs(side, result.refused)
    assert db.read_bytes() == before


#: The attacker's forger: on a copy of the victim's store, replaces "job" with a checkpoint whose
#: pickle creates a marker, then dies with the change only in the copy's -wal (no checkpoint).
FORGE_WAL = """
import os, pickle, sys
from pathlib import Path
from resumable.operation import CheckpointRecord, ProcessState
from resumable.stores.sqlite import SQLiteStore

class Planted:
    def __reduce__(self):
        return Path.touch, (Path(sys.argv[2]),)

store = SQLiteStore(sys.argv[1])
store.delete_operation("job")
payload = pickle.dumps(Planted(), protocol=5)
store.add_checkpoint(
    CheckpointRecord.create("job", 1, 3, ProcessState.PAUSED, 0.3, "pickle", payload)
)
os._exit(0)  # no close: SQLite leaves the change in copy.db-wal
"""


def test_an_attackers_wal_is_never_replayed(
    attacker: Attacker, tmp_path: Path, scratch: Path
) -> None:
    """A -wal the attacker crafted (their change to a copy of the store: a planted pickle) put
    beside a store of yours: refused before SQLite replays it; no planted code runs."""
    db, marker = scratch / "jobs.db", tmp_path / "pwned"
    done(run(JOB, f"sqlite:///{db}", cwd=tmp_path))
    (scratch / "jobs.db-journal").unlink(missing_ok=True)
    copy = tmp_path / "forge" / "copy.db"
    copy.parent.mkdir()
    copy.write_bytes(db.read_bytes())
    forger = run(FORGE_WAL, str(copy), str(marker), cwd=tmp_path)
    assert forger.code == 0, forger.err
    wal = attacker.file(scratch / "jobs.db-wal", copy.with_name("copy.db-wal").read_bytes())
    before = db.read_bytes()
    result = run(JOB, f"sqlite:///{db}", cwd=tmp_path)
    assert not marker.exists()
    assert theirs(wal, result.refused)
    assert db.read_bytes() == before


def test_a_fifo_sidecar_is_refused_without_hanging(attacker: Attacker, scratch: Path) -> None:
    """A FIFO as jobs.db-wal: refused at once (the run's timeout would catch a hang)."""
    db = scratch / "jobs.db"
    done(run(JOB, f"sqlite:///{db}", cwd=scratch.parent))
    side = attacker.fifo(scratch / "jobs.db-wal")
    result = run(JOB, f"sqlite:///{db}", cwd=scratch.parent)
    assert f"refusing {side}: it is not a regular file" in result.refused


def test_a_hard_link_to_a_root_file_as_the_database_is_refused(
    scratch: Path, outside: Path
) -> None:
    """jobs.db as a second name of a root file (the attacker made the link): refused, unchanged."""
    target = outside / "victim.db"
    victim = Victim(target, an_sqlite_file(target))
    os.link(target, scratch / "jobs.db")
    result = run(JOB, f"sqlite:///{scratch / 'jobs.db'}", cwd=scratch.parent)
    assert "it has 2 hard links" in result.refused
    victim.unchanged()


def test_in_a_sticky_directory_the_sidecar_names_are_yours(
    scratch: Path, attacker: Attacker
) -> None:
    """Where anyone may add names, the -wal, -shm and -journal of an existing store are created
    by the store (yours, 0600) before SQLite opens them: another user can neither plant one
    nor remove yours while the store is open."""
    db = scratch / "jobs.db"
    done(run(JOB, f"sqlite:///{db}", cwd=scratch.parent))
    store = SQLiteStore(db)
    try:
        for suffix in sqlite_files.SIDECARS:
            side = scratch / f"jobs.db{suffix}"
            st = os.lstat(side)
            assert stat.S_ISREG(st.st_mode)
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)
        # The attacker (uid 65534) acts in the sticky directory itself (a descriptor opened
        # before dropping root: the directories above it are root's 0700).
        code = textwrap.dedent(f"""
            import os
            folder = os.open({str(scratch)!r}, os.O_RDONLY | os.O_DIRECTORY)
            os.setgid({ATTACKER}); os.setuid({ATTACKER})
            side = "jobs.db-journal"
            for attempt in (
                lambda: os.symlink("/etc/passwd", side, dir_fd=folder),
                lambda: os.unlink(side, dir_fd=folder),
                lambda: os.rename(side, "x", src_dir_fd=folder, dst_dir_fd=folder),
            ):
                try:
                    attempt()
                except OSError as exc:
                    print(exc.errno)
        """)
        attempts = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
        assert attempts == [str(n) for n in (17, 1, 1)]  # EEXIST, EPERM, EPERM
    finally:
        store.close()
    done(run(JOB, f"sqlite:///{db}", cwd=scratch.parent))  # the store works as before


# --- the database's mode, and the locks of this process -------------------------------------


def test_an_existing_database_is_made_owner_only(tmp_path: Path) -> None:
    """A database of yours that others may read becomes 0600 when opened."""
    db = tmp_path / "jobs.db"
    SQLiteStore(db).close()
    db.chmod(0o644)
    SQLiteStore(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


#: Another process asks for SQLite's SHARED byte range of the database file (the lock every
#: open connection in WAL mode holds: a connection that gets it exclusively believes it is the
#: last, and checkpoints and removes the WAL at close).
PROBE_SHARED = """
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0x40000002, 510, 0))
    print("free")
except OSError:
    print("locked")
"""


def test_making_it_owner_only_keeps_this_processs_sqlite_locks(tmp_path: Path) -> None:
    """Tightening the mode while another store of this process has the file open keeps that
    connection's lock on it (closing a plain descriptor of the file would drop it)."""
    db = tmp_path / "jobs.db"
    first = SQLiteStore(db)
    try:
        first.record_counts()  # an open connection in WAL mode: a SHARED lock on the file

        def probe() -> str:
            return subprocess.run(
                [sys.executable, "-c", PROBE_SHARED, str(db)],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout.strip()  # fmt: skip

        assert probe() == "locked"
        db.chmod(0o644)
        SQLiteStore(db).close()  # opens, checks and tightens the same file
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        assert probe() == "locked"
    finally:
        first.close()


def test_a_database_replaced_after_its_check_is_refused(tmp_path: Path) -> None:
    """If the path no longer names the file that was checked once SQLite has it, refused."""
    db = tmp_path / "jobs.db"
    real, checked = sqlite_files.prepare(db)
    sqlite_files.check_opened(real, checked)  # the same file: accepted
    os.rename(db, tmp_path / "aside.db")
    db.write_bytes(b"")
    with pytest.raises(StoreError, match=rf"refusing {db}: it was removed or replaced"):
        sqlite_files.check_opened(real, checked)


# --- 4. lock files ---------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "file"])
@pytest.mark.parametrize("kind", ["text", "dangling"])
def test_a_symlinked_lock_file_changes_nothing_at_its_target(
    attacker: Attacker, tmp_path: Path, outside: Path, store: str, kind: str
) -> None:
    """X.db.locks/operations.lock (or a file store's locks/operations.lock) -> VICTIM: the job
    is refused naming the link; the victim is not created or changed."""
    target = outside / "victim"
    victim = Victim(target, VICTIMS[kind](target))
    if store == "sqlite":
        url, lock = f"sqlite:///{tmp_path}/jobs.db", tmp_path / "jobs.db.locks" / "operations.lock"
    else:
        url, lock = f"file://{tmp_path}/store", tmp_path / "store" / "locks" / "operations.lock"
    open_store(url).close()
    lock.parent.mkdir(mode=0o700, exist_ok=True)
    attacker.symlink(lock, target)
    result = run(JOB, url, cwd=tmp_path)
    victim.unchanged()
    assert f"refusing {lock}: it is a symbolic link" in result.refused


def _hold_ofd_lock(path: Path) -> subprocess.Popen[str]:
    """The attacker's process: it holds an OFD lock on all of ``path`` and never lets go."""
    code = textwrap.dedent(f"""
        import fcntl, os, struct, time
        fd = os.open({str(path)!r}, os.O_RDWR)
        os.setgid({ATTACKER}); os.setuid({ATTACKER})
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
        print("held", flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.skipif(not hasattr(fcntl, "F_OFD_SETLK"), reason="OFD locks are Linux-only")
def test_an_attackers_lock_file_is_refused_not_waited_on(
    attacker: Attacker, tmp_path: Path
) -> None:
    """A lock file of another user's, locked by them forever: the job ends at once with a
    StoreError naming it (not OperationLocked, run after run)."""
    db = tmp_path / "jobs.db"
    open_store(f"sqlite:///{db}").close()
    db.with_name("jobs.db.locks").mkdir(mode=0o700)
    lock = attacker.file(db.with_name("jobs.db.locks") / "operations.lock", b"", 0o666)
    holder = _hold_ofd_lock(lock)
    try:
        result = run(JOB, f"sqlite:///{db}", cwd=tmp_path)
        assert "OperationLocked" not in result.err
        assert result.refused.startswith("resumable.errors.UnsafePath: refusing")
        assert theirs(lock, result.refused)
    finally:
        holder.kill()
        holder.communicate(timeout=10)  # reaps it and closes its pipe


def test_file_locks_refuse_links_and_other_users_files(
    attacker: Attacker, tmp_path: Path, outside: Path
) -> None:
    """FileLock (the per-operation lock files where OFD locks are missing) refuses a symlink and
    another user's file, and leaves the link's target as it was."""
    from resumable.locks import FileLock, LockFile

    target = outside / "victim"
    victim = Victim(target, None)
    folder = tmp_path / "locks"
    folder.mkdir(mode=0o700)
    link = attacker.symlink(folder / "a.lock", target)
    theirs = attacker.file(folder / "b.lock", b"", 0o666)
    for path in (link, theirs):
        for lock in (FileLock(path, "op"), FileLock(path, "op", file=LockFile(path))):
            with pytest.raises(StoreError, match=f"refusing {path}"):
                lock.acquire()
    victim.unchanged()


# --- 5. stores, lock directories and store directories of other users -----------------------


def _forge_store(where: Path, marker: Path) -> Path:
    """A valid store holding checkpoint 1 of "job": a pickle whose loading creates ``marker``."""

    class Planted:
        def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
            return Path.touch, (marker,)

    forged = SQLiteStore(where)
    forged.add_checkpoint(
        CheckpointRecord.create(
            "job", 1, 3, ProcessState.PAUSED, 0.3, "pickle", pickle.dumps(Planted(), protocol=5)
        )
    )
    forged.close()  # the last connection: SQLite folds the WAL into the file and removes it
    assert not where.with_name(where.name + "-wal").exists()
    return where


def test_a_planted_pickle_in_a_store_of_yours_would_run(tmp_path: Path) -> None:
    """The threat is real: the forged store, once yours, runs the planted code when resumed."""
    marker = tmp_path / "pwned"
    db = _forge_store(tmp_path / "jobs.db", marker)
    run(JOB, f"sqlite:///{db}", cwd=tmp_path)
    assert marker.exists()


@pytest.mark.parametrize("content", ["empty", "planted"])
def test_an_attackers_default_store_is_refused_unread(
    attacker: Attacker, tmp_path: Path, content: str
) -> None:
    """.resumable/state.db pre-created by another user (empty, or a store with a planted pickle):
    the job ends with a StoreError naming it; no planted code runs, the file is unchanged."""
    marker = tmp_path / "pwned"
    db = tmp_path / ".resumable" / "state.db"
    db.parent.mkdir(mode=0o700)
    if content == "empty":
        attacker.file(db, b"", 0o666)
    else:
        attacker.own(_forge_store(db, marker))
    before = db.read_bytes()
    for code, args in ((JOB, ()), (CALL, ())):
        result = run(code, *args, cwd=tmp_path)
        assert result.refused.startswith(
            ("resumable.errors.StoreError", "resumable.errors.UnsafePath")
        )
        assert theirs(db, result.refused)
    assert not marker.exists()
    assert db.read_bytes() == before
    assert sorted(os.listdir(db.parent)) == ["state.db"]  # no -wal, -shm, locks of ours there


def test_an_attackers_lock_directory_is_refused(attacker: Attacker, tmp_path: Path) -> None:
    """jobs.db.locks/ made by another user (who could remove a held lock file and let a second
    runner in): refused, nothing created in it."""
    db = tmp_path / "jobs.db"
    folder = attacker.dir(tmp_path / "jobs.db.locks", 0o777)
    result = run(JOB, f"sqlite:///{db}", cwd=tmp_path)
    assert theirs(folder, result.refused)
    assert os.listdir(folder) == []


@pytest.mark.parametrize("owner", ["attacker", "everyone"])
def test_a_store_directory_others_control_is_refused_unless_shared(
    attacker: Attacker, tmp_path: Path, owner: str
) -> None:
    """The store's directory owned by another user, or writable by all without the sticky bit:
    refused naming it; listed in RESUMABLE_SHARED_DIRS, the job runs."""
    folder = tmp_path / "team"
    if owner == "attacker":
        attacker.dir(folder, 0o755)
    else:
        folder.mkdir()
        folder.chmod(0o777)
    url = f"sqlite:///{folder}/jobs.db"
    result = run(JOB, url, cwd=tmp_path)
    assert f"refusing {folder}: " in result.refused
    assert os.listdir(folder) == []
    done(run(JOB, url, cwd=tmp_path, shared=folder))
    done(run(JOB, url, cwd=tmp_path, shared=folder))  # and resumes from it


def test_an_attackers_default_store_directory_is_refused(
    attacker: Attacker, tmp_path: Path
) -> None:
    """.resumable/ pre-created by another user in the working directory: @resumable refuses it."""
    folder = attacker.dir(tmp_path / ".resumable", 0o777)
    result = run(CALL, cwd=tmp_path)
    assert theirs(folder, result.refused)
    assert os.listdir(folder) == []
    done(run(CALL, cwd=tmp_path, shared=folder), 42)


# --- 8b. what a refusal at open says ----------------------------------------------------------

#: Claims a refusal at open cannot have checked.
UNCHECKED = ("intact", "last good", "checkpoint is", "disk space", "a server that is down")


def test_a_refused_sqlite_store_claims_nothing_unchecked(
    attacker: Attacker, tmp_path: Path
) -> None:
    """An unsafe store file is refused with what was found and what to do, nothing else."""
    db = attacker.file(tmp_path / "jobs.db", b"", 0o600)
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{db}")
    message = str(caught.value)
    assert theirs(db, message)
    assert not [claim for claim in UNCHECKED if claim in message]


def test_a_reserved_postgres_schema_is_refused_for_what_it_is() -> None:
    """?schema=pg_catalog: the message names the schema and says to choose another; it claims
    nothing about checkpoints or disk space."""
    url = with_query(require_postgres(), schema="pg_catalog")
    with pytest.raises(StoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "schema 'pg_catalog'" in message
    assert "choose another schema" in message
    assert not [claim for claim in UNCHECKED if claim in message]


@pytest.fixture
def powerless_role() -> Iterator[str]:
    """A PostgreSQL login that may not create anything in the test database."""
    import psycopg

    role = "resumable_t_" + os.urandom(4).hex()
    base = require_postgres()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        yield role
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_postgres_login_without_rights_is_refused_for_what_it_is(powerless_role: str) -> None:
    """A login that may not create the store's schema: said so, with nothing unchecked."""
    url = postgres_url_for()
    parts = url.split("://", 1)[1].split("@", 1)[1]
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql://{powerless_role}@{parts}")
    message = str(caught.value)
    assert "the server refused to keep the store's tables in schema" in message
    assert not [claim for claim in UNCHECKED if claim in message]
