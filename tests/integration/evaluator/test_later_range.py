"""Another date range never scores the images the model was trained on.

The network is a stand-in (fixed probabilities, no TensorFlow): what is tested is which
images are scored, what is counted and stored, and the failure when nothing is left.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from services.evaluator import store
from services.evaluator.handler import Evaluator, NoImagesToEvaluate
from shared import db
from shared.messages import EvaluationDatasetReady, ModelReady
from shared.modeling import ModelSpec
from shared.settings import EvaluatorSettings
from tests.integration.evaluator import rows

pytestmark = pytest.mark.integration

# The model's own dataset: every split, the test split included, is of its training range.
OWN = {
    "train": {"vine": 3, "ground": 2, "grass": 2},
    "val": {"vine": 1, "ground": 1},
    "test": {"vine": 2, "ground": 1, "grass": 1},
}


def stand_in_evaluator(pool: db.Pool) -> tuple[Evaluator, list[int]]:
    """An evaluator whose network always answers 'vine'; also the batch sizes it scored."""
    scored: list[int] = []

    async def load_model(_pool: db.Pool, model_id: int, **_: Any) -> tuple[Any, Any, Any]:
        spec = ModelSpec(architecture="ResNet50", image_size=32, class_names=rows.CLASSES)
        return object(), spec, {"id": model_id}

    def make_scorer(_model: Any, _size: int) -> tuple[Any, Any]:
        def decode(blobs: Sequence[bytes]) -> npt.NDArray[np.float32]:
            return np.zeros((len(blobs), 1), np.float32)

        def predict(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            scored.append(len(batch))
            return np.tile(np.array([[0.8, 0.1, 0.1]], np.float32), (len(batch), 1))

        return predict, decode

    settings = EvaluatorSettings(_env_file=None, batch_size=4)  # type: ignore[call-arg]
    return Evaluator(pool, settings, load_model=load_model, make_scorer=make_scorer), scored


def later(request_id: uuid.UUID, dataset_id: int, model_id: int) -> EvaluationDatasetReady:
    return EvaluationDatasetReady(
        request_id=request_id,
        dataset_id=dataset_id,
        model_id=model_id,
        split="all",
    )


async def test_a_later_range_overlapping_the_training_range_leaves_its_images_out(
    pool: db.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    own_id, own = await rows.dataset(pool, OWN, salt="own")
    _, model_id = await rows.model_row(pool, own_id)
    own_shas = {sha for items in own.values() for sha, _, _ in items}
    # The later range starts inside the training range: its first days hold training
    # images (in whatever split the later dataset drew for them), then new ones.
    other_id, other = await rows.dataset(
        pool,
        {"train": {"vine": 2, "ground": 1, "grass": 1}, "test": {"vine": 1, "grass": 1}},
        salt="later",
        shared={"train": own["train"][:5], "val": own["val"], "test": own["test"][:1]},
    )
    fresh = sorted(
        (sha, tag) for items in other.values() for sha, tag, _ in items if sha not in own_shas
    )
    assert len(fresh) == 6
    request_id = await rows.request(pool, kind="evaluation")
    handler, scored = stand_in_evaluator(pool)

    with caplog.at_level(logging.INFO, logger="services.evaluator.handler"):
        out = await handler(later(request_id, other_id, model_id))

    ev = await pool.fetchrow("SELECT * FROM evaluations WHERE id = $1", out.evaluation_id)
    assert (ev["dataset_id"], ev["split"]) == (other_id, "all")
    assert (ev["n_images"], ev["n_excluded"]) == (6, 8)  # 5 train + 2 val + 1 test image
    assert sum(scored) == 6
    predictions = await pool.fetch(
        "SELECT sha256, true_label FROM predictions WHERE evaluation_id = $1 ORDER BY sha256",
        out.evaluation_id,
    )
    assert [(p["sha256"], p["true_label"]) for p in predictions] == fresh
    trained_on = await pool.fetchval(
        "SELECT count(*) FROM predictions p JOIN dataset_images own"
        " ON own.sha256 = p.sha256 AND own.dataset_id = $2 WHERE p.evaluation_id = $1",
        out.evaluation_id,
        own_id,
    )
    assert trained_on == 0
    assert sum(ev["per_class"][c]["support"] for c in rows.CLASSES) == 6
    assert any(
        f"8 image(s) of dataset {other_id}/all are in model {model_id}'s own dataset {own_id}"
        in r.getMessage()
        for r in caplog.records
    )
    assert any("(8 of its training range left out)" in r.getMessage() for r in caplog.records)
    summary = await pool.fetchrow(
        "SELECT n_excluded FROM evaluation_summary WHERE evaluation_id = $1", out.evaluation_id
    )
    assert summary["n_excluded"] == 8

    # A redelivery re-emits the stored evaluation with its count.
    stored = await store.find_evaluation(pool, model_id, other_id, "all")
    assert stored is not None and stored.n_excluded == 8
    again = await handler(later(request_id, other_id, model_id))
    assert again.evaluation_id == out.evaluation_id
    assert await pool.fetchval("SELECT count(*) FROM evaluations") == 1


async def test_the_models_own_test_split_is_scored_whole(pool: db.Pool) -> None:
    own_id, _ = await rows.dataset(pool, OWN, salt="own")
    request_id, model_id = await rows.model_row(pool, own_id)
    handler, scored = stand_in_evaluator(pool)

    out = await handler(ModelReady(request_id=request_id, model_id=model_id, dataset_id=own_id))

    ev = await pool.fetchrow("SELECT * FROM evaluations WHERE id = $1", out.evaluation_id)
    assert (ev["split"], ev["n_images"], ev["n_excluded"]) == ("test", 4, 0)
    assert sum(scored) == 4


@pytest.mark.parametrize("where", ["inside the training range", "the training range itself"])
async def test_a_range_of_training_images_only_fails_in_one_line(pool: db.Pool, where: str) -> None:
    own_id, own = await rows.dataset(pool, OWN, salt="own")
    _, model_id = await rows.model_row(pool, own_id)
    if where == "the training range itself":
        other_id, n = own_id, 13  # the same dates give the same dataset back
    else:
        other_id, _ = await rows.dataset(
            pool, {}, shared={"train": own["train"], "test": own["test"][:2]}
        )
        n = 9
    request_id = await rows.request(pool, kind="evaluation")
    handler, scored = stand_in_evaluator(pool)

    with pytest.raises(NoImagesToEvaluate) as caught:
        await handler(later(request_id, other_id, model_id))

    error = str(caught.value)
    assert "\n" not in error
    assert error == (
        f"nothing left to evaluate model {model_id} on: all {n} image(s) of dataset"
        f" {other_id} (all) are in its own dataset {own_id}, the range it was trained on;"
        " evaluate it on a later date range"
    )
    assert scored == []
    assert await pool.fetchval("SELECT count(*) FROM evaluations") == 0


async def test_left_out_and_unknown_classes_are_both_named(pool: db.Pool) -> None:
    own_id, own = await rows.dataset(pool, OWN, salt="own")
    _, model_id = await rows.model_row(pool, own_id)
    other_id, _ = await rows.dataset(
        pool, {"test": {"moss": 2}}, salt="moss", shared={"train": own["train"][:3]}
    )
    handler, _ = stand_in_evaluator(pool)

    with pytest.raises(NoImagesToEvaluate, match=r"3 image.* and the 2 other.* class it does not"):
        await handler(later(await rows.request(pool, kind="evaluation"), other_id, model_id))
