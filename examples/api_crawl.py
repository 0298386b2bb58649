"""Crawl a rate-limited API into a JSONL file that holds each record exactly once.

    python examples/api_crawl.py

fetches 120 records from a fake in-process API (no network) that allows 100 requests a
second, answers "429 Too Many Requests" to the rest, and "404 Not Found" for a few ids.
tenacity retries the 429s (backoff, only for that error); the 404s are set aside in
``cp.state.missing``, a list changed in place; each record becomes a line of
``records.jsonl``, written through ``cp.open``. Kill it part-way (Ctrl-C, ``kill -9``) and
run it again: it carries on from the last commit and ends with the same file and the same
last line as an uninterrupted run. A third run requests nothing.

What it guarantees: each record is a line of the file exactly once, and each missing id is
in the list once: the file's length and the list are committed with the position, and a
re-run cuts off what an interrupted run wrote after its last commit. Requests are at least
once: a record fetched after the last commit is requested again by the next run.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import zlib
from pathlib import Path

import tenacity

from resumable import checkpointed

IDS = list(range(1, 121))
OUT = Path("records.jsonl")


class RateLimited(Exception):
    """HTTP 429: try again later."""


class NotFound(Exception):
    """HTTP 404: trying again will not help."""


class FakeAPI:
    """An API that allows ``rate`` requests a second and refuses the rest with a 429."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_free = 0.0
        self.lock = threading.Lock()
        self.requests = 0

    def get(self, record_id: int) -> dict[str, object]:
        with self.lock:
            self.requests += 1
            now = time.monotonic()
            if now < self.next_free:
                raise RateLimited(f"429 Too Many Requests (record {record_id})")
            self.next_free = now + self.interval
        if record_id % 29 == 0:  # ids 29, 58, 87, 116 do not exist
            raise NotFound(f"404 Not Found: /records/{record_id}")
        time.sleep(0.005)  # the network
        return {"id": record_id, "crc": zlib.crc32(str(record_id).encode())}


API = FakeAPI(rate=100)

# Retry only the 429s: wait 10 ms, 20 ms, 40 ms ... (at most 0.5 s, with jitter), up to 30 times.
RETRY = tenacity.Retrying(
    retry=tenacity.retry_if_exception_type(RateLimited),
    wait=tenacity.wait_exponential(multiplier=0.01, max=0.5) + tenacity.wait_random(0, 0.01),
    stop=tenacity.stop_after_attempt(30),
)


def main() -> None:
    with checkpointed("crawl-records", state={"missing": []}) as cp:
        # Line-buffered, so `tail -f records.jsonl` shows each record as it arrives.
        out = cp.open(OUT, "w", buffering=1)
        for record_id in cp.iterate(IDS):
            try:
                record = RETRY(API.get, record_id)
            except NotFound as exc:
                print(f"set aside: record {record_id}: {exc}", flush=True)
                cp.state.missing.append(record_id)
                continue
            out.write(json.dumps(record) + "\n")
    print(f"{API.requests} requests made in this run.")
    ids = [json.loads(line)["id"] for line in OUT.read_text().splitlines()]
    print(
        f"{len(ids)} lines in {OUT}, {len(set(ids))} distinct records of {len(IDS)}; "
        f"not found: {cp.state.missing}."
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\nInterrupted. Run me again to carry on from the last commit.")
        sys.exit(130)
