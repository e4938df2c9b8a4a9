"""All the SQL of the CLI. Functions take a connection (or pool) and return plain dicts."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import asyncpg

Con: TypeAlias = asyncpg.Connection | asyncpg.Pool
Row: TypeAlias = dict[str, Any]

# The channels the schema's triggers NOTIFY on (shared/migrations/001_schema.sql).
REQUESTS, EPOCHS, EVALUATIONS = "chouette_requests", "chouette_epochs", "chouette_evaluations"
CHANNELS = (REQUESTS, EPOCHS, EVALUATIONS)

_REQUEST_COLUMNS = (
    "id AS request_id, kind, status, stage, progress, progress_done, progress_total, error,"
    " dataset_id, model_id, evaluation_id, params, created_at, updated_at, finished_at"
)


def _dict(record: asyncpg.Record | None) -> Row | None:
    return None if record is None else dict(record)


async def request(con: Con, request_id: uuid.UUID) -> Row | None:
    return _dict(
        await con.fetchrow(
            f"SELECT {_REQUEST_COLUMNS} FROM training_requests WHERE id = $1",  # noqa: S608
            request_id,
        )
    )


async def requests_by_prefix(con: Con, prefix: str, limit: int = 2) -> list[Row]:
    """Requests whose id starts with ``prefix`` (a full id or its first characters)."""
    rows = await con.fetch(
        f"SELECT {_REQUEST_COLUMNS} FROM training_requests"  # noqa: S608
        " WHERE id::text LIKE $1 || '%' ORDER BY created_at DESC LIMIT $2",
        prefix.lower(),
        limit,
    )
    return [dict(r) for r in rows]


async def recent_requests(con: Con, limit: int) -> list[Row]:
    rows = await con.fetch(
        "SELECT request_id, kind, status, stage, progress, progress_done, progress_total, error,"
        " architecture, dataset_id, model_id, evaluation_id, created_at, seconds"
        " FROM request_progress ORDER BY created_at DESC LIMIT $1",
        limit,
    )
    return [dict(r) for r in rows]


async def evaluation_for_request(con: Con, req: Row) -> Row | None:
    """The evaluation a request produced (its evaluation_id, else one written for it)."""
    columns = (
        "id AS evaluation_id, model_id, dataset_id, split, accuracy, macro_f1,"
        " balanced_accuracy, loss, n_images, per_class, confusion_matrix, class_names,"
        " images_per_second, n_excluded, created_at"
    )
    if req.get("evaluation_id") is not None:
        row = await con.fetchrow(
            f"SELECT {columns} FROM evaluations WHERE id = $1",  # noqa: S608
            req["evaluation_id"],
        )
    else:
        row = await con.fetchrow(
            f"SELECT {columns} FROM evaluations WHERE request_id = $1"  # noqa: S608
            " ORDER BY id DESC LIMIT 1",
            req["request_id"],
        )
    return _dict(row)


async def evaluations_of_model(con: Con, model_id: int) -> list[Row]:
    rows = await con.fetch(
        "SELECT e.id AS evaluation_id, e.dataset_id, e.split, e.accuracy, e.macro_f1,"
        " e.balanced_accuracy, e.n_images, e.per_class, e.confusion_matrix, e.class_names,"
        " e.n_excluded, e.created_at, d.start_date, d.end_date"
        " FROM evaluations e JOIN datasets d ON d.id = e.dataset_id"
        " WHERE e.model_id = $1 ORDER BY e.created_at, e.id",
        model_id,
    )
    return [dict(r) for r in rows]


async def epochs(con: Con, model_id: int) -> list[Row]:
    rows = await con.fetch(
        "SELECT epoch, loss, accuracy, val_loss, val_accuracy, learning_rate, seconds, metrics"
        " FROM training_epochs WHERE model_id = $1 ORDER BY epoch",
        model_id,
    )
    return [dict(r) for r in rows]


async def model(con: Con, model_id: int) -> Row | None:
    return _dict(
        await con.fetchrow(
            "SELECT m.id AS model_id, m.request_id, m.dataset_id, m.architecture, m.hyperparams,"
            " m.class_names, m.input_shape, m.status, m.weights_sha256, m.weights_bytes,"
            " m.library_versions, m.train_seconds, m.finish_seconds, m.images_per_second,"
            " m.best_epoch,"
            " m.final_metrics, m.created_at, m.trained_at,"
            " d.start_date, d.end_date, d.tags, d.n_images, d.counts, d.split_counts"
            " FROM models m JOIN datasets d ON d.id = m.dataset_id WHERE m.id = $1",
            model_id,
        )
    )


async def model_epoch_total(con: Con, model_id: int) -> int | None:
    value = await con.fetchval(
        "SELECT (hyperparams ->> 'epochs')::int FROM models WHERE id = $1", model_id
    )
    return None if value is None else int(value)


async def registry(con: Con, limit: int) -> list[Row]:
    rows = await con.fetch("SELECT * FROM model_registry LIMIT $1", limit)
    return [dict(r) for r in rows]


async def misclassified(con: Con, evaluation_id: int, limit: int) -> list[Row]:
    """Images an evaluation got wrong (most confident mistakes first), with their bytes."""
    rows = await con.fetch(
        "SELECT p.sha256, p.true_label, p.predicted, p.probabilities, i.bytes"
        " FROM predictions p JOIN images i ON i.sha256 = p.sha256"
        " WHERE p.evaluation_id = $1 AND p.predicted <> p.true_label"
        " ORDER BY (p.probabilities ->> p.predicted)::float8 DESC, p.sha256 LIMIT $2",
        evaluation_id,
        limit,
    )
    return [dict(r) for r in rows]
