"""Loading a stored model: rebuild the network from its ``models`` row, then its weights."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from shared.errors import PermanentError
from shared.modeling import ModelSpec, build_model
from shared.weight_store.format import CorruptWeights
from shared.weight_store.postgres import read_weights_into

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


class ModelNotFound(PermanentError):
    """No model with this id."""


class ModelNotReady(PermanentError):
    """The model exists but has no usable weights (still training, failed or corrupt)."""


_MODEL_COLUMNS = (
    "id, request_id, dataset_id, architecture, hyperparams, class_names, input_shape, status,"
    " weights_sha256, weights_bytes, library_versions, train_seconds, images_per_second,"
    " best_epoch, final_metrics, created_at, trained_at, weights_pruned_at"
)


def spec_from_row(row: Any) -> ModelSpec:
    """The spec of a ``models`` row (always ``weights="none"``: its own weights follow)."""
    hyper = row["hyperparams"] or {}
    return ModelSpec(
        architecture=row["architecture"],
        image_size=int(row["input_shape"][0]),
        class_names=tuple(row["class_names"]),
        dropout=float(hyper.get("dropout", 0.0)),
    )


async def mark_corrupt(con: asyncpg.Connection | asyncpg.Pool, model_id: int) -> None:
    """Record that the model's weights are corrupt, when this role may (the evaluator's
    and the owner's may; a read-only one, the API's, only reports it)."""
    try:
        await con.execute("UPDATE models SET status = 'corrupt' WHERE id = $1", model_id)
    except asyncpg.InsufficientPrivilegeError:
        logger.warning("model %d is corrupt; this role may not mark it so", model_id)


async def load_model(
    pool: asyncpg.Pool,
    model_id: int,
    *,
    build: Callable[[ModelSpec], keras.Model] = build_model,
) -> tuple[keras.Model, ModelSpec, dict[str, Any]]:
    """Rebuild model ``model_id`` from its recorded spec and load its verified weights.

    ``build`` (called in a worker thread) gives the network for the spec: a new one, or
    one of the same spec kept from an earlier load (the evaluator's), whose every variable
    is overwritten here.

    Returns ``(model, spec, row)`` where ``row`` is the ``models`` row as a dict (class
    names in output order, hyper-parameters, metrics…). The model is uncompiled, ready
    for ``model.predict`` on images from ``shared.images``.

    Raises :class:`ModelNotFound`, :class:`ModelNotReady` (status not ``trained``),
    :class:`WeightsMismatch`, or :class:`CorruptWeights` — the latter after setting
    ``models.status = 'corrupt'`` — all permanent errors with a one-line reason.
    """
    async with pool.acquire() as con:
        row = await con.fetchrow(
            f"SELECT {_MODEL_COLUMNS} FROM models WHERE id = $1",  # noqa: S608
            model_id,
        )
        if row is None:
            raise ModelNotFound(f"model {model_id} does not exist")
        if row["status"] == "corrupt":
            raise CorruptWeights(f"model {model_id} is marked corrupt: its weights failed a check")
        if row["status"] != "trained":
            raise ModelNotReady(f"model {model_id} has no weights yet (status {row['status']})")
        if row["weights_pruned_at"] is not None:
            raise ModelNotReady(
                f"model {model_id}'s weights were removed by `chouette prune` on"
                f" {row['weights_pruned_at']:%Y-%m-%d}"
            )
        spec = spec_from_row(row)
        started = time.monotonic()
        model = await asyncio.to_thread(build, spec)
        built = time.monotonic()
        try:
            sha, nbytes = await read_weights_into(con, model_id, model)
            if sha != row["weights_sha256"] or nbytes != row["weights_bytes"]:
                raise CorruptWeights(
                    f"weights read ({nbytes} bytes, sha256 {sha[:16]}…) differ from the "
                    f"recorded ({row['weights_bytes']} bytes, sha256 "
                    f"{(row['weights_sha256'] or '')[:16]}…)"
                )
        except CorruptWeights as exc:
            await mark_corrupt(con, model_id)
            logger.error("model %d marked corrupt: %s", model_id, exc)
            raise CorruptWeights(f"model {model_id} is corrupt: {exc}") from exc
    logger.info(
        "loaded model %d (%s, %.1f MiB): network %.2f s, weights %.2f s",
        model_id, spec.architecture, nbytes / 2**20, built - started, time.monotonic() - built,
    )  # fmt: skip
    return model, spec, dict(row)
