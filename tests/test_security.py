"""Signed records: with a secret, nothing unsigned or tampered is decoded; every bit flip is caught.

The threat model is in docs/security.md. A *planted* payload is a pickle whose loading runs code
(here: it creates a marker file), stored with a checksum anyone can compute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import pickle
import re
import sqlite3
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resumable
from resumable import (
    CheckpointCorrupt,
    CheckpointRecord,
    FailsafeManager,
    OperationRecord,
    ProcessState,
    _signing,
    checkpointed,
    configure,
)
from resumable._owner import Owner
from resumable._signing import MAC_MARK
from resumable.keys import digest_value
from resumable.operation import ResultRecord, op_key
from resumable.stores import Store, open_store
from resumable.stores.files import FileStore
from resumable.stores.sqlite import SQLiteStore

SECRET = "correct horse battery staple, but longer: 7f3a9c"
OTHER = "a secret the store has never seen"
PAUSED, RUNNING = ProcessState.PAUSED, ProcessState.RUNNING

Record = OperationRecord | CheckpointRecord | ResultRecord


@contextlib.contextmanager
def secret(value: str | bytes | None) -> Iterator[None]:
    """Run the block with ``value`` as the secret (None: none), then restore the previous one."""
    previous = configure(secret=value)
    try:
        yield
    finally:
        configure(secret=previous.secret)


@pytest.fixture
def signed() -> Iterator[None]:
    """The test runs with SECRET set."""
    with secret(SECRET):
        yield


class Planted:
    """What an attacker stores: unpickling it calls ``Path.touch(marker)``, i.e. runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return Path.touch, (self.marker,)


def planted(marker: Path) -> bytes:
    return pickle.dumps(Planted(marker), protocol=5)


class Records(NamedTuple):
    """One record of each kind."""

    operation: OperationRecord
    checkpoint: CheckpointRecord
    result: ResultRecord

    def by_kind(self) -> dict[str, Record]:
        return dict(self._asdict())

    def save_to(self, store: Store) -> None:
        store.save(self.operation, self.checkpoint, [self.result])


def records(op_id: str = "op-é\x1f", payload: bytes | None = None) -> Records:
    """One record of each kind, sealed under the secret in force, with every field non-empty."""
    payload = payload if payload is not None else pickle.dumps({"n": 1, "seen": [1, 2.5]})
    return Records(
        OperationRecord.new(
            op_id, "a name", RUNNING, owner=Owner.current(), heartbeat=1.5, attempts=2,
            error="ValueError: boom", meta={"k": [1, 0.5], "note": "x"},
        ),
        CheckpointRecord.create(op_id, 3, 7, RUNNING, 0.25, "pickle", payload, {"m": 1, "s": "t"}),
        ResultRecord.create(op_id, "step:fetch", "pickle", payload),
    )  # fmt: skip


def same(a: Record | None, b: Record) -> bool:
    """Whether ``a`` is exactly ``b``, field by field (floats by their bits)."""
    if a is None or type(a) is not type(b):
        return False
    return all(
        _bits(getattr(a, f.name)) == _bits(getattr(b, f.name)) for f in dataclasses.fields(a)
    )


def _bits(value: object) -> object:
    return struct.pack("<d", value) if type(value) is float else value


# --- the signature --------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    key=st.binary(min_size=1, max_size=200),
    header=st.binary(max_size=300),
    payload=st.binary(max_size=300),
    kind=st.sampled_from([0, 1, 2]),
)
def test_signature_is_hmac_sha256(key: bytes, header: bytes, payload: bytes, kind: int) -> None:
    """The tag equals the standard library's HMAC-SHA256 of the tagged, length-prefixed message."""
    message = _signing.KIND_TAGS[kind] + struct.pack("<Q", len(header)) + header + payload
    expected = MAC_MARK + hmac.new(key, message, hashlib.sha256).hexdigest()
    assert _signing.Signer(key).sign(kind, header, payload) == expected


def test_every_record_is_signed_with_a_secret_and_only_that_secret_verifies_it() -> None:
    """With a secret, records carry a MAC that verifies under that secret only."""
    with secret(SECRET):
        mine = records().by_kind()
    with secret(None):
        plain = records().by_kind()
    with secret(OTHER):
        theirs = records().by_kind()
    for kind in mine:
        assert mine[kind].checksum.startswith(MAC_MARK), kind
        assert not plain[kind].checksum.startswith(MAC_MARK), kind
        with secret(SECRET):
            assert mine[kind].verify(), kind
            assert not plain[kind].verify(), kind  # unsigned: refused
            assert not theirs[kind].verify(), kind  # signed by someone else: refused
        with secret(None):
            assert plain[kind].verify(), kind
            assert not mine[kind].verify(), kind  # signed, and no secret to check it with


def test_a_record_of_one_kind_never_verifies_as_another(signed: None) -> None:
    """A tag is bound to the kind of record: the same bytes signed as a result are no checkpoint."""
    op_id, payload = "op", b"payload"
    result = ResultRecord.create(op_id, "k", "pickle", payload)
    header = b"same header"
    signer = _signing.Signer(SECRET.encode())
    assert len({signer.sign(kind, header, payload) for kind in range(3)}) == 3
    assert result.verify()


def test_secret_comes_from_the_environment_and_configure_rereads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RESUMABLE_SECRET signs like configure(secret=...) with the same text; "" means unset."""
    monkeypatch.setenv("RESUMABLE_SECRET", SECRET)
    configure()  # the variable is read once and kept; configure() makes it read again
    from_env = records().checkpoint
    assert from_env.checksum.startswith(MAC_MARK)
    monkeypatch.delenv("RESUMABLE_SECRET")
    configure()
    assert not from_env.verify()
    with secret(SECRET):
        assert from_env.verify()
    with secret(SECRET.encode()):
        assert from_env.verify()
    monkeypatch.setenv("RESUMABLE_SECRET", "")
    configure()
    assert not records().checkpoint.checksum.startswith(MAC_MARK)


def test_configure_checks_the_secret_and_never_shows_it() -> None:
    """A secret of the wrong type or an empty one is refused; the config's repr hides it."""
    with pytest.raises(TypeError, match="secret must be a str, bytes or None"):
        configure(secret=123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        configure(secret="")
    with secret(SECRET):
        assert SECRET not in repr(resumable._config.current())
        assert resumable._config.current().secret == SECRET.encode()
    assert resumable._config.current().secret is None


# --- planted pickles never run --------------------------------------------------------------


@pytest.mark.parametrize("forger", [None, OTHER], ids=["unsigned", "other-secret"])
def test_a_planted_pickle_never_runs(
    store: Store, store_url: str, tmp_path: Path, forger: str | None
) -> None:
    """Checkpoints, step, map and call results planted without the secret are never unpickled."""
    marker = tmp_path / "pwned"
    evil = planted(marker)

    @resumable.resumable(store=store_url, op_id="call")
    def call() -> str:
        return "fresh"

    with secret(SECRET):  # the owner's own records
        store.save(OperationRecord.new("victim", "victim", PAUSED))
        state = pickle.dumps({"n": 1})
        store.add_checkpoint(CheckpointRecord.create("victim", 1, 1, PAUSED, 0.1, "pickle", state))
        call()
        (call_key,) = store.load_results("call", "return:")
    with secret(forger):  # what the attacker writes over them
        store.add_checkpoint(CheckpointRecord.create("victim", 2, 5, PAUSED, 0.5, "pickle", evil))
        store.add_checkpoint(CheckpointRecord.create("lone", 1, 5, PAUSED, 0.5, "pickle", evil))
        store.save(OperationRecord.new("forged", "forged", PAUSED))
        store.put_results(
            [ResultRecord.create(op, key, "pickle", evil) for op, key in (
                ("steps", "step:fetch"), ("maps", f"map0:d{digest_value(10)}"),
                ("maps", f"map0:d{digest_value(20)}"),
                ("call", call_key),
            )]
        )  # fmt: skip

    with secret(SECRET):
        with checkpointed("victim", store=store_url) as cp:  # falls back to the owner's seq 1
            assert cp.position == 1
        with pytest.raises(CheckpointCorrupt), checkpointed("lone", store=store_url):
            pass
        with pytest.raises(CheckpointCorrupt), checkpointed("forged", store=store_url):
            pass
        with checkpointed("steps", store=store_url) as cp:
            assert cp.step("fetch", lambda: "fresh") == "fresh"
        with checkpointed("maps", store=store_url) as cp:
            assert cp.map(str, [10, 20]) == ["10", "20"]
        assert call() == "fresh"
    assert not marker.exists()


@pytest.mark.parametrize("forger", [None, OTHER], ids=["unsigned", "other-secret"])
def test_a_planted_failsafe_checkpoint_is_refused(tmp_path: Path, forger: str | None) -> None:
    """FailsafeManager refuses a checkpoint planted in its directory, pickle or JSON alike."""
    marker = tmp_path / "pwned"
    with secret(SECRET):
        fm = FailsafeManager(tmp_path / "ckpt", tmp_path / "bak", serializer="pickle")
        fm.save_checkpoint("job", "job", RUNNING, 0.5, {"balance": 10})
    with secret(forger):
        pickled = CheckpointRecord.create("job", 2, 0, RUNNING, 0.6, "pickle", planted(marker))
        fm.store.add_checkpoint(pickled)
        edited = CheckpointRecord.create("job", 3, 0, RUNNING, 0.7, "json", b'{"balance":1e9}')
        fm.store.add_checkpoint(edited)
    with secret(SECRET):
        fresh = FailsafeManager(tmp_path / "ckpt", tmp_path / "bak", serializer="pickle")
        for rec in (pickled, edited):
            with pytest.raises(CheckpointCorrupt):
                fresh.load_checkpoint(rec.checkpoint_id)
        latest = fresh.latest_checkpoint("job")
        assert latest is not None
        assert latest.data == {"balance": 10}
    assert not marker.exists()


def test_without_a_secret_a_planted_pickle_runs(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    """The threat is real: where nothing is signed, whoever can write the store runs code."""
    marker = tmp_path / "pwned"
    store.add_checkpoint(
        CheckpointRecord.create("victim", 1, 5, PAUSED, 0.5, "pickle", planted(marker))
    )
    with checkpointed("victim", store=store_url):
        pass
    assert marker.exists()


def test_without_a_secret_json_is_safe_but_not_trusted(tmp_path: Path) -> None:
    """Unsigned, an edited JSON checkpoint loads (no code runs, but the data is the editor's)."""
    fm = FailsafeManager(tmp_path / "ckpt", tmp_path / "bak")
    fm.save_checkpoint("job", "job", RUNNING, 0.5, {"balance": 10})
    edited = CheckpointRecord.create("job", 2, 0, RUNNING, 0.5, "json", b'{"balance":1000000}')
    fm.store.add_checkpoint(edited)
    loaded = FailsafeManager(tmp_path / "ckpt", tmp_path / "bak").latest_checkpoint("job")
    assert loaded is not None
    assert loaded.data == {"balance": 1000000}


def test_a_signed_store_does_not_silently_become_unsigned(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Signed records read without the secret are refused, and the log says to set it."""
    with (
        secret(SECRET),
        pytest.raises(KeyboardInterrupt),
        checkpointed("job", store=store_url, state={"n": 0}) as cp,
    ):
        for i in cp.iterate(range(3)):
            cp.state.n += i
            if i == 1:
                raise KeyboardInterrupt
    with (
        caplog.at_level(logging.WARNING, logger="resumable"),
        pytest.raises(CheckpointCorrupt),
        checkpointed("job", store=store_url),
    ):
        pass
    assert "set RESUMABLE_SECRET" in caplog.text
    with secret(SECRET), checkpointed("job", store=store_url) as cp:
        assert cp.position == 1
        assert cp.state.n == 0


def test_an_unsigned_store_is_refused_once_a_secret_is_set(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Turning signing on refuses what was written before, saying why."""
    with checkpointed("job", store=store_url, state={"n": 1}) as cp:
        cp.commit()
    with (
        secret(SECRET),
        caplog.at_level(logging.WARNING, logger="resumable"),
        pytest.raises(CheckpointCorrupt),
        checkpointed("job", store=store_url),
    ):
        pass
    assert "written before signing was turned on" in caplog.text


def test_signed_runs_resume_in_every_store(store: Store, store_url: str, signed: None) -> None:
    """With a secret, every record written is signed, and a run resumes from them as usual."""
    with (
        pytest.raises(KeyboardInterrupt),
        checkpointed("job", store=store_url, state={"n": 0}) as cp,
    ):
        cp.step("first", lambda: 41)
        for i in cp.iterate(range(10)):
            if i == 4:
                raise KeyboardInterrupt
            cp.state.n += i
            cp.commit()
    op = store.get_operation("job")
    assert op is not None
    stored: list[Record] = [op, *store.iter_checkpoints("job"), *store.iter_results("job", "")]
    assert all(rec.checksum.startswith(MAC_MARK) for rec in stored)
    with checkpointed("job", store=store_url) as cp:
        assert cp.step("first", lambda: 0) == 41
        assert cp.position == 4
        for i in cp.iterate(range(10)):
            cp.state.n += i
    assert cp.state.n == sum(range(10))


# --- bit flips ------------------------------------------------------------------------------


def flips(data: bytes) -> Iterator[bytes]:
    """``data`` with one bit flipped, for every bit."""
    for i in range(len(data) * 8):
        changed = bytearray(data)
        changed[i >> 3] ^= 1 << (i & 7)
        yield bytes(changed)


def _flipped_values(value: object) -> Iterator[object]:
    """Every value a stored field could read back as after one bit of its stored form flipped."""
    if isinstance(value, ProcessState):
        for raw in flips(value.value.encode()):
            with contextlib.suppress(UnicodeDecodeError, ValueError):
                yield ProcessState(raw.decode())
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        for raw in flips(struct.pack("<q", value)):
            yield struct.unpack("<q", raw)[0]
    elif isinstance(value, float):
        for raw in flips(struct.pack("<d", value)):
            yield struct.unpack("<d", raw)[0]
    elif isinstance(value, bytes):
        yield from flips(value)
    elif isinstance(value, str):
        for raw in flips(value.encode("utf-8", "surrogatepass")):
            with contextlib.suppress(UnicodeDecodeError):
                yield raw.decode("utf-8", "surrogatepass")
    elif isinstance(value, dict):
        for raw in flips(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()):
            with contextlib.suppress(ValueError):
                changed = json.loads(raw)
                if isinstance(changed, dict):
                    yield changed
    elif isinstance(value, Owner):
        for name in ("host", "pid", "started"):
            for v in _flipped_values(getattr(value, name)):
                yield dataclasses.replace(value, **{name: v})
    else:  # pragma: no cover - a new field type must be taught here
        raise TypeError(type(value))


def field_flips(rec: Record) -> Iterator[tuple[str, Record]]:
    """``rec`` with one bit of one field flipped (the checksum included), for every bit."""
    for f in dataclasses.fields(rec):
        original = getattr(rec, f.name)
        for value in _flipped_values(original):
            if _bits(value) != _bits(original) and value != original:
                yield f.name, dataclasses.replace(rec, **{f.name: value})


@pytest.mark.parametrize("key", [None, SECRET], ids=["unsigned", "signed"])
@pytest.mark.parametrize("kind", ["operation", "checkpoint", "result"])
def test_a_bit_flip_in_any_field_fails_verification(kind: str, key: str | None) -> None:
    """Every single-bit change of every field of every kind of record is detected."""
    with secret(key):
        rec = records(payload=os.urandom(256)).by_kind()[kind]
        assert rec.verify()
        tried = 0
        for name, changed in field_flips(rec):
            assert not changed.verify(), f"{kind}: a flip in {name} went unnoticed"
            tried += 1
    assert tried > 500


def load(store: Store, rec: Record) -> Record | None:
    """What ``store`` loads now in place of ``rec`` (None: refused or missing).

    Refused means passed over (a checkpoint or result that fails is not loaded) or a
    CheckpointCorrupt naming the operation. Anything else raised, a StoreError included,
    fails the test: bytes that cannot be decoded are corruption (DESIGN.md, section 9).
    """
    try:
        if isinstance(rec, OperationRecord):
            return store.load_operation(rec.op_id)
        if isinstance(rec, CheckpointRecord):
            return store.find_good_checkpoint(rec.op_id)[0]
        return store.load_result(rec.op_id, rec.key)
    except CheckpointCorrupt as exc:
        refusal = str(exc)
    assert repr(rec.op_id) in refusal, f"the message does not name the record: {refusal}"
    return None


@pytest.mark.parametrize("key", [None, SECRET], ids=["unsigned", "signed"])
def test_a_bit_flip_anywhere_in_a_store_file_loads_nothing_wrong(
    tmp_path: Path, key: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Flipping any bit of any file of the file store is refused or changes nothing loaded.

    A flip can land where it changes nothing read (the informational ``timestamp``, an unused
    base64 bit, a hex digit's case in a ``\\u`` escape, a float's last digit): such a file
    loads exactly the record written. Every flip that changes a value read is refused.
    """
    caplog.set_level(logging.CRITICAL, logger="resumable")  # thousands of corrupt records
    with secret(key):
        store = FileStore(tmp_path / "store")
        originals = records()
        originals.save_to(store)
        json_ckpt = CheckpointRecord.create("json", 1, 2, RUNNING, 0.5, "json", b'{"a":[1,2.5]}')
        store.add_checkpoint(json_ckpt)
        folder = tmp_path / "store" / "ops" / op_key(originals.operation.op_id)
        files: dict[Path, Record] = {
            folder / "operation.json": originals.operation,
            next(folder.glob("checkpoints/*.json")): originals.checkpoint,
            next(folder.glob("results/*.json")): originals.result,
            next((tmp_path / "store" / "ops" / op_key("json")).glob("*/*.json")): json_ckpt,
        }
        refused = total = 0
        for path, original in files.items():
            data = path.read_bytes()
            assert same(load(store, original), original)
            for changed in flips(data):
                path.write_bytes(changed)
                loaded = load(store, original)
                assert loaded is None or same(loaded, original), path.name
                refused += loaded is None
                total += 1
            path.write_bytes(data)
    assert refused > 0.85 * total


def _sqlite_cells(path: Path, checksums: list[str]) -> list[tuple[int, int]]:
    """Byte ranges of the database file around each record (its values and its row header)."""
    data = path.read_bytes()
    spans = []
    for checksum in checksums:
        end = data.index(checksum.encode()) + len(checksum)
        spans.append((max(0, end - 400), end))
    return spans


@pytest.mark.parametrize("key", [None, SECRET], ids=["unsigned", "signed"])
def test_a_bit_flip_in_the_sqlite_file_loads_nothing_wrong(
    tmp_path: Path, key: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped bit in the database bytes that hold the records never loads a wrong record,
    and raises nothing but CheckpointCorrupt naming the operation.

    The bits are a Hypothesis sample of the 400 bytes ending with each record (a reopening of
    the database per flip costs about a millisecond).
    """
    caplog.set_level(logging.CRITICAL, logger="resumable")
    with secret(key):
        db = tmp_path / "state.db"
        store = SQLiteStore(db)
        originals = records(op_id="op")
        originals.save_to(store)
        store._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
        data = db.read_bytes()
        bits = [
            i
            for a, b in _sqlite_cells(db, [r.checksum for r in originals])
            for i in range(a * 8, b * 8)
        ]
        copy = tmp_path / "flipped.db"
        outcomes = {"refused": 0, "same": 0}

        @settings(max_examples=300, database=None)
        @given(bit=st.sampled_from(bits))
        def flipped_loads_nothing_wrong(bit: int) -> None:
            changed = bytearray(data)
            changed[bit >> 3] ^= 1 << (bit & 7)
            for leftover in tmp_path.glob("flipped.db*"):
                leftover.unlink()
            copy.write_bytes(changed)
            flipped = SQLiteStore(copy)  # the flips are in the records, not the file's header
            try:
                loaded = [load(flipped, rec) for rec in originals]  # raises nothing else
            finally:
                flipped.close()
            for rec, got in zip(originals, loaded, strict=True):
                assert got is None or same(got, rec), type(rec).__name__
            outcomes["refused" if None in loaded else "same"] += 1

        flipped_loads_nothing_wrong()
    assert outcomes["refused"] > 0


def test_a_damaged_sqlite_row_is_reported_as_corrupt(tmp_path: Path) -> None:
    """A row whose state column no longer holds text is refused as corrupt, not a bare error."""
    db = tmp_path / "state.db"
    store = SQLiteStore(db)
    store.add_checkpoint(records(op_id="op").checkpoint)
    store.close()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE checkpoints SET state = CAST(state AS BLOB)")
    store = SQLiteStore(db)
    try:
        with pytest.raises(CheckpointCorrupt) as caught:
            store.latest_checkpoint("op")
    finally:
        store.close()
    assert "'op'" in str(caught.value)  # the record: its operation, and its seq
    assert re.search(r"\bseqs? \[?3\b", str(caught.value)), str(caught.value)


# Every value is drawn before the test body runs, not with st.data(): Hypothesis flags a
# draw during which the global `random` state changed, and psycopg_pool's worker threads use
# it (connection jitter) at moments no test controls.
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from([None, SECRET]),
    kind=st.sampled_from(["operation", "checkpoint", "result"]),
    flip=st.integers(min_value=0),
)
def test_a_flipped_record_written_to_any_store_is_refused(
    store: Store, key: str | None, kind: str, flip: int
) -> None:
    """A record with one flipped bit, stored and read back by any store, is never loaded."""
    with secret(key):
        rec = records(op_id="flip", payload=b"\x80\x05payload").by_kind()[kind]
        variants = list(field_flips(rec))
        name, changed = variants[flip % len(variants)]
        store.delete_operation(changed.op_id)
        store.delete_operation(rec.op_id)
        if isinstance(changed, OperationRecord):
            store.save(changed)
            with pytest.raises(CheckpointCorrupt):
                store.load_operation(changed.op_id)
        elif isinstance(changed, CheckpointRecord):
            store.add_checkpoint(changed)
            back = store.find_good_checkpoint(changed.op_id)[0]
            # Some stores derive checkpoint_id from op id and seq instead of storing it.
            assert back is None or (name == "checkpoint_id" and same(back, rec)), name
        else:
            store.put_result(changed)
            back = store.load_result(changed.op_id, changed.key)
            assert back is None, name


@pytest.mark.parametrize("when", [1e300, float("nan"), -1e300])
def test_a_checkpoint_whose_time_is_no_time_is_stored_and_refused(
    tmp_path: Path, when: float
) -> None:
    """A flipped bit in a timestamp's exponent (found by the test above, seed 3): the file
    store, which also writes the time as text, stores the record, and loading refuses it."""
    rec = records(op_id="time").checkpoint
    store = FileStore(tmp_path / "store")
    try:
        store.add_checkpoint(dataclasses.replace(rec, timestamp=when))
        assert store.find_good_checkpoint("time")[0] is None
    finally:
        store.close()


# --- owner-only files -----------------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    found = {}
    for path in [root, *root.rglob("*")]:
        found[str(path.relative_to(root.parent))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def _loose(modes: dict[str, int]) -> dict[str, str]:
    return {p: oct(m) for p, m in modes.items() if m & 0o077}


def test_store_and_backup_files_are_owner_only(tmp_path: Path) -> None:
    """Even under umask 000, every file is 0600 and every directory 0700."""
    with umask(0):
        sqlite_url = f"sqlite:///{tmp_path}/db/nested/state.db"
        file_url = f"file://{tmp_path}/files/store"
        for url in (sqlite_url, file_url):
            with checkpointed("job", store=url, state={"n": 0}) as cp:
                for i in cp.iterate(range(3)):
                    cp.state.n += i
                    cp.commit()
                cp.step("s", lambda: 1)
                cp.map(str, range(3))
        fm = FailsafeManager(tmp_path / "fs" / "checkpoints", tmp_path / "fs" / "backups")
        fm.save_checkpoint("op", "op", RUNNING, 0.5, {"a": 1})
        fm.create_backup(tmp_path / "db" / "nested" / "state.db")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        fm.create_backup(plain)
    modes = {**_modes(tmp_path / "db"), **_modes(tmp_path / "files"), **_modes(tmp_path / "fs")}
    expected = {
        "db/nested/state.db", "db/nested/state.db-wal", "db/nested/state.db-shm",
        "db/nested/state.db.locks/operations.lock", "files/store/locks/operations.lock",
    }  # fmt: skip
    assert expected <= set(modes)
    assert any(p.startswith("fs/backups/") for p in modes)
    assert _loose(modes) == {}
    for path, mode in modes.items():
        kind = (tmp_path / path).lstat().st_mode
        assert mode == (0o700 if stat.S_ISDIR(kind) else 0o600), path


def test_the_sqlite_database_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not even between its creation and the chmod: a descriptor opened then stays open."""
    seen: list[int] = []
    connect = sqlite3.connect

    def watching(path: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(path, *args, **kwargs)
        with contextlib.suppress(OSError, TypeError):
            seen.append(stat.S_IMODE(os.stat(path).st_mode))
        return conn

    monkeypatch.setattr(sqlite3, "connect", watching)
    with umask(0o022):
        open_store(f"sqlite:///{tmp_path}/state.db").close()
    assert seen
    assert all(mode & 0o077 == 0 for mode in seen), [oct(m) for m in seen]
