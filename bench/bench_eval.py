"""Evaluator scoring throughput against ``model.predict`` on in-memory tensors.

    python -m bench.bench_eval [--arch ResNet50] [--image-size 64] [--images 256] [--repeats 5]

Both sides score the same images with the same model (rebuilt from Postgres through the
weight store, as the evaluator does):

- **evaluator**: ``services.evaluator.scoring.score`` exactly as the handler runs it:
  image bytes fetched from PostgreSQL in batches, decoded with the training decode,
  scored in inference mode, fetch/decode overlapped with the model;
- **baseline**: ``model.predict`` on the already decoded images held in memory.

Each side is warmed up, then timed ``--repeats`` times alternately; the best run of each
counts (these machines are noisy). Target: evaluator ≥ 0.9 x baseline images/s.
PostgreSQL: ``BENCH_DATABASE_URL`` if set, else a private server in a temporary directory.
The last line is JSON: ``{"bench": "eval", "ratio": ..., "target": 0.9, "pass": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGET = 0.9
CLASSES = ("vine", "ground", "grass")


def _photos(n: int) -> list[tuple[str, str, bytes]]:
    """Simulator field photos (128x96 JPEG): (sha256, tag, bytes)."""
    from services.simulator import field

    out = []
    for i in range(n):
        tag = CLASSES[i % len(CLASSES)]
        blob = field.render(f"bench-{i}", tag, 7)
        out.append((hashlib.sha256(blob).hexdigest(), tag, blob))
    return out


async def _seed(
    dsn: str, arch: str, image_size: int, photos: Sequence[tuple[str, str, bytes]]
) -> int:
    """Schema, one dataset whose test split holds the photos, one stored model."""
    import keras

    from shared import db
    from shared.modeling import ModelSpec, build_model
    from shared.weight_store import store_weights

    pool = await db.create_pool(dsn)
    try:
        await db.migrate(pool)
        request_id = uuid.uuid4()
        await db.ensure_request(pool, request_id, "training", {"bench": "eval"})
        async with pool.acquire() as con, con.transaction():
            dataset_id = await con.fetchval(
                "INSERT INTO datasets (start_date, end_date, tags, digest, test_fraction,"
                " val_fraction, seed, n_images, counts)"
                " VALUES ('2021-01-01', '2021-12-31', $1, $2, 0.2, 0.15, 0, $3, '{}')"
                " RETURNING id",
                list(CLASSES),
                uuid.uuid4().hex,
                len(photos),
            )
            await con.executemany(
                "INSERT INTO images (sha256, bytes, byte_size, width, height, format)"
                " VALUES ($1, $2, $3, 128, 96, 'JPEG') ON CONFLICT DO NOTHING",
                [(sha, blob, len(blob)) for sha, _, blob in photos],
            )
            await con.executemany(
                "INSERT INTO dataset_images (dataset_id, sha256, tag, source_url, split)"
                " VALUES ($1, $2, $3, 'bench', 'test')",
                [(dataset_id, sha, tag) for sha, tag, _ in photos],
            )
        keras.utils.set_random_seed(0)
        spec = ModelSpec(architecture=arch, image_size=image_size, class_names=CLASSES)
        model = build_model(spec)
        async with pool.acquire() as con, con.transaction():
            model_id = await con.fetchval(
                "INSERT INTO models (request_id, dataset_id, architecture, hyperparams,"
                " class_names, input_shape) VALUES ($1, $2, $3, '{}', $4, $5) RETURNING id",
                request_id,
                dataset_id,
                arch,
                list(CLASSES),
                [image_size, image_size, 3],
            )
            sha, nbytes = await store_weights(con, model_id, model)
            await con.execute(
                "UPDATE models SET status = 'trained', weights_sha256 = $2, weights_bytes = $3"
                " WHERE id = $1",
                model_id,
                sha,
                nbytes,
            )
        return int(model_id)
    finally:
        await pool.close()


async def _measure(dsn: str, model_id: int, batch_size: int, repeats: int) -> dict[str, Any]:
    import numpy as np

    from services.evaluator import handler, scoring, store
    from shared import db, images
    from shared.weight_store import load_model

    pool = await db.create_pool(dsn)
    try:
        model, spec, row = await load_model(pool, model_id)
        listing = await store.list_images(
            pool, int(row["dataset_id"]), "test", spec.class_names, model_id=model_id
        )
        shas = [r.sha256 for r in listing.images]
        predict, decode = handler.graph_scorer(model, spec.image_size)

        async def fetch(chunk: Sequence[str]) -> Sequence[bytes]:
            return await store.image_bytes(pool, chunk)

        # The baseline's in-memory tensors: the same images, decoded once, up front.
        blobs = await store.image_bytes(pool, shas)
        x = images.decode_images(list(blobs), spec.image_size)
        model.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # warm-up
        await scoring.score(predict, decode, fetch, shas[:batch_size], batch_size=batch_size)

        evaluator_runs, baseline_runs = [], []
        for _ in range(repeats):
            scores = await scoring.score(predict, decode, fetch, shas, batch_size=batch_size)
            evaluator_runs.append(scores.images_per_second)
            started = time.perf_counter()
            expected = model.predict(x, batch_size=batch_size, verbose=0)
            baseline_runs.append(len(x) / (time.perf_counter() - started))
        agree = float(np.mean(scores.probabilities.argmax(1) == expected.argmax(1)))
        max_diff = float(np.abs(scores.probabilities - expected).max())
        return {
            "evaluator_runs": evaluator_runs,
            "baseline_runs": baseline_runs,
            "argmax_agreement": agree,
            "max_probability_diff": max_diff,
            "n_images": len(shas),
        }
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ResNet50")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tmp: Path | None = None
    server = None
    dsn = os.environ.get("BENCH_DATABASE_URL")
    if not dsn:
        from localstack.servers import PostgresServer, free_port

        tmp = Path(tempfile.mkdtemp(prefix="chouette-bench-"))
        server = PostgresServer(tmp / "postgres", port=free_port(), durable=False)
        server.start()
        dsn = server.url
    try:
        photos = _photos(args.images)
        model_id = asyncio.run(_seed(dsn, args.arch, args.image_size, photos))
        result = asyncio.run(_measure(dsn, model_id, args.batch_size, args.repeats))
    finally:
        if server is not None:
            server.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    evaluator = max(result["evaluator_runs"])
    baseline = max(result["baseline_runs"])
    ratio = evaluator / baseline
    print(
        f"{args.arch} {args.image_size}px, {result['n_images']} images, batch {args.batch_size}:"
        f" evaluator (Postgres → decode → model) {evaluator:.1f} images/s,"
        f" model.predict on in-memory tensors {baseline:.1f} images/s"
    )
    print(
        "runs: evaluator "
        + ", ".join(f"{v:.1f}" for v in result["evaluator_runs"])
        + "; baseline "
        + ", ".join(f"{v:.1f}" for v in result["baseline_runs"])
        + f"; same predictions: {result['argmax_agreement']:.0%}"
        f" (max probability difference {result['max_probability_diff']:.1e})"
    )
    print(
        json.dumps(
            {
                "bench": "eval",
                "ratio": round(ratio, 3),
                "target": TARGET,
                "pass": ratio >= TARGET,
                "evaluator_images_per_s": round(evaluator, 1),
                "baseline_images_per_s": round(baseline, 1),
                "architecture": args.arch,
                "image_size": args.image_size,
                "n_images": result["n_images"],
            }
        )
    )


if __name__ == "__main__":
    main()
