"""Concurrent calls scored together: one model call for the images of several requests.

A ResNet on a CPU (or a GPU) scores a batch of 32 images in far less than 32 times one
image, so the API does not call the model per request: each request's images (encoded:
decoding is batched too) join a pending list, and one drain task takes up to
``max_batch`` images, runs the model in a worker thread (never on the event loop) and
hands each request its own rows. Only one model call runs at a time per batcher: while
it runs, the next batch fills up.

Before each call the model waits, at most ``wait_s``, until the batch holds as many
images as there were requests open at once lately (:class:`Concurrency`, counted by the
HTTP layer), never more than ``max_batch``. A lone client's request is scored at once;
16 clients answered together, who send their next photos within a few milliseconds, fill
calls of 16, not calls of the first few, then of the rest (a smaller batch costs more
per image).

When a call of several requests fails (an image that passed the header checks but does
not decode), each of those requests is scored again on its own, so that only the faulty
one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
Image = TypeVar("Image")


class Concurrency:
    """The ``/predict`` requests open now (received, not answered yet) and the most open
    at once within the last ``window_s``: how many an idle model may expect together.

    Counted for all models: a call may wait (at most ``wait_s``) for requests that went to
    another model than its own."""

    def __init__(self, window_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.open = 0
        self.window_s = window_s
        self._clock = clock
        self._peak = 0
        self._peak_at = clock()

    def enter(self) -> None:
        self.open += 1
        now = self._clock()
        if self.open >= self._peak or now - self._peak_at > self.window_s:
            self._peak, self._peak_at = self.open, now

    def exit(self) -> None:
        self.open -= 1

    def expected(self) -> int:
        """Requests an idle model may expect together: the recent peak, else those open."""
        if self._clock() - self._peak_at > self.window_s:
            return self.open
        return max(self._peak, self.open)


@dataclass
class _Pending(Generic[Image]):
    images: Sequence[Image]
    future: asyncio.Future[Array]


class Batcher(Generic[Image]):
    """``await batcher(images)`` → the model's rows for ``images``, batched with others:
    ``predict`` gets a list of the images of one or more calls, returns a row for each."""

    def __init__(
        self,
        predict: Callable[[list[Image]], Array],
        *,
        max_batch: int,
        wait_s: float,
        executor: Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
        concurrency: Concurrency | None = None,
    ) -> None:
        """Without ``concurrency`` (callers unknown), an idle model waits ``wait_s`` for a
        full batch once a first image is there."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._predict = predict
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._executor = executor
        self._on_batch = on_batch  # called with the images of each model call
        self._concurrency = concurrency
        self._pending: list[_Pending[Image]] = []
        self._queued = 0  # images in _pending
        self._grown = asyncio.Event()  # images were queued
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # model calls made (tests, metrics)
        self.images = 0

    async def __call__(self, images: Sequence[Image]) -> Array:
        if len(images) == 0:
            return np.zeros((0, 0), np.float32)
        future: asyncio.Future[Array] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(images, future))
        self._queued += len(images)
        self._grown.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[_Pending[Image]]:
        """Requests for the next model call: up to max_batch images, at least one request
        (a request of more images than max_batch is scored in one call of its own)."""
        taken: list[_Pending[Image]] = []
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

    async def _gather(self) -> None:
        """The wait for company before a model call: until ``target`` images are queued,
        at most ``wait_s``."""
        target = self.max_batch
        if self._concurrency is not None:
            target = min(target, self._concurrency.expected())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while self._queued < target:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._grown.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._grown.wait(), remaining)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            await self._gather()
            taken = self._take()
            if not taken:
                continue
            try:
                await self._score(loop, taken)
            except Exception as exc:
                if len(taken) == 1:
                    if not taken[0].future.done():
                        taken[0].future.set_exception(exc)
                    continue
                for item in taken:  # which one failed? Each on its own.
                    if item.future.done():
                        continue
                    try:
                        await self._score(loop, [item])
                    except Exception as alone:
                        if not item.future.done():
                            item.future.set_exception(alone)

    async def _score(self, loop: asyncio.AbstractEventLoop, taken: list[_Pending[Image]]) -> None:
        batch = [image for item in taken for image in item.images]
        out = await loop.run_in_executor(self._executor, self._predict, batch)
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
