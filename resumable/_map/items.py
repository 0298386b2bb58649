"""What every way of running a map shares: its arguments, item keys, stored results, pool.

Map number ``n`` of a block (counted from 0 in every run) stores one result record per item
under ``map<n>:<item key>``. The key names the item, not its place. By default it is
``d<digest>``, the digest of the item (:func:`~resumable.keys.digest_value`, as ``@resumable``
digests arguments), so a re-run over reordered, grown or edited input finds each item's own
result. ``key=`` names items by its value instead: ``i<int>``, ``s<str>``, else ``d<digest>``
of the value. ``key="index"`` names them by position: the key is the index (``"17"``), the
form every map had before keys were digests, so those operations still resume.

A re-run loads the records under its prefix (:func:`load_done`) and runs only the items
without a good one. An item set aside by ``on_error="skip"`` is stored under its key as
serializer ``"!error"`` with the error text, so it counts as not done and a later success
simply replaces it.

Equal items have one key, so under the default key an item that occurs several times runs
once: in its first slot; the others get its result (or its exception) when the map returns
(:meth:`ItemKeys.fill`). ``key=`` values must differ from item to item.

A map sees the block it runs in through :class:`MapHost`: what it may read, and the three
things it reports (the map's number, how many items it records, the items it set aside).
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from resumable._log import log
from resumable.keys import digest_value
from resumable.operation import ResultRecord
from resumable.serializers import Serializer, decode, error_text, short_repr

from .worker import ERROR, Outcome

if TYPE_CHECKING:
    from resumable._progress import Reporter
    from resumable.stores.base import Store

__all__ = [
    "INDEX",
    "ItemKeys",
    "MapHost",
    "MapItems",
    "check",
    "item_keys",
    "load_done",
    "open_pool",
]

#: ``key="index"``: items are named by their position, as maps were before keys were digests.
INDEX: Final = "index"


class MapHost(Protocol):
    """What a map may read of the run it belongs to (``_run.Run``), and what it reports."""

    op_id: str
    store: Store
    serializer: Serializer
    completed_before: bool
    #: This participant's name in claims (shared blocks; "" otherwise).
    owner: str

    def in_body(self) -> bool:
        """True inside a ``cp.iterate`` loop body."""
        ...

    def next_map(self) -> int:
        """The number of this map in its run (its result namespace)."""
        ...

    def set_aside(self, key: Any) -> None:
        """Note an item set aside by ``on_error="skip"`` (``cp.failed``)."""
        ...

    def note_map(self, number: int, items: int) -> None:
        """Note that map ``number`` records ``items`` items when done (``resumable list``)."""
        ...


def check(  # noqa: PLR0917 - the arguments of cp.map, checked together
    fn: object, iterable: object, key: object, executor: object, workers: object, on_error: object
) -> None:
    """Refuse bad arguments at the call, before anything runs."""
    if not callable(fn):
        raise TypeError(f"cp.map(fn, items): fn must be callable, not {fn!r}")
    if key is not None and not callable(key) and not (isinstance(key, str) and key == INDEX):
        raise TypeError(
            "cp.map(key=...) must be a function of the item, None (the default: a digest of the "
            f'item) or "index" (the item\'s position), not {key!r}'
        )
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (a ThreadPoolExecutor, a "
            f"ProcessPoolExecutor, a cluster's executor), not {type(executor).__name__}"
        )
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be a whole number, not {workers!r}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if executor is not None:
            raise ValueError(
                "pass executor= or workers=, not both: workers= sizes the thread pool that "
                "cp.map makes when no executor is given"
            )
    if not isinstance(iterable, Iterable):
        raise TypeError(
            f"cp.map(fn, items) needs an iterable of items, not {type(iterable).__name__}"
        )


@dataclass(slots=True)
class ItemKeys:
    """How a map names its items in the store (not used with ``key="index"``)."""

    #: Each slot's key text, after the map's prefix.
    texts: list[str]
    #: Each slot's key as ``cp.failed`` reports it: the item itself, or its ``key=`` value.
    users: list[Any]
    #: The first slot of each key text.
    first: dict[str, int]
    #: ``(slot, first slot)`` of each repeated item: it does not run, it gets the first one's
    #: result.
    copies: list[tuple[int, int]] = field(default_factory=list)

    def fill(self, results: list[Any]) -> None:
        """Give every repeated item the result of its first occurrence."""
        for slot, first in self.copies:
            results[slot] = results[first]


def item_keys(items: list[Any], key: object) -> ItemKeys | None:
    """The items' keys: digests of the items (``key=None``), ``key=`` values, or None (index).

    Raises:
        TypeError: an item (default key) or a key value cannot be digested.
        ValueError: ``key=`` gives two items the same key.
    """
    if not callable(key):
        return None if key == INDEX else _digest_keys(items)
    texts: list[str] = []
    users: list[Any] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        value = key(item)
        t = type(value)
        if t is int:
            text = f"i{value}"
        elif t is str:
            text = f"s{value}"
        else:
            try:
                text = "d" + digest_value(value, "key")
            except TypeError as exc:
                raise TypeError(
                    f"cp.map: the key of item {i} cannot name it across runs: {exc}. Make key= "
                    "return a str, an int, bytes, or a tuple of those"
                ) from None
        first = seen.setdefault(text, i)
        if first != i:
            raise ValueError(
                f"cp.map: items {first} and {i} have the same key {value!r}; key= must give "
                "every item its own key"
            )
        texts.append(text)
        users.append(value)
    return ItemKeys(texts, users, seen)


def _digest_keys(items: list[Any]) -> ItemKeys:
    """The default keys: ``d<digest of the item>``; equal items share one."""
    texts: list[str] = []
    seen: dict[str, int] = {}
    copies: list[tuple[int, int]] = []
    add, first_of = texts.append, seen.setdefault
    for i, item in enumerate(items):
        try:
            text = "d" + digest_value(item, "item")
        except TypeError:
            raise _undigestable(i, item) from None
        first = first_of(text, i)
        if first != i:
            copies.append((i, first))
        add(text)
    return ItemKeys(texts, items, seen, copies)


def _undigestable(i: int, item: object) -> TypeError:
    try:
        digest_value(item, f"items[{i}]")  # again, to name the part at fault from the items
        detail = f"items[{i}] cannot be digested"
    except TypeError as exc:
        detail = str(exc)
    return TypeError(
        f"cp.map: item {i} cannot be digested, so a re-run could not find its result "
        f"({detail}). Name the items with key=, a function of the item that gives a str, an "
        "int, bytes or a tuple of those (e.g. key=lambda item: item.id), or by their position "
        'with key="index"'
    )


def load_done(
    store: Store, op_id: str, prefix: str, results: list[Any], keys: ItemKeys | None
) -> Sequence[int]:
    """Put the stored results into ``results``; return the slots that still have to run.

    A repeated item (:attr:`ItemKeys.copies`) never has to run: its first slot does.
    """
    n = len(results)
    records = store.load_results(op_id, prefix)
    copies = () if keys is None else keys.copies
    if not records and not copies:
        return range(n)
    slot_of = None if keys is None else keys.first
    done = bytearray((n + 7) >> 3)  # a bitmap: one bit per item
    for slot, _ in copies:
        done[slot >> 3] |= 1 << (slot & 7)
    cut = len(prefix)
    for name, rec in records.items():
        if rec.serializer == ERROR:
            continue  # set aside by an earlier run: runs again
        text = name[cut:]
        if slot_of is None:
            if not (text.isascii() and text.isdigit()) or (text[0] == "0" and text != "0"):
                continue  # not an index key: written by a map with key= or the default key
            slot = int(text)
            if slot >= n:
                continue
        else:
            found = slot_of.get(text)
            if found is None:
                continue  # an item no longer in the input
            slot = found
        results[slot] = decode(rec.serializer, rec.payload)
        done[slot >> 3] |= 1 << (slot & 7)
    return array("q", (i for i in range(n) if not done[i >> 3] >> (i & 7) & 1))


def open_pool(executor: object, workers: object) -> tuple[Executor, int, bool]:
    """The executor to use, how many chunks it runs at once, and whether the map owns it.

    Without ``executor``, a thread pool of ``workers`` threads (default ``cpu count + 4``, at
    most 32) made for this map.
    """
    if isinstance(executor, Executor):
        return executor, _executor_width(executor), False
    width = workers if isinstance(workers, int) else min(32, (os.cpu_count() or 1) + 4)
    return ThreadPoolExecutor(width, thread_name_prefix="resumable-map"), width, True


def _executor_width(executor: Executor) -> int:
    """How many calls ``executor`` runs at once.

    A thread or process pool's ``_max_workers``; for a Dask ``ClientExecutor``, the worker
    threads of its cluster (``client.nthreads()``); else this machine's CPU count.
    """
    size = getattr(executor, "_max_workers", None)  # thread and process pools say
    if isinstance(size, int) and size > 0:
        return size
    nthreads = getattr(getattr(executor, "_client", None), "nthreads", None)
    if callable(nthreads):  # distributed.cfexecutor.ClientExecutor
        try:
            total = sum(nthreads().values())
        except Exception:  # noqa: BLE001 - a cluster that cannot say: the fallback below
            total = 0
        if isinstance(total, int) and total > 0:
            return total
    return os.cpu_count() or 1


class MapItems:
    """What every way of running a map shares: its items, their record keys, the results."""

    def __init__(
        self, host: MapHost, number: int, items: list[Any], results: list[Any],
        keys: ItemKeys | None, *, raising: bool,
    ) -> None:  # fmt: skip
        self.host, self.store, self.op_id = host, host.store, host.op_id
        self.number, self.prefix = number, f"map{number}:"
        self.items, self.results, self.keys = items, results, keys
        self.texts = None if keys is None else keys.texts
        self.users = None if keys is None else keys.users
        self.raising = raising  # on_error="raise"
        self.failures = 0
        self.reporter: Reporter | None = None

    def key(self, slot: int) -> str:
        """The record key of the item in ``slot``."""
        return self.prefix + (str(slot) if self.texts is None else self.texts[slot])

    def success(self, out: Outcome, local: bool) -> tuple[Any, ResultRecord]:
        """A successful outcome's value (decoded if it ran elsewhere) and its record."""
        ser, payload = out.serializer, out.payload
        assert ser is not None and payload is not None  # noqa: S101 - set on success
        value = out.value if local else decode(ser, payload)
        return value, ResultRecord.create(self.op_id, self.key(out.slot), ser, payload)

    def failure_record(self, slot: int, exc: BaseException) -> ResultRecord:
        """on_error="skip": count the failure, note it in ``cp.failed``; its record."""
        self.failures += 1
        key = self.key(slot)
        user = slot if self.users is None else self.users[slot]
        try:
            self.host.set_aside(user)
        except TypeError:  # an unhashable key (a list, a dict): its key text stands for it
            self.host.set_aside(key[len(self.prefix) :])
        text = error_text(exc)
        log.warning(
            "resumable.map.item_failed", op_id=self.op_id, map=self.number,
            key=short_repr(user), error=text,
        )  # fmt: skip
        return ResultRecord.create(self.op_id, key, ERROR, text.encode(errors="replace"))
