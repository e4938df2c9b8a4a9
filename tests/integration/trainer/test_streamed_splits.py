"""Splits are streamed from PostgreSQL a batch at a time, into files: memory flat in their size."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.trainer import store
from services.trainer.handler import TrainerHandler
from services.trainer.records import Outcome
from services.trainer.training import Job
from shared.errors import PermanentError
from shared.messages import TrainingDatasetReady, TrainingParams
from shared.settings import TrainerSettings
from tests.plugins.datasets import create_dataset, create_request

pytestmark = pytest.mark.integration

PER_CLASS = {"vine": 9, "ground": 8, "grass": 7}


async def test_split_batches_is_split_images_a_batch_at_a_time(pool: Any) -> None:
    dataset_id = await create_dataset(pool, per_class=PER_CLASS, fractions=(1.0, 0.0, 0.0))
    whole = await store.split_images(pool, dataset_id, "train")
    sizes, streamed = [], []
    async with contextlib.aclosing(store.split_batches(pool, dataset_id, "train", 5)) as batches:
        async for rows in batches:
            sizes.append(len(rows))
            streamed.extend(rows)
    assert sizes == [5, 5, 5, 5, 4]
    assert streamed == whole
    assert await store.split_tags(pool, dataset_id, "train") == [tag for _, tag, _ in whole]


async def test_the_trainer_never_holds_more_than_a_batch_of_encoded_images(
    pool: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[int] = []
    stream = store.split_batches

    async def spied(*args: Any) -> Any:
        async with contextlib.aclosing(stream(*args)) as batches:
            async for rows in batches:
                read.append(len(rows))
                yield rows

    def whole_split(*_: Any) -> Any:
        raise AssertionError("a whole split read into memory at once")

    monkeypatch.setattr(store, "split_batches", spied)
    monkeypatch.setattr(store, "split_images", whole_split)
    seen: list[Job] = []
    sizes: list[list[int]] = []

    async def stand_in(self: Any, job: Job, msg: Any, lease: Any) -> Outcome:
        seen.append(job)
        sizes.append(file_sizes(job.train.folder))
        raise PermanentError("stopped by the test after reading the input")

    monkeypatch.setattr(TrainerHandler, "_train_in_thread", stand_in)
    root = tmp_path / "cache"
    settings = TrainerSettings(_env_file=None, cache_dir=str(root), min_train_images=4)  # type: ignore[call-arg]
    handler = TrainerHandler(pool, settings=settings, read_batch=4)
    dataset_id = await create_dataset(pool, per_class=PER_CLASS)
    request_id = await create_request(pool, {"training": {}})
    params = TrainingParams(architecture="ResNet50", epochs=1, batch_size=4, image_size=32)
    msg = TrainingDatasetReady(request_id=request_id, dataset_id=dataset_id, training=params)
    with pytest.raises(PermanentError, match="stopped by the test"):
        await handler(msg)

    (job,) = seen
    n_train = len(await store.split_tags(pool, dataset_id, "train"))
    n_val = len(await store.split_tags(pool, dataset_id, "val"))
    assert sum(read) == n_train + n_val
    assert max(read) <= 4, "more rows than a batch in one round trip"
    assert not job.train.images and not job.val.images, "no encoded image kept in memory"
    assert len(job.train) == n_train and len(job.val) == n_val
    assert len(sizes[0]) == n_train
    assert set(sizes[0]) == {32 * 32 * 3 * 4}, "resized float32 pixels"
    expected = [params_index(tag) for tag in await store.split_tags(pool, dataset_id, "train")]
    assert list(job.train.labels) == expected
    assert np.asarray(job.train.labels).dtype == np.int32
    assert not list(root.iterdir()), "the files are removed when the training ends"


def file_sizes(folder: str) -> list[int]:
    return [f.stat().st_size for f in Path(folder).iterdir()]


def exists(folder: str) -> bool:
    return Path(folder).exists()


def params_index(tag: str) -> int:
    return list(PER_CLASS).index(tag)


async def test_without_a_cache_dir_the_files_go_to_a_temporary_directory_removed_after(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders: list[str] = []

    async def stand_in(self: Any, job: Job, msg: Any, lease: Any) -> Outcome:
        folders.append(job.train.folder)
        assert file_sizes(job.train.folder)
        raise PermanentError("stopped by the test after reading the input")

    monkeypatch.setattr(TrainerHandler, "_train_in_thread", stand_in)
    settings = TrainerSettings(_env_file=None, cache_dir="", min_train_images=4)  # type: ignore[call-arg]
    handler = TrainerHandler(pool, settings=settings)
    dataset_id = await create_dataset(pool, per_class=PER_CLASS)
    request_id = await create_request(pool, {"training": {}})
    params = TrainingParams(architecture="ResNet50", epochs=1, batch_size=4, image_size=32)
    msg = TrainingDatasetReady(request_id=request_id, dataset_id=dataset_id, training=params)
    with pytest.raises(PermanentError, match="stopped by the test"):
        await handler(msg)
    (folder,) = folders
    assert str(request_id) in folder
    assert not exists(folder)
