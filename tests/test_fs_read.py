"""A checked read takes a regular file whole, in one read(2), and refuses one that grew."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from resumable._fs import checked
from resumable._trust import UnsafePath


@pytest.mark.parametrize("size", [0, 1, 4096, (3 << 20) + 7])
def test_checked_read_returns_the_whole_file(tmp_path: Path, size: int) -> None:
    path = tmp_path / "r.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    got, st = checked.read_checked(None, path, path, size + 1)
    assert got == data and st.st_size == size


def test_checked_read_of_a_file_that_grew_since_its_status_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(b"x" * 100)
    real = checked.open_checked

    def growing(*args: Any, **kwargs: Any) -> tuple[int, os.stat_result]:
        fd, st = real(*args, **kwargs)
        with path.open("ab") as f:  # after the status, before the read
            f.write(b"y")
        return fd, st

    monkeypatch.setattr(checked, "open_checked", growing)
    with pytest.raises(UnsafePath, match="grew"):
        checked.read_checked(None, path, path, 1000)
