"""Concurrent calls scored together: one model call for the images of several requests.

A ResNet on a CPU (or a GPU) scores a batch of 32 images in far less than 32 times one
image, so the API does not call the model per request: each request's decoded images join
a pending list, and one drain task takes up to ``max_batch`` images (an idle model waits
at most ``wait_s`` for more once the first arrived; what arrived during a model call goes
into the next call at once), runs the model in a worker thread (never on
the event loop) and hands each request its own rows. Only one model call runs at a time
per batcher: while it runs, the next batch fills up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]


@dataclass
class _Pending:
    images: Array
    future: asyncio.Future[Array]


class Batcher:
    """``await batcher(images)`` → the model's rows for ``images``, batched with others."""

    def __init__(
        self,
        predict: Callable[[Array], Array],
        *,
        max_batch: int,
        wait_s: float,
        executor: Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._predict = predict
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._executor = executor
        self._on_batch = on_batch  # called with the images of each model call
        self._pending: list[_Pending] = []
        self._queued = 0  # images in _pending
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # model calls made (tests, metrics)
        self.images = 0

    async def __call__(self, images: Array) -> Array:
        if len(images) == 0:
            return np.zeros((0, 0), np.float32)
        future: asyncio.Future[Array] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(images, future))
        self._queued += len(images)
        if self._queued >= self.max_batch:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[_Pending]:
        """Requests for the next model call: up to max_batch images, at least one request
        (a request of more images than max_batch is scored in one call of its own)."""
        taken: list[_Pending] = []
        n = 0
        while self._pending and (not taken or n + len(self._pending[0].images) <= self.max_batch):
            item = self._pending.pop(0)
            if item.future.done():  # its caller went away (client disconnected)
                self._queued -= len(item.images)
                continue
            taken.append(item)
            n += len(item.images)
        self._queued -= n
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        # Only an idle model waits for company: requests that arrived while it was busy go
        # into the next call at once (waiting then would only leave the model idle).
        if self._queued < self.max_batch and self.wait_s > 0:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.wait_s)
        while self._pending:
            taken = self._take()
            if not taken:
                continue
            try:
                batch = np.concatenate([item.images for item in taken])
                out = await loop.run_in_executor(self._executor, self._predict, batch)
            except Exception as exc:
                for item in taken:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(batch)
            if self._on_batch is not None:
                self._on_batch(len(batch))
            start = 0
            for item in taken:
                rows = out[start : start + len(item.images)]
                start += len(item.images)
                if not item.future.done():
                    item.future.set_result(rows)
