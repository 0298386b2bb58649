"""What the SQL stores (SQLite, PostgreSQL) share: text encoding, records <-> rows, counts.

The two databases refuse different text, so each store encodes it with its own mark (see
:class:`SQLRows`); the rows themselves, the order of their columns and the store-wide queries
are the same in both. Rows -> records goes through :mod:`._rows`: a damaged row makes a record
that never verifies.
"""

# ruff: noqa: S608 - statements are built from table names that are constants here

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from resumable._owner import Owner
from resumable.operation import (
    CheckpointRecord,
    OperationRecord,
    ResultRecord,
    canonical_json,
    metadata_text,
)

from . import _rows

#: Every op id a SQL store holds anything of: a record, checkpoints, results or claims.
STORED_OP_IDS = (
    "SELECT op_id FROM operations UNION SELECT op_id FROM checkpoints "
    "UNION SELECT op_id FROM results UNION SELECT op_id FROM claims"
)

#: The tables :meth:`SQLRows.count_query` counts, in the order of its columns.
COUNTED = ("operations", "checkpoints", "results")


#: The owner column of recent owners: a process writes its own over and over.
_OWNERS: dict[Owner, str] = {}


def _owner_json(owner: Owner) -> str:
    text = _OWNERS.get(owner)
    if text is None:
        if len(_OWNERS) >= 64:
            _OWNERS.clear()
        text = _OWNERS[owner] = json.dumps(owner.to_json())
    return text


def dumps(data: dict[str, Any] | None) -> str | None:
    """A meta or metadata column's value: canonical JSON, NULL for nothing."""
    return canonical_json(data) or None


class SQLRows:
    r"""Records <-> rows of the SQL stores' tables, for one database's text and placeholders.

    Strict UTF-8 cannot hold lone surrogates (which ``os.fsdecode`` makes of undecodable file
    names), so such strings, any that start with ``mark``, and (PostgreSQL) any holding a
    ``forbidden`` character are stored as ``mark`` + the hex of their surrogate-preserving
    UTF-8 bytes. The mapping is one-to-one. SQLite marks with a leading NUL; PostgreSQL text
    cannot hold NUL at all, so it marks with ``\x01`` and encodes any text holding NUL.

    Args:
        mark: the first character of an encoded text.
        forbidden: a character the database cannot hold anywhere in a text ("" for none).
        param: the driver's placeholder for a bound value (``?``, ``%s``).
    """

    __slots__ = ("forbidden", "mark", "param")

    def __init__(self, mark: str, *, forbidden: str = "", param: str) -> None:
        self.mark = mark
        self.forbidden = forbidden
        self.param = param

    def enc(self, text: str) -> str:
        """``text`` as the database can hold it."""
        if not text.startswith(self.mark) and not (self.forbidden and self.forbidden in text):
            if text.isascii():
                return text
            try:
                text.encode()
            except UnicodeEncodeError:
                pass
            else:
                return text
        return self.mark + text.encode("utf-8", "surrogatepass").hex()

    def dec(self, text: str) -> str:
        """The inverse of :meth:`enc`."""
        if text.startswith(self.mark):
            return bytes.fromhex(text[1:]).decode("utf-8", "surrogatepass")
        return text

    # --- records -> rows (the tables' columns, in order) ---------------------------------

    def operation_row(self, op: OperationRecord) -> tuple[Any, ...]:
        """The operations row of ``op``."""
        enc = self.enc
        owner = None if op.owner is None else _owner_json(op.owner)
        return (
            enc(op.op_id), enc(op.name), op.state._value_, owner, op.heartbeat,
            op.attempts, op.created, op.updated, None if op.error is None else enc(op.error),
            dumps(op.meta), op.checksum,
        )  # fmt: skip

    def checkpoint_row(self, c: CheckpointRecord, history: int) -> tuple[Any, ...]:
        """The checkpoints row of ``c``, in ring slot ``seq % history``; the payload is [8]."""
        return (
            self.enc(c.op_id), c.seq % history, c.seq, c.position, c.state._value_,
            c.progress, c.timestamp, c.serializer, c.payload, metadata_text(c.metadata) or None,
            c.checksum,
        )  # fmt: skip

    def result_row(self, r: ResultRecord) -> tuple[Any, ...]:
        """The results row of ``r``."""
        return (self.enc(r.op_id), self.enc(r.key), r.serializer, r.payload, r.created, r.checksum)

    # --- rows -> records (a damaged row makes a record that never verifies) --------------

    def text(self, value: object) -> str:
        """A text column's value for a message or a damaged record: never raises."""
        return _rows.text(value, self.dec)

    def operation(self, row: tuple[Any, ...]) -> OperationRecord:
        """The operation record of an operations row."""
        return _rows.operation(row, self.dec)

    def checkpoint(self, row: tuple[Any, ...]) -> CheckpointRecord:
        """The checkpoint record of a row of the stores' checkpoint columns."""
        return _rows.checkpoint(row, self.dec)

    def result(self, row: tuple[Any, ...]) -> ResultRecord:
        """The result record of a results row."""
        return _rows.result(row, self.dec)

    # --- store-wide reads ----------------------------------------------------------------

    def count_query(self, op_id: str | None) -> tuple[str, tuple[str, ...]]:
        """The query counting the :data:`COUNTED` tables' rows (of ``op_id`` only); its args."""
        where = f" WHERE op_id = {self.param}" if op_id is not None else ""
        query = ", ".join(f"(SELECT count(*) FROM {table}{where})" for table in COUNTED)
        args = (self.enc(op_id),) * len(COUNTED) if op_id is not None else ()
        return "SELECT " + query, args

    def tally(self, rows: Iterable[tuple[Any, ...]], prefix: str) -> dict[str, int]:
        """Results by serializer, from the rows of a store's ``COUNT_RESULTS`` query.

        A row ``(NULL, serializer, n)`` counts ``n`` keys the database matched; a row with a
        key is one stored encoded, decoded and matched against ``prefix`` here.
        """
        counts: dict[str, int] = {}
        for key, serializer, n in rows:
            if key is None or self.text(key).startswith(prefix):
                name = self.text(serializer)
                counts[name] = counts.get(name, 0) + int(n)
        return counts

    @staticmethod
    def counts(row: tuple[Any, ...]) -> dict[str, int]:
        """The answer of :meth:`count_query` by table name."""
        return dict(zip(COUNTED, map(int, row), strict=True))
