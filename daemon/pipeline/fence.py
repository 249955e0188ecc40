"""What keeps a replica that is no longer the leader from acting: every action, page and
scheduled run is claimed in the store under the leader's fencing epoch, in the transaction
that records it, and checked against the lease's time just before it goes out."""

from __future__ import annotations

from typing import Protocol


class Fence(Protocol):
    def may_act(self) -> bool:
        """Instant, local: this replica leads and its lease has not run out by its clock."""
        ...

    async def check(self) -> None:
        """In the caller's store transaction: the lease still has our epoch and has not
        expired on the store's clock; else `Fenced` (daemon.store.protocol), and the
        transaction rolls back."""
        ...


class Unfenced:
    """One daemon alone (its state directory is locked): it always acts."""

    def may_act(self) -> bool:
        return True

    async def check(self) -> None:
        return None
