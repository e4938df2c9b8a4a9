"""Training images/s: the Postgres-backed ``tf.data`` input vs the same model on in-memory tensors.

    .venv/bin/python -m bench.bench_input [--arch ResNet50] [--image-size 64] [--images 192]
                                          [--epochs 3] [--batch-size 32] [--repeats 5]

Uses ``BENCH_DATABASE_URL`` when set, else starts a private PostgreSQL. Seeds a dataset
of simulated photos, then times, alternately:

- pipeline: stream the train split from Postgres as the trainer does
  (``store.split_batches`` into a ``SplitWriter``: decoded and resized once, one file per
  image), the trainer's ``training_dataset`` (seeded shuffle of indices, parallel reads of
  the files, batch, prefetch; augmentation off, as the baseline has none) and
  ``model.fit`` for ``--epochs`` epochs — all of it is timed;
- baseline: ``model.fit`` of the same network on the already decoded NumPy arrays.

Each side has its own model, warmed up by one untimed epoch (graph tracing). The two
sides run in pairs, back to back, the first of a pair alternating; the result is the
median of the pairs' ratios (this shared machine's speed drifts by a third within
minutes: comparing runs far apart, or each side's best, measured the drift). The
augmented pipeline's images/s is printed for information. Last line:
``{"bench": "input", "ratio": median pipeline/baseline, "target": 0.95, "pass": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.95
CLASSES = ("vine", "ground", "grass")


async def _seed(dsn: str, n_images: int) -> int:
    from shared import db
    from tests.plugins.datasets import create_dataset

    pool = await db.create_pool(dsn)
    try:
        await db.migrate(pool)
        per = n_images // 3
        return await create_dataset(
            pool, per_class=dict.fromkeys(CLASSES, per), fractions=(1.0, 0.0, 0.0)
        )
    finally:
        await pool.close()


async def _read_split(dsn: str, dataset_id: int) -> list[tuple[bytes, str, str | None]]:
    from services.trainer import store
    from shared import db

    pool = await db.create_pool(dsn)
    try:
        return await store.split_images(pool, dataset_id, "train")
    finally:
        await pool.close()


async def _stream_split(dsn: str, dataset_id: int, folder: Path, image_size: int) -> Any:
    """The train split as the trainer reads it: streamed into resized files in ``folder``."""
    from services.trainer import store
    from services.trainer.image_files import SplitWriter
    from shared import db

    shutil.rmtree(folder, ignore_errors=True)
    writer = SplitWriter(folder, image_size, CLASSES)
    pool = await db.create_pool(dsn)
    try:
        async for rows in store.split_batches(pool, dataset_id, "train", 32):
            await asyncio.to_thread(writer.add, rows)
    finally:
        await pool.close()
    return writer.split()


def run(dsn: str, dataset_id: int, args: argparse.Namespace) -> dict[str, Any]:
    import keras

    from services.trainer.dataset import Split, training_dataset
    from shared.images import decode_images
    from shared.modeling import ModelSpec, build_model

    spec = ModelSpec(architecture=args.arch, image_size=args.image_size, class_names=CLASSES)

    def compiled() -> Any:
        keras.utils.set_random_seed(0)
        model = build_model(spec)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return model

    rows = asyncio.run(_read_split(dsn, dataset_id))
    split = Split.from_rows(rows, CLASSES)
    x = decode_images(split.images, args.image_size)
    y = split.labels

    def pipeline(model: Any, augment: bool, epochs: int) -> float:
        started = time.perf_counter()
        folder = Path(tempfile.mkdtemp(prefix="chouette-bench-input-files-")) / "train"
        data = asyncio.run(_stream_split(dsn, dataset_id, folder, args.image_size))
        ds = training_dataset(data, args.image_size, args.batch_size, augment=augment, seed=0)
        model.fit(ds, epochs=epochs, verbose=0)
        rate = len(data) * epochs / (time.perf_counter() - started)
        shutil.rmtree(folder.parent, ignore_errors=True)
        return rate

    def baseline(model: Any, epochs: int) -> float:
        started = time.perf_counter()
        model.fit(x, y, batch_size=args.batch_size, epochs=epochs, verbose=0)
        return len(x) * epochs / (time.perf_counter() - started)

    piped, plain, augmented = compiled(), compiled(), compiled()
    pipeline(piped, False, 1)  # warm-up: traces the training step
    baseline(plain, 1)
    pipeline(augmented, True, 1)
    pipeline_runs, baseline_runs, ratios = [], [], []
    for i in range(args.repeats):
        if i % 2 == 0:
            piped_rate = pipeline(piped, False, args.epochs)
            plain_rate = baseline(plain, args.epochs)
        else:
            plain_rate = baseline(plain, args.epochs)
            piped_rate = pipeline(piped, False, args.epochs)
        pipeline_runs.append(piped_rate)
        baseline_runs.append(plain_rate)
        ratios.append(piped_rate / plain_rate)
        print(
            f"pair {i + 1}: pipeline {piped_rate:.1f} images/s,"
            f" in-memory {plain_rate:.1f} images/s, ratio {ratios[-1]:.3f}",
            flush=True,
        )
    return {
        "ratio": statistics.median(ratios),
        "pipeline": statistics.median(pipeline_runs),
        "baseline": statistics.median(baseline_runs),
        "augmented": pipeline(augmented, True, args.epochs),
        "n_images": len(x),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ResNet50")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="pairs of timed runs")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    tmp = Path(tempfile.mkdtemp(prefix="chouette-bench-input-"))
    server = None
    dsn = os.environ.get("BENCH_DATABASE_URL")
    try:
        if not dsn:
            from localstack.servers import PostgresServer, free_port

            server = PostgresServer(tmp / "postgres", port=free_port(), superuser=True)
            server.start()
            dsn = server.url
        dataset_id = asyncio.run(_seed(dsn, args.images))
        result = run(dsn, dataset_id, args)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    ratio = result["ratio"]
    print(
        f"{args.arch} {args.image_size}px, {result['n_images']} images, batch {args.batch_size},"
        f" {args.epochs} epochs (medians): Postgres + tf.data {result['pipeline']:.1f} images/s,"
        f" in-memory tensors {result['baseline']:.1f} images/s, ratio {ratio:.3f};"
        f" with augmentation {result['augmented']:.1f} images/s"
    )
    print(
        json.dumps(
            {"bench": "input", "ratio": round(ratio, 3), "target": TARGET, "pass": ratio >= TARGET}
        )
    )


if __name__ == "__main__":
    main()
