"""Operation ids: checked at the call, any string is safe, and distinct ids never mix."""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable import Checkpoint, ProcessState, Store, checkpointed, open_store
from resumable.serializers import decode

# --- validation at the call -----------------------------------------------------------------


def test_empty_op_id_is_a_value_error() -> None:
    """An empty op id is refused at checkpointed() itself."""
    with pytest.raises(ValueError, match="op_id"):
        checkpointed("")


@pytest.mark.parametrize("bad", [42, b"x", ["a"], 1.5, ("a",)], ids=repr)
def test_non_string_op_id_is_a_type_error(bad: Any) -> None:
    """A non-string op id is refused with TypeError at checkpointed() itself."""
    with pytest.raises(TypeError, match="op_id"):
        checkpointed(bad)


def test_none_op_id_is_accepted_at_the_call() -> None:
    """None means "derive an id": the call accepts it (entering needs a parent block)."""
    assert isinstance(checkpointed(None), Checkpoint)
    assert isinstance(checkpointed(), Checkpoint)


@pytest.mark.parametrize("char", ["a", "\U0001f600", "e\u0301"[1], "\u05e9"], ids=ascii)
def test_op_id_length_limit_is_1024_characters(char: str) -> None:
    """1,024 characters are accepted, 1,025 are refused, counting characters not bytes."""
    assert isinstance(checkpointed(char * 1024), Checkpoint)
    with pytest.raises(ValueError, match="1024"):
        checkpointed(char * 1025)


def test_longest_op_id_runs(tmp_path: Path) -> None:
    """A 1,024-character op id is usable end to end, not only accepted by the call."""
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        op_id = "\U0001f600" * 1024
        with checkpointed(op_id, store=store, state={"n": 0}) as cp:
            for _ in cp.iterate(range(3)):
                cp.state.n += 1
        assert cp.state.n == 3
        op = store.load_operation(op_id)
        assert op is not None
        assert op.state is ProcessState.COMPLETED
    finally:
        store.close()


# --- hostile op ids never escape the store --------------------------------------------------

#: Placeholders replaced by absolute paths inside the test's own directories.
_ABS_PARENT = "<abs parent>"
_ABS_TMP = "<abs tmp>"

HOSTILE_IDS = [
    "../escape",
    "../../escape",
    "a/../../escape",
    "../" * 40 + "escape",
    "/",
    "//",
    "a/b",
    "a/b/c/",
    "..",
    ".",
    "/etc/passwd",
    "/tmp",
    _ABS_PARENT,
    _ABS_TMP,
    "a\x00b",
    "\x00",
    "../\x00",
    "a\\b",
    "..\\..\\escape",
    "C:\\Windows\\System32\\evil",
    "\\\\server\\share\\x",
    "CON",
    "NUL",
    "COM1",
    "LPT1",
    "aux.txt",
    "con.",
    "nul ",
    " ",
    "\n",
    "a\nb",
    "\r\n",
    "\t",
    "~",
    "~/escape",
    "$HOME/escape",
    "*",
    "?",
    "a:b",
    ".resumable",
    "state.db",
    "ops",
    "locks",
    "%2e%2e%2fescape",
    "file:///etc/passwd",
    "\U0001f600" * 1024,
    "\U0001f468\u200d\U0001f469\u200d\U0001f467" * 204,
    "e\u0301" * 512,
    "\u05e9\u05dc\u05d5\u05dd " * 204,
    "\u202eevil\u202c",
    "\ufeffbom",
    "\ud800",
    "a\udfffb",
    "\udc80" * 10,
    "\U0010ffff",
]


def _ids(values: list[str]) -> list[str]:
    return [ascii(v)[1:-1][:40] for v in values]


def _resolve(op_id: str, tmp_path: Path) -> str:
    if op_id == _ABS_PARENT:
        return f"{tmp_path.parent}/escaped-{tmp_path.name}"
    if op_id == _ABS_TMP:
        return f"{tmp_path}/escaped"
    return op_id


def _tree(root: Path) -> set[Path]:
    found = set()
    for folder, dirs, files in os.walk(root):
        found.update(Path(folder, name) for name in dirs + files)
    return found


def _absolute_target(op_id: str) -> Any:
    """What exists at ``op_id`` read as an absolute path (to see that it is left alone)."""
    if not op_id.startswith("/") or "\x00" in op_id:
        return None
    try:
        st_ = os.lstat(op_id)
    except (OSError, ValueError):
        return "missing"
    if stat.S_ISDIR(st_.st_mode):  # others may add files to /tmp meanwhile
        return (st_.st_mode, st_.st_ino)
    return (st_.st_mode, st_.st_size, st_.st_mtime_ns, st_.st_ino)


@contextlib.contextmanager
def nothing_new_outside(base: Path, allowed: list[Path], op_id: str) -> Iterator[None]:
    """Fail if the block creates anything under ``base`` or beside it outside ``allowed``."""
    tree_before = _tree(base)
    parent_before = set(os.listdir(base.parent))
    target_before = _absolute_target(op_id)
    yield
    new = _tree(base) - tree_before
    outside = sorted(str(p) for p in new if not any(p == a or a in p.parents for a in allowed))
    assert outside == [], f"created outside the store: {outside}"
    assert set(os.listdir(base.parent)) == parent_before
    assert _absolute_target(op_id) == target_before


def _store_url(kind: str, root: Path) -> tuple[str, list[Path]]:
    """A store URL under ``root`` and the paths it may create."""
    if kind == "sqlite":
        db = root / "state.db"
        names = ["state.db", "state.db-wal", "state.db-shm", "state.db-journal", "state.db.locks"]
        return f"sqlite:///{db}", [root / n for n in names]
    store = root / "store"
    return f"file://{store}", [store]


def _run(op_id: str, url: str, fail_at: int | None) -> tuple[Checkpoint, list[int]]:
    ran: list[int] = []
    store = open_store(url)
    try:
        with checkpointed(op_id, store=store, state={"n": 0}, every=1) as cp:
            for i in cp.iterate(range(6)):
                ran.append(i)
                cp.state.n += i
                if i == fail_at:
                    raise LookupError(i)
    finally:
        store.close()
    return cp, ran


def _run_three_times(op_id: str, kind: str, root: Path) -> None:
    """Fail midway, resume to completion, re-enter a completed op: ids round-trip exactly."""
    url, allowed = _store_url(kind, root)
    with nothing_new_outside(root, allowed, op_id):
        with pytest.raises(LookupError):
            _run(op_id, url, fail_at=2)
        cp, ran = _run(op_id, url, fail_at=None)
        assert cp.resumed
        assert ran == [2, 3, 4, 5]
        assert cp.state == {"n": 15}
        cp, ran = _run(op_id, url, fail_at=None)
        assert cp.completed_before
        assert ran == []
        assert cp.state == {"n": 15}

        store = open_store(url)
        try:
            op = store.load_operation(op_id)
            assert op is not None
            assert op.op_id == op_id
            assert op.state is ProcessState.COMPLETED
            assert [o.op_id for o in store.list_operations()] == [op_id]
            ckpt = store.latest_checkpoint(op_id)
            assert ckpt is not None
            assert ckpt.op_id == op_id
            assert ckpt.position == 6
            assert decode(ckpt.serializer, ckpt.payload) == {"n": 15}
        finally:
            store.close()
    if kind == "file":
        names = {p.name for p in _tree(root / "store")}
        odd = sorted(n for n in names if not n.isascii() or not n.replace(".", "").replace(
            "-", "").replace("_", "").isalnum())  # fmt: skip
        assert odd == [], f"store file names not derived from a digest: {odd}"


@pytest.mark.parametrize("kind", ["sqlite", "file"])
@pytest.mark.parametrize("op_id", HOSTILE_IDS, ids=_ids(HOSTILE_IDS))
def test_hostile_op_id_stays_inside_the_store(op_id: str, kind: str, tmp_path: Path) -> None:
    """A path-like, reserved or odd op id works, resumes, and writes only inside the store."""
    _run_three_times(_resolve(op_id, tmp_path), kind, tmp_path)


_fragments = st.sampled_from(
    ["..", "/", "\\", ".", "\x00", "CON", "nul", "\n", "~", "%2F", ":", "\u202e", "\ud800",
     "\udfff", "e\u0301", "\U0001f600", " ", "a"]
)  # fmt: skip
arbitrary_op_ids = (
    st.text(st.characters(exclude_categories=()), min_size=1, max_size=1024)
    | st.lists(_fragments, min_size=1, max_size=60).map("".join)
).filter(lambda s: len(s) <= 1024)

_example = itertools.count()


@pytest.mark.parametrize("kind", ["file", "sqlite"])
@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(op_id=arbitrary_op_ids)
def test_arbitrary_op_id_stays_inside_the_store(op_id: str, kind: str, tmp_path: Path) -> None:
    """Any string op id works, resumes, and writes only inside the store."""
    root = tmp_path / f"example-{next(_example)}"
    root.mkdir()
    _run_three_times(op_id, kind, root)


# --- distinct ids never share a checkpoint --------------------------------------------------

LOOKALIKES = [
    "a/b", "a_b", "A/B", "A_B", "a\\b", "a%2Fb", "a b", "a/b/", "/a/b", "a//b", "ab", "a.b",
    "a:b", "a", "a ", " a", "A", "\u00e9", "e\u0301", "a\x00b", "a\x00", "\u0430",
    "x" * 1023 + "a", "x" * 1023 + "b", "CON", "con", "..", ".", "../a", "./a",
]  # fmt: skip


def test_lookalike_ids_are_all_distinct() -> None:
    """The list below really holds distinct strings (a guard for the next test)."""
    assert len(set(LOOKALIKES)) == len(LOOKALIKES)


def test_distinct_op_ids_never_share_a_checkpoint(store: Store) -> None:
    """Different op ids, however alike, keep their own state and position."""
    for i, op_id in enumerate(LOOKALIKES):
        with checkpointed(op_id, store=store, state={"id": op_id, "k": 0}) as cp:
            for _ in cp.iterate(range(i + 1)):
                cp.state.k += 1
        assert not cp.completed_before, op_id

    handles = [store] if store.url.startswith("memory") else [store, open_store(store.url)]
    try:
        for s in handles:
            assert sorted(o.op_id for o in s.list_operations()) == sorted(LOOKALIKES)
            for i, op_id in enumerate(LOOKALIKES):
                ckpt = s.latest_checkpoint(op_id)
                assert ckpt is not None, op_id
                assert ckpt.op_id == op_id
                assert ckpt.position == i + 1, op_id
                assert decode(ckpt.serializer, ckpt.payload) == {"id": op_id, "k": i + 1}
    finally:
        for s in handles[1:]:
            s.close()

    for i, op_id in enumerate(LOOKALIKES):
        with checkpointed(op_id, store=store, state={"id": "wrong", "k": -1}) as cp:
            ran = list(cp.iterate(range(100)))
        assert cp.completed_before, op_id
        assert ran == []
        assert cp.state == {"id": op_id, "k": i + 1}
