"""Batch claims: what a store that several processes share implements (see :class:`Claims`).

The items of a shared map (or a shared step) are cut into numbered batches, the same in every
participant. A participant claims batches under a lease: the claim records its owner token, a
new epoch and an expiry; a heartbeat renews the expiry. Results are written together with the
batch's "done" mark, only if the claim is still the writer's (same owner and epoch): a
participant that was paused past its lease and taken over writes nothing.

:class:`~resumable.stores.base.Store` answers the sharing calls (``claim_batches``,
``finish_batch``, ...) with its :meth:`~resumable.stores.base.Store.claims`; each SQL dialect
has its own (``_sqlite_claims``, ``_pg_claims``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from resumable.operation import ResultRecord

__all__ = ["Claim", "Claims", "SQLClaims"]


@dataclass(frozen=True, slots=True)
class Claim:
    """One claimed batch: which batch of which group, held by whom, at which epoch."""

    op_id: str
    group: str
    batch: int
    epoch: int
    owner: str


class Claims(ABC):
    """The batch claims of one store; each method is the one of :class:`Store` it answers."""

    @abstractmethod
    def claim(
        self, op_id: str, group: str, batches: int, want: int, owner: str
    ) -> list[tuple[int, int]]:
        """:meth:`Store.claim_batches <resumable.stores.base.Store.claim_batches>`."""

    @abstractmethod
    def finish(self, claim: Claim, results: Sequence[ResultRecord], *, failed: bool) -> bool:
        """:meth:`Store.finish_batch <resumable.stores.base.Store.finish_batch>`."""

    @abstractmethod
    def reopen_failed(self, op_id: str, group: str) -> None:
        """:meth:`Store.reopen_failed <resumable.stores.base.Store.reopen_failed>`."""

    @abstractmethod
    def release(self, op_id: str, group: str, owner: str) -> None:
        """:meth:`Store.release_batches <resumable.stores.base.Store.release_batches>`."""

    @abstractmethod
    def left(self, op_id: str, group: str) -> tuple[int, float | None]:
        """:meth:`Store.batches_left <resumable.stores.base.Store.batches_left>`."""

    @abstractmethod
    def holders(self, op_id: str, group: str) -> list[str]:
        """:meth:`Store.claim_holders <resumable.stores.base.Store.claim_holders>`."""

    @abstractmethod
    def renew(self, owner: str) -> None:
        """:meth:`Store.renew_claims <resumable.stores.base.Store.renew_claims>`."""


class _Rows(Protocol):
    def fetchall(self) -> Sequence[Any]: ...


class _Executes(Protocol):
    def execute(self, query: Any, params: Any, /) -> _Rows: ...


Conn = TypeVar("Conn", bound=_Executes)


class SQLClaims(Claims, Generic[Conn]):
    """Claims in a ``claims`` table, reached through the store's connection.

    Args:
        connected: the store's connection for one call; a driver error raised in the block
            is a StoreError saying what was being done.
        lease: seconds a claim lasts unless renewed.
    """

    def __init__(
        self, connected: Callable[[str], AbstractContextManager[Conn]], lease: float
    ) -> None:
        self.connected = connected
        self.lease = lease

    def run(self, doing: str, statement: str, args: Sequence[Any]) -> None:
        """Run one ``statement`` (its own transaction)."""
        with self.connected(doing) as conn:
            conn.execute(statement, args)

    def fetch(self, doing: str, statement: str, args: Sequence[Any]) -> Sequence[Any]:
        """The rows of one ``statement``."""
        with self.connected(doing) as conn:
            return conn.execute(statement, args).fetchall()
