"""``cp.state``: the loop's local state, with attribute and item access.

A field shadows a mapping method of the same name: ``cp.state.items`` is the field ``items``
if there is one. Names that start with ``_`` are reached by item access only.

Top-level assignments are recorded in an undo log: for each field, the value it had before
the first assignment made while the run's position had its current value, and that position
(the field's tag). When an exception (Ctrl-C, SIGTERM, a bug) leaves a block in the middle of
an item, :func:`rollback` puts back the fields whose tag is the position in flight, so the
committed state and position agree. The tags make this safe against a signal arriving
anywhere: the loop marks an item finished with one store of its position, after which every
entry of the log is stale (a finished item's) and is neither replayed nor looked at again;
and an assignment writes the old value, then the tag, then the new value, so an entry whose
tag is current always holds the value from before the item. Nothing is cleared per item.

Speed (the body of a loop, ``cp.state.total += x``): the fields are the instance's
``__dict__``, so reading one is a C-level attribute lookup, and a mapping method (a function
of the class, a non-data descriptor) is shadowed by a field of its name without any code of
ours. Only assignment runs Python (:meth:`State.__setitem__`): a few dict operations. A state
that has a field whose name starts with ``_`` changes its class to :class:`_Private`, whose
``__getattribute__`` keeps such fields out of attribute access (slower reads, same rules).

In-place changes to a nested object (``cp.state.seen.append(x)``, ``counts[k] += 1``, numpy
``+=``) cannot be undone this way. So the run asks :func:`undoable` before it commits on an
exception: if the state holds any value that could have been changed in place, it does not
commit at all, and the last commit stands (the items since then run again).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol

__all__ = ["State", "forget", "rollback", "track", "undoable"]

_MISSING: Any = object()
_get = object.__getattribute__
_set = object.__setattr__


class _Position(Protocol):
    """The run whose loop position tags the undo log (``_run.Run``)."""

    position: int


class State(MutableMapping[str, Any]):
    """A dict with attribute access, restored on re-runs."""

    # `__dict__` is the fields (the dict a checkpoint stores); `_log` is (fields, old values,
    # tags, the run whose position tags them, or None if no run tracks this state).
    __slots__ = ("__dict__", "_log")
    _log: tuple[dict[str, Any], dict[str, Any], dict[str, Any], _Position | None]

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = {} if data is None else data
        if data:  # keys as interned strings, like attribute names (fast lookups), same order
            fields = {sys.intern(k) if type(k) is str else k: v for k, v in data.items()}
            data.clear()
            data.update(fields)
        _set(self, "__dict__", data)
        _set(self, "_log", (data, {}, {}, None))
        if any(map(_private, data)):
            _hide(self)

    def __getattr__(self, name: str) -> Any:
        # Called only when no field, and no attribute of the class, has this name.
        data = _get(self, "_log")[0]
        if name in data:
            raise AttributeError(f"state field {name!r} is reached by item access only")
        raise AttributeError(
            f"state has no field {name!r} (fields: {sorted(map(str, data))}); "
            "give it a value first, e.g. in checkpointed(state={...})"
        )

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    # mapping access
    def __getitem__(self, key: str) -> Any:
        return _get(self, "_log")[0][key]

    def __setitem__(self, key: str, value: Any) -> None:
        data, old, tags, at = _get(self, "_log")
        if at is not None:
            # A tracked state's first assignment: from now on, a class of its own whose hook
            # has the log at hand does the work (the hot path; see _fast_class).
            _set(self, "__class__", _fast_class(type(self), data, old, tags, at))
            self[key] = value
            return
        if key not in data and _private(key):
            _hide(self)
        data[key] = value

    __setattr__ = __setitem__

    def __delitem__(self, key: str) -> None:
        data, old, tags, at = _get(self, "_log")
        prior = data[key]
        if at is not None:
            pos = at.position
            if tags.get(key) != pos:
                old[key] = prior
                tags[key] = pos
        del data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(_get(self, "_log")[0])

    def __len__(self) -> int:
        return len(_get(self, "_log")[0])

    def __repr__(self) -> str:
        return f"State({_get(self, '_log')[0]!r})"

    def __eq__(self, other: object) -> bool:
        data = _get(self, "_log")[0]
        if isinstance(other, State):
            return bool(data == _get(other, "_log")[0])
        return bool(data == other)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        # copy, deepcopy and pickle: a state of the same fields, tracked by no run
        return State, (dict(_get(self, "_log")[0]),)

    def __dir__(self) -> list[str]:
        fields = _get(self, "_log")[0]
        return sorted({*object.__dir__(self), *(k for k in fields if isinstance(k, str))})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (the live one; copy it to keep a snapshot)."""
        data: dict[str, Any] = _get(self, "_log")[0]
        return data


def _fast_class(
    base: type[State],
    data: dict[str, Any],
    old: dict[str, Any],
    tags: dict[str, Any],
    at: _Position,
) -> type[State]:
    """``base`` with an assignment hook bound to one state's fields and undo log.

    The hot path of a loop body (`cp.state.total += x`): the hook is a closure, so that it
    reaches the log without an attribute lookup, and does a few dict operations.
    """

    def assign(self: State, key: str, value: Any) -> None:
        pos = at.position
        try:
            if tags[key] == pos:  # assigned before at this position: its old value is kept
                data[key] = value
                return
        except KeyError:
            pass
        # The first assignment at this position: the old value, then the tag, then the value
        # (so that a current tag always comes with the value from before the item).
        try:
            old[key] = data[key]
        except KeyError:
            old[key] = _MISSING
            if _private(key):
                _hide(self)
        tags[key] = pos
        data[key] = value

    name = {"__slots__": (), "__module__": __name__, "__qualname__": "State"}
    return type("State", (base,), {**name, "__setitem__": assign, "__setattr__": assign})


def _hide(state: State) -> None:
    """``state`` has a field whose name starts with ``_``: keep it out of attribute access."""
    cls = type(state)
    if not issubclass(cls, _Private):
        private = _Private if cls is State else type("State", (_Private, cls), {"__slots__": ()})
        _set(state, "__class__", private)


def _private(key: object) -> bool:
    """True for a field name that attribute access must not reach (it starts with ``_``)."""
    return isinstance(key, str) and key.startswith("_")


class _Private(State):
    """A state with a ``_`` field: the same, with reads that keep such fields out of reach."""

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        if name[:1] == "_" and name in _get(self, "_log")[0]:
            # Not the field: what the name is on the class (`__class__`, `_log`), if anything.
            for klass in type(self).__mro__:
                if name in vars(klass):
                    found = vars(klass)[name]
                    get = getattr(type(found), "__get__", None)
                    return found if get is None else get(found, self, type(self))
            raise AttributeError(f"state field {name!r} is reached by item access only")
        return _get(self, name)


# --- used by the run that owns the state (module functions: a State's own names are its fields)


def track(state: State, at: _Position) -> None:
    """Record assignments to ``state`` from now on, tagged with ``at.position``."""
    _set(state, "_log", (_get(state, "_log")[0], {}, {}, at))
    _set(state, "__class__", _Private if isinstance(state, _Private) else State)


def forget(state: State) -> None:
    """A commit: what was assigned so far is committed, nothing to undo."""
    _data, old, tags, _at = _get(state, "_log")
    tags.clear()
    old.clear()


def rollback(state: State) -> list[str]:
    """Undo the assignments made at the position in flight; return the names put back."""
    data, old, tags, at = _get(state, "_log")
    undone: list[str] = []
    if at is not None:
        pos = at.position
        for key, tag in tags.items():
            if tag == pos:
                prior = old[key]
                if prior is _MISSING:
                    data.pop(key, None)
                else:
                    data[key] = prior
                undone.append(key)
    tags.clear()
    old.clear()
    return undone


#: Types whose values cannot change in place.
_IMMUTABLE: frozenset[type] = frozenset(
    (int, float, complex, bool, str, bytes, type(None), range, frozenset, tuple)
)


def undoable(value: Any, depth: int = 0) -> bool:
    """True if ``value`` holds only values that cannot change in place.

    Then the undo log, which sees assignments, can take back all an item did to a state.
    A frozenset or tuple counts if what it holds does; anything else (a list, a Counter, an
    array, an object) might have been changed in place by the item in flight.
    """
    t = type(value)
    if t is dict or isinstance(value, State):
        items = (_get(value, "_log")[0] if isinstance(value, State) else value).values()
        return depth == 0 and all(undoable(v, 1) for v in items)
    if t not in _IMMUTABLE:
        return _immutable_scalar(value)
    if (t is tuple or t is frozenset) and depth < 8:
        return all(undoable(v, depth + 1) for v in value)
    return t is not tuple and t is not frozenset


def _immutable_scalar(value: Any) -> bool:
    """Common immutable values of other types: dates, decimals, numpy scalars, enums."""
    import datetime
    import decimal
    import enum
    import fractions
    import uuid

    if isinstance(
        value,
        datetime.date
        | datetime.time
        | datetime.timedelta
        | decimal.Decimal
        | fractions.Fraction
        | uuid.UUID
        | enum.Enum,
    ):
        return True
    t = type(value)
    return t.__module__ == "numpy" and t.__name__ != "ndarray" and getattr(value, "ndim", 1) == 0
