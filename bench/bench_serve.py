"""Prediction API throughput (``POST /predict``, 16 concurrent clients) against in-process
``model.predict`` on the same images in batches, doing the same work.

    python -m bench.bench_serve [--arch ResNet50] [--image-size 64] [--images 384]
                                [--clients 16] [--repeats 3] [--tta both|on|off]

- **API**: ``python -m services.api`` as its own process (what ``chouette worker api``
  runs) serving the champion, a model stored in PostgreSQL; ``--clients`` aiohttp clients
  in this process send one photo per request, each the next as soon as its answer came
  back. Throughput is images answered per second; latency per request (p50, p99). The
  clients share the machine's cores with the API, so they cost as little as a load
  generator can: each request's multipart body is encoded once, before the clock starts.
- **baseline**: in this process, the same model (read back through the weight store)
  called with ``model.predict`` on the same photos already decoded, in batches of
  ``API_BATCH_SIZE`` (32): the model's own speed, without HTTP, multipart or decoding.

Two configurations, each against its own baseline: the API as it ships (``API_TTA=true``,
each image scored as the mean over its 8 flips/turns) against ``model.predict`` on those
8 views, and ``API_TTA=false`` against ``model.predict`` on the images. The second is the
harder test of the serving overhead: 8 times less model work per request.

Both sides are warmed up, then run ``--repeats`` times alternately; the best run of each
counts (these machines are noisy). Target: API ≥ 0.7 x baseline images/s in each.
PostgreSQL: ``BENCH_DATABASE_URL`` if set, else a private server in a temporary directory.
The last line is JSON: ``{"bench": "serve", "ratio": <the lower>, "target": 0.7, "pass":
..., "configurations": [...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.7
CLASSES = ("vine", "ground", "grass")


def _photos(n: int) -> list[bytes]:
    """Simulator field photos (128x96 JPEG)."""
    from services.simulator import field

    return [field.render(f"serve-{i}", CLASSES[i % 3], 7) for i in range(n)]


async def _seed(dsn: str, arch: str, image_size: int) -> int:
    """Schema, a dataset row, one stored model made champion; returns its id."""
    import keras

    from shared import champions, db
    from shared.modeling import ModelSpec, build_model
    from shared.weight_store import store_weights

    pool = await db.create_pool(dsn)
    try:
        await db.migrate(pool)
        async with pool.acquire() as con, con.transaction():
            request_id = await con.fetchval(
                "INSERT INTO training_requests (id, kind, params)"
                " VALUES (gen_random_uuid(), 'training', '{}') RETURNING id"
            )
            dataset_id = await con.fetchval(
                "INSERT INTO datasets (start_date, end_date, tags, digest, test_fraction,"
                " val_fraction, seed, n_images, counts)"
                " VALUES ('2021-01-01', '2021-12-31', $1, gen_random_uuid()::text, 0.2, 0.15,"
                " 0, 0, '{}') RETURNING id",
                list(CLASSES),
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
        await champions.promote(pool, int(model_id))
        return int(model_id)
    finally:
        await pool.close()


def _start_api(dsn: str, port: int, logdir: Path, tta: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("API_")}
    env.update(
        {"DATABASE_URL": dsn, "API_PORT": str(port), "API_TTA": str(tta).lower(),
         "LOG_LEVEL": "WARNING", "TF_CPP_MIN_LOG_LEVEL": "2"}
    )  # fmt: skip
    log = (logdir / "api.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "services.api"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes], within_s: float = 300) -> None:
    import aiohttp

    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited with {proc.returncode}")
            try:
                async with session.get(url + "/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("the API did not become healthy")


BOUNDARY = "chouette-bench-boundary"
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _form(name: str, photo: bytes) -> bytes:
    """The multipart body of a ``/predict`` call with one photo."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="{name}"'
        "\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    return head.encode() + photo + f"\r\n--{BOUNDARY}--\r\n".encode()


async def _clients(url: str, photos: list[bytes], clients: int) -> tuple[float, list[float]]:
    """(seconds for all photos, per-request latencies) with ``clients`` in flight."""
    import aiohttp

    bodies = [_form(f"{i}.jpg", photo) for i, photo in enumerate(photos)]
    headers = {"Content-Type": FORM_TYPE}
    latencies: list[float] = []
    next_index = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < len(bodies):
            i = next_index
            next_index += 1
            started = time.perf_counter()
            async with session.post(url + "/predict", data=bodies[i], headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"/predict answered {resp.status}: {body[:200]!r}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return time.perf_counter() - started, latencies


async def _model_calls(url: str) -> tuple[float, float]:
    """(model calls, images scored) so far, from the API's ``/metrics``."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    found = {}
    for line in text.splitlines():
        for name in ("count", "sum"):
            if line.startswith(f"chouette_api_batch_images_{name} "):
                found[name] = float(line.split()[1])
    return found["count"], found["sum"]


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def _views(x: Any) -> Any:
    """The 8 flips/turns of each image (``shared.modeling``'s test-time augmentation), in
    NumPy: what ``model.predict`` must score to do the API's work with ``API_TTA=true``."""
    import numpy as np

    return np.concatenate(
        [np.rot90(m, k, axes=(1, 2)) for m in (x, x[:, :, ::-1]) for k in range(4)]
    )


async def _measure(
    dsn: str, model_id: int, args: argparse.Namespace, url: str, tta: bool
) -> dict[str, Any]:
    from shared import db, images
    from shared.weight_store import load_model

    photos = _photos(args.images)
    pool = await db.create_pool(dsn)
    try:
        model, spec, _ = await load_model(pool, model_id)
    finally:
        await pool.close()
    x = images.decode_images(photos, spec.image_size)

    def baseline() -> None:
        if tta:
            out = model.predict(_views(x), batch_size=args.batch_size, verbose=0)
            out.reshape(8, len(x), -1).mean(axis=0)
        else:
            model.predict(x, batch_size=args.batch_size, verbose=0)

    model.predict(x[: args.batch_size], batch_size=args.batch_size, verbose=0)  # warm-up
    await _clients(url, photos[: args.clients * 2], args.clients)  # warm-up
    api_runs, baseline_runs, latencies = [], [], []
    calls_before, images_before = await _model_calls(url)
    for _ in range(args.repeats):
        seconds, lat = await _clients(url, photos, args.clients)
        api_runs.append(len(photos) / seconds)
        latencies.append(lat)
        started = time.perf_counter()
        baseline()
        baseline_runs.append(len(x) / (time.perf_counter() - started))
    calls, scored = await _model_calls(url)
    best = max(range(args.repeats), key=lambda i: api_runs[i])
    api_rate, baseline_rate = max(api_runs), max(baseline_runs)
    return {
        "test_time_augmentation": tta,
        "ratio": round(api_rate / baseline_rate, 3),
        "api_images_per_s": round(api_rate, 1),
        "baseline_images_per_s": round(baseline_rate, 1),
        "p50_ms": round(_percentile(latencies[best], 50) * 1000, 1),
        "p99_ms": round(_percentile(latencies[best], 99) * 1000, 1),
        "api_batch_mean": round((scored - images_before) / max(1.0, calls - calls_before), 1),
        "api_runs": [round(v, 1) for v in api_runs],
        "baseline_runs": [round(v, 1) for v in baseline_runs],
    }


def _run(dsn: str, model_id: int, args: argparse.Namespace, tmp: Path, tta: bool) -> Any:
    """One configuration: its own API process, measured, stopped."""
    from localstack.servers import free_port
    from shared.runtime import new_event_loop

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = _start_api(dsn, port, tmp, tta)
    try:
        asyncio.run(_wait_healthy(url, api))
        # The clients share the machine with the API: the services' event loop (uvloop)
        # keeps what they cost low.
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(_measure(dsn, model_id, args, url, tta))
    except Exception:
        log = tmp / "api.log"
        if log.exists():
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        api.terminate()
        api.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ResNet50")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32, help="the baseline's batches")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tta", choices=("both", "on", "off"), default="both")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tmp = Path(tempfile.mkdtemp(prefix="chouette-bench-"))
    server = None
    dsn = os.environ.get("BENCH_DATABASE_URL")
    from localstack.servers import PostgresServer, free_port

    configurations = {"both": (True, False), "on": (True,), "off": (False,)}[args.tta]
    results = []
    try:
        if not dsn:
            server = PostgresServer(tmp / "postgres", port=free_port(), durable=False)
            server.start()
            dsn = server.url
        model_id = asyncio.run(_seed(dsn, args.arch, args.image_size))
        for tta in configurations:
            r = _run(dsn, model_id, args, tmp, tta)
            results.append(r)
            print(
                f"{args.arch} {args.image_size}px, {args.images} images, {args.clients} clients,"
                f" API_TTA={str(tta).lower()}: API {r['api_images_per_s']:.1f} images/s"
                f" (p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms; model calls of"
                f" {r['api_batch_mean']:.1f} images on average), model.predict in batches of"
                f" {args.batch_size}{' on the 8 views' if tta else ''}"
                f" {r['baseline_images_per_s']:.1f} images/s: ratio {r['ratio']:.3f}"
            )
            print(
                f"  runs: API {', '.join(map(str, r['api_runs']))};"
                f" baseline {', '.join(map(str, r['baseline_runs']))}"
            )
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    ratio = min(r["ratio"] for r in results)
    summary = {
        "bench": "serve",
        "ratio": ratio,
        "target": TARGET,
        "pass": ratio >= TARGET,
        "architecture": args.arch,
        "image_size": args.image_size,
        "clients": args.clients,
        "configurations": [
            {k: v for k, v in r.items() if not k.endswith("_runs")} for r in results
        ],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
