"""The psql examples handed to the README run against the migrated schema."""

from __future__ import annotations

import pytest

from shared import db
from tests.integration.cli import seed

pytestmark = pytest.mark.integration

EXAMPLES = [
    """SELECT request_id, kind, status, stage, progress, architecture, model_id, seconds, error
       FROM request_progress LIMIT 10""",
    """SELECT stage, status, entered_at, seconds FROM request_timeline
       WHERE request_id = $1""",
    """SELECT model_id, epoch, round(loss::numeric, 3) loss,
              round(val_accuracy::numeric, 3) val_acc, seconds
       FROM training_epochs ORDER BY model_id DESC, epoch""",
    """SELECT model_id, architecture, eval_dataset_id, split, macro_f1, accuracy, n_images,
              rank_on_dataset, champion
       FROM leaderboard LIMIT 20""",
    """SELECT model_id, architecture, start_date, end_date, image_size, epochs,
              macro_f1, accuracy, n_evaluations, champion
       FROM model_registry""",
    """SELECT evaluation_id, model_id, start_date, end_date, split, n_images, macro_f1,
              vine_f1, ground_f1, grass_f1
       FROM evaluation_summary""",
    "SELECT * FROM champion_board",
]


@pytest.mark.parametrize("sql", EXAMPLES)
async def test_example_runs_and_returns_rows(sql: str, pool: db.Pool) -> None:
    request_id, _, _ = await seed.finished_model(pool, 0.7)
    args = (request_id,) if "$1" in sql else ()
    rows = await pool.fetch(sql, *args)
    if "champion_board" not in sql:  # seeded rows promote no champion
        assert rows
