"""The fetcher's handler: a request for a model or an evaluation → its dataset, stored.

    TrainingRequested                    → TrainingDatasetReady
    EvaluationRequested with a range     → EvaluationDatasetReady(split="all")
    EvaluationRequested without a range  → EvaluationDatasetReady(split="test")
                                           on the model's own dataset (nothing downloaded)

Idempotent by request id: a redelivered request lists again, downloads only links not
stored yet, finds the same dataset row and emits the same message (same
``message_id``, so a consumer can recognise the duplicate).
"""

from __future__ import annotations

import logging
import time
import uuid

from services.fetcher import store
from services.fetcher.client import ChouetteClient
from services.fetcher.dataset import DatasetBuilder, FetchReport, SplitParams
from shared import db
from shared.errors import PermanentError
from shared.messages import (
    DatasetReady,
    DatasetSpec,
    EvaluationDatasetReady,
    EvaluationRequested,
    TrainingDatasetReady,
    TrainingRequested,
)
from shared.request_state import Progress, Stage
from shared.settings import FetcherSettings

logger = logging.getLogger(__name__)

STAGE = Stage.FETCHING
# Evaluation datasets get the default split of a training request: the same range then is
# the same dataset row, whichever request fetched it first.
EVALUATION_SPLIT = SplitParams()


class ProgressWriter:
    """Writes ``fetching n/N`` to the request row, at most once per ``interval`` seconds."""

    def __init__(self, pool: db.Pool, request_id: uuid.UUID, interval: float) -> None:
        self.pool = pool
        self.request_id = request_id
        self.interval = interval
        self._last = 0.0
        self._busy = False

    async def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._busy or (done < total and now - self._last < self.interval):
            return
        self._busy, self._last = True, now
        try:
            await db.set_progress(self.pool, self.request_id, Progress(STAGE, done, total))
        finally:
            self._busy = False


class FetcherHandler:
    def __init__(self, pool: db.Pool, client: ChouetteClient, settings: FetcherSettings) -> None:
        self.pool = pool
        self.client = client
        self.settings = settings
        self.builder = DatasetBuilder(pool, client, settings)

    async def __call__(self, message: TrainingRequested | EvaluationRequested) -> DatasetReady:
        if isinstance(message, TrainingRequested):
            return await self.on_training(message)
        return await self.on_evaluation(message)

    async def on_training(self, msg: TrainingRequested) -> TrainingDatasetReady:
        await db.ensure_request(self.pool, msg.request_id, "training", msg.model_dump(mode="json"))
        params = msg.training
        split = SplitParams(params.test_fraction, params.val_fraction, params.seed)
        report = await self._fetch(msg.request_id, msg.dataset, split)
        return TrainingDatasetReady(
            message_id=_reply_id(msg),
            request_id=msg.request_id,
            dataset_id=report.dataset_id,
            training=params,
        )

    async def on_evaluation(self, msg: EvaluationRequested) -> EvaluationDatasetReady:
        rid = msg.request_id
        await db.ensure_request(self.pool, rid, "evaluation", msg.model_dump(mode="json"))
        if msg.dataset is None:
            dataset_id = await store.model_dataset(self.pool, msg.model_id)
            if dataset_id is None:
                raise PermanentError(f"model {msg.model_id} does not exist")
            await db.set_stage(
                self.pool, rid, STAGE, "held-out test split of the model's dataset",
                dataset_id=dataset_id,
            )  # fmt: skip
            logger.info("model %d: evaluating on its dataset %d", msg.model_id, dataset_id)
            split = "test"
        else:
            classes = await store.model_classes(self.pool, msg.model_id)
            if classes is None:
                raise PermanentError(f"model {msg.model_id} does not exist")
            unknown = [t for t in msg.dataset.tags if t not in classes]
            if unknown:  # scored, their images would be left out without a word
                raise PermanentError(
                    f"model {msg.model_id} was trained on {','.join(classes)} only;"
                    f" it cannot score {','.join(unknown)}"
                )
            dataset_id = (await self._fetch(rid, msg.dataset, EVALUATION_SPLIT)).dataset_id
            split = "all"
        return EvaluationDatasetReady(
            message_id=_reply_id(msg),
            request_id=rid,
            dataset_id=dataset_id,
            model_id=msg.model_id,
            split=split,
        )

    async def _fetch(
        self, request_id: uuid.UUID, spec: DatasetSpec, split: SplitParams
    ) -> FetchReport:
        await db.set_stage(self.pool, request_id, STAGE, f"{STAGE}: listing images")
        progress = ProgressWriter(self.pool, request_id, self.settings.progress_interval)
        report = await self.builder.build(spec, split, progress)
        await db.set_stage(
            self.pool,
            request_id,
            STAGE,
            Progress(STAGE, report.n_images, report.n_images),
            dataset_id=report.dataset_id,
        )
        logger.info(
            "dataset %d (%s): %d images %s%s; %d downloaded, %d already stored, "
            "%d entries without link, %d taken outside the range, rejected %s",
            report.dataset_id,
            "new" if report.created else "existing",
            report.n_images,
            report.counts,
            "" if report.n_groups is None else f" in {report.n_groups} groups",
            report.downloaded,
            report.reused,
            report.skipped,
            report.out_of_range,
            dict(report.rejected) or "none",
        )
        return report


def _reply_id(msg: TrainingRequested | EvaluationRequested) -> uuid.UUID:
    return uuid.uuid5(msg.message_id, "fetcher.DatasetReady")
