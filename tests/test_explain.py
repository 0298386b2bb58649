"""What the next run will do, in words: the same text `resumable show` prints and the log says."""

from __future__ import annotations

import pytest
import structlog
from structlog.testing import capture_logs
from test_stores import corrupt_checkpoint

from resumable import checkpointed, resumable
from resumable._explain import explain
from resumable.stores import Store, resolve_store


def run(url: str, n: int, fail_at: int | None = None) -> None:
    with checkpointed("job", store=url, state={"n": 0}, every_seconds=0) as cp:
        for i in cp.iterate(range(n)):
            if i == fail_at:
                raise ValueError("bad row")
            cp.state.n += 1


def test_never_run_runs_from_the_start(store: Store) -> None:
    d = explain(store, "job")
    assert (d.action, d.position) == ("run", 0)
    assert d.reason == "never run: a run starts at the beginning"


def test_failed_resumes_at_its_position_and_says_why(store_url: str, store: Store) -> None:
    with pytest.raises(ValueError, match="bad row"):
        run(store_url, 10, fail_at=4)
    d = explain(store, "job")
    assert (d.action, d.position) == ("resume", 4)
    assert d.reason == "resumable at position 4 (it failed: ValueError: bad row)"


def test_completed_is_skipped(store_url: str, store: Store) -> None:
    run(store_url, 3)
    d = explain(store, "job")
    assert (d.action, d.position) == ("skip", 3)
    assert d.reason.startswith("completed: a run runs no loop body")


def test_a_corrupt_newest_checkpoint_falls_back(store_url: str, store: Store) -> None:
    with pytest.raises(ValueError, match="bad row"):
        run(store_url, 10, fail_at=6)
    newest = store.latest_checkpoint("job")
    assert newest is not None
    corrupt_checkpoint(store, "job", newest.seq)
    d = explain(store, "job")
    assert d.action == "resume" and d.corrupt == (newest.seq,)
    assert f"the newest checkpoint (seq {newest.seq}) failed the checksum" in d.reason
    assert d.position <= 6  # seq 6, the commit before the failure's own


def test_every_checkpoint_corrupt_blocks(store_url: str, store: Store) -> None:
    with pytest.raises(ValueError, match="bad row"):
        run(store_url, 3, fail_at=1)
    for ckpt in list(store.iter_checkpoints("job")):
        corrupt_checkpoint(store, "job", ckpt.seq)
    d = explain(store, "job")
    assert d.action == "blocked"
    assert "every checkpoint failed its checksum" in d.reason


def test_a_stored_call_result_names_the_code_fingerprint() -> None:
    @resumable(store="memory://")
    def double(x: int) -> int:
        return 2 * x

    double(4)
    d = explain(resolve_store("memory://"), double.op_id_for(4))
    assert d.action == "skip"
    assert "code fingerprint is" in d.reason and "on_code_change" in d.reason


def test_the_library_logs_the_reason_it_acts_on(store_url: str) -> None:
    with pytest.raises(ValueError, match="bad row"):
        run(store_url, 10, fail_at=4)
    structlog.configure(processors=[])  # capture_logs needs structlog configured
    with capture_logs() as logs:
        run(store_url, 10)
        run(store_url, 10)
    reasons = {e["event"]: e.get("reason") for e in logs if "reason" in e}
    assert reasons["resumable.operation.resumed"] == (
        "resumable at position 4 (it failed: ValueError: bad row)"
    )
    assert reasons["resumable.operation.skipped"].startswith("completed:")
