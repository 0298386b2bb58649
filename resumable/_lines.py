"""``cp.lines``: the lines of a text file, resumed by byte offset.

The file is read in binary and split at the byte ``0x0A``, each line decoded on its own, all at
C speed (``map`` over a buffered reader). That is why an encoding must write a newline as that
one byte: UTF-8, Latin-1, Shift JIS, EUC-JP, GBK and the other ASCII-compatible encodings do,
and none of their multi-byte characters contains it; UTF-16 and UTF-32 do not, and are refused.

A checkpoint records, with the position, the byte offset just past the last finished line, and
a digest of that line's bytes: a re-run seeks to the offset (O(1), whatever the file's size)
after checking that the bytes before it are still that line. The offset is read from the
reader (``tell()``) when the loop itself commits, where every line read has finished; any
other commit (``cp.commit()`` in a body, leaving the block) counts line ends from the last
committed offset instead, so it needs no bookkeeping per line.
"""

from __future__ import annotations

import codecs
import functools
import operator
import os
from collections.abc import Iterator
from typing import Any, Final

import xxhash

__all__ = ["LineFile", "check_encoding"]

_CHUNK: Final = 1 << 20


def check_encoding(encoding: object, errors: object) -> None:
    """Refuse what ``cp.lines`` cannot read: an unknown codec, or one whose newline is not 0x0A."""
    if not isinstance(encoding, str):
        raise TypeError(f"cp.lines(encoding=...) must be a str, not {encoding!r}")
    if not isinstance(errors, str):
        raise TypeError(f"cp.lines(errors=...) must be a str, not {errors!r}")
    try:
        codecs.lookup(encoding)
        codecs.lookup_error(errors)
    except LookupError as exc:
        raise ValueError(f"cp.lines: {exc}") from None
    try:
        newline = "a\r\n".encode(encoding)
    except (UnicodeError, LookupError):
        newline = b""
    if newline != b"a\r\n":
        raise ValueError(
            f"cp.lines cannot split {encoding!r} text by bytes: a newline is not the single "
            "byte 0x0A in it (UTF-16 and UTF-32 are like that). Convert the file to UTF-8, or "
            "loop with cp.iterate(open(path, encoding=...)), which resumes by counting lines"
        )


class LineFile:
    """One file read by a ``cp.lines`` loop, and where its lines end."""

    __slots__ = ("base_off", "base_pos", "decode", "file", "path")

    def __init__(self, path: str, encoding: str, errors: str) -> None:
        self.path = path
        self.file = open(path, "rb")  # noqa: SIM115 - closed by the run that reads it
        self.decode = functools.partial(str, encoding=encoding, errors=errors)
        # A position and the offset where its line ends: where counting starts.
        self.base_pos = 0
        self.base_off = 0

    def lines_from(self, position: int, offset: int) -> Iterator[str]:
        """The lines after ``offset`` (the end of line ``position``), decoded; CRLF read as LF."""
        self.file.seek(offset)
        self.base_pos, self.base_off = position, offset
        return map(_crlf, map(self.decode, self.file))

    def sync(self, position: int) -> int:
        """The offset past line ``position``, which is the last line read: the reader's place."""
        offset = self.file.tell()
        self.base_pos, self.base_off = position, offset
        return offset

    def offset_of(self, position: int) -> int | None:
        """The offset just past line ``position``, if it was read; counted from the last base."""
        if position == self.base_pos:
            return self.base_off
        if position < self.base_pos:
            return None
        found, offset = self.skip(self.base_off, position - self.base_pos, self.file.tell())
        if found < position - self.base_pos:
            return None
        self.base_pos, self.base_off = position, offset
        return offset

    def skip(self, offset: int, lines: int, limit: int | None = None) -> tuple[int, int]:
        """Count up to ``lines`` line ends from ``offset``: how many, and the offset after them.

        A last line without a newline ends at the end of the file (or at ``limit``).
        """
        fd, found = self.file.fileno(), 0
        end = os.fstat(fd).st_size if limit is None else limit
        while found < lines and offset < end:
            chunk = os.pread(fd, min(_CHUNK, end - offset), offset)
            if not chunk:
                break
            here = chunk.count(b"\n")
            if found + here < lines:
                found += here
                offset += len(chunk)
                continue
            at = -1
            for _ in range(lines - found):
                at = chunk.index(b"\n", at + 1)
            return lines, offset + at + 1
        if found < lines and offset > 0 and offset == end and not self._ends_line(offset):
            found += 1  # the last line, which has no newline
        return found, offset

    def _ends_line(self, offset: int) -> bool:
        return os.pread(self.file.fileno(), 1, offset - 1) == b"\n"

    def line_start(self, offset: int) -> int:
        """Where the line that ends at ``offset`` starts."""
        fd, end = self.file.fileno(), offset - 1  # the line's own newline is not its start
        while end > 0:
            begin = max(0, end - _CHUNK)
            at = os.pread(fd, end - begin, begin).rfind(b"\n")
            if at >= 0:
                return begin + at + 1
            end = begin
        return 0

    def entry(self, position: int, offset: int) -> dict[str, Any]:
        """What a checkpoint records of this file at ``position``: the offset, the last line."""
        start = self.line_start(offset) if offset else 0
        return {
            "at": position,
            "offset": offset,
            "from": start,
            "digest": self._digest(start, offset),
        }

    def matches(self, entry: dict[str, Any]) -> bool:
        """True if the file still has the recorded last line just before the recorded offset."""
        try:
            offset, start, digest = int(entry["offset"]), int(entry["from"]), str(entry["digest"])
        except (KeyError, TypeError, ValueError):
            return False
        size = os.fstat(self.file.fileno()).st_size
        if not 0 <= start <= offset <= size:
            return False
        if start > 0 and not self._ends_line(start):
            return False
        return self._digest(start, offset) == digest

    def _digest(self, start: int, end: int) -> str:
        h, fd = xxhash.xxh3_128(), self.file.fileno()
        while start < end:
            chunk = os.pread(fd, min(_CHUNK, end - start), start)
            if not chunk:
                break
            h.update(chunk)
            start += len(chunk)
        return h.hexdigest()

    def close(self) -> None:
        """Close the file."""
        self.file.close()


_crlf = operator.methodcaller("replace", "\r\n", "\n")
