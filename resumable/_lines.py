"""``cp.lines``: the lines of a text file, resumed by byte offset.

The lines are read as :func:`open` reads them, at the same speed: a text wrapper over the
file, with universal newlines (LF, CRLF and CR end a line, and are read as a newline). An
encoding must write LF and CR as the bytes 0x0A and 0x0D, so that line ends can
be found in the bytes: UTF-8, Latin-1, Shift JIS, EUC-JP, GBK and the other ASCII-compatible
encodings do, and none of their multi-byte characters contains them; UTF-16 and UTF-32 do
not, and are refused.

A checkpoint records, with the position, the byte offset just past the last finished line and
a digest of that line's bytes: a re-run seeks to the offset (O(1), whatever the file's size)
after checking that the bytes before it are still that line. Nothing is counted per line:
the lines are read with ``readline`` (not by iterating the wrapper, which turns ``tell()`` off),
so a commit made when every line read has finished (the loop's own, ``cp.commit()`` in a body,
a normal exit) asks the wrapper where it is; any other (leaving on an exception, the line in
flight read but not finished) counts line ends from the last committed offset.
"""

from __future__ import annotations

import codecs
import io
import os
import re
from collections.abc import Iterator
from typing import Any, Final

import xxhash

__all__ = ["LineFile", "check_encoding"]

_CHUNK: Final = 1 << 20


def check_encoding(encoding: object, errors: object) -> None:
    """Refuse what ``cp.lines`` cannot read: an unknown codec, or one with other line ends."""
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
            f"cp.lines cannot find line ends in {encoding!r} text by its bytes: a newline is "
            "not the single byte 0x0A in it (UTF-16 and UTF-32 are like that). Convert the "
            "file to UTF-8, or loop with cp.iterate(open(path, encoding=...)), which resumes "
            "by counting lines"
        )


class LineFile:
    """One file read by a ``cp.lines`` loop, and where its lines end."""

    __slots__ = ("base_off", "base_pos", "encoding", "errors", "file", "path", "text")

    def __init__(self, path: str, encoding: str, errors: str) -> None:
        self.path = path
        self.file = open(path, "rb")  # noqa: SIM115 - closed by the run that reads it
        self.encoding, self.errors = encoding, errors
        self.text: io.TextIOWrapper | None = None
        # A position and the offset where its line ends: where counting starts.
        self.base_pos = 0
        self.base_off = 0

    def lines_from(self, position: int, offset: int) -> Iterator[str]:
        """The lines after ``offset``, which is where line ``position`` ends."""
        self.file.seek(offset)
        self.base_pos, self.base_off = position, offset
        self.text = io.TextIOWrapper(self.file, self.encoding, self.errors)
        return iter(self.text.readline, "")

    def offset_of(self, position: int, *, exact: bool) -> int | None:
        """The offset just past line ``position``, or None if it cannot be known.

        ``exact``: ``position`` is the last line read, so the wrapper's place is its end.
        """
        if position < self.base_pos:
            return None
        offset = self._place() if exact else None
        if offset is None:
            found, offset = self.skip(self.base_off, position - self.base_pos)
            if found < position - self.base_pos:
                return None
        self.base_pos, self.base_off = position, offset
        return offset

    def _place(self) -> int | None:
        """The byte offset the wrapper has read up to, if it is one (at the end of a line)."""
        text = self.text
        if text is None:
            return None
        try:
            cookie = text.tell()
        except (OSError, ValueError):
            return None
        # A cookie past 2**64 carries decoder state (a CR waiting for its LF): not an offset.
        if cookie >= 1 << 64 or (cookie and not self._ends_line(cookie) and cookie != self.size()):
            return None
        return cookie

    def size(self) -> int:
        """The file's size now."""
        return os.fstat(self.file.fileno()).st_size

    def skip(self, offset: int, lines: int) -> tuple[int, int]:
        """Count up to ``lines`` line ends from ``offset``: how many, and the offset after them.

        A last line without a line end ends at the end of the file.
        """
        fd, found, size = self.file.fileno(), 0, self.size()
        while found < lines and offset < size:
            chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
            if not chunk:
                break
            if chunk[-1:] == b"\r" and offset + len(chunk) < size and len(chunk) > 1:
                chunk = chunk[:-1]  # it may be the first half of a \r\n: read it with the rest
            here = chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
            if found + here < lines:
                found += here
                offset += len(chunk)
                continue
            for end in _LINE_END.finditer(chunk):
                found += 1
                if found == lines:
                    return found, offset + end.end()
        if found < lines and 0 < offset == size and not self._ends_line(offset):
            found += 1  # the last line, which has no line end
        return found, offset

    def _ends_line(self, offset: int) -> bool:
        return os.pread(self.file.fileno(), 1, offset - 1) in (b"\n", b"\r")

    def line_start(self, offset: int) -> int:
        """Where the line that ends at ``offset`` starts."""
        fd = self.file.fileno()
        tail = os.pread(fd, 2, max(0, offset - 2))[-(min(offset, 2)) :] if offset else b""
        end = offset - (2 if tail == b"\r\n" else 1 if tail[-1:] in (b"\n", b"\r") else 0)
        while end > 0:
            begin = max(0, end - _CHUNK)
            data = os.pread(fd, end - begin, begin)
            at = max(data.rfind(b"\n"), data.rfind(b"\r"))
            if at >= 0:
                return begin + at + 1
            end = begin
        return 0

    def entry(self, position: int, offset: int) -> dict[str, Any]:
        """What a checkpoint records of this file at ``position``: the offset, the last line."""
        start = self.line_start(offset)
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
        if not 0 <= start <= offset <= self.size():
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
        (self.file if self.text is None else self.text).close()


_LINE_END = re.compile(rb"\r\n|\r|\n")
