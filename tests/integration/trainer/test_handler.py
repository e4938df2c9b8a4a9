"""The trainer's handler against a real PostgreSQL: training, registry, resume, errors."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import numpy as np
import pytest

from services.trainer import store
from services.trainer.handler import TrainerHandler
from services.trainer.records import Hooks, Outcome, TrainingAbandoned
from services.trainer.training import Job, train
from shared import weight_store
from shared.errors import PermanentError, RetryableError
from shared.images import decode_images
from shared.messages import ModelReady, TrainingDatasetReady, TrainingParams
from shared.model_cache import ModelCache
from shared.settings import TrainerSettings
from tests.plugins import rows
from tests.plugins.datasets import create_dataset, create_request

pytestmark = pytest.mark.integration

SMALL = {"vine": 8, "ground": 8, "grass": 8}
# Shared by the tests of this module, as one trainer process shares it between requests:
# later trainings reuse the network the first one traced.
MODELS: ModelCache[Any, Any] = ModelCache(2)


def trainer_settings(**kw: Any) -> TrainerSettings:
    return TrainerSettings(_env_file=None, **kw)  # type: ignore[call-arg]


def ready(
    dataset_id: int, request_id: uuid.UUID | None = None, **params: Any
) -> TrainingDatasetReady:
    training = TrainingParams(
        **{
            "architecture": "ResNet50",
            "epochs": 2,
            "batch_size": 8,
            "image_size": 32,
            "min_images_per_epoch": 0,
            **params,
        }
    )
    return TrainingDatasetReady(
        request_id=request_id or uuid.uuid4(),
        dataset_id=dataset_id,
        training=training,
    )


async def test_unusable_datasets_fail_with_a_clear_reason(pool: Any) -> None:
    handler = TrainerHandler(pool, models=MODELS, settings=trainer_settings(min_train_images=6))
    tiny = await create_dataset(pool, per_class={"vine": 2, "ground": 2, "grass": 1})
    with pytest.raises(PermanentError, match=rf"dataset {tiny} has \d training images; at least 6"):
        await handler(ready(tiny))
    one_class = await create_dataset(pool, per_class={"vine": 10, "ground": 0, "grass": 0})
    with pytest.raises(PermanentError, match="all of one class"):
        await handler(ready(one_class))
    with pytest.raises(PermanentError, match="dataset 99999 does not exist"):
        await handler(ready(99999))
    missing = await create_dataset(pool, per_class=SMALL)
    with pytest.raises(PermanentError, match=r"ImageNet weights .* not in the Keras cache"):
        await handler(ready(missing, weights="imagenet"))
    with pytest.raises(PermanentError, match="--weights PATH is off on this trainer"):
        await handler(ready(missing, weights="/nonexistent/base.weights.h5"))
    assert await pool.fetchval("SELECT count(*) FROM models WHERE status = 'training'") == 0


@pytest.mark.slow
async def test_trains_records_registry_and_reemits_on_redelivery(pool: Any) -> None:
    dataset_id = await create_dataset(pool, per_class=SMALL)
    request_id = await create_request(pool, {"training": {}})
    handler = TrainerHandler(
        pool, models=MODELS, settings=trainer_settings(weight_part_bytes=1 << 20)
    )
    msg = ready(dataset_id, request_id, epochs=2, seed=7)

    out = await handler(msg)

    assert isinstance(out, ModelReady)
    assert (out.request_id, out.dataset_id) == (request_id, dataset_id)
    model = await pool.fetchrow("SELECT * FROM models WHERE id = $1", out.model_id)
    assert model["status"] == "trained"
    assert model["architecture"] == "ResNet50"
    assert list(model["class_names"]) == ["vine", "ground", "grass"]
    assert list(model["input_shape"]) == [32, 32, 3]
    assert model["hyperparams"]["epochs"] == 2 and model["hyperparams"]["seed"] == 7
    assert 0.5 <= model["hyperparams"]["bn_momentum"] < 0.99
    assert set(model["library_versions"]) >= {"tensorflow", "keras"}
    assert model["train_seconds"] > 0 and model["images_per_second"] > 0
    assert 0 < model["finish_seconds"] < model["train_seconds"]  # 2 epochs vs 1 pass + 1 val
    assert model["best_epoch"] in (1, 2)
    assert {"val_loss", "val_accuracy", "final_val_accuracy", "stopped"} <= set(
        model["final_metrics"]
    )
    assert model["weights_bytes"] > 90 * 2**20 and len(model["weights_sha256"]) == 64
    parts = await pool.fetchval(
        "SELECT count(*) FROM model_weights WHERE model_id = $1", out.model_id
    )
    assert parts > 90  # 1 MiB parts
    epochs = await pool.fetch(
        "SELECT * FROM training_epochs WHERE model_id = $1 ORDER BY epoch", out.model_id
    )
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(r["loss"] is not None and r["val_loss"] is not None for r in epochs)
    assert all(r["seconds"] > 0 and r["learning_rate"] > 0 for r in epochs)
    # Checkpoints are dropped once the final weights are stored.
    assert await pool.fetchval("SELECT count(*) FROM model_checkpoints") == 0
    request = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", request_id)
    assert (request["stage"], request["progress"]) == ("training", "training 2/2")
    assert (request["progress_done"], request["progress_total"]) == (2, 2)
    assert request["model_id"] == out.model_id and request["dataset_id"] == dataset_id

    # Redelivered after the commit: the same model again, nothing duplicated, no training.
    def must_not_train(*_: Any) -> Outcome:
        raise AssertionError("a trained request must not train again")

    again = await TrainerHandler(
        pool, models=MODELS, settings=trainer_settings(), run=must_not_train
    )(msg)
    assert again.model_id == out.model_id
    assert await pool.fetchval("SELECT count(*) FROM models") == 1
    assert await pool.fetchval("SELECT count(*) FROM training_epochs") == 2

    # The stored weights load back (checksum verified) and predict like the trained model.
    loaded, spec, row = await weight_store.load_model(pool, out.model_id)
    assert spec.class_names == ("vine", "ground", "grass") and row["id"] == out.model_id
    probs = loaded(np.zeros((1, 32, 32, 3), np.float32), training=False)
    assert np.allclose(np.sum(probs, axis=1), 1.0, atol=1e-4)


class StopAfter:
    """Runs the real training but stops it (like SIGTERM) once ``epochs`` epochs are committed."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.seen: list[int] = []

    def __call__(self, job: Job, hooks: Hooks, stop: threading.Event) -> Outcome:
        self.seen.append(job.checkpoint_epoch)
        outer = self

        class Stopping:
            def restore(self, *a: Any) -> bool:
                return hooks.restore(*a)

            def load_best(self, *a: Any) -> None:
                hooks.load_best(*a)

            def epoch_end(self, result: Any, *a: Any) -> None:
                hooks.epoch_end(result, *a)
                if result.epoch >= outer.epochs:
                    stop.set()

        return train(job, Stopping(), stop)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_interrupted_training_resumes_after_the_last_checkpoint(pool: Any) -> None:
    dataset_id = await create_dataset(pool, per_class=SMALL)
    msg = ready(dataset_id, epochs=3, early_stopping_patience=10)
    first = StopAfter(1)
    with pytest.raises(RetryableError, match="interrupted"):
        await TrainerHandler(pool, models=MODELS, settings=trainer_settings(), run=first)(msg)
    model_id = await pool.fetchval("SELECT id FROM models")
    row = await pool.fetchrow("SELECT status, checkpoint_epoch FROM models")
    assert (row["status"], row["checkpoint_epoch"]) == ("training", 1)
    assert await rows.checkpoint_epochs(pool, model_id) == [1]
    # A stale epoch row past the checkpoint (crash between commits) must not survive.
    await pool.execute(
        "INSERT INTO training_epochs (model_id, epoch, loss) VALUES ($1, 2, 9.9)", model_id
    )

    resumed_from: list[int] = []

    def record(job: Job, hooks: Hooks, stop: threading.Event) -> Outcome:
        resumed_from.append(job.checkpoint_epoch)
        assert [r.epoch for r in job.history] == [1]
        return train(job, hooks, stop)

    out = await TrainerHandler(pool, models=MODELS, settings=trainer_settings(), run=record)(msg)

    assert resumed_from == [1] and out.model_id == model_id
    epochs = await pool.fetch("SELECT epoch, loss FROM training_epochs ORDER BY epoch")
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert all(r["loss"] != 9.9 for r in epochs)
    assert await pool.fetchval("SELECT count(*) FROM models") == 1
    assert await pool.fetchval("SELECT status FROM models") == "trained"


async def test_abandoned_run_raises_retryable(pool: Any) -> None:
    dataset_id = await create_dataset(pool, per_class=SMALL)

    def abandoned(job: Job, hooks: Hooks, stop: threading.Event) -> Outcome:
        raise TrainingAbandoned("stop requested")

    with pytest.raises(RetryableError):
        await TrainerHandler(pool, models=MODELS, settings=trainer_settings(), run=abandoned)(
            ready(dataset_id)
        )
    assert await pool.fetchval("SELECT status FROM models") == "training"


@pytest.mark.slow
async def test_inference_mode_accuracy_on_held_out_images_is_well_above_chance(
    pool: Any,
) -> None:
    """BatchNorm statistics must not lag behind (training from scratch, few images)."""
    per_class = {"vine": 30, "ground": 30, "grass": 30}
    dataset_id = await create_dataset(pool, per_class=per_class, fractions=(0.6, 0.15, 0.25))
    handler = TrainerHandler(pool, models=MODELS, settings=trainer_settings())
    msg = ready(
        dataset_id, epochs=4, batch_size=8, image_size=32, learning_rate=1e-3, augment=False
    )
    out = await handler(msg)

    model, spec, _ = await weight_store.load_model(pool, out.model_id)
    rows = await store.split_images(pool, dataset_id, "test")
    x = decode_images([data for data, _, _ in rows], spec.image_size)
    truth = np.array([spec.class_names.index(tag) for _, tag, _ in rows])
    predicted = np.argmax(np.asarray(model(x, training=False)), axis=1)
    accuracy = float(np.mean(predicted == truth))
    predicted_classes = len(set(predicted.tolist()))
    assert len(truth) >= 20
    assert accuracy >= 0.6, (accuracy, predicted.tolist())  # chance: 0.33
    assert predicted_classes == 3
