"""Invariants that a review broke one at a time without any test noticing; each test here
fails if its invariant is broken.

- A record is loaded only by the operation it names: another operation's checkpoint or result
  file copied into this operation's folder of the file store is never loaded as its own.
- The undo log keeps the value a field had *before* the failing item, however often the item
  assigned or deleted it, and leaves alone what only finished items assigned or deleted.
- A shared map's claim is fenced by owner *and* epoch: a holder whose claim ran out (or was
  given back) and was claimed again by the same owner token writes nothing.
- The SQLite store's multi-statement writes hold the write lock from their ``BEGIN``: another
  connection cannot commit between their first read and their first write, which would make
  SQLite refuse the write at once ("database is locked", the busy timeout ignored).
- ``conftest.require_package`` skips a test module locally but fails it under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import postgres_url_for

from resumable import CheckpointCorrupt, StoreError, checkpointed, open_store
from resumable.operation import ResultRecord, op_key
from resumable.stores import Store
from resumable.stores.sqlite import SQLiteStore

HERE = Path(__file__).parent
TIMEOUT = 60.0


class Boom(Exception):
    pass


# --- 1. a record belongs to the operation it names -------------------------------------------


def _folder(root: Path, op_id: str) -> Path:
    """The file store's folder of ``op_id`` (see the layout in resumable/stores/files.py)."""
    return root / "ops" / op_key(op_id)


def test_another_operations_checkpoint_copied_in_is_never_loaded(tmp_path: Path) -> None:
    """A's folder holding B's (valid) checkpoint as its newest: A resumes from its own state."""
    root = tmp_path / "store"
    url = f"file://{root}"
    with pytest.raises(Boom), checkpointed("A", store=url, state={"who": "A", "n": 0}) as cp:
        for i in cp.iterate(range(10)):
            if i == 4:
                raise Boom
            cp.state.n += i
            cp.commit()
    with checkpointed("B", store=url, state={"who": "B", "n": 0}) as cp:
        for i in cp.iterate(range(20)):
            cp.state.n += 1000 + i
            cp.commit()
    mine = sorted((_folder(root, "A") / "checkpoints").glob("*.json"))
    theirs = max((_folder(root, "B") / "checkpoints").glob("*.json"))
    assert int(mine[-1].stem) < int(theirs.stem)
    # Under B's own file name: its seq fits the name (a misnamed one is damaged anyway, see
    # test_hostile_files.py), so only the op id inside tells it is not A's.
    planted = mine[-1].with_name(theirs.name)
    shutil.copyfile(theirs, planted)
    store = open_store(url)
    assert max(store.iter_checkpoints("A"), key=lambda c: c.seq).op_id == "B"  # it is there

    rec = store.latest_checkpoint("A")
    assert rec is not None
    assert rec.op_id == "A"
    assert rec.position == 4
    with checkpointed("A", store=url) as cp:
        assert cp.position == 4
        assert dict(cp.state) == {"who": "A", "n": sum(range(4))}
        for i in cp.iterate(range(10)):
            cp.state.n += i
    assert dict(cp.state) == {"who": "A", "n": sum(range(10))}


def test_another_operations_record_copied_in_is_never_taken_for_this_ones(tmp_path: Path) -> None:
    """B's record (completed) copied over A's (failed): A is refused as corrupt, naming A, or
    runs on from its own checkpoint; it is never skipped as completed."""
    root = tmp_path / "store"
    url = f"file://{root}"
    with pytest.raises(Boom), checkpointed("A", store=url, state={"n": 0}) as cp:
        for i in cp.iterate(range(10)):
            if i == 4:
                raise Boom
            cp.state.n += i
    with checkpointed("B", store=url, state={"n": 0}) as cp:
        for i in cp.iterate(range(3)):
            cp.state.n += i
    shutil.copyfile(_folder(root, "B") / "operation.json", _folder(root, "A") / "operation.json")
    store = open_store(url)
    assert store.get_operation("A") is not None
    assert store.get_operation("A").op_id == "B"  # type: ignore[union-attr] # it is there

    refusal = ""
    try:
        with checkpointed("A", store=url) as cp:
            for i in cp.iterate(range(10)):
                cp.state.n += i
    except CheckpointCorrupt as exc:
        refusal = str(exc)
    if refusal:
        assert "'A'" in refusal, refusal
    else:
        assert cp.position == 10
        assert cp.state.n == sum(range(10))


def test_another_operations_step_result_copied_in_is_never_loaded(tmp_path: Path) -> None:
    """B's result file of step "fetch" copied into A's folder: A runs its own step."""
    root = tmp_path / "store"
    url = f"file://{root}"
    with pytest.raises(Boom), checkpointed("A", store=url) as cp:
        cp.step("first", lambda: "A first")
        raise Boom
    with checkpointed("B", store=url) as cp:
        cp.step("fetch", lambda: "B fetched")
    (theirs,) = (_folder(root, "B") / "results").glob("*.json")  # B's only result
    shutil.copyfile(theirs, _folder(root, "A") / "results" / theirs.name)  # same key, same name
    store = open_store(url)
    assert store.get_result("A", "step:fetch") is not None  # it is there, B's
    assert store.load_result("A", "step:fetch") is None

    ran = []
    with checkpointed("A", store=url) as cp:
        assert cp.step("first", lambda: "ran again") == "A first"
        assert cp.step("fetch", lambda: ran.append(1) or "A fetched") == "A fetched"
    assert ran == [1]


def test_another_operations_map_results_copied_in_are_never_loaded(tmp_path: Path) -> None:
    """B's results of ``cp.map`` copied into A's folder: A runs every item itself."""
    root = tmp_path / "store"
    url = f"file://{root}"
    with pytest.raises(Boom), checkpointed("A", store=url) as cp:
        raise Boom  # A exists, with no result yet
    with checkpointed("B", store=url) as cp:
        assert cp.map(lambda x: f"B{x}", range(4), workers=1) == ["B0", "B1", "B2", "B3"]
    (_folder(root, "A") / "results").mkdir(parents=True, exist_ok=True)
    for path in (_folder(root, "B") / "results").glob("*.json"):
        shutil.copyfile(path, _folder(root, "A") / "results" / path.name)
    store = open_store(url)
    assert len(list(store.iter_results("A", "map0:"))) == 4  # they are there, B's
    assert store.load_results("A", "map0:") == {}

    with checkpointed("A", store=url) as cp:
        assert cp.map(lambda x: f"A{x}", range(4), workers=1) == ["A0", "A1", "A2", "A3"]


# --- 2. the undo log keeps the value from before the item -----------------------------------


def test_a_failing_item_rolls_back_each_field_to_its_value_before_the_item(
    tmp_path: Path,
) -> None:
    """Assigned twice, assigned then deleted, deleted then assigned, created twice: after the
    failing item every field is as it was before that item, in memory and in the store."""
    url = f"sqlite:///{tmp_path}/state.db"
    start = {"twice": 0, "then_del": 0, "del_then": 0}
    with pytest.raises(Boom), checkpointed("undo", store=url, state=start) as cp:
        for i in cp.iterate(range(10)):
            if i == 3:
                cp.state.twice = "first"
                cp.state.twice = "second"
                cp.state.then_del = "first"
                del cp.state.then_del
                del cp.state.del_then
                cp.state.del_then = "second"
                cp.state.new = "first"
                cp.state.new = "second"
                raise Boom
            cp.state.twice = cp.state.then_del = cp.state.del_then = i
    before = {"twice": 2, "then_del": 2, "del_then": 2}
    assert dict(cp.state) == before
    with checkpointed("undo", store=url) as cp:
        assert cp.position == 3
        assert dict(cp.state) == before


def test_a_failing_item_keeps_what_finished_items_alone_assigned(tmp_path: Path) -> None:
    """The log keeps an entry per field, tagged with the position it was made at; a field
    that only finished items assigned (its entry stale) is left as they left it, in memory
    and in the store, and so is a field deleted by a finished item."""
    url = f"sqlite:///{tmp_path}/state.db"
    start = {"early": 0, "every": 0, "gone": 0}
    with pytest.raises(Boom), checkpointed("stale", store=url, state=start) as cp:
        for i in cp.iterate(range(10)):
            if i == 1:
                cp.state.early = "set by item 1"
                cp.state.made = "made by item 1"
                del cp.state.gone
            if i == 3:
                cp.state.every = "failing"
                raise Boom
            cp.state.every = i
    before = {"early": "set by item 1", "every": 2, "made": "made by item 1"}
    assert dict(cp.state) == before
    with checkpointed("stale", store=url) as cp:
        assert cp.position == 3
        assert dict(cp.state) == before


# --- 3. the claim fence is owner and epoch -------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store several processes can share, with a lease short enough to wait out."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/state.db?lease=0.2&heartbeat=0.05"
    else:
        url = postgres_url_for(lease=0.2, heartbeat=0.05)
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


def _run_out(store: Store, op_id: str, group: str) -> None:
    """Wait until the store says a claim of ``group`` can be taken (its lease ran out)."""
    deadline = time.monotonic() + 10 * store.lease + 5
    while store.batches_left(op_id, group)[1] != 0:
        assert time.monotonic() < deadline, "the claim's lease never ran out"
        time.sleep(store.lease / 4)


@pytest.mark.parametrize("how", ["expired", "released"])
def test_a_claim_taken_again_by_the_same_owner_fences_its_older_epoch(
    shared_store: Store, how: str
) -> None:
    """Owner X's claim at epoch 1 runs out (or is given back) and X claims it again at epoch 2:
    the holder of epoch 1 records nothing, the holder of epoch 2 records its results."""
    store = shared_store
    assert store.claim_batches("op", "g", 1, 1, "X") == [(0, 1)]
    if how == "expired":
        _run_out(store, "op", "g")
    else:
        store.release_batches("op", "g", "X")
    assert store.claim_batches("op", "g", 1, 1, "X") == [(0, 2)]  # only the epoch differs

    stale = ResultRecord.create("op", "map0:0", "pickle", b"stale")
    assert not store.finish_batch("op", "g", 0, 1, "X", [stale])
    assert store.get_result("op", "map0:0") is None  # ... and it wrote nothing
    assert store.batches_left("op", "g")[0] == 1  # nor marked the batch done
    fresh = ResultRecord.create("op", "map0:0", "pickle", b"fresh")
    assert store.finish_batch("op", "g", 0, 2, "X", [fresh])
    assert store.load_result("op", "map0:0") == fresh
    assert store.batches_left("op", "g")[0] == 0


# --- 4. SQLite writes hold the write lock from BEGIN ------------------------------------------


def test_sqlite_claim_is_not_interleaved_with_another_writers_commit(tmp_path: Path) -> None:
    """Another connection writing between a claim's read and its write cannot commit (the
    claim holds the write lock), and the claim succeeds; nothing is refused as "locked".

    The interleaving is forced, not hoped for: a trace callback on the claiming connection
    runs the other writer just before the claim's UPDATE starts. With a deferred ``BEGIN``
    the other writer commits there and SQLite then refuses the claim's write at once.
    """
    db = tmp_path / "state.db"
    claimer = SQLiteStore(db)
    other = SQLiteStore(db, timeout=0)  # fails at once where it would have to wait
    try:
        assert claimer.claim_batches("op", "g", 2, 1, "X") == [(0, 1)]  # the rows exist now
        intruded: list[str] = []

        def intrude(statement: str) -> None:
            if statement.lstrip().upper().startswith("UPDATE CLAIMS") and not intruded:
                try:
                    other.put_result(ResultRecord.create("op", "k", "pickle", b"other"))
                    intruded.append("committed")
                except StoreError as exc:
                    intruded.append(str(exc))

        claimer._connection().set_trace_callback(intrude)
        try:
            assert claimer.claim_batches("op", "g", 2, 1, "Y") == [(1, 1)]
        finally:
            claimer._connection().set_trace_callback(None)
        assert len(intruded) == 1
        assert "database is locked" in intruded[0], intruded[0]
        assert other.get_result("op", "k") is None
        other.put_result(ResultRecord.create("op", "k", "pickle", b"other"))  # free again
        assert claimer.get_result("op", "k") is not None
    finally:
        claimer.close()
        other.close()


# --- 5. a missing test dependency fails under CI -------------------------------------------------


@pytest.mark.parametrize(("ci", "code"), [("true", 2), ("", 5)], ids=["ci", "local"])
def test_require_package_fails_under_ci_and_skips_locally(
    tmp_path: Path, ci: str, code: int
) -> None:
    """A test module whose package is missing is a collection error under CI (exit 2), a
    skipped module without (exit 5: nothing else was collected)."""
    module = tmp_path / "test_needs_missing.py"
    module.write_text(
        "from conftest import require_package\n"
        "require_package('resumable_no_such_package', \"pip install 'nothing'\")\n"
        "def test_never_runs():\n"
        "    raise AssertionError\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "RESUMABLE_TEST_POSTGRES")}
    env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(module)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == code, done.stdout + done.stderr
    assert "resumable_no_such_package" in done.stdout
    assert ("1 skipped" in done.stdout) == (not ci), done.stdout
