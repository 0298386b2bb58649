"""PostgreSQL leases: one released normally is never reported lost; one taken over always is.

The heartbeat renews this process's leases with one UPDATE and reports as lost every lease it
holds that the UPDATE did not find. A release that committed just before that UPDATE, while
the store still counted the lease as held, was reported lost: a spurious
``resumable.lease.lost`` warning for a call that completed normally, seen under load. The
first test makes that interleaving happen every time, through a seam: the store's pool is
wrapped so that the heartbeat's renewal runs right after the release statement commits. The
others run many blocks and calls at once with a short lease (no warning may appear), and
take over a really stopped holder (the warning must appear).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import postgres_url_for
from test_postgres import TIMEOUT, Worker, pg, positions, sql_in

from resumable import LeaseLost, checkpointed, open_store, resumable
from resumable.operation import CheckpointRecord, ProcessState
from resumable.stores.postgres import PostgresStore

LOST = "resumable.lease.lost"
#: Its line on stderr, where a worker leaves logging unconfigured.
LOST_LINE = "resumable: 'job' lost its lease (epoch "


def lost_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "event", "") == LOST]


class _BeatAfterRelease:
    """The store's pool, once: the connection it lends runs the heartbeat's renewal when given
    back, that is, after the statement run on it (the release) has committed."""

    def __init__(self, store: PostgresStore, pool: Any, seen: list[Any]) -> None:
        self.store, self.pool, self.seen = store, pool, seen

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self.pool.connection() as conn:
            yield conn
        # The release is committed (autocommit) and the connection is back in the pool.
        self.seen.append(sql_in(self.store, "SELECT owner FROM leases WHERE op_id = 'op'"))
        self.store._renew_leases()  # the heartbeat's beat, as its thread would run it


def test_a_renewal_racing_a_release_reports_nothing(
    opened: list[PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat renewing between a release's commit and its return does not call it lost."""
    store = pg(opened, postgres_url_for(lease=30, heartbeat=10))
    lock = store.lock("op")
    lock.acquire()
    seen: list[Any] = []
    real = store._connections()

    def once() -> Any:
        del store._connections  # back to the method: the renewal uses the real pool
        return _BeatAfterRelease(store, real, seen)

    store._connections = once  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="resumable"):
        lock.release()
    assert seen == [[(None,)]], "the renewal did not run after the release committed"
    assert lost_warnings(caplog) == []
    assert store._held == {}
    again = store.lock("op")  # and the lease is free: taken at the next epoch
    again.acquire()
    assert again.epoch == 2
    again.release()


def test_many_blocks_and_calls_at_once_never_warn(
    opened: list[PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    """16 threads of blocks and @resumable calls, short lease, fast heartbeat: no lease.lost."""
    url = postgres_url_for(lease=0.4, heartbeat=0.01, pool_size=8)
    store = pg(opened, url)
    errors: list[BaseException] = []

    @resumable(store=store)
    def square(x: int) -> int:
        return x * x

    def work(t: int) -> None:
        try:
            for i in range(25):
                with checkpointed(f"block-{t}-{i}", store=store, every_seconds=0) as cp:
                    for x in cp.iterate(range(3)):
                        cp.state[str(x)] = x
                assert square(t * 1000 + i) == (t * 1000 + i) ** 2
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with caplog.at_level(logging.WARNING, logger="resumable"):
        threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 4)
    assert not errors, errors
    assert lost_warnings(caplog) == []
    assert store._held == {}
    assert store.record_counts()["operations"] == 16 * 25 * 2


def test_a_lease_taken_over_is_reported_lost(
    opened: list[PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    """A holder whose heartbeat stopped past its lease, then taken over: warned, writes refused."""
    url = postgres_url_for(lease=0.5, heartbeat=0.1)
    old, new = pg(opened, url), pg(opened, url)
    lock = old.lock("op")
    lock.acquire()
    assert old._beat is not None
    old._beat.stop()  # as a SIGSTOP would stop it
    taker = new.lock("op")
    taker.acquire(timeout=10)  # once the old lease has run out
    with caplog.at_level(logging.WARNING, logger="resumable"):
        old._renew_leases()  # the old holder's next beat
    assert len(lost_warnings(caplog)) == 1
    with pytest.raises(LeaseLost):
        old.add_checkpoint(
            CheckpointRecord.create("op", 1, 0, ProcessState.RUNNING, 0.0, "pickle", b"p")
        )
    lock.release()  # gives back nothing: the lease is the taker's
    assert sql_in(new, "SELECT epoch FROM leases WHERE op_id = 'op'") == [(2,)]
    taker.release()


def test_a_sigstopped_holder_taken_over_warns_and_a_normal_run_does_not(tmp_path: Path) -> None:
    """A real process stopped past its lease logs lease.lost when woken; one that ends does not."""
    url = postgres_url_for(lease=1, heartbeat=0.25)
    common = ("--store", url, "--n", "2000", "--sleep", "0.005")
    quiet = Worker(tmp_path, "quiet", *common, "--op", "quiet", "--stop-at", "200")
    try:
        assert quiet.finish() == 0, quiet.stderr
        assert positions(quiet.lines)[-1] == 199
        assert LOST_LINE not in quiet.stderr
    finally:
        quiet.kill()

    stopped = Worker(tmp_path, "stopped", *common, "--op", "job")
    taker = open_store(url)
    try:
        stopped.read_until(lambda line: line.isdigit() and int(line) >= 20)
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        lease = taker.lock("job")
        lease.acquire(timeout=TIMEOUT)  # waits out the stopped holder's lease
        os.kill(stopped.proc.pid, signal.SIGCONT)
        assert stopped.finish() != 0
        # One line says it, when the store finds it (the heartbeat or a write, whichever is
        # first); the exception's traceback says the rest, and no second line repeats it.
        assert stopped.stderr.count(LOST_LINE) == 1, stopped.stderr
        assert "run wrote nothing more" not in stopped.stderr, stopped.stderr
        assert "LeaseLost" in stopped.stderr
        lease.release()
    finally:
        stopped.kill()
        taker.close()
