"""Serializers turn state into bytes and back; records carry checksums that catch any change."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable import (
    CheckpointRecord,
    OperationRecord,
    ProcessState,
    SerializationError,
    Store,
    checkpointed,
    open_store,
    register_serializer,
)
from resumable._owner import Owner
from resumable.operation import ResultRecord
from resumable.serializers import decode, encode, get_serializer

BUILT_IN = ["pickle", "dill", "json", "auto"]

# --- data -----------------------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_data = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=25,
)

_py_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
py_data = st.recursive(
    _py_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text() | st.integers(), children, max_size=5)
    ),
    max_leaves=25,
)

#: Any Python string, lone surrogates included, of a usable op id length.
any_op_id = st.text(st.characters(exclude_categories=()), min_size=1, max_size=1024)
json_metadata = st.dictionaries(st.text(), json_data, max_size=5)


def same(a: Any, b: Any, *, ordered: bool = True) -> bool:
    """Deep equality where NaN equals NaN, types must match, and -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(
            same(x, y, ordered=ordered) for x, y in zip(a, b, strict=True)
        )
    if isinstance(a, dict):
        if (list(a) != list(b)) if ordered else (a.keys() != b.keys()):
            return False
        return all(same(v, b[k], ordered=ordered) for k, v in a.items())
    return bool(a == b)


def roundtrip(name: str, obj: Any) -> tuple[str, Any]:
    written, data = encode(get_serializer(name), obj)
    assert isinstance(data, bytes)
    return written, decode(written, data)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pickle", "dill", "auto"])
@settings(max_examples=60, deadline=None)
@given(obj=py_data)
def test_binary_serializers_round_trip_nested_data(name: str, obj: Any) -> None:
    """pickle, dill and auto give back an equal value (NaN included), of the same types."""
    written, back = roundtrip(name, obj)
    assert written == ("pickle" if name == "auto" else name)
    assert same(back, obj)


@settings(max_examples=60, deadline=None)
@given(obj=py_data)
def test_auto_serializer_reads_back_its_own_bytes(obj: Any) -> None:
    """auto's own dumps/loads pair also round-trips, whichever library wrote the bytes."""
    auto = get_serializer("auto")
    assert same(auto.loads(auto.dumps(obj)), obj)


@settings(max_examples=60, deadline=None)
@given(obj=json_data)
def test_json_serializer_round_trips_json_data(obj: Any) -> None:
    """json gives back an equal value for anything JSON can hold."""
    written, back = roundtrip("json", obj)
    assert written == "json"
    assert same(back, obj, ordered=False)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_serializer_never_corrupts_non_finite_floats(value: float) -> None:
    """json either round-trips NaN/inf exactly or refuses them with SerializationError."""
    refused: SerializationError | None = None
    try:
        written, back = roundtrip("json", {"x": value})
    except SerializationError as exc:
        refused = exc
    if refused is not None:
        assert refused.field == "state.x"
    else:
        assert written == "json"
        assert same(back, {"x": value})


def _closure_factory() -> Callable[[int], int]:
    factor = 3

    def times(x: int) -> int:
        return x * factor

    return times


@pytest.mark.parametrize(
    "make",
    [
        lambda: lambda x: x + 1,
        _closure_factory,
        lambda: {"f": lambda x: x + 1, "n": 1},
    ],
    ids=["lambda", "local-function", "state-with-lambda"],
)
def test_auto_uses_dill_for_what_pickle_refuses_and_it_loads_back(
    make: Callable[[], Any],
) -> None:
    """auto records "dill" for a lambda or a local function, and the loaded one still works."""
    value = make()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(value, protocol=5)
    written, back = roundtrip("auto", value)
    assert written == "dill"
    fn = back["f"] if isinstance(back, dict) else back
    original = value["f"] if isinstance(value, dict) else value
    assert fn(4) == original(4)
    # auto's own loads also reads what it wrote
    auto = get_serializer("auto")
    loaded = auto.loads(auto.dumps(value))
    assert (loaded["f"] if isinstance(loaded, dict) else loaded)(4) == original(4)


@pytest.mark.parametrize("obj", [{"a": 1}, [1, "x", None], 3.5, "text", True])
def test_auto_records_pickle_for_ordinary_data(obj: Any) -> None:
    """auto writes ordinary data with pickle and says so."""
    written, back = roundtrip("auto", obj)
    assert written == "pickle"
    assert same(back, obj)


@settings(max_examples=60, deadline=None)
@given(d=st.dictionaries(st.text(), json_data, min_size=2, max_size=8))
def test_json_output_is_canonical(d: dict[str, Any]) -> None:
    """Equal dicts built in different insertion orders serialize to identical JSON bytes."""
    reordered = dict(reversed(list(d.items())))
    nested_a = {"outer": d, "list": [d, reordered]}
    nested_b = {"list": [reordered, d], "outer": reordered}
    json_ser = get_serializer("json")
    assert json_ser.dumps(d) == json_ser.dumps(reordered)
    assert json_ser.dumps(nested_a) == json_ser.dumps(nested_b)
    assert encode(json_ser, d) == encode(json_ser, reordered)


# --- unserializable state -------------------------------------------------------------------


def _gen() -> Iterator[int]:
    return (y for y in [1, 2])


@pytest.mark.parametrize("name", ["auto", "pickle", "json"])
def test_generator_in_state_names_the_field(name: str) -> None:
    """A generator in the state raises SerializationError naming state.gen."""
    state = {"n": 1, "gen": _gen(), "z": [1, 2]}
    with pytest.raises(SerializationError) as info:
        encode(get_serializer(name), state, "state")
    assert info.value.field == "state.gen"
    assert "state.gen" in str(info.value)


@pytest.mark.parametrize("name", ["auto", "pickle", "json"])
def test_nested_unserializable_field_is_named(name: str) -> None:
    """A generator nested in a dict field is named down to its key: state.a["b"]."""
    state = {"n": 1, "a": {"ok": 1, "b": _gen()}}
    with pytest.raises(SerializationError) as info:
        encode(get_serializer(name), state, "state")
    assert info.value.field in ("state.a['b']", 'state.a["b"]')
    assert info.value.field in str(info.value)


@pytest.mark.parametrize("bad", [{1, 2}, object()], ids=["set", "object"])
def test_json_names_the_field_it_cannot_write(bad: Any) -> None:
    """json refuses a set or an arbitrary object with an error naming the field."""
    with pytest.raises(SerializationError) as info:
        encode(get_serializer("json"), {"ok": [1], "bad": bad}, "state")
    assert info.value.field == "state.bad"
    assert "state.bad" in str(info.value)


def test_pickle_names_a_lambda_field() -> None:
    """The plain pickle serializer refuses a lambda and names its field."""
    with pytest.raises(SerializationError) as info:
        encode(get_serializer("pickle"), {"n": 1, "f": lambda x: x}, "state")
    assert info.value.field == "state.f"


@contextlib.contextmanager
def reopened(store: Store) -> Iterator[Store]:
    """A fresh handle on ``store``'s data (the same object for a memory store)."""
    if store.url.startswith("memory"):
        yield store
        return
    other = open_store(store.url)
    try:
        yield other
    finally:
        other.close()


def _loop_that_stores_a_generator(store: Store) -> None:
    with checkpointed("x", store=store, state={"n": 0}, every=1) as cp:
        for i in cp.iterate(range(10)):
            cp.state.n += 1
            if i == 5:
                cp.state.gen = (y for y in [])


def test_unserializable_state_fails_at_commit_and_keeps_previous_checkpoint(store: Store) -> None:
    """The commit that meets a generator raises; the previous checkpoint stands and resumes."""
    with pytest.raises(SerializationError) as info:
        _loop_that_stores_a_generator(store)
    assert info.value.field == "state.gen"
    assert "gen" in str(info.value)

    with reopened(store) as again:
        ckpt = again.latest_checkpoint("x")
        assert ckpt is not None
        assert ckpt.position == 5
        assert decode(ckpt.serializer, ckpt.payload) == {"n": 5}
        op = again.load_operation("x")
        assert op is not None
        assert op.state is ProcessState.FAILED

    ran = []
    with checkpointed("x", store=store, state={"n": 0}, every=1) as cp:
        for i in cp.iterate(range(10)):
            ran.append(i)
            cp.state.n += 1
    assert cp.resumed
    assert ran == [5, 6, 7, 8, 9]
    assert cp.state == {"n": 10}


# --- finding and registering serializers ----------------------------------------------------


def test_unknown_serializer_name_lists_the_known_ones() -> None:
    """An unknown name raises ValueError that lists every built-in serializer."""
    with pytest.raises(ValueError, match="nope") as info:
        get_serializer("nope")
    for name in BUILT_IN:
        assert name in str(info.value)


def test_unknown_serializer_name_is_refused_at_checkpointed_call() -> None:
    """checkpointed(serializer="nope") fails at the call, before the block is entered."""
    with pytest.raises(ValueError, match="nope"):
        checkpointed("x", serializer="nope")


@pytest.mark.parametrize("bad", [42, 1.5, b"pickle", ["json"]])
def test_serializer_of_wrong_type_is_a_type_error(bad: Any) -> None:
    """A serializer that is neither a name nor a serializer object raises TypeError."""
    with pytest.raises(TypeError):
        get_serializer(bad)
    with pytest.raises(TypeError):
        checkpointed("x", serializer=bad)


def test_register_serializer_refuses_a_non_serializer() -> None:
    """register_serializer(object()) raises TypeError."""
    with pytest.raises(TypeError):
        register_serializer(object())  # type: ignore[arg-type]


class ReversedJson:
    """A custom serializer: JSON, reversed, with a marker, counting its calls."""

    name = "test-reversed-json"

    def __init__(self) -> None:
        self.dumped = 0
        self.loaded = 0

    def dumps(self, obj: Any) -> bytes:
        self.dumped += 1
        return b"REV:" + get_serializer("json").dumps(obj)[::-1]

    def loads(self, data: bytes) -> Any:
        self.loaded += 1
        assert data.startswith(b"REV:")
        return get_serializer("json").loads(data[4:][::-1])


def _custom_run(store: Store, ser: ReversedJson, fail_at: int | None) -> Any:
    with checkpointed("custom", store=store, serializer=ser, state={"seen": []}, every=1) as cp:
        for i in cp.iterate(range(8)):
            if i == fail_at:
                raise KeyError(i)
            cp.state.seen = [*cp.state.seen, i]
    return cp


def test_custom_serializer_round_trips_across_blocks(store: Store) -> None:
    """A registered custom serializer writes the state, is named in the record, reads it back."""
    ser = ReversedJson()
    register_serializer(ser)
    assert get_serializer(ser.name) is ser

    with pytest.raises(KeyError):
        _custom_run(store, ser, fail_at=3)
    assert ser.dumped > 0

    with reopened(store) as again:
        ckpt = again.latest_checkpoint("custom")
        assert ckpt is not None
        assert ckpt.serializer == ser.name
        assert ckpt.payload.startswith(b"REV:")
        assert decode(ckpt.serializer, ckpt.payload) == {"seen": [0, 1, 2]}

    cp = _custom_run(store, ser, fail_at=None)
    assert ser.loaded >= 1
    assert cp.resumed
    assert cp.state == {"seen": list(range(8))}

    with reopened(store) as again:
        ckpt = again.latest_checkpoint("custom")
        assert ckpt is not None
        assert ckpt.serializer == ser.name
        assert decode(ckpt.serializer, ckpt.payload) == {"seen": list(range(8))}


# --- record checksums -----------------------------------------------------------------------


def _flip(payload: bytes, bit: int) -> bytes:
    b = bytearray(payload)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def _new_key(d: dict[str, Any]) -> str:
    key = "changed"
    while key in d:
        key += "!"
    return key


@settings(max_examples=80, deadline=None)
@given(
    op_id=any_op_id,
    seq=st.integers(0, 2**62),
    position=st.integers(0, 2**62),
    state=st.sampled_from(ProcessState),
    progress=st.floats(0.0, 1.0),
    serializer=st.sampled_from(BUILT_IN) | st.text(min_size=1, max_size=20),
    payload=st.binary(max_size=200),
    metadata=json_metadata,
    data=st.data(),
)
def test_checkpoint_checksum_catches_any_change(
    op_id: str,
    seq: int,
    position: int,
    state: ProcessState,
    progress: float,
    serializer: str,
    payload: bytes,
    metadata: dict[str, Any],
    data: st.DataObject,
) -> None:
    """A new checkpoint verifies; one flipped payload bit or any changed field does not."""
    rec = CheckpointRecord.create(
        op_id, seq, position, state, progress, serializer, payload, metadata
    )
    assert rec.verify()
    assert rec.op_id == op_id
    assert rec.payload == payload

    changed: dict[str, Any] = {
        "op_id": op_id + "x",
        "checkpoint_id": rec.checkpoint_id + "x",
        "seq": seq + 1,
        "position": position + 1,
        "state": data.draw(st.sampled_from([s for s in ProcessState if s is not state])),
        "progress": math.nextafter(progress, 2.0),
        "timestamp": math.nextafter(rec.timestamp, math.inf),
        "serializer": serializer + "x",
        "metadata": {**metadata, _new_key(metadata): 1},
        "payload": payload + b"\x00",
    }
    for field, value in changed.items():
        assert not dataclasses.replace(rec, **{field: value}).verify(), field
    if payload:
        bit = data.draw(st.integers(0, len(payload) * 8 - 1))
        assert not dataclasses.replace(rec, payload=_flip(payload, bit)).verify()


_new_states = [s for s in ProcessState if s is not ProcessState.RECOVERING]


@settings(max_examples=80, deadline=None)
@given(
    op_id=any_op_id,
    name=st.text(max_size=50),
    state=st.sampled_from(_new_states),
    attempts=st.integers(0, 1000),
    heartbeat=st.floats(0, 2e9),
    error=st.none() | st.text(max_size=50),
    meta=json_metadata,
    data=st.data(),
)
def test_operation_checksum_catches_any_change(
    op_id: str,
    name: str,
    state: ProcessState,
    attempts: int,
    heartbeat: float,
    error: str | None,
    meta: dict[str, Any],
    data: st.DataObject,
) -> None:
    """A new operation record verifies, also after sealed changes; any raw change does not."""
    rec = OperationRecord.new(op_id, name, state)
    assert rec.verify()
    owner = data.draw(st.none() | st.builds(Owner, st.text(max_size=20), st.integers(1, 2**22),
                                             st.none() | st.floats(0, 2e9)))  # fmt: skip
    rec = rec.with_changes(
        owner=owner, attempts=attempts, heartbeat=heartbeat, error=error, meta=meta
    )
    assert rec.verify()

    changed: dict[str, Any] = {
        "op_id": op_id + "x",
        "name": name + "x",
        "state": data.draw(st.sampled_from([s for s in ProcessState if s is not state])),
        "owner": Owner("elsewhere", 1, None) if owner is None else None,
        "heartbeat": math.nextafter(heartbeat, math.inf),
        "attempts": attempts + 1,
        "created": math.nextafter(rec.created, math.inf),
        "updated": math.nextafter(rec.updated, math.inf),
        "error": (error or "") + "!",
        "meta": {**meta, _new_key(meta): 1},
    }
    for field, value in changed.items():
        assert not dataclasses.replace(rec, **{field: value}).verify(), field


@settings(max_examples=80, deadline=None)
@given(
    op_id=any_op_id,
    key=st.text(st.characters(exclude_categories=()), min_size=1, max_size=100),
    serializer=st.sampled_from(BUILT_IN),
    payload=st.binary(max_size=200),
    data=st.data(),
)
def test_result_checksum_catches_any_change(
    op_id: str, key: str, serializer: str, payload: bytes, data: st.DataObject
) -> None:
    """A new result record verifies; one flipped payload bit or any changed field does not."""
    rec = ResultRecord.create(op_id, key, serializer, payload)
    assert rec.verify()
    changed: dict[str, Any] = {
        "op_id": op_id + "x",
        "key": key + "x",
        "serializer": serializer + "x",
        "created": math.nextafter(rec.created, math.inf),
        "payload": payload + b"\x00",
    }
    for field, value in changed.items():
        assert not dataclasses.replace(rec, **{field: value}).verify(), field
    if payload:
        bit = data.draw(st.integers(0, len(payload) * 8 - 1))
        assert not dataclasses.replace(rec, payload=_flip(payload, bit)).verify()
