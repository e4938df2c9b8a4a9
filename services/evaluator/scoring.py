"""Batched scoring of stored images: fetch bytes, decode, run the model, overlapped.

The images come from Postgres in batches; while the model scores batch *n* (in a worker
thread, off the event loop so the AMQP heartbeat keeps flowing), batch *n + 1* is
fetched and decoded. Decoding uses the same function as training, so the model sees
the same pixels it was trained on. The model runs in inference mode through one traced
``tf.function`` with a free batch dimension (the last, smaller batch does not retrace),
warmed up before the clock starts so images/s measures scoring, not tracing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.inference import BatchDecoder, Predictor, UndecodableImage

logger = logging.getLogger(__name__)

__all__ = ["BatchDecoder", "Predictor", "Scores", "UndecodableImage", "score"]

# stored bytes of a batch of images → float32 (n, size, size, 3) RGB in 0..255
DecodeBatch = Callable[[Sequence[bytes]], npt.NDArray[np.float32]]
# sha256 list → the stored bytes, same order
FetchBytes = Callable[[Sequence[str]], Awaitable[Sequence[bytes]]]
# images done, images in all
Progress = Callable[[int, int], Awaitable[None]]

# Batches decoded ahead of the model: enough to hide fetch + decode, little memory.
PREFETCH_BATCHES = 2


@dataclass(frozen=True)
class Scores:
    probabilities: npt.NDArray[np.float32]  # (n_images, n_classes), rows in input order
    seconds: float

    @property
    def images_per_second(self) -> float:
        n = len(self.probabilities)
        return n / self.seconds if self.seconds > 0 else float("inf")


async def score(
    predict: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    decode: DecodeBatch,
    fetch: FetchBytes,
    shas: Sequence[str],
    *,
    batch_size: int,
    on_progress: Progress | None = None,
) -> Scores:
    """Probabilities for every image in ``shas`` (in that order), and the time it took."""
    if not shas:
        raise ValueError("no images to score")
    queue: asyncio.Queue[npt.NDArray[Any]] = asyncio.Queue(maxsize=PREFETCH_BATCHES)
    n_batches = -(-len(shas) // batch_size)
    outputs: list[npt.NDArray[np.float32]] = []

    async def produce() -> None:
        for start in range(0, len(shas), batch_size):
            blobs = await fetch(shas[start : start + batch_size])
            batch = await asyncio.to_thread(decode, blobs)
            await queue.put(batch)

    async def consume() -> None:
        done = 0
        for _ in range(n_batches):
            batch = await queue.get()
            outputs.append(await asyncio.to_thread(predict, batch))
            done += len(batch)
            if on_progress is not None:
                await on_progress(done, len(shas))

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as tasks:  # one failing cancels the other
            tasks.create_task(produce())
            tasks.create_task(consume())
    except ExceptionGroup as group:
        # Callers (and the broker's error mapping) expect the error itself, not a group.
        raise group.exceptions[0] from None
    seconds = time.perf_counter() - started

    probabilities = np.concatenate(outputs).astype(np.float32, copy=False)
    if probabilities.shape[0] != len(shas):
        raise RuntimeError(f"scored {probabilities.shape[0]} of {len(shas)} images")
    return Scores(probabilities, seconds)
