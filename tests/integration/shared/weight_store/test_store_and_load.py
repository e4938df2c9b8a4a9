"""The weight store against a real PostgreSQL: all six networks, checkpoints, corruption."""

from __future__ import annotations

import uuid
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from shared import db, weight_store
from shared.choices import ARCHITECTURES
from shared.modeling import ModelSpec, build_model
from tests.plugins import rows
from tests.plugins.datasets import create_dataset, create_request
from tests.plugins.roles import Login

pytestmark = pytest.mark.integration

CLASSES = ("vine", "ground", "grass")


async def model_row(pool: Any, spec: ModelSpec, dataset_id: int) -> int:
    request_id = await create_request(pool, {"training": {}}, request_id=uuid.uuid4())
    return int(
        await pool.fetchval(
            "INSERT INTO models (request_id, dataset_id, architecture, hyperparams, class_names,"
            " input_shape) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            request_id,
            dataset_id,
            spec.architecture,
            {"dropout": spec.dropout, "image_size": spec.image_size},
            list(spec.class_names),
            list(spec.input_shape),
        )
    )


async def store_trained(pool: Any, model_id: int, model: keras.Model, part_bytes: int) -> None:
    async with pool.acquire() as con, con.transaction():
        sha, nbytes = await weight_store.store_weights(con, model_id, model, part_bytes)
        await con.execute(
            "UPDATE models SET status = 'trained', weights_sha256 = $2, weights_bytes = $3"
            " WHERE id = $1",
            model_id,
            sha,
            nbytes,
        )


def one_step(model: keras.Model, x: np.ndarray, y: np.ndarray, optimizer: Any = None) -> None:
    """One eager step in training mode (moves weights and BatchNorm statistics)."""
    optimizer = optimizer or keras.optimizers.SGD(0.05)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
async def test_every_architecture_round_trips_with_identical_predictions(
    pool: Any, architecture: str
) -> None:
    dataset_id = await create_dataset(pool, per_class={"vine": 1, "ground": 1, "grass": 1})
    spec = ModelSpec(architecture=architecture, image_size=32, class_names=CLASSES, dropout=0.3)
    model = build_model(spec)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    one_step(model, x, np.array([0, 1, 2, 0]))
    model_id = await model_row(pool, spec, dataset_id)
    await store_trained(pool, model_id, model, part_bytes=8 << 20)

    loaded, loaded_spec, row = await weight_store.load_model(pool, model_id)

    assert loaded_spec == spec.model_copy(update={"weights": "none"})
    assert row["status"] == "trained"
    expected = np.asarray(model(x, training=False))
    actual = np.asarray(loaded(x, training=False))
    np.testing.assert_array_equal(actual, expected)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


async def test_corrupt_weights_are_detected_and_the_model_marked(pool: Any) -> None:
    dataset_id = await create_dataset(pool, per_class={"vine": 1, "ground": 1})
    spec = ModelSpec(architecture="ResNet50", image_size=32, class_names=("vine", "ground"))
    model_id = await model_row(pool, spec, dataset_id)
    await store_trained(pool, model_id, build_model(spec), part_bytes=1 << 20)
    # Flip one byte in the middle of a part (as bit rot or a bad copy would).
    await pool.execute(
        "UPDATE model_weights SET bytes = set_byte(bytes, 999, (get_byte(bytes, 999) + 1) % 256)"
        " WHERE model_id = $1 AND part = 5",
        model_id,
    )

    with pytest.raises(weight_store.CorruptWeights, match=f"model {model_id} is corrupt.*checksum"):
        await weight_store.load_model(pool, model_id)
    assert await pool.fetchval("SELECT status FROM models WHERE id = $1", model_id) == "corrupt"
    with pytest.raises(weight_store.CorruptWeights, match="marked corrupt"):
        await weight_store.load_model(pool, model_id)


async def test_a_read_only_role_reports_corrupt_weights_without_marking_them(
    pool: Any, db_url: str, role_logins: dict[str, Login]
) -> None:
    """The API and the read-only commands load models as the reader, who may not write:
    corrupt weights are still the clear error, not a permission error, and an evaluator
    (who may) marks the model later."""
    dataset_id = await create_dataset(pool, per_class={"vine": 1, "ground": 1})
    spec = ModelSpec(architecture="ResNet50", image_size=32, class_names=("vine", "ground"))
    model_id = await model_row(pool, spec, dataset_id)
    await store_trained(pool, model_id, build_model(spec), part_bytes=1 << 20)
    await pool.execute("DELETE FROM model_weights WHERE model_id = $1 AND part = 3", model_id)
    reader = await db.create_pool(role_logins["reader"].url(db_url), max_size=1)
    try:
        with pytest.raises(weight_store.CorruptWeights, match=f"model {model_id} is corrupt"):
            await weight_store.load_model(reader, model_id)
    finally:
        await reader.close()
    assert await pool.fetchval("SELECT status FROM models WHERE id = $1", model_id) == "trained"


async def test_missing_parts_and_unknown_models_are_clear_errors(pool: Any) -> None:
    dataset_id = await create_dataset(pool, per_class={"vine": 1, "ground": 1})
    spec = ModelSpec(architecture="ResNet50", image_size=32, class_names=("vine", "ground"))
    model_id = await model_row(pool, spec, dataset_id)
    with pytest.raises(weight_store.ModelNotReady, match="status training"):
        await weight_store.load_model(pool, model_id)
    with pytest.raises(weight_store.ModelNotFound):
        await weight_store.load_model(pool, 424242)
    await store_trained(pool, model_id, build_model(spec), part_bytes=1 << 20)
    await pool.execute("DELETE FROM model_weights WHERE model_id = $1 AND part = 3", model_id)
    with pytest.raises(weight_store.CorruptWeights):
        await weight_store.load_model(pool, model_id)
    assert await pool.fetchval("SELECT status FROM models WHERE id = $1", model_id) == "corrupt"


async def test_checkpoints_keep_weights_optimizer_state_and_only_the_asked_epochs(
    pool: Any,
) -> None:
    dataset_id = await create_dataset(pool, per_class={"vine": 1, "ground": 1})
    spec = ModelSpec(architecture="ResNet50V2", image_size=32, class_names=("vine", "ground"))
    model_id = await model_row(pool, spec, dataset_id)
    model = build_model(spec)
    optimizer = keras.optimizers.Adam(1e-3)
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    one_step(model, x, np.array([0, 1, 0, 1]), optimizer)
    saved_optimizer = [v.numpy().copy() for v in optimizer.variables]
    saved_weights = [v.numpy().copy() for v in model.weights]

    async with pool.acquire() as con:
        for epoch in (1, 2, 3):
            async with con.transaction():
                await weight_store.save_checkpoint(
                    con, model_id, epoch, model, optimizer.variables, keep=[1],
                    part_bytes=3 << 20,
                )  # fmt: skip
        assert await rows.checkpoint_epochs(con, model_id) == [1, 3]

        fresh = build_model(spec)
        fresh_optimizer = keras.optimizers.Adam(1e-3)
        fresh_optimizer.build(fresh.trainable_variables)
        restored, meta = await weight_store.load_checkpoint(
            con, model_id, 3, fresh, fresh_optimizer.variables
        )
    assert restored and meta["epoch"] == 3
    for a, b in zip(saved_weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    assert any(np.any(a != 0) for a in saved_optimizer[2:])  # moments were written
    for a, b in zip(saved_optimizer, fresh_optimizer.variables, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    # A checkpoint whose optimizer state does not fit is loaded without it.
    async with pool.acquire() as con:
        other = keras.optimizers.SGD(0.1, momentum=0.9)
        other.build(fresh.trainable_variables)
        restored, _ = await weight_store.load_checkpoint(con, model_id, 1, fresh, other.variables)
    assert not restored
