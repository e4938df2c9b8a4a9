"""Concurrent calls scored together: one model call for the images of several requests.

A ResNet on a CPU (or a GPU) scores a batch of 32 images in far less than 32 times one
image, so the API does not call the model per request: each request's images (encoded:
decoding is batched too) join a pending list, and one drain task takes up to
``max_batch`` images, runs the model in a worker thread (never on the event loop) and
hands each request its own rows. Only one model call runs at a time per batcher: while
it runs, the next batch fills up, and goes into the next call at once.

An idle model waits, at most ``wait_s``, only for requests the server has already
received and is still reading (:class:`Arrivals`): a lone request is scored at once,
and a burst of requests (16 clients answered together send their next photos together)
fills one call instead of starting it with the first few.

When a call of several requests fails (an image that passed the header checks but does
not decode), each of those requests is scored again on its own, so that only the faulty
one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
Image = TypeVar("Image")


class Arrivals:
    """Requests received whose images have not reached a batcher yet (their bodies are
    being read and checked), counted by the HTTP layer: what an idle model waits for."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()  # set whenever a request leaves the count

    def arrive(self, state: dict[str, Any]) -> None:
        """A request arrived (``state``: its own dict, e.g. the ASGI scope's)."""
        state["arrival_counted"] = True
        self.count += 1

    def leave(self, state: dict[str, Any]) -> None:
        """The request handed its images, or ended without (idempotent)."""
        if state.pop("arrival_counted", False):
            self.count -= 1
            self.changed.set()


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
        arrivals: Arrivals | None = None,
    ) -> None:
        """Without ``arrivals`` (callers unknown), an idle model waits ``wait_s`` for a
        full batch once a first image is there."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._predict = predict
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._executor = executor
        self._on_batch = on_batch  # called with the images of each model call
        self._arrivals = arrivals
        self._pending: list[_Pending[Image]] = []
        self._queued = 0  # images in _pending
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # model calls made (tests, metrics)
        self.images = 0

    async def __call__(self, images: Sequence[Image]) -> Array:
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
        """An idle model's wait for company, before its first call."""
        if self._arrivals is None:
            if self._queued < self.max_batch and self.wait_s > 0:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.wait_s)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while self._queued < self.max_batch and self._arrivals.count > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrivals.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrivals.changed.wait(), remaining)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        # Only an idle model waits for company: requests that arrived while it was busy go
        # into the next call at once (waiting then would only leave the model idle).
        await self._gather()
        while self._pending:
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
