"""Peak memory of a training against its dataset's size: N images vs 10xN images.

    .venv/bin/python -m bench.bench_memory [--images 40] [--factor 10] [--arch ResNet50]
                                           [--image-size 32] [--width 1024] [--height 768]

Uses ``BENCH_DATABASE_URL`` when set, else starts a private PostgreSQL. Seeds two
datasets of ``--width``x``--height`` JPEGs (random pixels: they compress poorly, so each
stored image weighs what a photo does, ~0.65 MB at 1024x768), one of ``--images`` images
and one ``--factor`` times larger (80 % train, 20 % val). Each is then trained for one
epoch by the trainer's own handler (``TrainerHandler``: the splits streamed from
PostgreSQL into the training's cache directory, ``train``, the weights stored), each in
a fresh Python process, whose peak resident memory (``ru_maxrss``) is measured. The
baseline is the small dataset's run, in the same benchmark; the two runs alternate in
order across ``--repeats`` and each side's median is kept. Last line:
``{"bench": "memory", "ratio": peak(10xN) / peak(N), "target": 1.3, "pass": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
import zlib
from pathlib import Path
from typing import Any

TARGET = 1.3
CLASSES = ("vine", "ground", "grass")


def _noise_jpeg(tag: str, index: int, *, seed: int = 0, width: int = 64, height: int = 48) -> bytes:
    """A JPEG of random pixels (distinct per tag, index and seed): photo-sized bytes, cheap."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng([seed, index, zlib.crc32(tag.encode())])
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


async def _seed(dsn: str, sizes: list[int], width: int, height: int) -> list[tuple[int, int]]:
    """One dataset per size: (dataset id, stored bytes of its images)."""
    from shared import db
    from tests.plugins import datasets

    datasets.photo = _noise_jpeg  # type: ignore[assignment]
    pool = await db.create_pool(dsn)
    try:
        await db.migrate(pool)
        made = []
        for n in sizes:
            per = max(2, n // len(CLASSES))
            dataset_id = await datasets.create_dataset(
                pool,
                per_class=dict.fromkeys(CLASSES, per),
                fractions=(0.8, 0.2, 0.0),
                seed=n,
                width=width,
                height=height,
            )
            nbytes = await pool.fetchval(
                "SELECT sum(i.byte_size) FROM dataset_images di"
                " JOIN images i ON i.sha256 = di.sha256 WHERE di.dataset_id = $1",
                dataset_id,
            )
            made.append((dataset_id, int(nbytes)))
        return made
    finally:
        await pool.close()


async def _train(dsn: str, dataset_id: int, args: argparse.Namespace) -> int:
    from services.trainer.handler import TrainerHandler
    from shared import db
    from shared.messages import TrainingDatasetReady, TrainingParams
    from shared.settings import TrainerSettings
    from tests.plugins.datasets import create_request

    pool = await db.create_pool(dsn)
    try:
        settings = TrainerSettings(  # type: ignore[call-arg]
            _env_file=None, cache_dir=args.cache_dir, min_train_images=4, model_cache=0
        )
        handler = TrainerHandler(pool, settings=settings)
        request_id = await create_request(pool, {"training": {}}, request_id=uuid.uuid4())
        params = TrainingParams(
            architecture=args.arch,
            epochs=1,
            batch_size=args.batch_size,
            image_size=args.image_size,
            min_images_per_epoch=0,
        )
        ready = await handler(
            TrainingDatasetReady(request_id=request_id, dataset_id=dataset_id, training=params)
        )
        return ready.model_id
    finally:
        await pool.close()


def child(args: argparse.Namespace) -> None:
    """One training in this process; prints its peak resident memory (bytes) last."""
    asyncio.run(_train(args.dsn, args.dataset_id, args))
    print(json.dumps({"maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def _measure(dsn: str, dataset_id: int, args: argparse.Namespace, cache_dir: Path) -> int:
    command = [
        sys.executable, "-m", "bench.bench_memory", "--child", "--dsn", dsn,
        "--dataset-id", str(dataset_id), "--cache-dir", str(cache_dir), "--arch", args.arch,
        "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"the training of dataset {dataset_id} failed ({done.returncode})")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["maxrss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--arch", default="ResNet50")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each size")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--dataset-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.child:
        child(args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="chouette-bench-memory-"))
    server = None
    dsn = os.environ.get("BENCH_DATABASE_URL")
    peaks: dict[str, list[int]] = {"small": [], "large": []}
    try:
        if not dsn:
            from localstack.servers import PostgresServer, free_port

            server = PostgresServer(tmp / "postgres", port=free_port(), superuser=True)
            server.start()
            dsn = server.url
        sizes = [args.images, args.images * args.factor]
        (small, small_bytes), (large, large_bytes) = asyncio.run(
            _seed(dsn, sizes, args.width, args.height)
        )
        print(
            f"datasets: {sizes[0]} images ({small_bytes / 2**20:.1f} MiB stored),"
            f" {sizes[1]} images ({large_bytes / 2**20:.1f} MiB stored)",
            flush=True,
        )
        for i in range(args.repeats):
            order = [("small", small), ("large", large)]
            for side, dataset_id in order if i % 2 == 0 else order[::-1]:
                peak = _measure(dsn, dataset_id, args, tmp / "cache")
                peaks[side].append(peak)
                print(f"run {i + 1}, {side}: peak RSS {peak / 2**20:.0f} MiB", flush=True)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    small_peak = statistics.median(peaks["small"])
    large_peak = statistics.median(peaks["large"])
    ratio = large_peak / small_peak
    print(
        f"{args.arch} {args.image_size}px, one epoch, {args.width}x{args.height} JPEGs:"
        f" peak RSS {small_peak / 2**20:.0f} MiB on {args.images} images,"
        f" {large_peak / 2**20:.0f} MiB on {args.images * args.factor} images"
        f" (+{(large_peak - small_peak) / 2**20:.0f} MiB), ratio {ratio:.3f}"
    )
    result: dict[str, Any] = {
        "bench": "memory",
        "ratio": round(ratio, 3),
        "target": TARGET,
        "pass": ratio <= TARGET,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
