"""Functions decorated with ``@resumable``, for test_decorator.py: a module and a script.

Imported (``import decorator_worker``) for the pickling and process-pool tests; run as a
script by the cross-process tests, with the working directory set by the test and
``RESUMABLE_STORE`` naming the store that all runs share::

    python decorator_worker.py calls
    python decorator_worker.py flaky [--fail]
    python decorator_worker.py digests --order N [--numpy]
    python decorator_worker.py doomed [--survive] [--reset]
    python decorator_worker.py held

Every real call of a decorated function appends one line ``name args`` to ``calls.log`` in
the working directory (opened, written and closed before the function goes on), so a test
counts real calls even in a process that was killed. The script prints one JSON line.

- ``calls``: calls a function, an ``async def`` function (several at once with
  ``asyncio.gather``), an instance method, an async method, a classmethod and a staticmethod;
  prints their results.
- ``flaky``: calls ``fragile(7)`` and ``afragile(7)``, which raise while ``--fail`` is given;
  prints each result or error.
- ``digests``: prints ``op_id_for`` of ``probe`` for many kinds of arguments, built in an order
  that depends on ``--order`` (dict insertion order, attribute order, set construction order);
  ``--numpy`` adds numpy arrays.
- ``doomed``: calls ``doomed(4)`` (``max_attempts=2``), which SIGKILLs its own process unless
  ``--survive`` is given; ``--reset`` calls ``doomed.reset(4)`` first. Prints the result, or the
  ``ResumableError`` it raised.
- ``held``: calls ``held(3)``, whose body creates ``entered`` and then waits (at most 60 s)
  for a file ``release`` to appear; prints the result, or the ``OperationLocked`` it raised.
  Logs ``resumable`` events at INFO to stderr, so a test sees a call start waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import decimal
import enum
import json
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from resumable import OperationLocked, ResumableError, resumable

CALLS = "calls.log"


def record(name: str, *args: object) -> None:
    """Append one line for a real call; the line is in the file before this returns."""
    with open(CALLS, "a", encoding="utf-8") as log:
        log.write(" ".join([name, *map(repr, args)]) + "\n")


def calls() -> list[str]:
    """The lines ``record`` wrote in the working directory so far."""
    path = Path(CALLS)
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


# --- calls ---------------------------------------------------------------------------------


@resumable
def square(x: int) -> int:
    """A plain function."""
    record("square", x)
    return x * x


@resumable
async def asquare(x: int) -> int:
    """An async function."""
    record("asquare", x)
    await asyncio.sleep(0)
    return x * x


class Calc:
    """Methods of every kind."""

    def __init__(self, k: int) -> None:
        self.k = k

    @resumable
    def mul(self, x: int) -> int:
        record("mul", self.k, x)
        return self.k * x

    @resumable
    async def amul(self, x: int) -> int:
        record("amul", self.k, x)
        await asyncio.sleep(0)
        return self.k * x

    @resumable
    @classmethod
    def tag(cls, x: int) -> str:
        record("tag", x)
        return f"{cls.__name__}:{x}"

    @resumable
    @staticmethod
    def plus(x: int) -> int:
        record("plus", x)
        return x + 100


async def _async_calls() -> dict[str, Any]:
    gathered = await asyncio.gather(*(asquare(x) for x in (1, 2, 3)))
    return {"asquare": list(gathered), "amul": [await Calc(3).amul(x) for x in (1, 2)]}


def run_calls() -> dict[str, Any]:
    out: dict[str, Any] = {"square": [square(x) for x in (1, 2, 3)]}
    out.update(asyncio.run(_async_calls()))
    out["mul"] = [Calc(3).mul(x) for x in (1, 2)] + [Calc(5).mul(1)]
    out["tag"] = [Calc.tag(1), Calc(3).tag(2)]
    out["plus"] = [Calc.plus(1), Calc(3).plus(2)]
    return out


# --- flaky ---------------------------------------------------------------------------------

FAIL = False


@resumable
def fragile(x: int) -> int:
    """Raises while the module's FAIL is set."""
    record("fragile", x)
    if FAIL:
        raise RuntimeError(f"fragile({x}) failed")
    return x + 1


@resumable
async def afragile(x: int) -> int:
    """The async twin of ``fragile``."""
    record("afragile", x)
    await asyncio.sleep(0)
    if FAIL:
        raise RuntimeError(f"afragile({x}) failed")
    return x + 2


def _outcome(call: Any) -> dict[str, Any]:
    try:
        return {"result": call()}
    except RuntimeError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def run_flaky() -> dict[str, Any]:
    return {
        "fragile": _outcome(lambda: fragile(7)),
        "afragile": _outcome(lambda: asyncio.run(afragile(7))),
    }


# --- digests -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    """A dataclass argument."""

    x: float
    y: float
    label: str = ""


class Color(enum.Enum):
    """An Enum argument."""

    RED = "red"
    GREEN = 2


def rotated(items: list[Any], order: int) -> list[Any]:
    """``items`` rotated by ``order`` places: the same items, another order."""
    k = order % len(items)
    return items[k:] + items[:k]


class Thing:
    """A plain object whose method's ``self`` goes into the digest."""

    def __init__(self, order: int) -> None:
        attrs = [("name", "widget"), ("sizes", [1, 2, 3]), ("meta", {"a": 1, "b": (2, 3)})]
        for key, value in rotated(attrs, order):
            setattr(self, key, value)

    @resumable
    def method(self, x: int) -> int:
        record("method", x)
        return x


@resumable
def probe(value: Any, extra: Any = None) -> None:
    """Takes anything; only its op ids are looked at."""
    record("probe")


WORDS = [f"w{i}-{'x' * (i % 7)}" for i in range(40)]


def digest_cases(order: int) -> dict[str, Any]:
    """Arguments whose op ids must not depend on the process, each built per ``order``."""
    pairs = [("b", 2), ("a", 1), ("c", [1, 2]), ("d", {"y": None, "x": 1.5}), ("e", b"\x00")]
    return {
        "dict": dict(rotated(pairs, order)),
        "nested dict": {"outer": dict(rotated(pairs, order + 1)), "list": [dict(pairs)]},
        "int keys": dict(rotated([(3, "c"), (1, "a"), (2, "b")], order)),
        "set of str": set(rotated(WORDS, order)),
        "frozenset of str": frozenset(rotated(WORDS[:30], order * 7)),
        "set of frozensets": {frozenset(rotated(WORDS[:5], order)), frozenset(WORDS[5:9])},
        "nested lists and tuples": [1, (2, [3, (4, ())]), [], [[[]]]],
        "floats": [0.1, -0.0, 1e300, float("inf"), -2.5, 0.1 + 0.2],
        "bytes": [b"", b"\x00\xff", bytearray(b"abc")],
        "none and bools": [None, True, False],
        "large ints": [2**63, -(2**63) - 1, 2**200, -(3**100), 0],
        "str": ["", "ünïcødé", "\U0001f600"],
        "dataclass": Point(1.5, -2.0, "p"),
        "enum": [Color.RED, Color.GREEN],
        "datetime": datetime.datetime(2026, 11, 29, 12, 30, 5, 17, tzinfo=datetime.UTC),
        "date and timedelta": [datetime.date(2026, 1, 2), datetime.timedelta(hours=1)],
        "decimal, uuid, path": [
            decimal.Decimal("1.10"),
            uuid.UUID(int=12345),
            PurePosixPath("/a/b.txt"),
        ],
        "everything at once": {
            "set": set(rotated(WORDS, order + 3)),
            "point": Point(0.0, 1.0),
            "color": Color.GREEN,
            "when": datetime.datetime(2000, 1, 1),
            "dict": dict(rotated(pairs, order + 2)),
        },
    }


def numpy_cases() -> dict[str, Any]:
    import numpy as np

    grid = np.arange(24, dtype="<i8").reshape(4, 6)
    return {
        "int array": grid,
        "strided view": grid[:, ::2],
        "float array": np.linspace(0.0, 1.0, 7, dtype="<f8"),
        "array in a dict": {"b": np.zeros(3, dtype="<f4"), "a": np.ones((2, 2), dtype="<u1")},
    }


def run_digests(order: int, with_numpy: bool) -> dict[str, str]:
    cases = numpy_cases() if with_numpy else digest_cases(order)
    out = {name: probe.op_id_for(value) for name, value in cases.items()}
    if not with_numpy:
        out["keyword"] = probe.op_id_for(extra=dict(rotated([("p", 1), ("q", 2)], order)), value=1)
        out["method self"] = Thing(order).method.op_id_for(5)
    return out


# --- doomed --------------------------------------------------------------------------------

SURVIVE = False


@resumable(max_attempts=2)
def doomed(x: int) -> int:
    """Kills its own process with SIGKILL unless the module's SURVIVE is set."""
    record("doomed", x)
    if not SURVIVE:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 2


def run_doomed(reset: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if reset:
        out["reset"] = doomed.reset(4)
    try:
        out["result"] = doomed(4)
    except ResumableError as exc:
        out["error"] = str(exc)
    return out


# --- held ----------------------------------------------------------------------------------


@resumable
def held(x: int) -> int:
    """Runs until the test creates ``release``; a second caller waits for it (single flight)."""
    record("held", x)
    Path("entered").touch()
    deadline = time.monotonic() + 60
    while not Path("release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("nobody created the file 'release' within 60 s")
        time.sleep(0.01)
    return x * 11


def run_held() -> dict[str, Any]:
    try:
        return {"result": held(3)}
    except OperationLocked as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    global FAIL, SURVIVE
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["calls", "flaky", "digests", "doomed", "held"])
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--order", type=int, default=0)
    parser.add_argument("--numpy", action="store_true")
    parser.add_argument("--survive", action="store_true")
    parser.add_argument("--reset", action="store_true")
    args = parser.parse_args()
    FAIL, SURVIVE = args.fail, args.survive
    if args.scenario == "calls":
        out: Any = run_calls()
    elif args.scenario == "flaky":
        out = run_flaky()
    elif args.scenario == "digests":
        out = run_digests(args.order, args.numpy)
    elif args.scenario == "doomed":
        out = run_doomed(args.reset)
    else:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO)
        out = run_held()
    print(json.dumps(out, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
