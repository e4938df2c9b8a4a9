"""All of the trainer's SQL (weight and checkpoint streams live in ``shared.weight_store``).

One ``models`` row per request (``models.request_id`` is UNIQUE): a redelivered request
finds its row again. ``models.checkpoint_epoch`` is the last epoch whose row and
checkpoint were committed together; epochs after it are discarded on resume.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.trainer.records import EpochResult
from shared.db import Executor
from shared.modeling import ModelSpec


@dataclass(frozen=True)
class DatasetInfo:
    id: int
    tags: tuple[str, ...]
    counts: dict[str, int]


@dataclass(frozen=True)
class ModelRow:
    id: int
    status: str
    checkpoint_epoch: int
    dataset_id: int


async def dataset(con: Executor, dataset_id: int) -> DatasetInfo | None:
    row = await con.fetchrow("SELECT id, tags, counts FROM datasets WHERE id = $1", dataset_id)
    if row is None:
        return None
    return DatasetInfo(int(row["id"]), tuple(row["tags"]), dict(row["counts"] or {}))


Row = tuple[bytes, str, str | None]  # an image's (bytes, tag, format)

_SPLIT_ROWS = (
    "SELECT i.bytes, di.tag, i.format FROM dataset_images di"
    " JOIN images i ON i.sha256 = di.sha256"
    " WHERE di.dataset_id = $1 AND di.split = $2 ORDER BY di.sha256"
)


async def split_images(con: Executor, dataset_id: int, split: str) -> list[Row]:
    """(bytes, tag, format) of a split, in a stable order (by content hash); all in memory:
    for small splits (tests, benchmarks). The trainer reads :func:`split_batches`."""
    rows = await con.fetch(_SPLIT_ROWS, dataset_id, split)
    return [(bytes(r["bytes"]), str(r["tag"]), r["format"]) for r in rows]


async def split_tags(con: Executor, dataset_id: int, split: str) -> list[str]:
    """The tags of a split's images, in :func:`split_batches`' order, without their bytes."""
    rows = await con.fetch(
        "SELECT tag FROM dataset_images WHERE dataset_id = $1 AND split = $2 ORDER BY sha256",
        dataset_id,
        split,
    )
    return [str(r["tag"]) for r in rows]


async def split_batches(
    pool: asyncpg.Pool, dataset_id: int, split: str, rows: int
) -> AsyncGenerator[list[Row], None]:
    """A split's (bytes, tag, format), in :func:`split_images`' order, ``rows`` per round trip.

    A server-side cursor (one connection, one read-only transaction, while the caller
    iterates): only one batch of encoded images is in memory at a time, whatever the size
    of the split. Close the iterator (``contextlib.aclosing``) when leaving early.
    """
    async with pool.acquire() as con, con.transaction(readonly=True):
        cursor = await con.cursor(_SPLIT_ROWS, dataset_id, split)
        while True:
            batch = await cursor.fetch(rows)
            if not batch:
                return
            yield [(bytes(r["bytes"]), str(r["tag"]), r["format"]) for r in batch]
            del batch


async def trained_model_id(con: Executor, request_id: uuid.UUID) -> int | None:
    """The request's model when it is already trained (a redelivered, finished request)."""
    value = await con.fetchval(
        "SELECT id FROM models WHERE request_id = $1 AND status = 'trained'", request_id
    )
    return None if value is None else int(value)


async def find_or_create_model(
    con: Executor,
    request_id: uuid.UUID,
    dataset_id: int,
    spec: ModelSpec,
    hyperparams: Mapping[str, Any],
    library_versions: Mapping[str, str],
) -> ModelRow:
    """The request's model row, inserted on first delivery."""
    row = await con.fetchrow(
        "INSERT INTO models (request_id, dataset_id, architecture, hyperparams, class_names,"
        " input_shape, library_versions) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (request_id) DO NOTHING"
        " RETURNING id, status, checkpoint_epoch, dataset_id",
        request_id,
        dataset_id,
        spec.architecture,
        dict(hyperparams),
        list(spec.class_names),
        list(spec.input_shape),
        dict(library_versions),
    )
    if row is None:
        row = await con.fetchrow(
            "SELECT id, status, checkpoint_epoch, dataset_id FROM models WHERE request_id = $1",
            request_id,
        )
    assert row is not None
    return ModelRow(
        int(row["id"]), str(row["status"]), int(row["checkpoint_epoch"] or 0), row["dataset_id"]
    )


@dataclass(frozen=True)
class Lease:
    owner: str | None
    seconds_left: float


async def claim_lease(con: Executor, model_id: int, owner: str, seconds: float) -> Lease | None:
    """Take the model's training lease if it is free, lapsed or ours; else who holds it.

    A trained model's lease is never taken: the caller re-emits its ``ModelReady``.
    """
    claimed = await con.fetchval(
        "UPDATE models SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)"
        " WHERE id = $1 AND status <> 'trained'"
        " AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < now())"
        " RETURNING id",
        model_id,
        owner,
        seconds,
    )
    if claimed is not None:
        return None
    row = await con.fetchrow(
        "SELECT lease_owner, extract(epoch FROM lease_until - now()) AS left"
        " FROM models WHERE id = $1",
        model_id,
    )
    assert row is not None
    return Lease(row["lease_owner"], float(row["left"] or 0.0))


async def steal_lease(con: Executor, model_id: int, owner: str, seconds: float, dead: str) -> bool:
    """Take the lease from ``dead`` (a holder known to have exited)."""
    value = await con.fetchval(
        "UPDATE models SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)"
        " WHERE id = $1 AND lease_owner = $4 RETURNING id",
        model_id,
        owner,
        seconds,
        dead,
    )
    return value is not None


async def renew_lease(con: Executor, model_id: int, owner: str, seconds: float) -> bool:
    """Extend our lease; False when another trainer took it over (ours had lapsed)."""
    value = await con.fetchval(
        "UPDATE models SET lease_until = now() + make_interval(secs => $3)"
        " WHERE id = $1 AND lease_owner = $2 RETURNING id",
        model_id,
        owner,
        seconds,
    )
    return value is not None


async def release_lease(con: Executor, model_id: int, owner: str) -> None:
    await con.execute(
        "UPDATE models SET lease_owner = NULL, lease_until = NULL"
        " WHERE id = $1 AND lease_owner = $2",
        model_id,
        owner,
    )


async def reopen_model(con: Executor, model_id: int) -> None:
    """A failed (or corrupt) model taken up again goes back to ``training``."""
    await con.execute(
        "UPDATE models SET status = 'training' WHERE id = $1 AND status <> 'trained'", model_id
    )


async def mark_failed(pool: asyncpg.Pool, model_id: int) -> None:
    """A training that failed for good: its checkpoints (only useful to resume) go too."""
    async with pool.acquire() as con, con.transaction():
        status = await con.fetchval(
            "UPDATE models SET status = 'failed' WHERE id = $1 AND status = 'training'"
            " RETURNING status",
            model_id,
        )
        if status is not None:
            await con.execute("DELETE FROM model_checkpoints WHERE model_id = $1", model_id)


async def finished_epochs(con: Executor, model_id: int, up_to: int) -> list[EpochResult]:
    """Epoch rows 1..``up_to`` (those covered by the last checkpoint), in order."""
    rows = await con.fetch(
        "SELECT epoch, loss, accuracy, val_loss, val_accuracy, learning_rate, seconds, metrics"
        " FROM training_epochs WHERE model_id = $1 AND epoch <= $2 ORDER BY epoch",
        model_id,
        up_to,
    )
    return [
        EpochResult(
            epoch=int(r["epoch"]),
            loss=r["loss"],
            accuracy=r["accuracy"],
            val_loss=r["val_loss"],
            val_accuracy=r["val_accuracy"],
            learning_rate=r["learning_rate"],
            seconds=float(r["seconds"] or 0.0),
            images=int((r["metrics"] or {}).get("images", 0)),
        )
        for r in rows
    ]


async def discard_epochs_after(con: Executor, model_id: int, epoch: int) -> int:
    """Remove epoch rows and checkpoints newer than ``epoch`` (none exist normally)."""
    status = await con.execute(
        "DELETE FROM training_epochs WHERE model_id = $1 AND epoch > $2", model_id, epoch
    )
    await con.execute(
        "DELETE FROM model_checkpoints WHERE model_id = $1 AND epoch > $2", model_id, epoch
    )
    return int(status.split()[-1])


async def record_epoch(
    con: asyncpg.Connection,
    model_id: int,
    result: EpochResult,
    best_epoch: int,
    *,
    checkpointed: bool = True,
) -> None:
    """The epoch's row (NOTIFY by trigger) and the model's checkpoint pointers.

    Without a checkpoint (the last epoch, whose weights are stored right after) the resume
    point stays at the previous checkpoint: a crash before the final commit redoes it.
    """
    await con.execute(
        "INSERT INTO training_epochs (model_id, epoch, loss, accuracy, val_loss, val_accuracy,"
        " learning_rate, seconds, metrics) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (model_id, epoch) DO UPDATE SET loss = EXCLUDED.loss,"
        " accuracy = EXCLUDED.accuracy, val_loss = EXCLUDED.val_loss,"
        " val_accuracy = EXCLUDED.val_accuracy, learning_rate = EXCLUDED.learning_rate,"
        " seconds = EXCLUDED.seconds, metrics = EXCLUDED.metrics, created_at = now()",
        model_id,
        result.epoch,
        result.loss,
        result.accuracy,
        result.val_loss,
        result.val_accuracy,
        result.learning_rate,
        result.seconds,
        {"images": result.images, "best_epoch": best_epoch},
    )
    await con.execute(
        "UPDATE models SET checkpoint_epoch = CASE WHEN $4 THEN $2 ELSE checkpoint_epoch END,"
        " best_epoch = $3 WHERE id = $1",
        model_id,
        result.epoch,
        best_epoch,
        checkpointed,
    )


async def finish_model(
    con: asyncpg.Connection,
    model_id: int,
    *,
    sha256: str,
    nbytes: int,
    hyperparams: Mapping[str, Any],
    library_versions: Mapping[str, str],
    train_seconds: float,
    finish_seconds: float,
    images_per_second: float | None,
    best_epoch: int,
    final_metrics: Mapping[str, Any],
) -> None:
    """The registry row: status ``trained`` with the weights' digest (same transaction)."""
    await con.execute(
        "UPDATE models SET status = 'trained', weights_sha256 = $2, weights_bytes = $3,"
        " hyperparams = $4, library_versions = $5, train_seconds = $6,"
        " images_per_second = $7, best_epoch = $8, final_metrics = $9, trained_at = now(),"
        " finish_seconds = $10 WHERE id = $1",
        model_id,
        sha256,
        nbytes,
        dict(hyperparams),
        dict(library_versions),
        train_seconds,
        images_per_second,
        best_epoch,
        dict(final_metrics),
        finish_seconds,
    )
