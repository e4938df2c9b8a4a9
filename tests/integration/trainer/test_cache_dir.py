"""TRAINER_CACHE_DIR: one cache per training, never another request's, and no stale lock."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.trainer.cache_dir import request_cache_dir
from services.trainer.dataset import training_dataset
from services.trainer.handler import TrainerHandler
from services.trainer.records import Outcome
from services.trainer.training import Job
from shared.errors import PermanentError
from shared.messages import TrainingDatasetReady, TrainingParams
from shared.settings import TrainerSettings
from tests.plugins.datasets import create_dataset, create_request

pytestmark = pytest.mark.integration


def _image_sums(job: Job, cache_dir: str) -> list[float]:
    ds = training_dataset(job.train, 32, 4, augment=False, seed=0, cache_dir=cache_dir)
    return sorted(float(x.sum()) for batch, _ in ds for x in np.asarray(batch))


class Seen:
    """Stands in for the training: reads the training input as the real one does, then stops."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    async def __call__(self, job: Job, msg: Any, lease: Any) -> Outcome:
        cached = await asyncio.to_thread(_image_sums, job, job.cache_dir)
        own = await asyncio.to_thread(_image_sums, job, "")
        self.runs.append({"cache_dir": job.cache_dir, "cached": cached, "own": own})
        raise PermanentError("stopped by the test after reading the input")


async def _run(pool: Any, handler: TrainerHandler, per_class: dict[str, int]) -> uuid.UUID:
    dataset_id = await create_dataset(pool, per_class=per_class)
    request_id = await create_request(pool, {"training": {}})
    params = TrainingParams(architecture="ResNet50", epochs=1, batch_size=4, image_size=32)
    msg = TrainingDatasetReady(request_id=request_id, dataset_id=dataset_id, training=params)
    with pytest.raises(PermanentError, match="stopped by the test"):
        await handler(msg)
    return request_id


async def test_each_request_trains_on_its_own_images_and_leaves_no_cache(
    pool: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen()
    monkeypatch.setattr(TrainerHandler, "_train_in_thread", seen)
    root = tmp_path / "tfcache"
    settings = TrainerSettings(_env_file=None, cache_dir=str(root), min_train_images=4)  # type: ignore[call-arg]
    handler = TrainerHandler(pool, settings=settings)
    await _run(pool, handler, {"vine": 8, "ground": 8, "grass": 8})
    await _run(pool, handler, {"vine": 6, "ground": 5, "grass": 7})
    first, second = seen.runs
    assert first["cached"] == first["own"]
    assert second["cached"] == second["own"]  # not the first request's images
    assert first["cache_dir"] != second["cache_dir"]
    assert not list(root.iterdir()), "caches are removed when their training ends"


async def test_a_stale_lock_of_a_killed_training_breaks_nothing(
    pool: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen()
    monkeypatch.setattr(TrainerHandler, "_train_in_thread", seen)
    root = tmp_path / "tfcache"
    root.mkdir()
    # What `kill -9` in the middle of the first epoch leaves: a lock file and a partial cache.
    (root / "train_0.lockfile").write_text("")
    (root / "train_0.data-00000-of-00001.tempstate1").write_text("partial")
    request_id = uuid.uuid4()
    stale = request_cache_dir(str(root), request_id)
    stale.mkdir()
    (stale / "train_0.lockfile").write_text("")
    settings = TrainerSettings(_env_file=None, cache_dir=str(root), min_train_images=4)  # type: ignore[call-arg]
    handler = TrainerHandler(pool, settings=settings)
    dataset_id = await create_dataset(pool, per_class={"vine": 8, "ground": 8, "grass": 8})
    await create_request(pool, {"training": {}}, request_id=request_id)
    params = TrainingParams(architecture="ResNet50", epochs=1, batch_size=4, image_size=32)
    msg = TrainingDatasetReady(request_id=request_id, dataset_id=dataset_id, training=params)
    with pytest.raises(PermanentError, match="stopped by the test"):
        await handler(msg)
    (run,) = seen.runs
    assert run["cached"] == run["own"]
    assert not stale.exists()
