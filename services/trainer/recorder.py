"""What the training thread reports, written to Postgres on the event loop.

The loop (``training.train``) runs in a worker thread so AMQP heartbeats keep flowing.
:class:`LoopBridge` lets that thread run a coroutine on the service's event loop and
wait for it (``asyncio.run_coroutine_threadsafe``); :class:`Recorder` uses it for the
per-epoch commit (epoch row + checkpoint + progress) and for reading checkpoints back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from services.trainer import store
from services.trainer.records import EpochResult, TrainingAbandoned
from shared import db, weight_store
from shared.request_state import Progress

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class LoopBridge:
    """Run coroutines on ``loop`` from another thread, and wait for their result."""

    loop: asyncio.AbstractEventLoop
    stop: threading.Event
    timeout: float = 3600.0

    def run(self, make: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self.stop.is_set():
            raise TrainingAbandoned("stop requested")
        future = asyncio.run_coroutine_threadsafe(_call(make, *args), self.loop)
        return future.result(self.timeout)


async def _call(make: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await make(*args)


@dataclass
class Recorder:
    """:class:`services.trainer.training.Hooks` backed by Postgres."""

    pool: db.Pool
    bridge: LoopBridge
    request_id: uuid.UUID
    model_id: int
    epochs: int
    part_bytes: int = weight_store.DEFAULT_PART_BYTES

    # -- called from the training thread ------------------------------------------------------

    def restore(self, model: keras.Model, optimizer_variables: Sequence[Any], epoch: int) -> bool:
        return self.bridge.run(self._restore, model, optimizer_variables, epoch)

    def epoch_end(
        self,
        result: EpochResult,
        model: keras.Model,
        optimizer_variables: Sequence[Any],
        best_epoch: int,
    ) -> None:
        self.bridge.run(self._epoch_end, result, model, optimizer_variables, best_epoch)

    def load_best(self, model: keras.Model, epoch: int) -> None:
        self.bridge.run(self._restore, model, None, epoch)

    # -- on the event loop --------------------------------------------------------------------

    async def _restore(
        self, model: keras.Model, optimizer_variables: Sequence[Any] | None, epoch: int
    ) -> bool:
        async with self.pool.acquire() as con:
            restored, _ = await weight_store.load_checkpoint(
                con, self.model_id, epoch, model, optimizer_variables
            )
        return restored

    async def _epoch_end(
        self,
        result: EpochResult,
        model: keras.Model,
        optimizer_variables: Sequence[Any],
        best_epoch: int,
    ) -> None:
        # After the last epoch the model's weights are stored right away: its checkpoint
        # would only serve a crash in between, which then redoes that epoch. An earlier,
        # better epoch's checkpoint is still there to restore from.
        final = result.epoch >= self.epochs
        async with self.pool.acquire() as con, con.transaction():
            nbytes = 0
            if not final:
                nbytes = await weight_store.save_checkpoint(
                    con,
                    self.model_id,
                    result.epoch,
                    model,
                    optimizer_variables,
                    keep=[best_epoch],
                    part_bytes=self.part_bytes,
                )
            await store.record_epoch(con, self.model_id, result, best_epoch, checkpointed=not final)
            await db.set_progress(
                con, self.request_id, Progress("training", result.epoch, self.epochs)
            )
        logger.info(
            "model %d: epoch %d committed with a %.1f MiB checkpoint",
            self.model_id, result.epoch, nbytes / 2**20,
        )  # fmt: skip
