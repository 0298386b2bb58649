"""The checksum candidates of docs/security.md, timed side by side.

    python benchmarks/checksums.py            # print the table
    python benchmarks/checksums.py --write    # also put it into docs/security.md

One tag of a 120-byte header plus a payload of 78 B (a small state), 1 KB and 10 MB, for each
way of making a record's checksum that was considered: xxh3-128 (no secret), keyed BLAKE2b,
HMAC-SHA256 through ``hmac.new``, ``hmac.digest`` and ``HMAC.copy()``, and the library's own
HMAC-SHA256 from prepared pad states (``resumable._signing.Signer``, the one chosen). The
candidates take turns within each round; the figure is the median over rounds of each one's
best-of-a-batch time per tag. The table is a comparison, not a goal: it has no PASS or FAIL.
``benchmarks/run.py --write`` writes it too.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import sys
import time
from collections.abc import Callable

import _util

HEADER = os.urandom(120)
KEY = os.urandom(32)
SIZES = (("78 B (a small state)", 78), ("1 KB", 1024), ("10 MB", 10 * 1024 * 1024))
SECTION = "checksum-choice"


def candidates() -> dict[str, Callable[[bytes], object]]:
    import xxhash

    from resumable._signing import Signer

    blake = hashlib.blake2b(key=KEY, digest_size=16)
    keyed = hmac.new(KEY, digestmod="sha256")
    signer = Signer(KEY)

    def xxh3(payload: bytes) -> object:
        h = xxhash.xxh3_128(HEADER)
        h.update(payload)
        return h.hexdigest()

    def blake2b(payload: bytes) -> object:
        h = blake.copy()
        h.update(HEADER)
        h.update(payload)
        return h.hexdigest()

    def copied(payload: bytes) -> object:
        h = keyed.copy()
        h.update(HEADER)
        h.update(payload)
        return h.hexdigest()

    return {
        "xxh3-128 (no secret)": xxh3,
        "keyed BLAKE2b-128, copy of a keyed state": blake2b,
        '`hmac.new(key, msg, "sha256")`': lambda p: hmac.new(KEY, HEADER + p, "sha256").digest(),
        '`hmac.digest(key, msg, "sha256")`': lambda p: hmac.digest(KEY, HEADER + p, "sha256"),
        "`HMAC.copy()` of a keyed object": copied,
        "HMAC-SHA256 from prepared pad states (chosen)": lambda p: signer.sign(0, HEADER, p),
    }


def _per_call(fn: Callable[[bytes], object], payload: bytes, calls: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            fn(payload)
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def measure(rounds: int) -> dict[tuple[str, str], float]:
    """Seconds per tag, keyed by (candidate, size label)."""
    funcs = candidates()
    samples: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        for label, size in SIZES:
            payload = os.urandom(size)
            calls = 2 if size > 1 << 20 else 2000
            names = list(funcs) if r % 2 == 0 else list(reversed(funcs))
            for name in names:
                samples.setdefault((name, label), []).append(_per_call(funcs[name], payload, calls))
    return {k: _util.median(v) for k, v in samples.items()}


def _shown(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.2f} µs"


def table(rounds: int = 7) -> str:
    """The markdown table, with the line that says where and how it was measured."""
    figures = measure(rounds)
    info = _util.machine()
    head = "| | " + " | ".join(label for label, _ in SIZES) + " |"
    lines = [head, "|---|" + "---|" * len(SIZES)]
    for name in candidates():
        cells = " | ".join(_shown(figures[name, label]) for label, _ in SIZES)
        lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        f"Per tag; nproc {info['nproc']}, {info['cpu']}, {info['python']}, "
        f"{_util.now_utc()}; medians of {rounds} rounds in alternating order, written by "
        "`benchmarks/run.py --write` (or `benchmarks/checksums.py --write`).",
    ]
    return "\n".join(lines)


def write(text: str) -> None:
    _util.replace_section(_util.REPO / "docs" / "security.md", SECTION, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/security.md's table")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    text = table(args.rounds)
    print(text)
    if args.write:
        write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
