"""What each endpoint does, on plain values: no HTTP here (``app.py`` maps it to routes)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import asyncpg

from services.api import figures, results, store
from services.api.serving import ModelServer, NoModel, ServedModel
from services.api.uploads import Limits, UploadRejected, check_images
from shared.plots import GALLERY_LIMIT  # as many images per evaluation as the report

HEALTH_DB_TIMEOUT_S = 2.0


async def health(pool: asyncpg.Pool, server: ModelServer) -> tuple[bool, dict[str, Any]]:
    """(healthy, body): healthy when PostgreSQL answers and a champion model is loaded."""
    try:
        await asyncio.wait_for(store.ping(pool), HEALTH_DB_TIMEOUT_S)
    except Exception as exc:
        return False, {"status": "unavailable", "reason": f"database: {type(exc).__name__}"}
    champion = server.champion
    if champion is None:
        return False, {"status": "unavailable", "reason": server.champion_problem}
    return True, {
        "status": "ok",
        "database": "ok",
        "model_id": champion.model_id,
        "architecture": champion.spec.architecture,
    }


async def list_models(pool: asyncpg.Pool, limit: int) -> dict[str, Any]:
    return {"models": [_json_row(r) for r in await store.models(pool, limit)]}


async def model_detail(pool: asyncpg.Pool, model_id: int) -> dict[str, Any] | None:
    row = await store.model(pool, model_id)
    if row is None:
        return None
    detail = _json_row(row)
    detail["evaluations"] = [_json_row(e) for e in await store.evaluations(pool, model_id)]
    return detail


async def predict(
    server: ModelServer, images: list[tuple[str, bytes]], model_id: int | None, limits: Limits
) -> tuple[ServedModel, dict[str, Any]]:
    """Check the images, score them on ``model_id`` (the champion when None)."""
    check_images(images, limits)
    served = await server.get(model_id)
    probabilities = await served.predict([data for _, data in images])
    names = served.class_names
    results = []
    for (name, _), row in zip(images, probabilities, strict=True):
        best = max(range(len(names)), key=lambda i: row[i])
        results.append(
            {
                "image": name,
                "predicted": names[best],
                "probabilities": {n: round(float(p), 6) for n, p in zip(names, row, strict=True)},
            }
        )
    return served, {
        "model_id": served.model_id,
        "architecture": served.spec.architecture,
        "class_names": list(names),
        "test_time_augmentation": served.tta,
        "predictions": results,
    }


async def explain(
    server: ModelServer,
    image: tuple[str, bytes],
    model_id: int | None,
    class_name: str | None,
    limits: Limits,
) -> tuple[ServedModel, Any]:
    """Grad-CAM of one image on ``model_id`` (the champion when None): the explanation."""
    check_images([image], limits)
    served = await server.get(model_id)
    if class_name is not None and class_name not in served.class_names:
        raise UploadRejected(
            422, f"class {class_name!r} is not one of model {served.model_id}'s"
            f" {list(served.class_names)}",
        )  # fmt: skip
    return served, await served.explain(image[1], class_name)


# -- the results page ----------------------------------------------------------------------


async def recent_requests(pool: asyncpg.Pool, limit: int) -> dict[str, Any]:
    """Requests in flight first, each with its progress as numbers."""
    rows = await store.recent_requests(pool, limit)
    return results.requests_body([_json_row(r) for r in rows])


async def curves_png(pool: asyncpg.Pool, model_id: int) -> bytes | None:
    """The model's training curves (PNG), or None when it has no model or no epoch yet."""
    model = await store.model_title(pool, model_id)
    epochs = await store.epochs(pool, model_id) if model is not None else []
    if model is None or not epochs:
        return None
    return await asyncio.to_thread(figures.curves_png, model, epochs)


async def confusion_png(pool: asyncpg.Pool, evaluation_id: int) -> bytes | None:
    evaluation = await store.evaluation(pool, evaluation_id)
    if evaluation is None:
        return None
    return await asyncio.to_thread(figures.confusion_png, evaluation)


async def misclassified(pool: asyncpg.Pool, evaluation_id: int) -> dict[str, Any] | None:
    if await store.evaluation(pool, evaluation_id) is None:
        return None
    rows = await store.misclassified(pool, evaluation_id, GALLERY_LIMIT)
    return results.gallery_body(evaluation_id, rows, GALLERY_LIMIT)


async def misclassified_overlay(
    pool: asyncpg.Pool,
    server: ModelServer,
    cache: figures.PngCache,
    evaluation_id: int,
    sha256: str,
) -> bytes | None:
    """The Grad-CAM overlay of the class the model predicted for a misclassified image
    (what ``chouette report --gallery`` draws), on the model the API loads and keeps;
    drawn once, then from ``cache``."""
    key = (evaluation_id, sha256)
    cached = cache.get(key)
    if cached is not None:
        return cached
    row = await store.misclassified_image(pool, evaluation_id, sha256)
    if row is None:
        return None
    served = await server.get(int(row["model_id"]))
    explained = await served.explain(bytes(row["bytes"]), row["predicted"])
    png = bytes(explained.png)
    cache.put(key, png)
    return png


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """Dates as ISO text, Decimals as floats, NaN as null: JSON any client reads."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        out[key] = _json_value(value)
    return out


def _json_value(value: Any) -> Any:
    import datetime as dt
    import decimal

    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


__all__ = [
    "NoModel",
    "confusion_png",
    "curves_png",
    "explain",
    "health",
    "list_models",
    "misclassified",
    "misclassified_overlay",
    "model_detail",
    "predict",
    "recent_requests",
]
