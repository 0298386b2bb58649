"""The PostgreSQL store against a real server: opening, errors, leases, fencing, batch claims.

The contract every store passes is in test_stores.py (run on Postgres too); these tests cover
what only this store does. Each test works in a schema of its own (see conftest.py). Waits are
bounded: workers are followed through what they print, never by sleeping and hoping.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import postgres_url_for, require_package, require_postgres, with_query

from resumable import (
    CheckpointCorrupt,
    LeaseLost,
    OperationLocked,
    ProcessState,
    StoreError,
    open_store,
)
from resumable.operation import CheckpointRecord, OperationRecord, ResultRecord
from resumable.serializers import get_serializer

psycopg = require_package(
    "psycopg", "pip install 'resumable[postgres]'", env="RESUMABLE_TEST_POSTGRES"
)

from resumable.stores.postgres import PostgresStore  # noqa: E402 - needs psycopg

WORKER = Path(__file__).parent / "workers" / "postgres_worker.py"
RUNNING = ProcessState.RUNNING
#: The longest any worker may take to print a line or to exit.
TIMEOUT = 30.0
#: In-process lease tests: short leases, so that waiting one out is quick.
QUICK = {"lease": 0.5, "heartbeat": 0.1}


def ckpt(op_id: str, seq: int, payload: bytes = b"p") -> CheckpointRecord:
    return CheckpointRecord.create(op_id, seq, seq * 10, RUNNING, 0.0, "pickle", payload)


def pg(opened: list[PostgresStore], url: str, **options: Any) -> PostgresStore:
    store = open_store(url, **options)
    assert isinstance(store, PostgresStore)
    opened.append(store)
    return store


def sql_in(store: PostgresStore, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run ``query`` in the store's schema on a connection of its own."""
    with psycopg.connect(store._conninfo, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(store.schema))
        )
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def wait_out(store: PostgresStore) -> None:
    """Sleep past the store's lease (its leases run on the same machine's clock)."""
    time.sleep(store.lease + 0.2)


# --- opening: URL, options, errors -----------------------------------------------------------


def test_options_come_from_the_query_and_keywords_win(opened: list[PostgresStore]) -> None:
    """Store options are read from the URL query, keyword arguments override them."""
    url = postgres_url_for(durability="full", history=5, lease=2, heartbeat=0.5, pool_size=2)
    store = pg(opened, url)
    assert (store.durability, store.history, store.lease, store.heartbeat) == ("full", 5, 2, 0.5)
    assert store.pool_size == 2
    assert store.shares
    other = pg(opened, url, history=7, durability="normal")
    assert (other.history, other.durability) == (7, "normal")


def test_the_rest_of_the_query_goes_to_libpq(opened: list[PostgresStore]) -> None:
    """Unknown query parameters reach libpq; durability sets synchronous_commit per connection."""
    normal = pg(opened, with_query(postgres_url_for(), application_name="resumable-test"))
    full = pg(opened, postgres_url_for(durability="full"))
    assert "connect_timeout=5" in normal._conninfo
    with normal._connections().connection() as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("resumable-test",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        assert conn.execute("SHOW search_path").fetchone() == (normal.schema,)
    with full._connections().connection() as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    timed = pg(opened, with_query(postgres_url_for(), connect_timeout=2))
    assert "connect_timeout=2" in timed._conninfo
    assert "connect_timeout=5" not in timed._conninfo


@pytest.mark.parametrize(
    "options",
    [
        {"durability": "maybe"},
        {"history": "x"},
        {"history": 0},
        {"lease": "-1"},
        {"lease": "soon"},
        {"lease": 1, "heartbeat": 0.9},
        {"pool_size": 0},
        {"pool_size": "many"},
        {"schema": ""},
    ],
)
def test_bad_options_are_refused_before_connecting(options: dict[str, Any]) -> None:
    """A bad option raises ValueError at open_store, whether in the query or a keyword."""
    url = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(ValueError):
        open_store(url, **options)
    with pytest.raises(ValueError):
        open_store(with_query(url, **options))


def test_password_never_shows(opened: list[PostgresStore]) -> None:
    """The password is kept out of store.url, repr() and error messages.

    The test server trusts local logins, so it accepts any password: the store opens.
    """
    url = with_query(postgres_url_for(), application_name="x")
    parts = url.split("@", 1)
    store = pg(opened, parts[0] + ":s3cr%40t@" + parts[1])
    assert "s3cr" not in store.url
    assert "s3cr" not in repr(store)
    assert store.url.startswith("postgresql://postgres@127.0.0.1")
    error = store.store_error("do it", RuntimeError("libpq said password=s3cr@t"))
    assert "s3cr" not in str(error)
    missing = parts[0] + ":s3cr%40t@" + parts[1].replace("/test?", "/no_such_db?")
    with pytest.raises(StoreError) as info:
        open_store(missing)
    assert "s3cr" not in str(info.value)
    hidden = open_store(with_query(postgres_url_for(), password="s3cr@t"))
    opened.append(hidden)  # type: ignore[arg-type]
    assert "s3cr" not in hidden.url


def test_unreachable_server_fails_fast_saying_so() -> None:
    """Nothing listening: StoreError naming host and port, quickly."""
    started = time.monotonic()
    with pytest.raises(
        StoreError, match=r"could not reach the PostgreSQL server at 127\.0\.0\.1:1"
    ):
        open_store("postgresql://postgres@127.0.0.1:1/test")
    assert time.monotonic() - started < 5


def test_refused_login_says_so() -> None:
    """An unknown role is refused with a message naming the user.

    (The test server trusts local logins, so a wrong password is accepted: the unknown-role
    path is the refused login this server can show.)
    """
    base = require_postgres()
    url = base.replace("postgres@", "no_such_role_xyz@", 1)
    with pytest.raises(StoreError, match="refused the login of user 'no_such_role_xyz'"):
        open_store(url)


def test_missing_database_says_so() -> None:
    """A database that does not exist is named in the error."""
    base = require_postgres()
    url = base.rsplit("/", 1)[0] + "/no_such_database_xyz"
    with pytest.raises(StoreError, match="no database 'no_such_database_xyz'"):
        open_store(url)


def test_newer_schema_is_refused_and_left_untouched(opened: list[PostgresStore]) -> None:
    """Tables written by a newer resumable: StoreError saying to upgrade; nothing is written."""
    url = postgres_url_for()
    store = pg(opened, url)
    store.save(OperationRecord.new("op", "n", RUNNING))
    sql_in(store, "UPDATE resumable_schema_version SET version = 99")
    before = sql_in(store, "SELECT op_id, checksum FROM operations")
    with pytest.raises(StoreError, match=r"newer resumable.*upgrade"):
        open_store(url)
    assert sql_in(store, "SELECT version FROM resumable_schema_version") == [(99,)]
    assert sql_in(store, "SELECT op_id, checksum FROM operations") == before


def test_concurrent_first_opens_all_succeed(opened: list[PostgresStore]) -> None:
    """Threads and processes opening one new schema at once all succeed."""
    url = postgres_url_for()
    code = f"from resumable import open_store; open_store({url!r}).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            open_store(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    try:
        assert [p.wait(TIMEOUT) for p in procs] == [0, 0, 0]
    finally:
        for p in procs:
            p.kill()
    assert errors == []
    assert pg(opened, url).list_operations() is not None


def test_missing_driver_says_how_to_install(tmp_path: Path) -> None:
    """Without psycopg, opening a postgresql:// URL says which extra to install."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from resumable import open_store, StoreError\n"
        "try:\n    open_store('postgresql://x@127.0.0.1/db')\n"
        "except StoreError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert "pip install 'resumable[postgres]'" in out.stdout


# --- records -----------------------------------------------------------------------------------


def test_ids_and_keys_postgres_text_cannot_hold_round_trip(opened: list[PostgresStore]) -> None:
    """Op ids, names, keys and errors with NUL, lone surrogates or the marker round-trip."""
    store = pg(opened, postgres_url_for())
    ids = ["a\x00b", "\x00lead", "\udc80x", "\x01x", "é"]
    for op_id in ids:
        op = OperationRecord.new(op_id, op_id + "!", RUNNING).to(
            ProcessState.FAILED, error="bad\x00error"
        )
        store.save(op, ckpt(op_id, 1))
        store.put_result(ResultRecord.create(op_id, "k\x00" + op_id, "pickle", b"v"))
        assert store.load_operation(op_id) == op
        assert store.latest_checkpoint(op_id).op_id == op_id  # type: ignore[union-attr]
        assert set(store.load_results(op_id, "k\x00")) == {"k\x00" + op_id}
    assert sorted(o.op_id for o in store.list_operations()) == sorted(ids)


def test_corrupt_operation_record_raises(opened: list[PostgresStore]) -> None:
    """An operation record that fails its checksum is refused with a way out."""
    store = pg(opened, postgres_url_for())
    store.save(OperationRecord.new("op", "n", RUNNING))
    sql_in(store, "UPDATE operations SET attempts = 99")
    with pytest.raises(CheckpointCorrupt, match="reset"):
        store.load_operation("op")


def test_delete_keeps_the_lease_row_and_drops_claims(opened: list[PostgresStore]) -> None:
    """delete_operation removes claims too, but the lease row (and its epoch) stays."""
    store = pg(opened, postgres_url_for())
    lock = store.lock("op")
    lock.acquire()
    store.save(OperationRecord.new("op", "n", RUNNING), ckpt("op", 1))
    store.claim_batches("op", "g", 3, 1, "me")
    assert store.delete_operation("op")
    lock.release()
    assert sql_in(store, "SELECT count(*) FROM claims") == [(0,)]
    assert sql_in(store, "SELECT op_id, owner, epoch FROM leases") == [("op", None, 1)]
    lock.acquire()
    assert lock.epoch == 2
    lock.release()


# --- leases and fencing --------------------------------------------------------------------------


def test_a_lease_excludes_other_stores_until_released(opened: list[PostgresStore]) -> None:
    """One holder across stores (processes); a released lease is taken at a bigger epoch."""
    url = postgres_url_for()
    one, two = pg(opened, url), pg(opened, url)
    first = one.lock("op")
    first.acquire()
    with pytest.raises(OperationLocked, match=rf"process {os.getpid()} on ") as info:
        two.lock("op").acquire(timeout=0.2)
    assert info.value.op_id == "op"
    with pytest.raises(OperationLocked, match="another block in this process"):
        one.lock("op").acquire()
    first.release()
    second = two.lock("op")
    second.acquire()
    assert (first.epoch, second.epoch) == (None, 2)
    second.release()


def test_a_waiting_acquire_gets_the_lease_when_released(opened: list[PostgresStore]) -> None:
    """acquire(timeout) polls: it succeeds once the holder lets go."""
    url = postgres_url_for()
    one, two = pg(opened, url), pg(opened, url)
    held = one.lock("op")
    held.acquire()
    timer = threading.Timer(0.3, held.release)
    timer.start()
    waiter = two.lock("op")
    started = time.monotonic()
    waiter.acquire(timeout=5)
    assert 0.25 < time.monotonic() - started < 3
    waiter.release()
    timer.join()


def test_the_heartbeat_keeps_a_lease_alive(opened: list[PostgresStore]) -> None:
    """A live holder's lease outlasts its nominal length; a released one is free at once."""
    url = postgres_url_for(**QUICK)
    one, two = pg(opened, url), pg(opened, url)
    lock = one.lock("op")
    lock.acquire()
    wait_out(one)
    wait_out(one)
    with pytest.raises(OperationLocked):
        two.lock("op").acquire()
    one.add_checkpoint(ckpt("op", 1))  # still ours
    lock.release()
    two.lock("op").acquire()


def paused(store: PostgresStore) -> None:
    """Stop the store's heartbeat, as a SIGSTOP or a long GC pause would."""
    assert store._beat is not None
    store._beat.stop()


def test_every_write_of_a_taken_over_holder_is_fenced(opened: list[PostgresStore]) -> None:
    """After a takeover, the old holder's writes write nothing and raise LeaseLost."""
    url = postgres_url_for(**QUICK)
    old, new = pg(opened, url), pg(opened, url)
    old.lock("op").acquire()
    old.save(OperationRecord.new("op", "n", RUNNING), ckpt("op", 1))
    paused(old)
    wait_out(old)
    taker = new.lock("op")
    taker.acquire()
    assert taker.epoch == 2
    before = sql_in(old, "SELECT seq, checksum FROM checkpoints")
    with pytest.raises(LeaseLost):
        old.add_checkpoint(ckpt("op", 2))
    for write in (
        lambda: old.add_checkpoint(ckpt("op", 3)),
        lambda: old.save(OperationRecord.new("op", "other", RUNNING), ckpt("op", 4)),
        lambda: old.put_results([ResultRecord.create("op", "k", "pickle", b"v")]),
        lambda: old.delete_operation("op"),
    ):
        with pytest.raises(LeaseLost):
            write()
    assert sql_in(old, "SELECT seq, checksum FROM checkpoints") == before
    assert sql_in(old, "SELECT count(*) FROM results") == [(0,)]
    assert new.load_operation("op").name == "n"  # type: ignore[union-attr]
    new.add_checkpoint(ckpt("op", 2))  # the new holder writes
    assert new.latest_checkpoint("op").seq == 2  # type: ignore[union-attr]


def test_fenced_multi_statement_writes_check_in_the_transaction(
    opened: list[PostgresStore],
) -> None:
    """save, put_results and delete check the lease in their transaction, not only by memory."""
    url = postgres_url_for(**QUICK)
    old, new = pg(opened, url), pg(opened, url)
    old.lock("op").acquire()
    paused(old)
    wait_out(old)
    new.lock("op").acquire()
    with pytest.raises(LeaseLost):  # the first fenced write after the takeover finds it out
        old.put_results([ResultRecord.create("op", "k", "pickle", b"v")])
    assert new.load_result("op", "k") is None


def test_the_heartbeat_marks_a_lease_taken_over_as_lost(opened: list[PostgresStore]) -> None:
    """A renewal that misses a held lease marks it lost: writes then fail without asking."""
    url = postgres_url_for(**QUICK)
    old, new = pg(opened, url), pg(opened, url)
    old.lock("op").acquire()
    paused(old)
    wait_out(old)
    new.lock("op").acquire()
    old._renew_leases()
    assert old._held["op"].lost
    with pytest.raises(LeaseLost):
        old.add_checkpoint(ckpt("op", 1))


def test_writes_without_a_lease_are_not_fenced(opened: list[PostgresStore]) -> None:
    """A store that holds no lease on an operation (lock=False) writes unconditionally."""
    url = postgres_url_for()
    holder, other = pg(opened, url), pg(opened, url)
    holder.lock("op").acquire()
    other.add_checkpoint(ckpt("op", 1))
    other.save(OperationRecord.new("op", "n", RUNNING))
    assert holder.latest_checkpoint("op").seq == 1  # type: ignore[union-attr]


def test_a_forked_child_builds_its_own_connections(opened: list[PostgresStore]) -> None:
    """A forked child uses the store through its own pool; the parent's keeps working."""
    store = pg(opened, postgres_url_for())
    store.save(OperationRecord.new("parent", "n", RUNNING))
    lock = store.lock("parent")
    lock.acquire()
    with warnings.catch_warnings():  # Python 3.12+ warns that forking with threads may deadlock
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            store.save(OperationRecord.new("child", "n", RUNNING))  # not fenced: not its lease
            assert store._pid == os.getpid()
            assert store._held == {}  # the parent's lease is not the child's
            code = 0 if store.load_operation("parent") is not None else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.load_operation("child") is not None
    store.add_checkpoint(ckpt("parent", 1))  # still the parent's lease, fenced and fine
    lock.release()


# --- a paused process is fenced off: real processes, SIGSTOP ------------------------------------


class Worker:
    """One run of postgres_worker.py: stdout is a pipe, stderr goes to a file."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.stderr_path = tmp_path / f"{name}.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, bufsize=0,
            )  # fmt: skip
        self._buf = b""
        self.lines: list[str] = []

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def read_until(self, done: Any, timeout: float = TIMEOUT) -> str:
        """Read lines until ``done(line)``; that line. Fails at ``timeout`` or at exit."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                raw, _, self._buf = self._buf.partition(b"\n")
                line = raw.decode()
                self.lines.append(line)
                if done(line):
                    return line
            left = deadline - time.monotonic()
            assert left > 0, f"worker printed nothing fitting in {timeout} s:\n{self.stderr}"
            if _readable(fd, left):
                chunk = os.read(fd, 1 << 16)
                assert chunk, f"worker exited ({self.proc.wait(TIMEOUT)}):\n{self.stderr}"
                self._buf += chunk

    def drain(self) -> None:
        """Keep what the worker printed before it stopped (it prints nothing for 0.2 s)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while _readable(fd, 0.2) and (chunk := os.read(fd, 1 << 16)):
            self._buf += chunk
        lines = self._buf.decode().split("\n")
        self.lines += lines[:-1]
        self._buf = lines[-1].encode()

    def finish(self, timeout: float = TIMEOUT) -> int:
        """Wait for the worker to exit, keeping what it printed; its exit code."""
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit in {timeout} s:\n{self.stderr}") from None
        self.lines += (self._buf + (rest or b"")).decode().splitlines()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.communicate(timeout=TIMEOUT)


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` has something to read within ``timeout`` (select() fails on fds over
    1023, which a long test session reaches)."""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def positions(lines: list[str]) -> list[int]:
    return [int(x) for x in lines if x.isdigit()]


def stored(url: str, op_id: str) -> tuple[int, Any, ProcessState]:
    """The newest checkpoint's position and state, and the operation's state."""
    store = open_store(url)
    try:
        ckpt = store.latest_checkpoint(op_id)
        op = store.load_operation(op_id)
        assert ckpt is not None and op is not None
        return ckpt.position, get_serializer(ckpt.serializer).loads(ckpt.payload), op.state
    finally:
        store.close()


def test_a_stopped_holder_is_taken_over_and_fenced_off(tmp_path: Path) -> None:
    """SIGSTOPped past its lease, a runner is taken over; woken, it writes nothing more.

    The successor takes the lease once it expires, resumes where the stopped one committed,
    runs to item 500 and stops there. Woken with SIGCONT, the first process fails its next
    commit with LeaseLost and exits: the stored position never moves backwards.
    """
    url = postgres_url_for(lease=1, heartbeat=0.25)
    common = ("--store", url, "--op", "job", "--n", "2000")
    first = Worker(tmp_path, "first", *common, "--sleep", "0.01")
    second: Worker | None = None
    try:
        first.read_until(lambda line: line.isdigit() and int(line) >= 100)
        with pytest.raises(OperationLocked, match=f"process {first.proc.pid} on "):
            probe = open_store(url)
            try:
                probe.lock("job").acquire()
            finally:
                probe.close()
        os.kill(first.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        first.drain()
        stopped_at = positions(first.lines)[-1]
        second = Worker(
            tmp_path, "second", *common, "--sleep", "0", "--lock", "20", "--stop-at", "500"
        )
        entered = second.read_until(lambda line: line.startswith("entered"))
        # It waited for the lease to run out: at least a lease less the last renewal's age.
        assert time.monotonic() - stopped > 1 - 2 * 0.25
        resumed_at = int(entered.split()[1])
        assert stopped_at <= resumed_at <= stopped_at + 1
        assert second.finish() == 0, second.stderr
        assert positions(second.lines)[-1] == 499
        position, state, op_state = stored(url, "job")
        assert (position, state["n"], op_state) == (500, 499, ProcessState.PAUSED)

        os.kill(first.proc.pid, signal.SIGCONT)
        code = first.finish()
        assert code != 0
        assert "LeaseLost" in first.stderr, first.stderr
        assert positions(first.lines)[-1] <= stopped_at + 1
        position, state, op_state = stored(url, "job")
        assert (position, state["n"], op_state) == (500, 499, ProcessState.PAUSED)
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_a_killed_holder_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    """A holder SIGKILLed on this machine is known dead: no need to wait out its lease."""
    url = postgres_url_for(lease=60, heartbeat=1)
    common = ("--store", url, "--op", "job", "--n", "2000")
    first = Worker(tmp_path, "first", *common, "--sleep", "0.01")
    second: Worker | None = None
    try:
        first.read_until(lambda line: line.isdigit() and int(line) >= 20)
        first.proc.kill()
        first.finish()
        started = time.monotonic()
        second = Worker(tmp_path, "second", *common, "--sleep", "0", "--stop-at", "100")
        entered = second.read_until(lambda line: line.startswith("entered"))
        assert time.monotonic() - started < 30  # not the 60 s lease
        assert int(entered.split()[1]) >= 20
        assert second.finish() == 0, second.stderr
    finally:
        first.kill()
        if second is not None:
            second.kill()


# --- batch claims ---------------------------------------------------------------------------------


def test_two_owners_never_hold_one_batch(opened: list[PostgresStore]) -> None:
    """Claimers racing over one group get disjoint batches, and together all of them."""
    url = postgres_url_for()
    stores = [pg(opened, url) for _ in range(4)]
    got: dict[str, list[int]] = {}

    def claimer(store: PostgresStore, owner: str) -> None:
        mine = got.setdefault(owner, [])
        while claimed := store.claim_batches("op", "g", 60, 2, owner):
            mine.extend(b for b, epoch in claimed if epoch == 1)
            assert len(claimed) == sum(1 for _, e in claimed if e == 1)

    threads = [
        threading.Thread(target=claimer, args=(stores[i % 4], f"owner-{i}")) for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    every = [b for batches in got.values() for b in batches]
    assert sorted(every) == list(range(60))
    assert stores[0].batches_left("op", "g")[0] == 60


def test_an_expired_claim_is_taken_over_and_its_old_owner_fenced_off(
    opened: list[PostgresStore],
) -> None:
    """Past its lease, a claim goes to another owner at a bigger epoch; the old owner's
    finish_batch then returns False and writes nothing."""
    store = pg(opened, postgres_url_for(**QUICK))
    assert store.batches_left("op", "g") == (0, None)
    assert store.claim_batches("op", "g", 3, 2, "old") == [(0, 1), (1, 1)]
    left, wait = store.batches_left("op", "g")
    assert (left, wait) == (3, 0.0)  # batch 2 is free
    assert store.claim_batches("op", "g", 3, 5, "new") == [(2, 1)]
    left, wait = store.batches_left("op", "g")
    assert left == 3
    assert wait is not None
    assert 0 < wait <= store.lease
    assert store.claim_batches("op", "g", 3, 5, "new") == []
    wait_out(store)
    assert store.claim_batches("op", "g", 3, 1, "new") == [(0, 2)]
    late = ResultRecord.create("op", "r0", "pickle", b"old")
    assert not store.finish_batch("op", "g", 0, 1, "old", [late])
    assert store.load_result("op", "r0") is None
    fresh = ResultRecord.create("op", "r0", "pickle", b"new")
    assert store.finish_batch("op", "g", 0, 2, "new", [fresh])
    assert store.load_result("op", "r0") == fresh
    assert not store.finish_batch("op", "g", 0, 2, "new", [late])  # done once
    assert store.load_result("op", "r0") == fresh


def test_renewed_claims_outlive_their_first_expiry(opened: list[PostgresStore]) -> None:
    """renew_claims keeps an owner's claims; release_batches frees them at once."""
    store = pg(opened, postgres_url_for(**QUICK))
    assert store.claim_batches("op", "g", 2, 2, "me") == [(0, 1), (1, 1)]
    deadline = time.monotonic() + 2 * store.lease + 0.3
    while time.monotonic() < deadline:
        store.renew_claims("me")
        time.sleep(store.lease / 4)
    assert store.claim_batches("op", "g", 2, 2, "other") == []
    store.release_batches("op", "g", "me")
    assert store.batches_left("op", "g") == (2, 0.0)
    assert store.claim_batches("op", "g", 2, 2, "other") == [(0, 2), (1, 2)]


def test_failed_batches_reopen_for_the_next_run(opened: list[PostgresStore]) -> None:
    """A batch finished failed is done for now; reopen_failed makes it claimable again."""
    store = pg(opened, postgres_url_for())
    assert store.claim_batches("op", "g", 2, 2, "me") == [(0, 1), (1, 1)]
    assert store.finish_batch("op", "g", 0, 1, "me", [], failed=True)
    assert store.finish_batch("op", "g", 1, 1, "me", [])
    assert store.batches_left("op", "g") == (0, 0.0)
    store.reopen_failed("op", "g")
    assert store.batches_left("op", "g") == (1, 0.0)
    assert store.claim_batches("op", "g", 2, 2, "next") == [(0, 2)]


# --- a client paused inside a write (SIGSTOP, a debugger) holds nothing for long -------------


def pause_after(monkeypatch: pytest.MonkeyPatch, statement: str) -> tuple[Any, Any]:
    """Stop the thread named "paused" right after it runs ``statement``, as SIGSTOP would.

    Returns two events: set when the thread stops there, and the one that lets it go on.
    """
    reached, go = threading.Event(), threading.Event()
    real = psycopg.Connection.execute

    def execute(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        cur = real(self, query, params, **kw)
        if query == statement and threading.current_thread().name == "paused":
            reached.set()
            go.wait(TIMEOUT)
        return cur

    monkeypatch.setattr(psycopg.Connection, "execute", execute)
    return reached, go


def run_in_thread(fn: Any, name: str) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a daemon thread; its return value or exception lands in the dict."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread, out


def test_a_participant_paused_inside_its_claim_keeps_no_batch_past_its_lease(
    opened: list[PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped right after its claim statement ran, a participant's batches go to another one
    once its lease runs out: nothing it sent is left uncommitted, holding row locks."""
    from resumable.stores._pg_claims import _CLAIM

    url = postgres_url_for(**QUICK)
    a, b = pg(opened, url), pg(opened, url)
    reached, go = pause_after(monkeypatch, _CLAIM)
    paused, _ = run_in_thread(lambda: a.claim_batches("op", "g", 2, 2, "a"), "paused")
    try:
        assert reached.wait(TIMEOUT)

        def take_over() -> list[tuple[int, int]]:
            deadline = time.monotonic() + 4 * b.lease + 2
            while not (got := b.claim_batches("op", "g", 2, 2, "b")):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            return got

        taker, out = run_in_thread(take_over, "taker")
        taker.join(4 * b.lease + 5)
        assert not taker.is_alive(), "the other participant was blocked by the paused one"
        assert out.get("value") == [(0, 2), (1, 2)], out
    finally:
        go.set()
        paused.join(TIMEOUT)


def test_a_writer_paused_inside_its_transaction_is_ended_by_the_server(
    opened: list[PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped between two statements of a save, a writer's session is idle in its transaction
    and the server ends it after a lease: another writer of that row goes on, and the paused
    one, let go, writes nothing and gets an error."""
    from resumable.stores._pg_sql import UPSERT_OPERATION

    url = postgres_url_for(**QUICK)
    a, b = pg(opened, url), pg(opened, url)
    first = OperationRecord.new("op", "first", RUNNING)
    b.save(first)
    reached, go = pause_after(monkeypatch, UPSERT_OPERATION)
    mine = first.with_changes(name="paused")
    paused, out_a = run_in_thread(lambda: a.save(mine, ckpt("op", 1)), "paused")
    try:
        assert reached.wait(TIMEOUT)
        other = first.with_changes(name="other")
        writer, out_b = run_in_thread(lambda: b.save(other), "writer")
        writer.join(4 * b.lease + 5)
        assert not writer.is_alive(), "the other writer waited on the paused one's row lock"
        assert "error" not in out_b, out_b
    finally:
        go.set()
        paused.join(TIMEOUT)
    assert isinstance(out_a.get("error"), StoreError), out_a
    found = b.load_operation("op")
    assert found is not None and found.name == "other"
    assert b.latest_checkpoint("op") is None


def test_results_go_in_statements_of_bounded_size_and_a_repeated_key_keeps_its_last(
    opened: list[PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """put_results splits its rows by payload size, and a key given twice stores the last."""
    from resumable.stores import _pg_sql

    store = pg(opened, postgres_url_for())
    monkeypatch.setattr(_pg_sql, "RESULTS_BYTES", 10)  # a statement per two 5-byte payloads
    records = [ResultRecord.create("op", f"k{i}", "pickle", b"%05d" % i) for i in range(7)]
    again = ResultRecord.create("op", "k3", "pickle", b"again")
    store.put_results([*records, again])
    found = store.load_results("op", "k")
    assert {k: r.payload for k, r in found.items()} == {
        **{f"k{i}": b"%05d" % i for i in range(7)},
        "k3": b"again",
    }
