"""Worker-thread plumbing for the weight streams: serialize, hash and decode off the loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


async def threaded(items: Iterator[T]) -> AsyncIterator[T]:
    """Run a blocking iterator in worker threads, one item ahead of the consumer."""
    done = object()
    pending = asyncio.ensure_future(asyncio.to_thread(next, items, done))
    try:
        while True:
            item = await pending
            if item is done:
                return
            pending = asyncio.ensure_future(asyncio.to_thread(next, items, done))
            yield item  # type: ignore[misc]
    finally:
        await settle(pending)


async def settle(future: asyncio.Future[Any] | None) -> None:
    """Wait for a helper future we no longer need, ignoring its outcome."""
    if future is None or future.done():
        return
    future.cancel()
    try:
        await future
    except BaseException:
        pass
