"""Thumbnails for a folder of photos, with a progress bar: the specification's photo batch.

    python examples/photo_batch.py

makes 48 small JPEGs in ``photos/`` (the first time only), then a 128-pixel thumbnail of each
in ``thumbnails/``, with a line per photo in ``manifest.tsv``, and prints a summary. Press
Ctrl-C (or ``kill -9`` it) part-way and run it again: it resumes after the last committed
photo, the bar starting there, and prints the same summary as an uninterrupted run. A third
run makes nothing: the batch is complete.

A photo whose thumbnail was made after the last commit is made again on the next run, which
overwrites the same file. The manifest is written through ``cp.open``: its length is
committed with the position, and a re-run truncates it back to that length, so it lists
each photo exactly once however the batch was killed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

from resumable import checkpointed

PHOTOS = Path("photos")
THUMBS = Path("thumbnails")
MANIFEST = Path("manifest.tsv")  # name, size in pixels, bytes: a line per photo
COUNT = 48


def make_photos() -> list[Path]:
    """Draw the sample photos that are missing (atomically: a killed run leaves no half file)."""
    PHOTOS.mkdir(exist_ok=True)
    paths = []
    for i in range(COUNT):
        path = PHOTOS / f"IMG_{i:04d}.jpg"
        if not path.exists():
            image = Image.new("RGB", (640, 480), (40 + 4 * i, 90, 200 - 3 * i))
            ImageDraw.Draw(image).ellipse((80 + 5 * i, 60, 400 + 3 * i, 420), fill=(250, 200, 40))
            tmp = path.with_suffix(".tmp")
            image.save(tmp, "JPEG", quality=85)
            os.replace(tmp, path)
        paths.append(path)
    return paths


def thumbnail(path: Path) -> tuple[Path, str]:
    """Write a thumbnail of one photo (re-making one gives the same file): its path and size."""
    out = THUMBS / path.name
    with Image.open(path) as image:
        image.thumbnail((128, 128))
        image.save(out, "JPEG", quality=80)
        size = f"{image.width}x{image.height}"
    time.sleep(0.03)  # a real photo takes longer: leave time to press Ctrl-C
    return out, size


def main() -> None:
    photos = make_photos()
    THUMBS.mkdir(exist_ok=True)
    # every=5: commit position and state after every 5 photos (and at least once a second).
    with checkpointed("photo-batch", state={"done": 0, "bytes": 0}, every=5) as cp:
        # A run that resumes, or finds the batch complete, says so on stderr by itself.
        if not (cp.resumed or cp.completed_before):
            print(f"Making thumbnails of {len(photos)} photos.", flush=True)
        manifest = cp.open(MANIFEST, "w")  # "w": empty on the first run only
        for path in cp.iterate(photos, progress=True):
            out, size = thumbnail(path)
            manifest.write(f"{path.name}\t{size}\t{out.stat().st_size}\n")
            cp.state.done += 1
            cp.state.bytes += out.stat().st_size
    print(
        f"Done: {cp.state.done} thumbnails, {cp.state.bytes:,} bytes in {THUMBS}/, "
        f"listed in {MANIFEST}."
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\nInterrupted. Run me again to carry on from the last committed photo.")
        sys.exit(130)
