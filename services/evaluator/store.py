"""All of the evaluator's SQL.

An evaluation is written in one transaction: the ``evaluations`` row, one ``predictions``
row per image, the champion decision with its history, and the request's final status.

Training images are never scored again: an evaluation of a dataset other than the
model's own held-out ``test`` split leaves out every image (same sha256) of the model's
own dataset, whatever its split there, so a later date range measures new photos only and
stays disjoint from the test split it is compared with. How many were left out is stored
in ``evaluations.n_excluded`` (0 for the model's own test split).
``evaluations`` is unique on (model, dataset, split): a redelivered message (or a second
evaluator racing on the same message) finds the committed row and re-emits it instead of
writing a second one.

The champion decision after each evaluation follows ``shared.champions`` (its docstring
and the README state the rule).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np
import numpy.typing as npt

from services.evaluator.metrics import Metrics
from shared import champions, db
from shared.errors import PermanentError
from shared.request_state import Progress, Stage, Status

logger = logging.getLogger(__name__)

STAGE = Stage.EVALUATING


@dataclass(frozen=True)
class ImageRef:
    sha256: str
    tag: str


@dataclass(frozen=True)
class Promotion:
    class_set: str
    model_id: int
    evaluation_id: int
    macro_f1: float
    previous_model_id: int | None
    previous_macro_f1: float | None


@dataclass(frozen=True)
class StoredEvaluation:
    id: int
    model_id: int
    dataset_id: int
    split: str
    accuracy: float
    macro_f1: float
    n_images: int
    created: bool  # False: it was already there (redelivery) and nothing was written
    promotion: Promotion | None = None
    # Images left out as images of the model's own dataset; None: evaluated before that
    # rule existed (and some of them were scored).
    n_excluded: int | None = 0


@dataclass(frozen=True)
class Listing:
    """What :func:`list_images` found in a dataset split for one model."""

    images: list[ImageRef]  # to score, in a stable order
    skipped: int  # left out: a tag the model does not know
    excluded: int  # left out: in the model's own dataset (it was trained on that range)
    model_dataset_id: int | None  # the model's own dataset (None when the split is empty)


def class_set(class_names: Sequence[str]) -> str:
    """The champion key: sorted class names joined by commas (same as SQL ``class_set()``)."""
    return ",".join(sorted(class_names))


def beats(challenger_f1: float, champion_f1: float, margin: float) -> bool:
    """Does the challenger's macro F1 beat the champion's by ``margin`` (strictly if 0)?"""
    if margin <= 0:
        return challenger_f1 > champion_f1
    # Tolerance: 0.81 vs 0.80 with margin 0.01 counts as a win despite float rounding.
    return challenger_f1 - champion_f1 >= margin - 1e-12


# -- reads ------------------------------------------------------------------------------------


async def find_evaluation(
    con: asyncpg.Connection | db.Pool, model_id: int, dataset_id: int, split: str
) -> StoredEvaluation | None:
    row = await con.fetchrow(
        "SELECT id, model_id, dataset_id, split, accuracy, macro_f1, n_images, n_excluded"
        " FROM evaluations WHERE model_id = $1 AND dataset_id = $2 AND split = $3",
        model_id,
        dataset_id,
        split,
    )
    return None if row is None else _stored(row, created=False)


async def list_images(
    con: asyncpg.Connection | db.Pool,
    dataset_id: int,
    split: str,
    class_names: Sequence[str],
    *,
    model_id: int,
) -> Listing:
    """Images of a dataset split ('all' = every split) to score model ``model_id`` on.

    Left out, and counted: images that are also in the model's own dataset (unless this
    *is* the model's own ``test`` split: the held-out images, never trained on), then
    images whose tag is not one of the model's classes.
    """
    rows = await con.fetch(
        "SELECT di.sha256, di.tag, m.dataset_id AS model_dataset_id,"
        " (own.sha256 IS NOT NULL AND NOT (di.dataset_id = m.dataset_id AND $2 = 'test'))"
        " AS trained_range"
        " FROM dataset_images di"
        " JOIN models m ON m.id = $3"
        " LEFT JOIN dataset_images own ON own.dataset_id = m.dataset_id"
        " AND own.sha256 = di.sha256"
        " WHERE di.dataset_id = $1 AND ($2 = 'all' OR di.split = $2)"
        " ORDER BY di.sha256",
        dataset_id,
        split,
        model_id,
    )
    known = set(class_names)
    fresh = [r for r in rows if not r["trained_range"]]
    refs = [ImageRef(r["sha256"], r["tag"]) for r in fresh if r["tag"] in known]
    return Listing(
        images=refs,
        skipped=len(fresh) - len(refs),
        excluded=len(rows) - len(fresh),
        model_dataset_id=rows[0]["model_dataset_id"] if rows else None,
    )


async def image_bytes(con: asyncpg.Connection | db.Pool, shas: Sequence[str]) -> list[bytes]:
    """The stored bytes of these images, in the order asked."""
    rows = await con.fetch(
        "SELECT sha256, bytes FROM images WHERE sha256 = ANY($1::text[])", list(shas)
    )
    found = {r["sha256"]: r["bytes"] for r in rows}
    missing = [s for s in shas if s not in found]
    if missing:
        raise PermanentError(f"{len(missing)} image(s) missing from the images table")
    return [found[s] for s in shas]


# -- request status -----------------------------------------------------------------------------


async def mark_started(pool: db.Pool, request_id: uuid.UUID, model_id: int) -> None:
    await db.set_stage(pool, request_id, STAGE, "loading model", model_id=model_id)


async def mark_progress(pool: db.Pool, request_id: uuid.UUID, done: int, total: int) -> None:
    await db.set_progress(pool, request_id, Progress("scoring", done, total))


async def mark_done(
    con: asyncpg.Connection | db.Pool, request_id: uuid.UUID, evaluation_id: int
) -> None:
    """The request succeeded with this evaluation (no-op if it already ended)."""
    await db.set_stage(
        con, request_id, Stage.DONE, None, status=Status.SUCCEEDED, evaluation_id=evaluation_id
    )


# -- the one write ----------------------------------------------------------------------------


async def save_evaluation(
    pool: db.Pool,
    *,
    request_id: uuid.UUID,
    model_id: int,
    dataset_id: int,
    split: str,
    metrics: Metrics,
    images_per_second: float | None,
    images: Sequence[ImageRef],
    probabilities: npt.NDArray[np.floating],
    promotion_margin: float,
    n_excluded: int = 0,
) -> StoredEvaluation:
    """Evaluation + predictions + champion decision + request done, all or nothing."""
    if len(images) != len(probabilities):
        raise ValueError(f"{len(images)} images but {len(probabilities)} probability rows")
    async with pool.acquire() as con, con.transaction():
        evaluation_id = await con.fetchval(
            "INSERT INTO evaluations (model_id, dataset_id, split, request_id, accuracy, loss,"
            " macro_f1, balanced_accuracy, per_class, confusion_matrix, class_names, n_images,"
            " images_per_second, n_excluded)"
            " VALUES ($1, $2, $3, (SELECT id FROM training_requests WHERE id = $4),"
            " $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            " ON CONFLICT (model_id, dataset_id, split) DO NOTHING RETURNING id",
            model_id,
            dataset_id,
            split,
            request_id,
            metrics.accuracy,
            metrics.loss,
            metrics.macro_f1,
            metrics.balanced_accuracy,
            metrics.per_class_json(),
            metrics.confusion_matrix,
            list(metrics.class_names),
            metrics.n_images,
            images_per_second,
            n_excluded,
        )
        if evaluation_id is None:
            # Another delivery of the same work committed first: keep its row, write nothing.
            existing = await find_evaluation(con, model_id, dataset_id, split)
            assert existing is not None
            await mark_done(con, request_id, existing.id)
            return existing

        await _insert_predictions(con, evaluation_id, images, probabilities, metrics.class_names)
        promotion = await _decide_champion(
            con, class_set(metrics.class_names), dataset_id, split, promotion_margin
        )
        await mark_done(con, request_id, evaluation_id)
    return StoredEvaluation(
        id=evaluation_id,
        model_id=model_id,
        dataset_id=dataset_id,
        split=split,
        accuracy=metrics.accuracy,
        macro_f1=metrics.macro_f1,
        n_images=metrics.n_images,
        created=True,
        promotion=promotion,
        n_excluded=n_excluded,
    )


def _prediction_records(
    evaluation_id: int,
    images: Sequence[ImageRef],
    probabilities: npt.NDArray[np.floating],
    class_names: Sequence[str],
) -> list[tuple[int, str, str, str, dict[str, float]]]:
    predicted = np.asarray(probabilities).argmax(axis=1)
    records = []
    for ref, probs, best in zip(images, probabilities, predicted, strict=True):
        by_class = {name: round(float(p), 6) for name, p in zip(class_names, probs, strict=True)}
        records.append((evaluation_id, ref.sha256, ref.tag, class_names[int(best)], by_class))
    return records


async def _insert_predictions(
    con: asyncpg.Connection,
    evaluation_id: int,
    images: Sequence[ImageRef],
    probabilities: npt.NDArray[np.floating],
    class_names: Sequence[str],
) -> None:
    """All prediction rows in one statement (arrays unnested server-side)."""
    records = _prediction_records(evaluation_id, images, probabilities, class_names)
    if not records:
        return
    _, shas, truths, predicted, probs = zip(*records, strict=True)
    await con.execute(
        "INSERT INTO predictions (evaluation_id, sha256, true_label, predicted, probabilities)"
        " SELECT $1, u.sha256, u.truth, u.predicted, u.probs::jsonb"
        " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])"
        " AS u(sha256, truth, predicted, probs)",
        evaluation_id,
        list(shas),
        list(truths),
        list(predicted),
        [json.dumps(p) for p in probs],
    )


async def _decide_champion(
    con: asyncpg.Connection, key: str, dataset_id: int, split: str, margin: float
) -> Promotion | None:
    """The rule of ``shared.champions`` after an evaluation of (``dataset_id``, ``split``)."""
    await champions.lock(con, key)
    champion = await champions.current(con, key)
    if champion is not None and champion["reason"] == champions.PROMOTED:
        return None  # chosen by hand: evaluations do not replace it
    reason = champions.EVALUATION
    if await champions.reference(con) is not None:
        if not await champions.on_reference(con, dataset_id, split):
            return None  # not comparable with the pinned reference range
        reason = champions.REFERENCE
    best = await con.fetchrow(
        "SELECT e.id, e.model_id, e.macro_f1 FROM evaluations e JOIN models m ON m.id = e.model_id"
        " WHERE e.dataset_id = $1 AND e.split = $2 AND class_set(e.class_names) = $3"
        " AND e.macro_f1 IS NOT NULL AND m.status = 'trained'"
        " ORDER BY e.macro_f1 DESC, e.created_at, e.id LIMIT 1",
        dataset_id,
        split,
        key,
    )
    if best is None:
        return None
    previous_model_id: int | None = None
    previous_f1: float | None = None
    if champion is not None:
        previous_model_id = champion["model_id"]
        if previous_model_id == best["model_id"]:
            return None
        previous_f1 = await con.fetchval(
            "SELECT macro_f1 FROM evaluations WHERE model_id = $1 AND dataset_id = $2"
            " AND split = $3",
            previous_model_id,
            dataset_id,
            split,
        )
        if previous_f1 is None:
            if reason == champions.REFERENCE and champion["reason"] != champions.REFERENCE:
                pass  # a champion chosen before the pin gives way to the reference's best
            else:
                logger.info(
                    "champion %s: model %d was never evaluated on dataset %d/%s; no comparison",
                    key,
                    previous_model_id,
                    dataset_id,
                    split,
                )
                return None
        elif not beats(best["macro_f1"], previous_f1, margin):
            return None

    await champions.record(
        con,
        key,
        champions.Change(
            class_set=key,
            model_id=best["model_id"],
            reason=reason,
            evaluation_id=best["id"],
            macro_f1=best["macro_f1"],
            previous_model_id=previous_model_id,
            previous_macro_f1=previous_f1,
        ),
    )
    promotion = Promotion(
        class_set=key,
        model_id=best["model_id"],
        evaluation_id=best["id"],
        macro_f1=best["macro_f1"],
        previous_model_id=previous_model_id,
        previous_macro_f1=previous_f1,
    )
    logger.info(
        "champion %s: model %d (macro F1 %.4f, %s) replaces %s (%s) on dataset %d/%s",
        key,
        promotion.model_id,
        promotion.macro_f1,
        reason,
        previous_model_id,
        "-" if previous_f1 is None else f"{previous_f1:.4f}",
        dataset_id,
        split,
    )
    return promotion


def _stored(row: asyncpg.Record, *, created: bool) -> StoredEvaluation:
    return StoredEvaluation(
        id=row["id"],
        model_id=row["model_id"],
        dataset_id=row["dataset_id"],
        split=row["split"],
        accuracy=row["accuracy"],
        macro_f1=row["macro_f1"],
        n_images=row["n_images"],
        created=created,
        n_excluded=row["n_excluded"],
    )
