"""Group commit: concurrent single saves reach the store as one insert."""

from __future__ import annotations

import asyncio

from memory_service.models import Memory, MemoryPoint
from memory_service.store import MemoryStore

# Bounds one write, so the saves queued behind it do not wait for a huge one.
MAX_GROUP_POINTS = 256


class GroupCommit:
    """Saves that arrive while a write is in flight wait for it and go out together in the
    next one; a lone save goes out at once, so batching never adds a timer's delay.

    Each caller is answered only after the write holding its point returned, i.e. after
    the store has it durably; a failed write fails every save in it.
    """

    def __init__(self, store: MemoryStore, max_points: int = MAX_GROUP_POINTS) -> None:
        self.store = store
        self.max_points = max_points
        self._pending: list[tuple[MemoryPoint, asyncio.Future[Memory]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, point: MemoryPoint) -> Memory:
        """What the point's id holds once stored: the point's memory, or the one a previous
        save with the same id stored."""
        future: asyncio.Future[Memory] = asyncio.get_running_loop().create_future()
        self._pending.append((point, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        # A caller that gives up (deadline, cancelled RPC) leaves its point in the write:
        # the save may still land, as any write may that its client stops waiting for.
        return await future

    async def _write_pending(self) -> None:
        while self._pending:
            group = self._pending[: self.max_points]
            del self._pending[: self.max_points]
            try:
                stored = await self.store.insert_new([point for point, _ in group])
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), memory in zip(group, stored, strict=True):
                if not future.done():
                    future.set_result(memory)

    async def close(self) -> None:
        """Let the writes already taken finish."""
        if self._writer is not None:
            await asyncio.shield(self._writer)
