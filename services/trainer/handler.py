"""TrainingDatasetReady → a trained model in Postgres → ModelReady.

    find the request's model ── trained already? ──▶ re-emit ModelReady
      │ no
    count the train/val splits' classes, check them (clear PermanentError when unusable)
    model row (one per request) ─▶ discard epochs after the last checkpoint
    stream the splits from Postgres, a batch of rows at a time, into resized image files
      in the training's own cache directory (removed when the training ends)
    train in a worker thread (resumes after the checkpoint; epoch rows + checkpoints
      committed by the Recorder on this loop; the AMQP heartbeat keeps flowing)
    one transaction: weights parts + registry row (status trained) + progress
    return ModelReady (the broker publishes it, then acks)

On cancellation (SIGTERM after the grace period) the stop flag makes the training thread
leave at the next batch, the message stays unacked and is redelivered: the next
delivery resumes after the last committed epoch.

A request is never trained twice at once. RabbitMQ redelivers a message whose consumer
outlived ``consumer_timeout`` (to this process, on the channel aio-pika reopens, or to
another trainer), and a crashed trainer's message goes to the next one:

- in this process, a second delivery of a request being trained *joins* it and returns the
  same ``ModelReady``;
- across processes, a lease (``lease.py``) makes another trainer wait until the model is
  trained or the lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from services.trainer import store
from services.trainer.cache_dir import training_cache_dir
from services.trainer.dataset import Split
from services.trainer.image_files import SplitWriter
from services.trainer.lease import TrainingLease, new_owner
from services.trainer.recorder import LoopBridge, Recorder
from services.trainer.thread import in_training_thread
from services.trainer.training import (
    Accelerator,
    Hooks,
    Job,
    Outcome,
    TrainingAbandoned,
    configure_accelerator,
    train,
)
from shared import db, weight_store
from shared.errors import PermanentError, RetryableError
from shared.messages import ModelReady, TrainingDatasetReady, TrainingParams
from shared.model_cache import ModelCache
from shared.modeling import ModelSpec, library_versions
from shared.request_state import Progress, Stage
from shared.settings import TrainerSettings

logger = logging.getLogger(__name__)

STAGE = Stage.TRAINING

T = TypeVar("T")

TrainFn = Callable[[Job, Hooks, threading.Event], Outcome]


@dataclass
class TrainerHandler:
    """``await handler(TrainingDatasetReady)`` → :class:`ModelReady`; idempotent per request id."""

    pool: db.Pool
    settings: TrainerSettings = field(default_factory=TrainerSettings)
    accelerator: Accelerator | None = None
    run: TrainFn = train
    # "host:pid:token": the lease owner, unique per process.
    worker_id: str = field(default_factory=new_owner)
    # Set when the service shuts down (the broker's event): then a cancelled delivery
    # abandons its training; otherwise (a closed channel) the training goes on.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Compiled networks kept for the next request of the same shape (TRAINER_MODEL_CACHE).
    models: ModelCache[Hashable, Any] | None = None
    # Images read from Postgres per round trip while writing a split's files: the most
    # encoded images in memory at once.
    read_batch: int = 32
    _running: dict[uuid.UUID, asyncio.Future[ModelReady]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.models is None:
            self.models = ModelCache(self.settings.model_cache)

    async def __call__(self, msg: TrainingDatasetReady) -> ModelReady:
        """Run (or join) the request's training; the delivery only waits for it.

        The work is a task of its own: when RabbitMQ closes the channel under a long
        training (``consumer_timeout``), aio-pika cancels the delivery, not the training,
        and the redelivery joins it. Only a shutdown (``stopping`` set) abandons the work.
        """
        work = self._running.get(msg.request_id)
        if work is None:
            work = asyncio.ensure_future(self._handle(msg))
            self._running[msg.request_id] = work
            work.add_done_callback(lambda _: self._running.pop(msg.request_id, None))
            # Nobody may be waiting any more: mark a failure as retrieved.
            work.add_done_callback(lambda t: t.cancelled() or t.exception())
        else:
            logger.info("redelivered while training in this process: joining the running training")
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if self.stopping.is_set():
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
            else:
                logger.warning(
                    "delivery cancelled (channel closed?); the training goes on for its redelivery"
                )
            raise

    async def _handle(self, msg: TrainingDatasetReady) -> ModelReady:
        started = time.monotonic()
        params = msg.training
        await db.ensure_request(
            self.pool,
            msg.request_id,
            "training",
            {"dataset_id": msg.dataset_id, "training": params.model_dump(mode="json")},
        )
        done = await self._already_trained(msg)
        if done is not None:
            return done

        spec, train_split, val_split = await self._load(msg.dataset_id, params)
        # In a thread: the first call imports TensorFlow (seconds), which would stall the
        # event loop, hence the AMQP heartbeat.
        versions = await asyncio.to_thread(library_versions)
        hyperparams = params.model_dump(mode="json")
        model_row = await store.find_or_create_model(
            self.pool, msg.request_id, msg.dataset_id, spec, hyperparams, versions
        )
        model_id = model_row.id
        lease = TrainingLease(self.pool, model_id, self.worker_id, self.settings.lease_seconds)

        async def finished() -> bool:
            return await store.trained_model_id(self.pool, msg.request_id) is not None

        if not await lease.acquire(finished):
            done = await self._already_trained(msg)
            assert done is not None
            return done
        # The lease holder may have moved on while we waited: read the row again.
        model_row = await store.find_or_create_model(
            self.pool, msg.request_id, msg.dataset_id, spec, hyperparams, versions
        )
        try:
            if model_row.status != "training":
                await store.reopen_model(self.pool, model_id)
            async with self.pool.acquire() as con, con.transaction():
                await store.discard_epochs_after(con, model_id, model_row.checkpoint_epoch)
                history = await store.finished_epochs(con, model_id, model_row.checkpoint_epoch)
            await db.set_stage(
                self.pool,
                msg.request_id,
                STAGE,
                Progress("training", model_row.checkpoint_epoch, params.epochs),
                dataset_id=msg.dataset_id,
                model_id=model_id,
            )
            accelerator = self.accelerator
            if accelerator is None:
                accelerator = await asyncio.to_thread(
                    configure_accelerator,
                    mixed_precision=self.settings.gpu_mixed_precision,
                    xla=self.settings.gpu_xla,
                )
            with training_cache_dir(self.settings.cache_dir, msg.request_id) as cache_dir:
                train_split, val_split = await self._read_splits(
                    msg.dataset_id, lease, spec, cache_dir
                )
                job = Job(
                    spec=spec,
                    params=params,
                    train=train_split,
                    val=val_split,
                    history=history,
                    checkpoint_epoch=model_row.checkpoint_epoch,
                    max_seconds=max(0.0, self.settings.max_seconds - (time.monotonic() - started)),
                    cache_dir=cache_dir,
                    accelerator=accelerator,
                    models=self.models,
                )
                if model_row.checkpoint_epoch:
                    logger.info(
                        "model %d: resuming after epoch %d of %d",
                        model_id, model_row.checkpoint_epoch, params.epochs,
                    )  # fmt: skip
                outcome = await self._train_in_thread(job, msg, lease)
            await self._finish(msg, model_id, outcome, hyperparams, versions)
            if outcome.model_key is not None and self.models is not None:
                self.models.release(outcome.model_key, outcome.model)  # stored: reusable
        except PermanentError:
            await store.mark_failed(self.pool, model_id)
            raise
        finally:
            with contextlib.suppress(Exception):
                await lease.release()
        logger.info(
            "model %d trained: best epoch %d, %s, %.0f s",
            model_id, outcome.best_epoch, outcome.final_metrics, outcome.train_seconds,
        )  # fmt: skip
        return ModelReady(request_id=msg.request_id, model_id=model_id, dataset_id=msg.dataset_id)

    async def _already_trained(self, msg: TrainingDatasetReady) -> ModelReady | None:
        model_id = await store.trained_model_id(self.pool, msg.request_id)
        if model_id is None:
            return None
        logger.info("model %d already trained for this request: re-emitting ModelReady", model_id)
        await db.set_stage(
            self.pool, msg.request_id, STAGE, "trained", dataset_id=msg.dataset_id,
            model_id=model_id,
        )  # fmt: skip
        return ModelReady(request_id=msg.request_id, model_id=model_id, dataset_id=msg.dataset_id)

    async def _load(
        self, dataset_id: int, params: TrainingParams
    ) -> tuple[ModelSpec, Split, Split]:
        info = await store.dataset(self.pool, dataset_id)
        if info is None:
            raise PermanentError(f"dataset {dataset_id} does not exist")
        if len(info.tags) < 2:
            raise PermanentError(
                f"dataset {dataset_id} has a single class ({', '.join(info.tags)}); "
                "a classifier needs at least two"
            )
        try:
            spec = ModelSpec(
                architecture=params.architecture,
                image_size=params.image_size,
                class_names=info.tags,
                dropout=params.dropout,
                weights=params.weights,
            )
        except ValidationError as exc:
            raise PermanentError(f"dataset {dataset_id}: {exc.errors()[0]['msg']}") from exc
        # Labels only: the images are read once this trainer holds the lease.
        train_split = Split.of_tags(
            await store.split_tags(self.pool, dataset_id, "train"), spec.class_names
        )
        val_split = Split.of_tags(
            await store.split_tags(self.pool, dataset_id, "val"), spec.class_names
        )
        check_splits(dataset_id, train_split, val_split, spec, self.settings.min_train_images)
        return spec, train_split, val_split

    async def _read_splits(
        self, dataset_id: int, lease: TrainingLease, spec: ModelSpec, cache_dir: str
    ) -> tuple[Split, Split]:
        """The train and val splits streamed from Postgres into resized files in ``cache_dir``.

        ``read_batch`` rows per round trip, each batch decoded (in a worker thread) and
        written before the next is fetched; the lease is renewed meanwhile.
        """
        lost = threading.Event()
        renewer = asyncio.create_task(lease.keep(lost))
        try:
            splits = []
            for name in ("train", "val"):
                writer = await asyncio.to_thread(
                    SplitWriter, Path(cache_dir) / f"{name}-images", spec.image_size,
                    spec.class_names,
                )  # fmt: skip
                batches = store.split_batches(self.pool, dataset_id, name, self.read_batch)
                async with contextlib.aclosing(batches):
                    async for rows in batches:
                        await asyncio.to_thread(writer.add, rows)
                        del rows
                        if lost.is_set():
                            raise RetryableError("training lease lost while reading the images")
                splits.append(writer.split())
            logger.info(
                "dataset %d: %d training and %d validation images resized to %d px in %s",
                dataset_id, len(splits[0]), len(splits[1]), spec.image_size, cache_dir,
            )  # fmt: skip
            return splits[0], splits[1]
        finally:
            renewer.cancel()

    async def _train_in_thread(
        self, job: Job, msg: TrainingDatasetReady, lease: TrainingLease
    ) -> Outcome:
        model_id = lease.model_id
        stop = threading.Event()
        recorder = Recorder(
            pool=self.pool,
            bridge=LoopBridge(asyncio.get_running_loop(), stop),
            request_id=msg.request_id,
            model_id=model_id,
            epochs=job.params.epochs,
            part_bytes=self.settings.weight_part_bytes,
        )
        task = in_training_thread(lambda: self.run(job, recorder, stop))
        renewer = asyncio.create_task(lease.keep(stop))
        task.add_done_callback(lambda _: renewer.cancel())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # Abandoned (shutdown): the thread leaves at its next batch; nothing is acked.
            stop.set()
            logger.warning(
                "model %d: training abandoned; the request will be redelivered", model_id
            )
            try:
                await asyncio.wait({task}, timeout=self.settings.stop_grace_seconds)
            finally:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: an abandoned run's error is expected
            raise
        except TrainingAbandoned as exc:
            raise RetryableError(f"training interrupted: {exc}") from exc

    async def _finish(
        self,
        msg: TrainingDatasetReady,
        model_id: int,
        outcome: Outcome,
        hyperparams: dict[str, Any],
        versions: dict[str, str],
    ) -> None:
        extra = {
            "bn_momentum": round(outcome.bn_momentum, 4),
            "bn_recalibrated_layers": outcome.recalibrated_layers,
            "class_weights": {str(k): round(v, 4) for k, v in outcome.class_weights.items()},
        }
        last = outcome.history[-1].epoch
        async with self.pool.acquire() as con, con.transaction():
            sha, nbytes = await weight_store.store_weights(
                con, model_id, outcome.model, self.settings.weight_part_bytes
            )
            await store.finish_model(
                con,
                model_id,
                sha256=sha,
                nbytes=nbytes,
                hyperparams={**hyperparams, **extra},
                library_versions=versions,
                train_seconds=outcome.train_seconds,
                finish_seconds=outcome.finish_seconds,
                images_per_second=outcome.images_per_second,
                best_epoch=outcome.best_epoch,
                final_metrics=outcome.final_metrics,
            )
            await weight_store.delete_checkpoints(con, model_id)
            await db.set_stage(
                con, msg.request_id, STAGE, Progress("training", last, msg.training.epochs),
                dataset_id=msg.dataset_id, model_id=model_id,
            )  # fmt: skip


def check_splits(
    dataset_id: int, train_split: Split, val_split: Split, spec: ModelSpec, min_images: int
) -> None:
    """Clear, permanent reasons why a dataset cannot train a model."""
    if len(train_split) < min_images:
        raise PermanentError(
            f"dataset {dataset_id} has {len(train_split)} training images; "
            f"at least {min_images} are needed"
        )
    counts = train_split.counts(len(spec.class_names))
    present = [name for name, n in zip(spec.class_names, counts, strict=True) if n]
    if len(present) < 2:
        raise PermanentError(
            f"dataset {dataset_id}'s training images are all of one class "
            f"({', '.join(present)}); at least two classes are needed"
        )
    missing = [name for name, n in zip(spec.class_names, counts, strict=True) if not n]
    if missing:
        logger.warning(
            "dataset %d has no training images of %s: the model cannot learn them",
            dataset_id, ", ".join(missing),
        )  # fmt: skip
    if not len(val_split):
        logger.warning(
            "dataset %d has no validation images: early stopping watches the training loss",
            dataset_id,
        )
