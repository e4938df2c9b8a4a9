"""The views added for psql watchers: model_registry, evaluation_summary, request_timeline."""

from __future__ import annotations

import pytest

from shared import db
from tests.integration.chouette import seed
from tests.integration.chouette.test_follow import _play_pipeline

pytestmark = pytest.mark.integration


async def test_request_timeline_has_one_row_per_change(pool: db.Pool) -> None:
    request_id = await seed.request(pool)
    await _play_pipeline(pool, request_id)
    rows = await pool.fetch("SELECT * FROM request_timeline WHERE request_id = $1", request_id)
    steps = [(r["status"], r["stage"]) for r in rows]
    assert steps[0] == ("queued", "queued")
    assert ("running", "fetching") in steps
    assert ("running", "training") in steps
    assert ("running", "evaluating") in steps
    assert steps[-1] == ("succeeded", "done")
    assert rows[-1]["seconds"] is None
    assert all(r["seconds"] >= 0 for r in rows[:-1])
    # Progress-only updates are not recorded; the ids appear when they are set.
    assert not any(r["progress"] == "fetching 30/30" for r in rows)
    assert rows[-1]["evaluation_id"] is not None


async def test_evaluation_summary_pulls_out_per_class_f1(pool: db.Pool) -> None:
    _, model_id, evaluation_id = await seed.finished_model(pool, 0.8, "ResNet101V2")
    row = await pool.fetchrow(
        "SELECT * FROM evaluation_summary WHERE evaluation_id = $1", evaluation_id
    )
    assert row["model_id"] == model_id
    assert row["architecture"] == "ResNet101V2"
    assert float(row["vine_f1"]) == pytest.approx(0.8)
    assert float(row["macro_f1"]) == pytest.approx(0.8)
