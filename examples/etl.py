"""Stream a CSV into SQLite, rejects to a file: a killed run loads no row twice, rejects none.

    python examples/etl.py

"downloads" ``orders.csv`` (600 made-up orders, a few of them bad) once per job
(``cp.step``), then reads it line by line with ``csv.reader(cp.lines(...))``: a re-run seeks
to the first line not committed, however large the file. Good rows are buffered and inserted
into ``warehouse.db`` by a ``cp.before_commit`` function, 25 lines at a time; bad rows go to
``rejects.csv`` through ``cp.open``; the counts are a ``Counter`` in ``cp.state``. Kill it
part-way (Ctrl-C or ``kill -9``) and run it again: it ends with the same summary line, each
order in the table once and each reject in ``rejects.csv`` once.

What each output guarantees:

- ``rejects.csv`` and the counts: exactly once. The file's length and the counts are
  committed with the line position; a re-run truncates the file back to that length.
- ``warehouse.db``: at least once, made exactly once by the upsert. Two databases cannot
  commit together: the warehouse commits first, then the job's checkpoint, and a kill
  between the two makes the next run insert those rows again. Keyed by the order id, a row
  inserted twice leaves the table as inserting it once.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

from resumable import checkpointed

SOURCE = Path("orders.csv")
WAREHOUSE = Path("warehouse.db")  # the target: a separate file from the job's own store
REJECTS = Path("rejects.csv")
HEADER = ["id", "customer", "amount"]
BATCH = 25  # lines per commit, so rows per insert

UPSERT = (
    "INSERT INTO orders (id, customer, cents) VALUES (?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET customer = excluded.customer, cents = excluded.cents"
)


def extract(path: Path) -> str:
    """The export, as a download would write it: atomically, so a kill leaves no half file."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        for i in range(1, 601):
            amount = "n/a" if i % 41 == 0 else f"{(i * 7919) % 10000 / 100:.2f}"
            out.writerow([i, f"customer-{i % 37:02d}", amount])
    os.replace(tmp, path)
    return str(path)


def main() -> None:
    db = sqlite3.connect(WAREHOUSE)
    db.execute(
        "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, customer TEXT, cents INTEGER)"
    )
    with checkpointed("etl-orders", state={"counts": Counter()}, every=BATCH) as cp:
        source = cp.step("extract", extract, SOURCE)  # once per job, even after a kill
        rejects = cp.open(REJECTS, "w", newline="")
        if rejects.tell() == 0:  # code outside the loop runs again on a re-run
            csv.writer(rejects).writerow([*HEADER, "reason"])
        pending: list[tuple[int, str, int]] = []

        @cp.before_commit
        def load() -> None:  # the rows first, then the checkpoint that counts them
            if not pending:
                return
            with db:  # one transaction: all the rows, or none
                db.executemany(UPSERT, pending)
            print(f"line {cp.position:,}: {len(pending)} row(s) loaded", flush=True)
            pending.clear()
            time.sleep(0.05)  # a real warehouse is slower: leave time to press Ctrl-C

        for row in csv.reader(cp.lines(source)):
            if row == HEADER:
                continue
            try:
                pending.append((int(row[0]), row[1], round(float(row[2]) * 100)))
                cp.state.counts["loaded"] += 1
            except ValueError as exc:
                csv.writer(rejects).writerow([*row, str(exc)])
                cp.state.counts["rejected"] += 1
    count, customers, cents = db.execute(
        "SELECT count(*), count(DISTINCT customer), sum(cents) FROM orders"
    ).fetchone()
    db.close()
    counts = cp.state.counts
    print(
        f"Loaded {count} orders ({counts['loaded']} counted by the job) from {customers} "
        f"customers, {cents / 100:,.2f} in all; {counts['rejected']} rejected to {REJECTS}."
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\nInterrupted. Run me again to carry on from the last committed line.")
        sys.exit(130)
