"""digest_value: equal values digest equally, near misses never do, and failures name the part.

The property tests compare digests with a strict notion of sameness (``canon``): the type
of every part matters (``1``, ``1.0`` and ``True`` differ), the order of dict items and set
elements does not.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import inspect
import random
import struct
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resumable.keys import CallDigester, digest_value

# --- strategies -------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.integers(min_value=-(2**70), max_value=-(2**63) + 2)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
hashables = st.recursive(
    scalars,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashables, inner, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=20,
)


def canon(value: Any) -> Any:
    """A hashable form of ``value`` in which types count and dict/set order does not."""
    t = type(value)
    if t is float:
        return ("float", struct.pack("<d", value))
    if t in (list, tuple):
        return (t.__name__, tuple(canon(v) for v in value))
    if t is dict:
        return ("dict", frozenset((canon(k), canon(v)) for k, v in value.items()))
    if t in (set, frozenset):
        return (t.__name__, frozenset(canon(v) for v in value))
    return (t.__name__, value)


def reordered(value: Any, rnd: random.Random) -> Any:
    """A copy of ``value`` with every dict and set rebuilt in a shuffled order."""
    t = type(value)
    if t in (list, tuple):
        return t(reordered(v, rnd) for v in value)
    if t is dict:
        items = [(reordered(k, rnd), reordered(v, rnd)) for k, v in value.items()]
        rnd.shuffle(items)
        return dict(items)
    if t in (set, frozenset):
        elements = [reordered(v, rnd) for v in value]
        rnd.shuffle(elements)
        return t(elements)
    return value


# --- equal values, equal digests ----------------------------------------------------------------


@given(values, st.randoms(use_true_random=False))
def test_equal_values_give_equal_digests(value: Any, rnd: random.Random) -> None:
    """A value, its deep copy, and a copy with dicts and sets reordered, digest equally."""
    digest = digest_value(value)
    assert isinstance(digest, str)
    assert digest_value(copy.deepcopy(value)) == digest
    assert digest_value(reordered(value, rnd)) == digest


@given(st.dictionaries(st.text(max_size=6), values, max_size=8), st.randoms(use_true_random=False))
def test_dict_insertion_order_does_not_matter(d: dict[str, Any], rnd: random.Random) -> None:
    """A dict built in any insertion order has one digest."""
    items = list(d.items())
    rnd.shuffle(items)
    assert digest_value(dict(items)) == digest_value(d)
    assert digest_value(dict(reversed(items))) == digest_value(d)


@given(
    st.lists(st.text(max_size=6) | st.integers(), max_size=30), st.randoms(use_true_random=False)
)
def test_set_construction_order_does_not_matter(elements: list[Any], rnd: random.Random) -> None:
    """A set or frozenset built from its elements in any order has one digest."""
    shuffled = list(elements)
    rnd.shuffle(shuffled)
    grown = set()
    for e in reversed(shuffled):  # grown one by one, with removals in between
        grown.add(e)
        grown.add("__tmp__")
        grown.discard("__tmp__")
    if "__tmp__" in elements:
        grown.add("__tmp__")
    assert digest_value(set(shuffled)) == digest_value(set(elements)) == digest_value(grown)
    assert digest_value(frozenset(shuffled)) == digest_value(frozenset(elements))


# --- different values, different digests ------------------------------------------------------


@given(values, values)
def test_different_values_give_different_digests(a: Any, b: Any) -> None:
    """Two values that differ in any part (value or type) have different digests."""
    if canon(a) == canon(b):
        assert digest_value(a) == digest_value(b)
    else:
        assert digest_value(a) != digest_value(b)


@given(values)
def test_wrapping_changes_the_digest(value: Any) -> None:
    """A value, the value in a list, in a tuple, and in a dict all digest differently."""
    forms = [value, [value], (value,), {"v": value}, [[value]], ([value],)]
    assert len({digest_value(f) for f in forms}) == len(forms)


@dataclasses.dataclass
class Pair:
    """A dataclass for near misses."""

    a: Any
    b: Any


@dataclasses.dataclass
class OtherPair:
    """Another dataclass with the same fields."""

    a: Any
    b: Any


class Color(enum.Enum):
    """An Enum for near misses."""

    RED = "red"
    ONE = 1


class Shade(enum.Enum):
    """Another Enum with the same values."""

    RED = "red"
    ONE = 1


class Name(str):
    """A str subclass, as in ``class UserId(str)``."""


class Count(int):
    """An int subclass."""


class Items(list):  # type: ignore[type-arg]
    """A list subclass."""


class Box:
    """A plain object: its type and attributes make its digest."""

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)

    def __repr__(self) -> str:
        return f"Box({self.__dict__})"


NEAR_MISSES = [
    # scalars that compare equal or print alike
    (1, 1.0),
    (1, True),
    (1.0, True),
    (0, False),
    (0, None),
    (None, False),
    (1, "1"),
    (1, b"1"),
    ("1", b"1"),
    ("", b""),
    ("", None),
    (None, "None"),
    (True, "True"),
    (0.1 + 0.2, 0.3),
    (2**63, 2**63 - 1),
    (2**63, "9223372036854775808"),
    (2**63, float(2**63)),
    (-(2**63) - 1, -(2**63)),
    (2**64, -(2**64)),
    # containers
    ([1, 2], (1, 2)),
    ([], ()),
    ([], {}),
    ({}, frozenset()),
    ([], [[]]),
    ((), ((),)),
    ([1, 2], [2, 1]),
    ({"a": 1}, [("a", 1)]),
    ({"a": 1}, frozenset({("a", 1)})),
    ({"a": 1}, {"a": 1.0}),
    ({"a": 1}, {"b": 1}),
    ({"a": "b"}, {"b": "a"}),
    ({"a": 1, "b": 2}, {"a": 2, "b": 1}),
    ({1: "a"}, {"1": "a"}),
    ({1: "a"}, {True: "a"}),
    (frozenset({"a", "b"}), ["a", "b"]),
    (frozenset({"a"}), frozenset({"a", "b"})),
    ({"a", "b"}, {"a", "c"}),
    (["ab", "c"], ["a", "bc"]),
    ([b"ab", b"c"], [b"a", b"bc"]),
    # nested differences
    ([[1, 2], [3]], [[1], [2, 3]]),
    ([1, [2, 3]], [1, [2, 4]]),
    ({"k": [1, {"x": 2}]}, {"k": [1, {"x": 3}]}),
    ({"k": (1,)}, {"k": [1]}),
    ({"a": {"b": 1}}, {"a": {"b": 1}, "c": None}),
    ({"a": {"b": 1}}, {"a": {"b": True}}),
    ([{"a", "b"}, 1], [{"a", "b"}, 2]),
    ((1, (2, (3, (4,)))), (1, (2, (3, (5,))))),
    # richer types
    (Pair(1, 2), Pair(2, 1)),
    (Pair(1, 2), OtherPair(1, 2)),
    (Pair(1, 2), {"a": 1, "b": 2}),
    (Color.RED, "red"),
    (Color.ONE, 1),
    (Color.RED, Shade.RED),
    (Color.RED, Color.ONE),
    (Box(a=1), Box(a=2)),
    (Box(a=1), Box(b=1)),
    (Box(a=1), {"a": 1}),
    (Name("a"), Name("b")),
    (Count(1), Count(2)),
    (Items([1]), Items([2])),
]


@pytest.mark.parametrize(("a", "b"), NEAR_MISSES, ids=lambda v: f"{type(v).__name__}:{v!r}")
def test_near_misses_give_different_digests(a: Any, b: Any) -> None:
    """Values that look alike but differ in value or type have different digests."""
    assert digest_value(a) != digest_value(b)
    assert digest_value([a, 0]) != digest_value([b, 0])
    assert digest_value({"k": a}) != digest_value({"k": b})


# --- undigestable values -------------------------------------------------------------------------

UNDIGESTABLE = {
    "lambda": lambda: lambda: 0,
    "lock": threading.Lock,
    "object": object,
    "iterator": lambda: iter([1]),
    "generator": lambda: (x for x in ()),
}

steps = st.lists(
    st.tuples(st.sampled_from(["list", "tuple"]), st.integers(0, 3))
    | st.tuples(st.just("dict"), st.text(max_size=4) | st.integers(-5, 5)),
    max_size=5,
)


def nest(steps: list[tuple[str, Any]], inner: Any) -> tuple[Any, str]:
    """``inner`` placed at the end of ``steps`` inside containers, and its path from the top."""
    value = inner
    for kind, k in reversed(steps):
        if kind == "list":
            value = [*range(k), value, "after"]
        elif kind == "tuple":
            value = (*range(k), value)
        else:
            value = {k: value}
    path = "".join(f"[{k!r}]" if kind == "dict" else f"[{k}]" for kind, k in steps)
    return value, path


@given(steps, st.sampled_from(sorted(UNDIGESTABLE)), st.sampled_from(["value", "arg"]))
def test_undigestable_part_is_named_by_its_path(
    where: list[tuple[str, Any]], kind: str, name: str
) -> None:
    """An undigestable part raises TypeError whose message starts with its path."""
    value, path = nest(where, UNDIGESTABLE[kind]())
    with pytest.raises(TypeError) as info:
        if name == "value":
            digest_value(value)
        else:
            digest_value(value, name)
    assert str(info.value).startswith(f"{name}{path} = "), str(info.value)


def test_undigestable_example_path() -> None:
    """The documented example: a lambda at value['k'][2] is named exactly there."""
    with pytest.raises(TypeError, match=r"^value\['k'\]\[2\] = "):
        digest_value({"k": [1, 2, lambda: 0]})


def test_undigestable_attribute_paths() -> None:
    """A bad dataclass field or object attribute is named with dotted access."""
    with pytest.raises(TypeError, match=r"^value\.b = "):
        digest_value(Pair(1, threading.Lock()))
    with pytest.raises(TypeError, match=r"^value\.inner\.client\[0\] = "):
        digest_value(Box(inner=Box(client=[threading.Lock()])))


def test_digest_is_a_stable_string() -> None:
    """The same value digests to the same hex string every time."""
    value = {"b": [1, 2.5, None], "a": frozenset({"x", "y"}), "c": (b"\x00", True)}
    digests = {digest_value(value) for _ in range(3)}
    assert len(digests) == 1
    (digest,) = digests
    int(digest, 16)  # hex


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), _JSON, max_size=5))
def test_canonical_json_is_json_dumps_sorted_and_compact(data: dict[str, Any]) -> None:
    """The one spelling of checksummed metadata: json's C encoder, made once, gives exactly
    json.dumps(sort_keys=True, separators=(",", ":")) (NaN and infinities included)."""
    import json

    from resumable.operation import canonical_json

    want = json.dumps(data, sort_keys=True, separators=(",", ":")) if data else ""
    assert canonical_json(data) == want


def test_canonical_json_refuses_what_json_refuses() -> None:
    """A value JSON cannot hold raises TypeError, as json.dumps does."""
    from resumable.operation import canonical_json

    with pytest.raises(TypeError, match="not JSON serializable"):
        canonical_json({"x": object()})


def _two(a: object, b: object = "zé") -> None:
    """A function whose calls are digested below."""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((1, "zé"), "4c4d81b65b2db2a711641547"),
        ((-(1 << 63), ""), "46c0e389f451c500354557b4"),
        ((1 << 70, "x\udcff"), "149398db82c22c92fe95e9cf"),
        ((True, 1.5), "c4804a112a391c8a0d990d63"),
    ],
)
def test_call_ids_are_stable_and_the_same_however_spelled(
    args: tuple[object, object], expected: str
) -> None:
    """Stored results are found by these ids: they never change between versions.

    The expected digests are those of the version before the positional fast path.
    """
    digester = CallDigester(_two, inspect.signature(_two), frozenset())
    positional = digester.op_id(args, {})
    assert positional == digester.op_id((), {"a": args[0], "b": args[1]})
    assert positional == digester.op_id((args[0],), {"b": args[1]})
    assert positional.rsplit(":", 1)[1] == expected
