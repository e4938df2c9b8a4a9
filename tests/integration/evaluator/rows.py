"""Rows as the fetcher and trainer write them: requests, datasets with real images, models.

Models are stored through the trainer's own weight store (``shared.weight_store``), so
the evaluator reads back exactly what a trainer would have written.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from shared import db

CLASSES = ("vine", "ground", "grass")
# A colour per class, so images of a class look alike (the model need not be good).
_COLOURS = {"vine": (40, 90, 30), "ground": (120, 85, 50), "grass": (60, 170, 60)}


def jpeg(tag: str, key: str, size: tuple[int, int] = (40, 30)) -> bytes:
    """A small JPEG in the class's colour with noise seeded by ``key`` (distinct keys,
    distinct bytes)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8]))
    base = np.array(_COLOURS.get(tag, (128, 128, 128)), np.int16)
    noise = rng.integers(-40, 40, (size[1], size[0], 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


async def request(pool: db.Pool, kind: str = "training") -> uuid.UUID:
    request_id = uuid.uuid4()
    await db.ensure_request(pool, request_id, kind, {"test": True})
    return request_id


async def dataset(
    pool: db.Pool,
    splits: Mapping[str, Mapping[str, int]],
    *,
    salt: str = "",
    shared: Mapping[str, Sequence[tuple[str, str, bytes]]] | None = None,
) -> tuple[int, dict[str, list[tuple[str, str, bytes]]]]:
    """A dataset with ``splits[split][tag]`` images each, plus the images of ``shared``
    (images of another dataset, as returned here, placed in the split named by the key: an
    overlapping date range); returns its id and the images per split as (sha256, tag, bytes)."""
    counts: dict[str, int] = {}
    stored: dict[str, list[tuple[str, str, bytes]]] = {}
    for split, per_tag in splits.items():
        for tag, n in per_tag.items():
            for i in range(n):
                blob = jpeg(tag, f"{salt}/{split}/{tag}/{i}")
                stored.setdefault(split, []).append((hashlib.sha256(blob).hexdigest(), tag, blob))
    for split, items in (shared or {}).items():
        stored.setdefault(split, []).extend(items)
    for items in stored.values():
        for _, tag, _ in items:
            counts[tag] = counts.get(tag, 0) + 1
    async with pool.acquire() as con, con.transaction():
        dataset_id = await con.fetchval(
            "INSERT INTO datasets (start_date, end_date, tags, digest, test_fraction,"
            " val_fraction, seed, n_images, counts)"
            " VALUES ('2021-05-01', '2021-05-31', $1, $2, 0.2, 0.15, 42, $3, $4) RETURNING id",
            sorted(counts),
            uuid.uuid4().hex,
            sum(counts.values()),
            counts,
        )
        for split, items in stored.items():
            for sha, tag, blob in items:
                await con.execute(
                    "INSERT INTO images (sha256, bytes, byte_size, width, height, format)"
                    " VALUES ($1, $2, $3, 40, 30, 'JPEG') ON CONFLICT DO NOTHING",
                    sha,
                    blob,
                    len(blob),
                )
                await con.execute(
                    "INSERT INTO dataset_images (dataset_id, sha256, tag, source_url, split)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    dataset_id,
                    sha,
                    tag,
                    f"https://example.test/{sha}.jpg",
                    split,
                )
    return int(dataset_id), stored


async def model_row(
    pool: db.Pool,
    dataset_id: int,
    *,
    classes: Sequence[str] = CLASSES,
    architecture: str = "ResNet50",
    image_size: int = 32,
    status: str = "trained",
) -> tuple[uuid.UUID, int]:
    """A models row without weights (for store-level tests)."""
    request_id = await request(pool)
    model_id = await pool.fetchval(
        "INSERT INTO models (request_id, dataset_id, architecture, hyperparams, class_names,"
        " input_shape, status, trained_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now())"
        " RETURNING id",
        request_id,
        dataset_id,
        architecture,
        {"architecture": architecture, "image_size": image_size, "dropout": 0.0},
        list(classes),
        [image_size, image_size, 3],
        status,
    )
    return request_id, int(model_id)


async def stored_model(
    pool: db.Pool,
    dataset_id: int,
    *,
    classes: Sequence[str] = CLASSES,
    architecture: str = "ResNet50",
    image_size: int = 32,
    part_bytes: int = 1 << 20,
    seed: int = 0,
) -> tuple[uuid.UUID, int, Any]:
    """A trained-looking model whose weights the trainer's weight store wrote.

    Returns (request id, model id, the Keras model) with random (seeded) weights.
    """
    import keras

    from shared.modeling import ModelSpec, build_model
    from shared.weight_store import store_weights

    keras.utils.set_random_seed(seed)
    spec = ModelSpec(architecture=architecture, image_size=image_size, class_names=tuple(classes))
    model = build_model(spec)
    request_id, model_id = await model_row(
        pool, dataset_id, classes=classes, architecture=architecture, image_size=image_size,
        status="training",
    )  # fmt: skip
    async with pool.acquire() as con, con.transaction():
        sha, nbytes = await store_weights(con, model_id, model, part_bytes)
        await con.execute(
            "UPDATE models SET status = 'trained', weights_sha256 = $2, weights_bytes = $3"
            " WHERE id = $1",
            model_id,
            sha,
            nbytes,
        )
    await db.set_stage(pool, request_id, "evaluating", model_id=model_id, dataset_id=dataset_id)
    return request_id, model_id, model
