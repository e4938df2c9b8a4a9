"""ModelReady / EvaluationDatasetReady → score the images → ModelEvaluated.

    ModelReady(model, dataset)                    → the model's held-out ``test`` split
    EvaluationDatasetReady(model, dataset, split) → that split of another date range

The model is read back from Postgres through the trainer's weight store (checksum
verified, rebuilt from its recorded spec, so preprocessing and image size are the
training ones). Nothing is written before the one transaction of
:func:`store.save_evaluation`; a failure before it (corrupt weights, no images) leaves no
evaluation and no prediction rows, and the broker layer marks the request ``failed``.
The same (model, dataset, split) a second time re-emits the stored result.

Another date range never scores the images the model was trained on: every image of the
model's own dataset is left out (``store.list_images``), counted in
``evaluations.n_excluded`` and logged; when nothing is left the request fails with
:class:`NoImagesToEvaluate`.

A network of the same shape as an earlier one (architecture, size, classes) is kept with
its traced inference graph (``shared.model_cache``): the next model's weights are read
into it instead of building and tracing again (a few seconds for a ResNet50 on CPU). A
failed evaluation does not give its network back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.evaluator import metrics, scoring, store
from shared import db
from shared.errors import PermanentError
from shared.messages import EvaluationDatasetReady, ModelEvaluated, ModelReady
from shared.model_cache import ModelCache
from shared.modeling import ModelSpec, build_model
from shared.settings import EvaluatorSettings

logger = logging.getLogger(__name__)

# (pool, model_id, build=spec → network) → (keras model, its ModelSpec, info);
# raises CorruptWeights on a bad checksum (``shared.weight_store.load_model``)
LoadModel = Callable[..., Awaitable[tuple[Any, Any, dict[str, Any]]]]
# (model, image size) → (predict batch, decode batch), warmed up: called in a worker thread
MakeScorer = Callable[[Any, int], tuple[Callable[[Any], Any], scoring.DecodeBatch]]


class NoImagesToEvaluate(PermanentError):
    """The dataset split holds no image of the model's classes that it was not trained on."""


@dataclass(frozen=True)
class Target:
    model_id: int
    dataset_id: int
    split: str


def target_of(message: ModelReady | EvaluationDatasetReady) -> Target:
    if isinstance(message, ModelReady):
        return Target(message.model_id, message.dataset_id, "test")
    return Target(message.model_id, message.dataset_id, message.split)


def graph_scorer(
    model: Any, image_size: int, *, tta: bool = False
) -> tuple[scoring.Predictor, scoring.BatchDecoder]:
    predictor = scoring.Predictor(model, image_size, tta=tta)
    decoder = scoring.BatchDecoder(image_size)
    predictor.warm_up()
    decoder.warm_up()
    return predictor, decoder


@dataclass
class Warm:
    """A network with its traced scoring functions, kept between evaluations."""

    model: Any
    predict: Callable[[Any], Any]
    decode: scoring.DecodeBatch


@dataclass
class Evaluator:
    """The evaluator's message handler; plain objects in, the next message out."""

    pool: db.Pool
    settings: EvaluatorSettings
    load_model: LoadModel
    make_scorer: MakeScorer = graph_scorer
    warm: ModelCache[ModelSpec, Warm] = field(default_factory=ModelCache)

    def __post_init__(self) -> None:
        self.warm.capacity = self.settings.model_cache

    async def __call__(self, message: ModelReady | EvaluationDatasetReady) -> ModelEvaluated:
        target = target_of(message)
        request_id = message.request_id

        existing = await store.find_evaluation(
            self.pool, target.model_id, target.dataset_id, target.split
        )
        if existing is not None:
            logger.info(
                "model %d already evaluated on dataset %d/%s (evaluation %d); re-emitting",
                target.model_id,
                target.dataset_id,
                target.split,
                existing.id,
            )
            await store.mark_done(self.pool, request_id, existing.id)
            return _evaluated(request_id, existing)

        await store.mark_started(self.pool, request_id, target.model_id)
        kept: Warm | None = None

        def build(spec: ModelSpec) -> Any:  # in load_model's worker thread
            nonlocal kept
            kept = self.warm.checkout(spec)
            return kept.model if kept is not None else build_model(spec)

        model, spec, _ = await self.load_model(self.pool, target.model_id, build=build)
        class_names: Sequence[str] = tuple(spec.class_names)
        image_size = int(spec.image_size)

        listing = await store.list_images(
            self.pool, target.dataset_id, target.split, class_names, model_id=target.model_id
        )
        images, skipped, excluded = listing.images, listing.skipped, listing.excluded
        if excluded:
            logger.info(
                "%d image(s) of dataset %d/%s are in model %d's own dataset %s (its training"
                " range); left out",
                excluded,
                target.dataset_id,
                target.split,
                target.model_id,
                listing.model_dataset_id,
            )
        if skipped:
            logger.warning(
                "%d image(s) of dataset %d/%s have a tag the model does not know; left out",
                skipped,
                target.dataset_id,
                target.split,
            )
        if not images and excluded:
            what = (
                f"{excluded} image(s) of dataset {target.dataset_id} ({target.split}) are in"
                f" its own dataset {listing.model_dataset_id}, the range it was trained on,"
                f" and the {skipped} other(s) have a class it does not know"
                if skipped
                else f"all {excluded} image(s) of dataset {target.dataset_id} ({target.split})"
                f" are in its own dataset {listing.model_dataset_id}, the range it was trained on"
            )
            raise NoImagesToEvaluate(
                f"nothing left to evaluate model {target.model_id} on: {what};"
                " evaluate it on a later date range"
            )
        if not images:
            raise NoImagesToEvaluate(
                f"dataset {target.dataset_id} has no {target.split!r} images of the classes "
                f"{', '.join(class_names)} of model {target.model_id}"
            )

        if kept is not None and kept.model is model:
            warm = kept
        else:
            warm = Warm(model, *await asyncio.to_thread(self.make_scorer, model, image_size))
        predict, decode = warm.predict, warm.decode

        async def fetch(shas: Sequence[str]) -> Sequence[bytes]:
            return await store.image_bytes(self.pool, shas)

        async def progress(done: int, total: int) -> None:
            await store.mark_progress(self.pool, request_id, done, total)

        scores = await scoring.score(
            predict,
            decode,
            fetch,
            [ref.sha256 for ref in images],
            batch_size=self.settings.batch_size,
            on_progress=progress,
        )
        index = {name: i for i, name in enumerate(class_names)}
        report = metrics.evaluate(
            [index[ref.tag] for ref in images], scores.probabilities, class_names
        )
        saved = await store.save_evaluation(
            self.pool,
            request_id=request_id,
            model_id=target.model_id,
            dataset_id=target.dataset_id,
            split=target.split,
            metrics=report,
            images_per_second=scores.images_per_second,
            images=images,
            probabilities=scores.probabilities,
            promotion_margin=self.settings.promotion_margin,
            n_excluded=excluded,
        )
        self.warm.release(spec, warm)
        logger.info(
            "evaluation %d: model %d on dataset %d/%s, %d images (%d of its training range"
            " left out), accuracy %.3f, macro F1 %.3f, balanced accuracy %.3f, %.0f images/s%s%s",
            saved.id,
            target.model_id,
            target.dataset_id,
            target.split,
            report.n_images,
            excluded,
            report.accuracy,
            report.macro_f1,
            report.balanced_accuracy,
            scores.images_per_second,
            f", absent: {', '.join(report.absent_classes)}" if report.absent_classes else "",
            "" if saved.promotion is None else f", champion now model {saved.promotion.model_id}",
        )
        return _evaluated(request_id, saved)


def _evaluated(request_id: uuid.UUID, saved: store.StoredEvaluation) -> ModelEvaluated:
    return ModelEvaluated(
        request_id=request_id,
        model_id=saved.model_id,
        dataset_id=saved.dataset_id,
        evaluation_id=saved.id,
        accuracy=saved.accuracy,
        macro_f1=saved.macro_f1,
    )
