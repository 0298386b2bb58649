"""What ``cp.map`` leaves in the store, read back for ``resumable list`` and ``resumable show``.

Map number ``n`` of a block stores one result record per item under ``map<n>:<item key>``
(:mod:`resumable._map.items`); an item set aside by ``on_error="skip"`` is stored under its key
with the serializer :data:`ERROR` and the error text as its payload. When a map starts with
work to do, its run notes how many items it records when done in the operation record, as
``meta["maps"] = {"<n>": <items>}`` (``Run.note_map``): repeated items count once, as the map
runs them once. A map's items done / total is then its good records counted against that.

This module imports nothing of :mod:`resumable._map` (which loads the retry machinery): the
command line reads a map's progress without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .operation import OperationRecord
    from .stores.base import Store

__all__ = ["ERROR", "Items", "count_items", "key_text", "map_totals", "set_aside"]

#: The serializer name of a record that says "this item failed" (its payload: the error).
ERROR: Final = "!error"


@dataclass(frozen=True, slots=True)
class Items:
    """The items of an operation's maps: recorded, set aside, and how many there are."""

    #: Items with a result record.
    done: int
    #: Items set aside by ``on_error="skip"`` (a run retries them).
    failed: int
    total: int

    @property
    def fraction(self) -> float:
        """``done / total``, in [0, 1]."""
        return min(1.0, self.done / self.total) if self.total else 1.0

    def as_json(self) -> dict[str, int]:
        """``{done, failed, total}``."""
        return {"done": self.done, "failed": self.failed, "total": self.total}


def map_totals(op: OperationRecord) -> dict[int, int]:
    """The items of each map the operation's runs noted, by map number (empty: no map)."""
    noted = op.meta.get("maps")
    if not isinstance(noted, dict):
        return {}
    found: dict[int, int] = {}
    for number, total in noted.items():
        if isinstance(number, str) and number.isdigit() and type(total) is int and total > 0:
            found[int(number)] = total
    return found


def count_items(store: Store, op_id: str, totals: dict[int, int], *, completed: bool) -> Items:
    """The items of the maps ``totals`` names: done (counted in the store), set aside, total.

    A completed operation has every item done, and nothing is read. Records are counted, not
    verified (``resumable verify`` checks them); a map counts at most its total, so records of
    items no longer in its input do not push it past 100 %.
    """
    total = sum(totals.values())
    if completed:
        return Items(total, 0, total)
    done = failed = 0
    for number, items in totals.items():
        counts = store.count_results(op_id, f"map{number}:")
        errors = counts.pop(ERROR, 0)
        ok = min(items, sum(counts.values()))
        done += ok
        failed += min(items - ok, errors)
    return Items(done, failed, total)


def set_aside(store: Store, op_id: str, numbers: list[int]) -> list[dict[str, Any]]:
    """The items of maps ``numbers`` that ``on_error="skip"`` set aside, with their errors.

    Each is ``{map, key, item, error}``: ``key`` as stored after the map's prefix, ``item``
    the item's ``key=`` value or position where the key holds one (None for a digest of the
    item, which names it without saying what it was). Read from the failure records only.
    """
    found = []
    for number in sorted(numbers):
        prefix = f"map{number}:"
        for rec in store.results_with_serializer(op_id, prefix, ERROR):
            if rec.op_id != op_id or not rec.verify():
                continue
            key = rec.key[len(prefix) :]
            error = rec.payload.decode(errors="replace")
            found.append({"map": number, "key": key, "item": _item(key), "error": error})
    found.sort(key=lambda f: (f["map"], f["key"]))
    return found


def key_text(key: str) -> str:
    """An item key as ``resumable show`` prints it.

    ``#17`` (a position), ``17``, ``'a.jpg'``, or ``digest d3f2a9c1e0b4…`` (a digest of the
    item, which names it without saying what it was).
    """
    item = _item(key)
    if item is None:
        return f"digest {key[:13]}…" if len(key) > 13 else f"digest {key}"
    if isinstance(item, int) and not key.startswith("i"):
        return f"#{item}"
    return repr(item)


def _item(key: str) -> int | str | None:
    """What an item key says of the item (see :mod:`resumable._map.items`).

    ``17``: the position (``key="index"``); ``i17`` and ``s...``: an int or str ``key=`` value;
    ``d<hex>``: a digest, which says nothing of the item (None).
    """
    if key.isascii() and key.isdigit():
        return int(key)
    if key.startswith("i") and key[1:].lstrip("-").isdigit():
        return int(key[1:])
    if key.startswith("s"):
        return key[1:]
    return None
