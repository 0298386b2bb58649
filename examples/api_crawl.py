"""Crawl a rate-limited API: transient errors are retried, permanent ones set aside.

    python examples/api_crawl.py

fetches 120 records from a fake in-process API (no network) that allows 200 requests a
second, answers "429 Too Many Requests" now and then, and "404 Not Found" for a few ids.
``cp.map(..., retry=..., on_error="skip")`` retries the 429s with tenacity (backoff, only
for that error), records every record as it arrives, and sets the 404s aside: the job ends
FAILED with them in ``cp.failed``. Run it again and only those ids are tried again; kill it
(Ctrl-C, ``kill -9``) part-way and the next run fetches only what was not recorded. The last
line is the same either way.
"""

from __future__ import annotations

import sys
import threading
import time
import zlib

import tenacity

from resumable import checkpointed

IDS = list(range(1, 121))


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
        time.sleep(0.01)  # the network
        return {"id": record_id, "crc": zlib.crc32(str(record_id).encode())}


API = FakeAPI(rate=200)

# Retry only the 429s: wait 10 ms, 20 ms, 40 ms ... (at most 0.5 s, with jitter), up to 30 times.
RETRY = tenacity.Retrying(
    retry=tenacity.retry_if_exception_type(RateLimited),
    wait=tenacity.wait_exponential(multiplier=0.01, max=0.5) + tenacity.wait_random(0, 0.01),
    stop=tenacity.stop_after_attempt(30),
)


def fetch(record_id: int) -> dict[str, object]:
    return API.get(record_id)


def main() -> None:
    with checkpointed("crawl-records") as cp:
        if cp.resumed:
            print("Resuming: only the records not fetched before are requested.", flush=True)
        results = cp.map(fetch, IDS, key=lambda i: i, workers=8, retry=RETRY, on_error="skip")
    print(f"{API.requests} requests made in this run.")
    fetched = []
    for record_id, result in zip(IDS, results, strict=True):
        if record_id in cp.failed:  # its slot holds the exception
            print(f"set aside: record {record_id}: {result}")
        else:
            fetched.append(result)
    print(
        f"Fetched {len(fetched)} of {len(IDS)} records; set aside for the next run: "
        f"{sorted(cp.failed)}."
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\nInterrupted. Run me again to fetch only what was not recorded.")
        sys.exit(130)
