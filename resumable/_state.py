"""``cp.state``: the loop's local state, with attribute and item access.

A field shadows a mapping method of the same name: ``cp.state.items`` is the field ``items``
if there is one. Names that start with ``_`` are reached by item access only.

Top-level assignments are recorded in an undo log tagged with the position of the item that
made them. When an exception (Ctrl-C, SIGTERM, a bug) leaves a block in the middle of an
item, the log puts back the fields that item had assigned, so the committed state and
position agree. The tag makes this safe against a signal arriving anywhere: the loop marks an
item finished with one store of its position, and a log whose tag is no longer the position
in flight belongs to a finished item and is discarded, not replayed.

In-place changes to a nested object (``cp.state.seen.append(x)``, ``counts[k] += 1``, numpy
``+=``) cannot be undone this way. So the run asks :func:`undoable` before it commits on an
exception: if the state holds any value that could have been changed in place, it does not
commit at all, and the last commit stands (the items since then run again).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol

__all__ = ["State", "forget", "rollback", "track", "undoable"]

_MISSING: Any = object()
_ITEM: Any = object()  # the undo log's key for the position its entries belong to
_get = object.__getattribute__


class _Position(Protocol):
    """The run whose loop position tags the undo log (``_run.Run``)."""

    position: int


class State(MutableMapping[str, Any]):
    """A dict with attribute access, restored on re-runs."""

    __slots__ = ("_at", "_data", "_undo")
    _data: dict[str, Any]
    _undo: dict[Any, Any]
    _at: _Position | None

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", {} if data is None else data)
        object.__setattr__(self, "_undo", {})
        object.__setattr__(self, "_at", None)

    # attribute access: a field wins over a mapping method of the same name (`items`, `keys`)
    def __getattribute__(self, name: str) -> Any:
        if name[0] != "_":
            data = _get(self, "_data")
            if name in data:
                return data[name]
        return _get(self, name)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"state has no field {name!r} (fields: {sorted(map(str, self._data))}); "
            "give it a value first, e.g. in checkpointed(state={...})"
        )

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    # mapping access
    def __getitem__(self, key: str) -> Any:
        return _get(self, "_data")[key]

    def __setitem__(self, key: str, value: Any) -> None:
        # The hot path of a loop body (`cp.state.total += x`): everything inline, and the
        # slots read with object.__getattribute__, not through the override above.
        data = _get(self, "_data")
        at = _get(self, "_at")
        if at is not None:
            undo, position = _get(self, "_undo"), at.position
            if undo.get(_ITEM, position) != position:
                undo.clear()  # left over from an item that has finished since
            if key not in undo:
                undo[key] = data.get(key, _MISSING)
                undo[_ITEM] = position
        data[key] = value

    __setattr__ = __setitem__

    def __delitem__(self, key: str) -> None:
        data = self._data
        self._record(key, data[key])
        del data[key]

    def _record(self, key: str, old: Any) -> None:
        at = self._at
        if at is None:
            return
        undo, position = self._undo, at.position
        if undo.get(_ITEM, position) != position:
            undo.clear()  # left over from an item that has finished since
        if key not in undo:
            undo[key] = old
            undo[_ITEM] = position

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"State({self._data!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, State):
            return self._data == other._data
        return self._data == other

    __hash__ = None  # type: ignore[assignment]

    def __dir__(self) -> list[str]:
        return sorted({*object.__dir__(self), *(k for k in self._data if isinstance(k, str))})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (the live one; copy it to keep a snapshot)."""
        return self._data


# --- used by the run that owns the state (module functions: a State's own names are its fields)


def track(state: State, at: _Position) -> None:
    """Record assignments to ``state`` from now on, tagged with ``at.position``."""
    object.__setattr__(state, "_at", at)


def forget(state: State) -> None:
    """A commit: what was assigned so far is committed, nothing to undo."""
    _get(state, "_undo").clear()


def rollback(state: State) -> list[str]:
    """Undo the assignments of the item in flight; return the names put back."""
    undo, at, data = _get(state, "_undo"), _get(state, "_at"), _get(state, "_data")
    undone: list[str] = []
    if at is not None and undo.get(_ITEM) == at.position:
        del undo[_ITEM]
        for key, old in undo.items():
            if old is _MISSING:
                data.pop(key, None)
            else:
                data[key] = old
            undone.append(key)
    undo.clear()
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
        items = value.to_dict().values() if isinstance(value, State) else value.values()
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
