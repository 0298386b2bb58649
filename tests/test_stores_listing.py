"""What ``resumable list`` reads: every operation record and its newest checkpoint.

The file store reads both in one pass over its folders (``operations_and_heads``); it must
give what ``list_operations`` and ``checkpoint_heads`` give apart, damaged files included,
and a damaged newest checkpoint must still be found under its operation's id, so that
``list`` falls back past it and names it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resumable import open_store
from resumable._listing import summaries
from resumable.operation import CheckpointRecord, OperationRecord, ProcessState, op_key
from resumable.stores._file_records import checkpoint_name


def _store(kind: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"file://{tmp_path / 'fs'}"
    store = open_store(url)
    for i in range(6):
        op_id = f"op-{i}"
        op = OperationRecord.new(op_id, op_id, ProcessState.RUNNING)
        for seq in (1, 2):
            store.save(
                op, CheckpointRecord.create(op_id, seq, seq * 10, op.state, 0.5, "pickle", b"x")
            )
    return store


def _damage(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """op-1: newest checkpoint garbage; op-2: newest holds another seq; op-3: no record."""
    ops = tmp_path / "fs" / "ops"
    (ops / op_key("op-1") / "checkpoints" / checkpoint_name(2)).write_bytes(b"{not json")
    older = (ops / op_key("op-2") / "checkpoints" / checkpoint_name(1)).read_bytes()
    (ops / op_key("op-2") / "checkpoints" / checkpoint_name(2)).write_bytes(older)
    (ops / op_key("op-3") / "operation.json").unlink()


def test_file_store_one_pass_gives_what_the_two_reads_give(tmp_path: Path) -> None:
    store = _store("file", tmp_path)
    _damage(store, tmp_path)
    try:
        ops, heads = store.operations_and_heads()
        assert ops == list(store.list_operations())
        apart = store.checkpoint_heads()
        assert heads.keys() == apart.keys()
        for op_id, head in heads.items():
            assert (head.seq, head.checksum, head.payload) == (
                apart[op_id].seq, apart[op_id].checksum, apart[op_id].payload,
            )  # fmt: skip
        assert [op.op_id for op in ops] == ["op-0", "op-1", "op-2", "op-4", "op-5"]
    finally:
        store.close()


def test_list_falls_back_past_a_damaged_newest_checkpoint_of_the_file_store(tmp_path: Path) -> None:
    store = _store("file", tmp_path)
    _damage(store, tmp_path)
    try:
        found = {s.op.op_id: s for s in summaries(store)}
    finally:
        store.close()
    assert found["op-0"].checkpoint is not None and found["op-0"].corrupt == ()
    for damaged in ("op-1", "op-2"):
        s = found[damaged]
        assert s.checkpoint is not None and s.checkpoint.seq == 1 and s.corrupt == (2,), damaged
    assert "op-3" not in found


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_operations_and_heads_of_an_undamaged_store(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)
    try:
        ops, heads = store.operations_and_heads()
    finally:
        store.close()
    assert [op.op_id for op in ops] == [f"op-{i}" for i in range(6)]
    assert {k: (h.seq, h.verify()) for k, h in heads.items()} == {
        f"op-{i}": (2, True) for i in range(6)
    }
