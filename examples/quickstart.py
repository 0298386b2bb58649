"""A batch job that survives being interrupted.

Run it, press Ctrl-C (or kill it) part-way, and run it again: it resumes where it stopped,
says so, and ends with the same totals as an uninterrupted run. Run it a third time and it
does nothing: the job is complete. Start over with `--fresh`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

from resumable import Checkpoint, checkpointed

PHOTOS = [f"photo_{i:04d}.jpg" for i in range(300)]


def thumbnail(name: str) -> int:
    """Pretend to make a thumbnail; return its size in bytes."""
    time.sleep(0.01)
    return 1000 + int(hashlib.sha256(name.encode()).hexdigest()[:3], 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fresh", action="store_true", help="discard progress, start over")
    args = parser.parse_args()

    job = checkpointed("quickstart-photos", state={"done": 0, "bytes": 0}, fresh=args.fresh)
    try:
        run(job)
    except KeyboardInterrupt:
        sys.exit(130)  # resumable has said where it paused: no traceback
    print(f"Done: {job.state.done} thumbnails, {job.state.bytes:,} bytes in all.")


def run(job: Checkpoint) -> None:
    with job as cp:
        # A resumed or finished run is announced by resumable itself, on stderr.
        if not (cp.resumed or cp.completed_before):
            print(f"Starting on {len(PHOTOS)} photos. Press Ctrl-C any time, then run me again.")
        for name in cp.iterate(PHOTOS, progress=True):
            size = thumbnail(name)
            cp.state.done += 1
            cp.state.bytes += size


if __name__ == "__main__":
    main()
