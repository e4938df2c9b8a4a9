"""The champion on comparable evaluations: a pinned reference range, manual promotion,
the evaluator's decisions under both, and the history (real PostgreSQL, no network)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from chouette.errors import UsageError
from services.evaluator import store
from services.evaluator.metrics import Metrics
from shared import db
from shared.settings import Settings
from tests.integration.chouette import seed
from tests.integration.chouette.helpers import chouette
from tests.integration.evaluator import rows

pytestmark = pytest.mark.integration

REFERENCE = ("2024-04-01", "2024-09-30")


async def evaluate(pool: db.Pool, model_id: int, dataset_id: int, split: str, f1: float) -> None:
    """An evaluation committed through the evaluator's own store (its champion decision)."""
    n = len(rows.CLASSES)
    await store.save_evaluation(
        pool,
        request_id=uuid.uuid4(),
        model_id=model_id,
        dataset_id=dataset_id,
        split=split,
        metrics=Metrics(
            class_names=rows.CLASSES,
            n_images=n,
            accuracy=f1,
            macro_f1=f1,
            balanced_accuracy=f1,
            per_class={},
            confusion_matrix=np.eye(n, dtype=int).tolist(),
            loss=1.0,
        ),
        images_per_second=None,
        images=[],
        probabilities=np.zeros((0, n), np.float32),
        promotion_margin=0.01,
    )


async def champion(pool: db.Pool) -> tuple[int, str]:
    row = await pool.fetchrow("SELECT model_id, reason FROM champions")
    return row["model_id"], row["reason"]


async def test_reference_range_and_promotion_choose_the_champion(
    pool: db.Pool, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    easy = await seed.dataset(pool, "2021-05-01", "2021-05-31")  # the simulator's easy images
    ref = await seed.dataset(pool, *REFERENCE)  # real photos of a later season
    other = await seed.dataset(pool, "2025-04-01", "2025-04-30")
    e, r1, r2, r3, r4 = [(await rows.model_row(pool, easy))[1] for _ in range(5)]

    # Default rule: the easy model, perfect on its own test split, becomes champion and the
    # others, scored on the reference range only, are never compared with it.
    await evaluate(pool, e, easy, "test", 1.0)
    await evaluate(pool, r1, ref, "all", 0.70)
    await evaluate(pool, r2, ref, "all", 0.85)
    assert await champion(pool) == (e, "evaluation")

    assert await chouette(settings, "champion", "--reference", *REFERENCE) == 0
    out = capsys.readouterr().out
    assert (
        f"champion grass,ground,vine: model {r2} (reference, macro F1 0.8500) (was model {e})"
        in out
    )
    assert await champion(pool) == (r2, "reference")
    assert f"reference range: {REFERENCE[0]}..{REFERENCE[1]}" in out

    # With the reference pinned: an evaluation elsewhere changes nothing, a better one of the
    # reference range (by the margin) takes over.
    await evaluate(pool, r3, other, "all", 0.99)
    await evaluate(pool, r3, easy, "test", 1.0)
    assert await champion(pool) == (r2, "reference")
    await evaluate(pool, r3, ref, "all", 0.855)  # better, not by the margin
    assert await champion(pool) == (r2, "reference")
    await evaluate(pool, r3, ref, "all", 0.90)  # already evaluated there: the same row
    await evaluate(pool, r4, ref, "all", 0.90)
    assert await champion(pool) == (r4, "reference")

    # Promoted by hand: no evaluation replaces it; pinning again decides on the reference.
    assert await chouette(settings, "promote", str(r1)) == 0
    assert await champion(pool) == (r1, "promoted")
    await evaluate(pool, e, ref, "all", 0.99)
    assert await champion(pool) == (r1, "promoted")
    assert await chouette(settings, "champion", "--reference", *REFERENCE) == 0
    assert await champion(pool) == (e, "reference")  # 0.99 on the reference range
    capsys.readouterr()

    assert await chouette(settings, "champion", "--json") == 0
    state = json.loads(capsys.readouterr().out)
    assert state["reference"] == {"start_date": REFERENCE[0], "end_date": REFERENCE[1]}
    [board] = state["champions"]
    assert (board["model_id"], board["reason"], board["promotions"]) == (e, "reference", 5)
    assert (board["eval_start_date"], board["eval_end_date"]) == REFERENCE

    history = await pool.fetch(
        "SELECT model_id, previous_model_id, reason FROM champion_history ORDER BY id"
    )
    assert [(h["model_id"], h["previous_model_id"], h["reason"]) for h in history] == [
        (e, None, "evaluation"),
        (r2, e, "reference"),
        (r4, r2, "reference"),
        (r1, r4, "promoted"),
        (e, r1, "reference"),
    ]

    # Unpinned: the shared-dataset rule again, the champion stays until beaten.
    assert await chouette(settings, "champion", "--no-reference") == 0
    assert "reference range: none" in capsys.readouterr().out
    assert await champion(pool) == (e, "reference")


async def test_promote_and_reference_refuse_bad_input(
    pool: db.Pool, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from chouette.errors import CommandFailed

    with pytest.raises(CommandFailed, match="no model 999"):
        await chouette(settings, "promote", "999")
    dataset = await seed.dataset(pool)
    _, untrained = await rows.model_row(pool, dataset, status="training")
    with pytest.raises(CommandFailed, match=f"model {untrained} is training, not trained"):
        await chouette(settings, "promote", str(untrained))
    with pytest.raises(UsageError, match="start 2024-09-30 is after end 2024-04-01"):
        await chouette(settings, "champion", "--reference", "2024-09-30", "2024-04-01")
    with pytest.raises(UsageError, match="two YYYY-MM-DD dates"):
        await chouette(settings, "champion", "--reference", "2024-04-01", "soon")
    # Pinned before any evaluation of the range: nothing chosen yet, and the user is told.
    assert await chouette(settings, "champion", "--reference", *REFERENCE) == 0
    assert "no evaluation of 2024-04-01..2024-09-30 yet" in capsys.readouterr().err
    assert await pool.fetchval("SELECT count(*) FROM champions") == 0
