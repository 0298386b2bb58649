"""A notebook that survives a kernel restart: run it cell by cell, or top to bottom.

    python examples/notebook.py

or open it in Jupyter / VS Code, where each ``# %%`` marker starts a cell. The expensive
function is ``@resumable``: re-running its cell (or the whole notebook after a kernel restart)
returns the stored results at once. The parameter sweep is a ``checkpointed`` loop: interrupt
the kernel (or press Ctrl-C) part-way, run the cell again, and it carries on from there. Both
live in ``notebook.db`` beside the notebook, not in memory, so a restart loses nothing.
"""

# %% Setup: one store file for the whole notebook.
from __future__ import annotations

import math
import random
import time

from resumable import checkpointed, resumable

STORE = "sqlite:///notebook.db"


# %% An expensive function: each finished call is stored, and never runs again.
@resumable(store=STORE)
def simulate(seed: int, steps: int) -> list[float]:
    """A random walk (stands in for an hour-long simulation)."""
    time.sleep(0.2)
    rng = random.Random(seed)
    walk = [0.0]
    for _ in range(steps):
        walk.append(walk[-1] + rng.gauss(0, 1))
    return walk


# %% Run it for a few seeds: slow the first time, instant when the cell runs again.
started = time.perf_counter()
walks = {seed: simulate(seed, 1000) for seed in range(4)}
print(f"4 walks in {time.perf_counter() - started:.2f} s (stored ones cost nothing)")


# %% A parameter sweep that resumes where it was interrupted.
def score(drift: float) -> float:
    time.sleep(0.05)
    return sum(abs(x + drift * i) for walk in walks.values() for i, x in enumerate(walk))


drifts = [round(-0.1 + 0.01 * k, 2) for k in range(21)]
with checkpointed("drift-sweep", store=STORE, state={"scores": {}}, every=1) as sweep:
    for drift in sweep.iterate(drifts, progress=True):
        sweep.state.scores[drift] = score(drift)
scores: dict[float, float] = sweep.state.scores

# %% Results: the same whether the sweep ran in one go or over several sessions.
best = min(scores, key=scores.__getitem__)
print(f"{len(scores)} drifts scored; the best is {best:+.2f} (score {math.log(scores[best]):.4f})")
