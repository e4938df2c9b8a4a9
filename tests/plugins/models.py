"""Tiny trained models in PostgreSQL, as the trainer and the evaluator leave them: for the
API's and the CLI's integration tests (no training, a few gradient steps on random pixels)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from shared import db, weight_store
from shared.modeling import ModelSpec, build_model
from tests.plugins.datasets import create_dataset, create_request

CLASSES = ("vine", "ground", "grass")
SPEC = ModelSpec(architecture="ResNet50V2", image_size=32, class_names=CLASSES, dropout=0.0)


def tiny_model(seed: int = 0) -> Any:
    """ResNet50V2 at 32 px with a few steps on random pixels: weights that are not the
    initial ones, BatchNorm statistics moved (what a trained model looks like to the API).
    Small steps: its probabilities stay away from 0 and 1, so that tests comparing them
    (with and without test-time augmentation, say) can tell them apart."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    model = build_model(SPEC)
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    optimizer = keras.optimizers.SGD(0.001)
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
    return model


async def store_model(pool: db.Pool, model: Any, dataset_id: int, spec: ModelSpec = SPEC) -> int:
    """A ``models`` row, trained, with ``model``'s weights (as the trainer leaves it)."""
    request_id = await create_request(pool, {"training": {}}, request_id=uuid.uuid4())
    async with pool.acquire() as con, con.transaction():
        model_id = int(
            await con.fetchval(
                "INSERT INTO models (request_id, dataset_id, architecture, hyperparams,"
                " class_names, input_shape) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                request_id,
                dataset_id,
                spec.architecture,
                {"dropout": spec.dropout, "image_size": spec.image_size, "epochs": 1},
                list(spec.class_names),
                list(spec.input_shape),
            )
        )
        sha, nbytes = await weight_store.store_weights(con, model_id, model)
        await con.execute(
            "UPDATE models SET status = 'trained', trained_at = now(), weights_sha256 = $2,"
            " weights_bytes = $3 WHERE id = $1",
            model_id,
            sha,
            nbytes,
        )
    return model_id


async def copy_model(con: asyncpg.Connection, model_id: int) -> int:
    """Another trained model with the same spec and weights (cheaper than a second one)."""
    request_id = await create_request(con, {"training": {}}, request_id=uuid.uuid4())
    async with con.transaction():
        new_id = int(
            await con.fetchval(
                "INSERT INTO models (request_id, dataset_id, architecture, hyperparams,"
                " class_names, input_shape, status, trained_at, weights_sha256, weights_bytes)"
                " SELECT $2, dataset_id, architecture, hyperparams, class_names, input_shape,"
                " status, now(), weights_sha256, weights_bytes FROM models WHERE id = $1"
                " RETURNING id",
                model_id,
                request_id,
            )
        )
        await con.execute(
            "INSERT INTO model_weights (model_id, part, bytes)"
            " SELECT $2, part, bytes FROM model_weights WHERE model_id = $1",
            model_id,
            new_id,
        )
    return new_id


async def add_evaluation(pool: db.Pool, model_id: int, dataset_id: int, macro_f1: float) -> int:
    per_class = {n: {"precision": macro_f1, "recall": macro_f1, "f1": macro_f1, "support": 2}
                 for n in CLASSES}  # fmt: skip
    return int(
        await pool.fetchval(
            "INSERT INTO evaluations (model_id, dataset_id, split, accuracy, macro_f1,"
            " balanced_accuracy, per_class, confusion_matrix, class_names, n_images, n_excluded)"
            " VALUES ($1, $2, 'all', $3, $3, $3, $4, $5, $6, 6, 0) RETURNING id",
            model_id,
            dataset_id,
            macro_f1,
            per_class,
            [[2, 0, 0], [0, 1, 1], [1, 0, 1]],
            list(CLASSES),
        )
    )


async def set_champion(con: Any, model_id: int, evaluation_id: int | None = None) -> None:
    await con.execute(
        "INSERT INTO champions (class_set, model_id, evaluation_id, macro_f1, reason)"
        " VALUES ('grass,ground,vine', $1, $2, NULL, 'promoted') ON CONFLICT (class_set)"
        " DO UPDATE SET model_id = EXCLUDED.model_id, evaluation_id = EXCLUDED.evaluation_id,"
        " reason = EXCLUDED.reason, promoted_at = now()",
        model_id,
        evaluation_id,
    )


@dataclass
class Seeded:
    database_url: str
    dataset_id: int
    champion_id: int
    other_id: int
    evaluation_id: int


async def seed(database_url: str) -> tuple[Seeded, Any]:
    pool = await db.create_pool(database_url)
    try:
        dataset_id = await create_dataset(pool, per_class={"vine": 2, "ground": 2, "grass": 2})
        model = tiny_model()
        champion_id = await store_model(pool, model, dataset_id)
        async with pool.acquire() as con:
            other_id = await copy_model(con, champion_id)
        evaluation_id = await add_evaluation(pool, champion_id, dataset_id, 0.75)
        await set_champion(pool, champion_id, evaluation_id)
    finally:
        await pool.close()
    return Seeded(database_url, dataset_id, champion_id, other_id, evaluation_id), model
