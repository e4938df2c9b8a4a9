"""A training that fails for good leaves no checkpoint behind (they only serve to resume)."""

from __future__ import annotations

from typing import Any

import pytest

from services.trainer.handler import TrainerHandler
from services.trainer.records import Outcome
from services.trainer.training import Job
from shared.errors import PermanentError
from shared.messages import TrainingDatasetReady, TrainingParams
from shared.settings import TrainerSettings
from tests.plugins.datasets import create_dataset, create_request

pytestmark = pytest.mark.integration


async def test_a_failed_training_removes_its_checkpoints(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fails_after_a_checkpoint(_: Any, job: Job, msg: Any, lease: Any) -> Outcome:
        model_id = lease.model_id
        await pool.execute(
            "INSERT INTO model_checkpoints (model_id, epoch, part, bytes) VALUES ($1, 1, 0, $2)",
            model_id,
            b"checkpoint",
        )
        await pool.execute("UPDATE models SET checkpoint_epoch = 1 WHERE id = $1", model_id)
        raise PermanentError("diverged: loss is NaN")

    monkeypatch.setattr(TrainerHandler, "_train_in_thread", fails_after_a_checkpoint)
    settings = TrainerSettings(_env_file=None, min_train_images=4)  # type: ignore[call-arg]
    handler = TrainerHandler(pool, settings=settings)
    dataset_id = await create_dataset(pool, per_class={"vine": 8, "ground": 8, "grass": 8})
    request_id = await create_request(pool, {"training": {}})
    params = TrainingParams(architecture="ResNet50", epochs=2, batch_size=4, image_size=32)
    msg = TrainingDatasetReady(request_id=request_id, dataset_id=dataset_id, training=params)
    with pytest.raises(PermanentError, match="diverged"):
        await handler(msg)
    model = await pool.fetchrow("SELECT id, status FROM models WHERE request_id = $1", request_id)
    assert model["status"] == "failed"
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM model_checkpoints WHERE model_id = $1", model["id"]
        )
        == 0
    )
