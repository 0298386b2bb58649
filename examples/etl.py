"""Extract a CSV, transform it, load it into SQLite: a killed run never loads a row twice.

    python examples/etl.py

writes ``orders.csv`` (600 made-up orders; the first time only), then runs the job: the
extract and transform steps run once per job (``cp.step``; a re-run reuses their stored
results), and the load inserts the rows into ``warehouse.db`` in batches of 25, committing
after each. Kill it part-way (Ctrl-C or ``kill -9``) and run it again: it resumes at the
first batch not committed and ends with the same summary line, each order in the table once.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import sys
import time
from pathlib import Path

from resumable import checkpointed

SOURCE = Path("orders.csv")
WAREHOUSE = Path("warehouse.db")  # the target: a separate file from the job's own store
BATCH = 25

Order = tuple[int, str, int]  # (id, customer, amount in cents)


def write_source() -> None:
    """The input: 600 orders (written atomically, so a killed run leaves no half file)."""
    if SOURCE.exists():
        return
    tmp = SOURCE.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "customer", "amount"])
        for i in range(1, 601):
            out.writerow([i, f"customer-{i % 37:02d}", f"{(i * 7919) % 10000 / 100:.2f}"])
    os.replace(tmp, SOURCE)


def extract(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def transform(rows: list[dict[str, str]]) -> list[list[Order]]:
    """Typed rows, cents instead of floats, in batches of BATCH."""
    orders = [(int(r["id"]), r["customer"], round(float(r["amount"]) * 100)) for r in rows]
    return [orders[i : i + BATCH] for i in range(0, len(orders), BATCH)]


def load(db: sqlite3.Connection, batch: list[Order]) -> None:
    # Two databases cannot commit together: the warehouse commits first, then the job's
    # checkpoint. A kill between the two makes the next run load this batch again, so the
    # load is an idempotent upsert keyed by the order id: loading a batch twice leaves the
    # table as loading it once. (The other way: record the batch number in a table of the
    # warehouse, in the same transaction, and skip batches found there.)
    with db:  # one transaction per batch: all its rows, or none
        db.executemany(
            "INSERT INTO orders (id, customer, cents) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET customer = excluded.customer, cents = excluded.cents",
            batch,
        )
    time.sleep(0.05)  # a real warehouse is slower: leave time to press Ctrl-C


def main() -> None:
    write_source()
    db = sqlite3.connect(WAREHOUSE)
    db.execute(
        "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, customer TEXT, cents INTEGER)"
    )
    with checkpointed("etl-orders", state={"rows": 0}) as cp:
        rows = cp.step("extract", extract, SOURCE)
        batches = cp.step("transform", transform, rows)
        if cp.resumed:
            print(f"Resuming at batch {cp.position + 1} of {len(batches)}.", flush=True)
        for n, batch in cp.enumerate(batches):
            load(db, batch)
            cp.state.rows += len(batch)
            cp.commit()  # the batch is in the warehouse: record it (position and state)
            print(f"batch {n + 1}/{len(batches)} loaded", flush=True)
    count, customers, cents = db.execute(
        "SELECT count(*), count(DISTINCT customer), sum(cents) FROM orders"
    ).fetchone()
    db.close()
    print(
        f"Loaded {count} orders ({cp.state.rows} counted by the job) from {customers} "
        f"customers, {cents / 100:,.2f} in all."
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\nInterrupted. Run me again to carry on from the last committed batch.")
        sys.exit(130)
