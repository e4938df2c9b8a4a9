"""Rows as the services would write them, for CLI tests that run without the services."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from shared import db

CLASSES = ["vine", "ground", "grass"]


async def request(pool: db.Pool, kind: str = "training", **params: Any) -> uuid.UUID:
    request_id = uuid.uuid4()
    body = params or {
        "training": {"architecture": "ResNet50", "epochs": 3, "image_size": 32},
        "dataset": {"start_date": "2024-05-01", "end_date": "2024-05-31", "tags": CLASSES},
    }
    await db.ensure_request(pool, request_id, kind, body)
    return request_id


async def dataset(pool: db.Pool, start: str = "2024-05-01", end: str = "2024-05-31") -> int:
    return int(
        await pool.fetchval(
            "INSERT INTO datasets (start_date, end_date, tags, digest, test_fraction,"
            " val_fraction, seed, n_images, counts, split_counts)"
            " VALUES ($1, $2, $3, $4, 0.2, 0.15, 42, 30, $5, $6) RETURNING id",
            dt.date.fromisoformat(start),
            dt.date.fromisoformat(end),
            CLASSES,
            uuid.uuid4().hex,
            {"vine": 10, "ground": 10, "grass": 10},
            {
                "train": {"vine": 7, "ground": 7, "grass": 6},
                "val": {"vine": 1, "ground": 1, "grass": 2},
                "test": {"vine": 2, "ground": 2, "grass": 2},
            },
        )
    )


async def model(
    pool: db.Pool, request_id: uuid.UUID, dataset_id: int, architecture: str = "ResNet50"
) -> int:
    return int(
        await pool.fetchval(
            "INSERT INTO models (request_id, dataset_id, architecture, hyperparams, class_names,"
            " input_shape, status, trained_at, train_seconds)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'trained', now(), 12.5) RETURNING id",
            request_id,
            dataset_id,
            architecture,
            {"architecture": architecture, "epochs": 3, "image_size": 32},
            CLASSES,
            [32, 32, 3],
        )
    )


async def epoch(pool: db.Pool, model_id: int, epoch: int, loss: float = 1.0) -> None:
    await pool.execute(
        "INSERT INTO training_epochs (model_id, epoch, loss, accuracy, val_loss, val_accuracy,"
        " seconds) VALUES ($1, $2, $3, 0.5, $4, 0.4, 2.0)",
        model_id,
        epoch,
        loss,
        loss + 0.1,
    )


async def evaluation(
    pool: db.Pool,
    model_id: int,
    dataset_id: int,
    macro_f1: float,
    request_id: uuid.UUID | None = None,
    split: str = "test",
    n_excluded: int | None = 0,
) -> int:
    per_class = {
        name: {"precision": macro_f1, "recall": macro_f1, "f1": macro_f1, "support": 2}
        for name in CLASSES
    }
    return int(
        await pool.fetchval(
            "INSERT INTO evaluations (model_id, dataset_id, split, request_id, accuracy, macro_f1,"
            " balanced_accuracy, per_class, confusion_matrix, class_names, n_images, n_excluded)"
            " VALUES ($1, $2, $3, $4, $5, $5, $5, $6, $7, $8, 6, $9) RETURNING id",
            model_id,
            dataset_id,
            split,
            request_id,
            macro_f1,
            per_class,
            [[2, 0, 0], [0, 1, 1], [1, 0, 1]],
            CLASSES,
            n_excluded,
        )
    )


async def finished_model(
    pool: db.Pool, macro_f1: float, architecture: str = "ResNet50"
) -> tuple[uuid.UUID, int, int]:
    """A request that went all the way: (request id, model id, evaluation id)."""
    request_id = await request(pool)
    dataset_id = await dataset(pool)
    model_id = await model(pool, request_id, dataset_id, architecture)
    for n in (1, 2, 3):
        await epoch(pool, model_id, n, loss=1.0 / n)
    evaluation_id = await evaluation(pool, model_id, dataset_id, macro_f1, request_id)
    await db.set_stage(
        pool,
        request_id,
        "done",
        status="succeeded",
        dataset_id=dataset_id,
        model_id=model_id,
        evaluation_id=evaluation_id,
    )
    return request_id, model_id, evaluation_id
