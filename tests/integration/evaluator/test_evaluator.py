"""The evaluator against real PostgreSQL (and RabbitMQ for the failure path).

Models are written by the trainer's weight store and read back by the evaluator; images
are real JPEGs in the ``images`` table.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import numpy as np
import pytest

from services.evaluator import store
from services.evaluator.handler import Evaluator, NoImagesToEvaluate
from shared import db, images, weight_store
from shared.broker import EVALUATOR, Broker
from shared.messages import EvaluationDatasetReady, ModelReady
from shared.runtime import make_failure_sink
from shared.settings import EvaluatorSettings
from tests.integration.evaluator import rows
from tests.plugins import rows as plugin_rows

pytestmark = pytest.mark.integration

TEST_SPLIT = {"vine": 4, "ground": 3, "grass": 2}
SPLITS = {"train": {"vine": 2, "ground": 2, "grass": 2}, "test": TEST_SPLIT}


def evaluator(pool: db.Pool, **overrides: Any) -> Evaluator:
    settings = EvaluatorSettings(_env_file=None, batch_size=4, **overrides)  # type: ignore[call-arg]
    return Evaluator(pool, settings, load_model=weight_store.load_model)


async def count(pool: db.Pool, table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def test_evaluates_a_model_the_weight_store_stored(pool: db.Pool) -> None:
    dataset_id, stored = await rows.dataset(pool, SPLITS)
    request_id, model_id, model = await rows.stored_model(pool, dataset_id)

    out = await evaluator(pool)(
        ModelReady(request_id=request_id, model_id=model_id, dataset_id=dataset_id)
    )

    assert (out.model_id, out.dataset_id, out.request_id) == (model_id, dataset_id, request_id)
    ev = await pool.fetchrow("SELECT * FROM evaluations WHERE id = $1", out.evaluation_id)
    assert ev["split"] == "test"
    assert ev["request_id"] == request_id
    assert ev["n_images"] == 9
    assert ev["n_excluded"] == 0  # the model's own test split: nothing to leave out
    assert ev["class_names"] == list(rows.CLASSES)
    assert (out.accuracy, out.macro_f1) == (ev["accuracy"], ev["macro_f1"])
    assert ev["loss"] > 0
    assert ev["images_per_second"] > 0
    cm = np.array(ev["confusion_matrix"])
    assert cm.shape == (3, 3)
    assert cm.sum(axis=1).tolist() == [4, 3, 2]  # rows = truth, in the model's class order
    assert {c: ev["per_class"][c]["support"] for c in rows.CLASSES} == TEST_SPLIT

    # One prediction per test image, equal to model.predict on the training decode.
    predictions = await pool.fetch(
        "SELECT sha256, true_label, predicted, probabilities FROM predictions"
        " WHERE evaluation_id = $1 ORDER BY sha256",
        out.evaluation_id,
    )
    test_images = sorted(stored["test"])
    assert [(p["sha256"], p["true_label"]) for p in predictions] == [
        (sha, tag) for sha, tag, _ in test_images
    ]
    expected = model.predict(
        images.decode_images([blob for *_, blob in test_images], 32), verbose=0
    )
    got = np.array([[p["probabilities"][c] for c in rows.CLASSES] for p in predictions])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [p["predicted"] for p in predictions] == [
        rows.CLASSES[i] for i in expected.argmax(axis=1)
    ]

    request = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", request_id)
    assert (request["status"], request["stage"]) == ("succeeded", "done")
    assert request["evaluation_id"] == out.evaluation_id

    # The first model of a class set becomes its champion.
    champion = await pool.fetchrow("SELECT * FROM champions")
    assert (champion["class_set"], champion["model_id"]) == ("grass,ground,vine", model_id)
    board = await pool.fetchrow("SELECT * FROM leaderboard")
    assert board["champion"] and board["rank_on_dataset"] == 1


async def test_a_kept_network_scores_the_next_model_with_that_models_weights(
    pool: db.Pool,
) -> None:
    dataset_id, stored = await rows.dataset(pool, SPLITS)
    handler = evaluator(pool)
    test_images = sorted(stored["test"])
    decoded = images.decode_images([blob for *_, blob in test_images], 32)
    for seed, hits in ((0, 0), (1, 1), (2, 2)):
        request_id, model_id, model = await rows.stored_model(pool, dataset_id, seed=seed)
        out = await handler(
            ModelReady(request_id=request_id, model_id=model_id, dataset_id=dataset_id)
        )
        assert handler.warm.hits == hits  # built once, then the same network reused
        predictions = await pool.fetch(
            "SELECT probabilities FROM predictions WHERE evaluation_id = $1 ORDER BY sha256",
            out.evaluation_id,
        )
        got = np.array([[p["probabilities"][c] for c in rows.CLASSES] for p in predictions])
        np.testing.assert_allclose(got, model.predict(decoded, verbose=0), atol=1e-4)
    assert len(handler.warm) == 1


async def test_redelivery_leaves_one_evaluation_and_re_emits_it(pool: db.Pool) -> None:
    dataset_id, _ = await rows.dataset(pool, SPLITS)
    request_id, model_id, _ = await rows.stored_model(pool, dataset_id)
    message = ModelReady(request_id=request_id, model_id=model_id, dataset_id=dataset_id)
    loads = 0

    async def counting_load(p: db.Pool, mid: int, **kwargs: Any) -> Any:
        nonlocal loads
        loads += 1
        return await weight_store.load_model(p, mid, **kwargs)

    first = await evaluator(pool)(message)
    handler = evaluator(pool)
    handler.load_model = counting_load
    second = await handler(message)

    assert second.evaluation_id == first.evaluation_id
    assert (second.accuracy, second.macro_f1) == (first.accuracy, first.macro_f1)
    assert loads == 0  # done work is not redone
    assert await count(pool, "evaluations") == 1
    assert await count(pool, "predictions") == 9
    assert await count(pool, "champion_history") == 1


async def test_two_deliveries_at_once_write_one_evaluation(pool: db.Pool) -> None:
    dataset_id, _ = await rows.dataset(pool, SPLITS)
    request_id, model_id, _ = await rows.stored_model(pool, dataset_id)
    message = ModelReady(request_id=request_id, model_id=model_id, dataset_id=dataset_id)

    a, b = await asyncio.gather(evaluator(pool)(message), evaluator(pool)(message))

    assert a.evaluation_id == b.evaluation_id
    assert await count(pool, "evaluations") == 1
    assert await count(pool, "predictions") == 9
    assert await count(pool, "champion_history") == 1


async def test_another_date_range_with_an_absent_class(pool: db.Pool) -> None:
    train_id, _ = await rows.dataset(pool, SPLITS)
    _, model_id, _ = await rows.stored_model(pool, train_id)
    # A later range without any grass photo; 'all' scores every split of it.
    other_id, _ = await rows.dataset(
        pool, {"train": {"vine": 2, "ground": 1}, "test": {"vine": 1, "ground": 2}}, salt="later"
    )
    request_id = await rows.request(pool, kind="evaluation")

    out = await evaluator(pool)(
        EvaluationDatasetReady(
            request_id=request_id,
            dataset_id=other_id,
            model_id=model_id,
            split="all",
        )
    )

    ev = await pool.fetchrow("SELECT * FROM evaluations WHERE id = $1", out.evaluation_id)
    assert (ev["dataset_id"], ev["split"], ev["n_images"]) == (other_id, "all", 6)
    grass = ev["per_class"]["grass"]
    assert grass["absent"] is True
    assert (grass["f1"], grass["recall"], grass["support"]) == (None, None, 0)
    present = [ev["per_class"][c]["f1"] for c in ("vine", "ground")]
    assert ev["macro_f1"] == pytest.approx(sum(present) / 2)
    assert np.array(ev["confusion_matrix"])[2].sum() == 0
    status = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", request_id)
    assert (status["status"], status["evaluation_id"]) == ("succeeded", out.evaluation_id)
    assert status["model_id"] == model_id


async def test_an_empty_split_fails_permanently_and_writes_nothing(pool: db.Pool) -> None:
    dataset_id, _ = await rows.dataset(pool, {"train": {"vine": 2, "grass": 2}})
    request_id, model_id, _ = await rows.stored_model(pool, dataset_id)

    with pytest.raises(NoImagesToEvaluate, match="no 'test' images"):
        await evaluator(pool)(
            ModelReady(request_id=request_id, model_id=model_id, dataset_id=dataset_id)
        )
    assert await count(pool, "evaluations") == 0


async def test_corrupted_weight_part_fails_the_request_and_writes_nothing(
    pool: db.Pool, broker: Broker
) -> None:
    dataset_id, _ = await rows.dataset(pool, SPLITS)
    request_id, model_id, _ = await rows.stored_model(pool, dataset_id, part_bytes=1 << 20)
    # Flip one byte in the middle of a tensor, deep inside the stream.
    part = await pool.fetchval(
        "SELECT bytes FROM model_weights WHERE model_id = $1 AND part = 3", model_id
    )
    damaged = bytearray(part)
    damaged[len(damaged) // 2] ^= 0xFF
    await pool.execute(
        "UPDATE model_weights SET bytes = $2 WHERE model_id = $1 AND part = 3",
        model_id,
        bytes(damaged),
    )

    await broker.consume(
        EVALUATOR,
        (ModelReady, EvaluationDatasetReady),
        evaluator(pool),
        on_failure=make_failure_sink(pool),
    )
    await broker.publish(
        ModelReady(request_id=request_id, model_id=model_id, dataset_id=dataset_id)
    )
    deadline = time.monotonic() + 120
    while await plugin_rows.request_status(pool, request_id) != "failed":
        assert time.monotonic() < deadline, "the request never failed"
        await asyncio.sleep(0.2)

    request = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", request_id)
    assert request["stage"] == "evaluating"
    assert f"model {model_id} is corrupt" in request["error"]
    assert "checksum" in request["error"]
    assert request["evaluation_id"] is None
    assert await pool.fetchval("SELECT status FROM models WHERE id = $1", model_id) == "corrupt"
    for table in ("evaluations", "predictions", "champions", "champion_history"):
        assert await count(pool, table) == 0, table


# -- the champion rule, at the store level (no network needed) ---------------------------------


def _metrics(macro_f1: float, classes: tuple[str, ...] = rows.CLASSES) -> Any:
    from services.evaluator.metrics import Metrics

    n = len(classes)
    return Metrics(
        class_names=classes,
        n_images=n,
        accuracy=macro_f1,
        macro_f1=macro_f1,
        balanced_accuracy=macro_f1,
        per_class={},
        confusion_matrix=np.eye(n, dtype=int).tolist(),
        loss=1.0,
    )


async def _save(
    pool: db.Pool,
    model_id: int,
    dataset_id: int,
    macro_f1: float,
    classes: tuple[str, ...] = rows.CLASSES,
    margin: float = 0.01,
) -> store.StoredEvaluation:
    return await store.save_evaluation(
        pool,
        request_id=uuid.uuid4(),
        model_id=model_id,
        dataset_id=dataset_id,
        split="test",
        metrics=_metrics(macro_f1, classes),
        images_per_second=None,
        images=[],
        probabilities=np.zeros((0, len(classes)), np.float32),
        promotion_margin=margin,
    )


async def test_champion_is_promoted_by_margin_on_a_shared_dataset(pool: db.Pool) -> None:
    d1, _ = await rows.dataset(pool, {"test": {"vine": 1}}, salt="d1")
    d2, _ = await rows.dataset(pool, {"test": {"vine": 1}}, salt="d2")
    a, b, c, d = [(await rows.model_row(pool, d1))[1] for _ in range(4)]

    async def champion() -> int:
        return int(await pool.fetchval("SELECT model_id FROM champions"))

    assert (await _save(pool, a, d1, 0.70)).promotion is not None  # none before: promoted
    assert (await _save(pool, b, d1, 0.705)).promotion is None  # better, not by the margin
    assert await champion() == a
    promoted = (await _save(pool, c, d1, 0.80)).promotion
    assert promoted is not None
    assert (promoted.model_id, promoted.previous_model_id) == (c, a)
    assert promoted.previous_macro_f1 == pytest.approx(0.70)
    # On another dataset the champion was never scored: no comparison, no promotion.
    assert (await _save(pool, d, d2, 0.95)).promotion is None
    assert await champion() == c
    # Once the champion is scored there too, the better model takes over.
    promoted = (await _save(pool, c, d2, 0.90)).promotion
    assert promoted is not None
    assert (promoted.model_id, promoted.previous_model_id) == (d, c)
    assert await champion() == d

    history = await pool.fetch(
        "SELECT model_id, previous_model_id, macro_f1, previous_macro_f1"
        " FROM champion_history ORDER BY id"
    )
    assert [(h["model_id"], h["previous_model_id"]) for h in history] == [
        (a, None),
        (c, a),
        (d, c),
    ]
    assert [h["previous_macro_f1"] for h in history] == pytest.approx([None, 0.70, 0.90])
    flags = {
        (r["model_id"], r["eval_dataset_id"]): r["champion"]
        for r in await pool.fetch("SELECT * FROM leaderboard")
    }
    assert flags[(d, d2)] and not flags[(c, d2)] and not flags[(a, d1)]
    board = await pool.fetch("SELECT * FROM champion_board")
    assert [(r["class_set"], r["model_id"], r["promotions"]) for r in board] == [
        ("grass,ground,vine", d, 3)
    ]


async def test_each_class_set_has_its_own_champion(pool: db.Pool) -> None:
    d1, _ = await rows.dataset(pool, {"test": {"vine": 1}})
    _, three = await rows.model_row(pool, d1)
    _, two = await rows.model_row(pool, d1, classes=("vine", "grass"))

    await _save(pool, three, d1, 0.6)
    await _save(pool, two, d1, 0.9, classes=("vine", "grass"))

    champions = dict(await pool.fetch("SELECT class_set, model_id FROM champions"))
    assert champions == {"grass,ground,vine": three, "grass,vine": two}


async def test_concurrent_promotions_keep_one_champion_and_a_consistent_history(
    pool: db.Pool,
) -> None:
    d1, _ = await rows.dataset(pool, {"test": {"vine": 1}})
    models = [(await rows.model_row(pool, d1))[1] for _ in range(5)]
    scores = [0.5, 0.6, 0.7, 0.8, 0.9]

    await asyncio.gather(*(_save(pool, m, d1, f1) for m, f1 in zip(models, scores, strict=True)))

    assert await pool.fetchval("SELECT model_id FROM champions") == models[-1]
    history = await pool.fetch("SELECT * FROM champion_history ORDER BY id")
    assert history[0]["previous_model_id"] is None
    for before, after in itertools.pairwise(history):
        assert after["previous_model_id"] == before["model_id"]
        assert after["macro_f1"] >= before["macro_f1"] + 0.01
