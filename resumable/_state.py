"""``cp.state``: the loop's local state, with attribute and item access.

A field shadows a mapping method of the same name: ``cp.state.items`` is the field ``items``
if there is one. Names that start with ``_`` are reached by item access only.

Top-level assignments are recorded in an undo log that the checkpoint clears at every item
boundary. When an exception (Ctrl-C, SIGTERM, a bug) leaves a block in the middle of an item,
the log puts back the fields that item had assigned, so the committed state and position
agree. In-place changes to a nested object (``cp.state.seen.append(x)``) cannot be undone
this way: assign a new value instead, or call ``cp.commit()`` once the item is reflected.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

__all__ = ["State"]

_MISSING: Any = object()


class State(MutableMapping[str, Any]):
    """A dict with attribute access, restored on re-runs."""

    __slots__ = ("_data", "_undo")
    _data: dict[str, Any]
    _undo: dict[str, Any]

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", {} if data is None else data)
        object.__setattr__(self, "_undo", {})

    # attribute access: a field wins over a mapping method of the same name (`items`, `keys`)
    def __getattribute__(self, name: str) -> Any:
        if name[0] != "_":
            data = object.__getattribute__(self, "_data")
            if name in data:
                return data[name]
        return object.__getattribute__(self, name)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"state has no field {name!r} (fields: {sorted(map(str, self._data))}); "
            "give it a value first, e.g. in checkpointed(state={...})"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    # mapping access
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        data = self._data
        if key not in self._undo:
            self._undo[key] = data.get(key, _MISSING)
        data[key] = value

    def __delitem__(self, key: str) -> None:
        data = self._data
        old = data.pop(key)
        self._undo.setdefault(key, old)

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

    # used by the checkpoint
    def _mark(self) -> None:
        """An item boundary: what is assigned from now on belongs to the next item."""
        if self._undo:
            self._undo.clear()

    def _rollback(self) -> list[str]:
        """Undo assignments since the last boundary; return the names put back."""
        undone = list(self._undo)
        for key, old in self._undo.items():
            if old is _MISSING:
                self._data.pop(key, None)
            else:
                self._data[key] = old
        self._undo.clear()
        return undone
