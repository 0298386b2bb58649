"""CPU-bound work on every core with ``cp.map`` over a process pool, resumable.

    python examples/parallel_map.py

stretches 200 passwords with PBKDF2 (deliberately slow hashing) on a ``ProcessPoolExecutor``.
Each result is recorded as its chunk comes back, so if you press Ctrl-C (or ``kill -9`` it)
part-way, the next run hashes only the passwords without a recorded result, and prints the
same last line as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from resumable import checkpointed

PASSWORDS = [f"correct-horse-{i}" for i in range(200)]


def stretch(password: str) -> str:
    """The CPU work: a module-level function, so the process pool can pickle it."""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), b"salt", 50_000).hex()[:16]


def main() -> None:
    workers = min(4, os.cpu_count() or 1)
    with checkpointed("stretch-passwords") as cp, ProcessPoolExecutor(workers) as pool:
        if cp.resumed:
            print("Resuming: passwords hashed by an earlier run are not hashed again.")
        digests = cp.map(stretch, PASSWORDS, executor=pool, progress=True)
    combined = hashlib.sha256("".join(digests).encode()).hexdigest()[:16]
    print(f"Hashed {len(digests)} passwords on {workers} processes; combined digest {combined}.")


if __name__ == "__main__":  # the guard process pools need: workers import this module
    try:
        main()
    except KeyboardInterrupt:
        print("\nInterrupted. Run me again to hash only what is left.")
        sys.exit(130)
