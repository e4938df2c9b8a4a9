"""All of the API's SQL. Functions take a pool (or connection) and return plain dicts."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg

Con: TypeAlias = asyncpg.Connection | asyncpg.Pool
Row: TypeAlias = dict[str, Any]

# The channel the champions trigger NOTIFYs on (shared/migrations/044_champion_reference.sql).
CHAMPIONS_CHANNEL = "chouette_champions"


async def ping(con: Con) -> None:
    await con.fetchval("SELECT 1")


async def served_champion(con: Con) -> Row | None:
    """The champion the API serves: of the class set with the most classes (the whole
    product, ``grass,ground,vine``, before a model of two tags), the latest promoted first."""
    row = await con.fetchrow(
        "SELECT class_set, model_id, reason, macro_f1, promoted_at FROM champions"
        " ORDER BY cardinality(string_to_array(class_set, ',')) DESC, promoted_at DESC,"
        " model_id DESC LIMIT 1"
    )
    return None if row is None else dict(row)


async def models(con: Con, limit: int) -> list[Row]:
    rows = await con.fetch(
        "SELECT model_id, architecture, status, dataset_id, start_date, end_date, tags,"
        " image_size, epochs, macro_f1, accuracy, eval_dataset_id, eval_split,"
        " n_evaluations, later_macro_f1, later_start_date, later_end_date, champion,"
        " created_at, trained_at FROM model_registry LIMIT $1",
        limit,
    )
    return [dict(r) for r in rows]


async def model(con: Con, model_id: int) -> Row | None:
    row = await con.fetchrow(
        "SELECT m.id AS model_id, m.architecture, m.status, m.class_names, m.hyperparams,"
        " m.input_shape, m.dataset_id, d.start_date, d.end_date, d.tags, d.n_images,"
        " m.weights_sha256, m.weights_bytes, m.best_epoch, m.train_seconds, m.created_at,"
        " m.trained_at, (c.model_id IS NOT NULL) AS champion, c.reason AS champion_reason"
        " FROM models m JOIN datasets d ON d.id = m.dataset_id"
        " LEFT JOIN champions c ON c.model_id = m.id"
        " WHERE m.id = $1",
        model_id,
    )
    return None if row is None else dict(row)


async def evaluations(con: Con, model_id: int) -> list[Row]:
    rows = await con.fetch(
        "SELECT e.id AS evaluation_id, e.dataset_id, d.start_date, d.end_date, e.split,"
        " e.n_images, e.n_excluded, e.accuracy, e.macro_f1, e.balanced_accuracy, e.per_class,"
        " e.confusion_matrix, e.class_names, e.created_at"
        " FROM evaluations e JOIN datasets d ON d.id = e.dataset_id"
        " WHERE e.model_id = $1 ORDER BY e.created_at, e.id",
        model_id,
    )
    return [dict(r) for r in rows]


# -- the results page (``GET /``): read-only ------------------------------------------------


async def recent_requests(con: Con, limit: int) -> list[Row]:
    """Requests in flight (queued, running) first, then the most recent ones."""
    rows = await con.fetch(
        "SELECT request_id, kind, status, stage, progress, error, architecture, dataset_id,"
        " model_id, evaluation_id, created_at, updated_at, seconds, progress_done,"
        " progress_total FROM request_progress"
        " ORDER BY status IN ('queued', 'running') DESC, created_at DESC LIMIT $1",
        limit,
    )
    return [dict(r) for r in rows]


async def model_title(con: Con, model_id: int) -> Row | None:
    row = await con.fetchrow("SELECT id AS model_id, architecture FROM models WHERE id = $1",
                             model_id)  # fmt: skip
    return None if row is None else dict(row)


async def epochs(con: Con, model_id: int) -> list[Row]:
    rows = await con.fetch(
        "SELECT epoch, loss, accuracy, val_loss, val_accuracy FROM training_epochs"
        " WHERE model_id = $1 ORDER BY epoch",
        model_id,
    )
    return [dict(r) for r in rows]


async def evaluation(con: Con, evaluation_id: int) -> Row | None:
    row = await con.fetchrow(
        "SELECT id AS evaluation_id, model_id, dataset_id, split, confusion_matrix, class_names"
        " FROM evaluations WHERE id = $1",
        evaluation_id,
    )
    return None if row is None else dict(row)


async def misclassified(con: Con, evaluation_id: int, limit: int) -> list[Row]:
    """Images an evaluation got wrong, the most confident mistakes first (as ``chouette
    report --gallery`` orders them), without their bytes."""
    rows = await con.fetch(
        "SELECT sha256, true_label, predicted, probabilities FROM predictions"
        " WHERE evaluation_id = $1 AND predicted <> true_label"
        " ORDER BY (probabilities ->> predicted)::float8 DESC, sha256 LIMIT $2",
        evaluation_id,
        limit,
    )
    return [dict(r) for r in rows]


async def misclassified_image(con: Con, evaluation_id: int, sha256: str) -> Row | None:
    """One misclassified image of an evaluation with its bytes and the evaluated model."""
    row = await con.fetchrow(
        "SELECT p.predicted, e.model_id, i.bytes FROM predictions p"
        " JOIN evaluations e ON e.id = p.evaluation_id JOIN images i ON i.sha256 = p.sha256"
        " WHERE p.evaluation_id = $1 AND p.sha256 = $2 AND p.predicted <> p.true_label",
        evaluation_id,
        sha256,
    )
    return None if row is None else dict(row)
