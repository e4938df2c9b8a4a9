"""Store + load ResNet152 weights through PostgreSQL vs ``save_weights``/``load_weights`` on a file.

    .venv/bin/python -m bench.bench_weights [--arch ResNet152] [--repeats 3] [--no-fsync]

Uses ``BENCH_DATABASE_URL`` when set, else starts a private PostgreSQL (fsync on, like a
real deployment; ``--no-fsync`` for a throw-away one). Each repeat times, back to back:

- baseline: ``model.save_weights(file.weights.h5)`` + ``model.load_weights(file)``;
- store: ``shared.weight_store.store_weights`` in a transaction (parts, sha256, commit) +
  ``read_weights_into`` (stream, verify the digest, assign) into the same built model.

Peak extra memory (resident set above the level before the operation, from
``/proc/self/status`` VmHWM after resetting it) is reported for the store and the load.
Last line: ``{"bench": "weights", "ratio": store/baseline (medians), "target": 1.5, "pass": ...}``.
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
import uuid
from pathlib import Path
from typing import Any

TARGET = 1.5


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


async def _peak_extra_mib(op: Any) -> tuple[float, float]:
    """(seconds, peak extra resident MiB) of awaiting ``op()``."""
    can_reset = _reset_peak()
    before = _rss_kib("VmRSS")
    started = time.perf_counter()
    await op()
    seconds = time.perf_counter() - started
    peak = _rss_kib("VmHWM") if can_reset else before
    return seconds, max(0, peak - before) / 1024


async def _model_row(con: Any, architecture: str) -> int:
    request_id = uuid.uuid4()
    await con.execute(
        "INSERT INTO training_requests (id, kind, params) VALUES ($1, 'training', '{}')",
        request_id,
    )
    dataset_id = await con.fetchval(
        "INSERT INTO datasets (start_date, end_date, tags, digest, test_fraction, val_fraction,"
        " seed, n_images, counts) VALUES (current_date, current_date, '{vine,ground,grass}',"
        " $1, 0.2, 0.15, 0, 0, '{}') RETURNING id",
        uuid.uuid4().hex,
    )
    return int(
        await con.fetchval(
            "INSERT INTO models (request_id, dataset_id, architecture, hyperparams, class_names,"
            " input_shape) VALUES ($1, $2, $3, '{}', '{vine,ground,grass}', '{64,64,3}')"
            " RETURNING id",
            request_id,
            dataset_id,
            architecture,
        )
    )


async def run(dsn: str, architecture: str, repeats: int, workdir: Path) -> dict[str, Any]:
    from shared import db, weight_store
    from shared.modeling import ModelSpec, build_model

    spec = ModelSpec(architecture=architecture, image_size=64, class_names=("a", "b", "c"))
    model = await asyncio.to_thread(build_model, spec)
    nbytes = sum(int(v.numpy().nbytes) for v in model.weights)
    pool = await db.create_pool(dsn)
    try:
        await db.migrate(pool)
        async with pool.acquire() as con:
            model_id = await _model_row(con, architecture)
        path = workdir / "bench.weights.h5"
        rows: list[dict[str, float]] = []
        for _ in range(repeats):
            save_s, _ = await _peak_extra_mib(lambda: asyncio.to_thread(model.save_weights, path))
            load_s, _ = await _peak_extra_mib(lambda: asyncio.to_thread(model.load_weights, path))

            async def store() -> None:
                async with pool.acquire() as con, con.transaction():
                    await weight_store.store_weights(con, model_id, model)

            async def load() -> None:
                async with pool.acquire() as con:
                    await weight_store.read_weights_into(con, model_id, model)

            store_s, store_mib = await _peak_extra_mib(store)
            read_s, read_mib = await _peak_extra_mib(load)
            rows.append(
                {
                    "file_save_s": save_s,
                    "file_load_s": load_s,
                    "pg_store_s": store_s,
                    "pg_load_s": read_s,
                    "pg_store_peak_extra_mib": store_mib,
                    "pg_load_peak_extra_mib": read_mib,
                }
            )
            print(
                f"file save {save_s:.2f}s load {load_s:.2f}s | postgres store {store_s:.2f}s"
                f" (+{store_mib:.0f} MiB peak) load {read_s:.2f}s (+{read_mib:.0f} MiB peak)",
                flush=True,
            )
        parts = await pool.fetchval(
            "SELECT count(*) FROM model_weights WHERE model_id = $1", model_id
        )
    finally:
        await pool.close()
    return {"weights_mib": nbytes / 2**20, "parts": int(parts), "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ResNet152")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-fsync", action="store_true", help="private server without fsync")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    tmp = Path(tempfile.mkdtemp(prefix="chouette-bench-weights-"))
    server = None
    dsn = os.environ.get("BENCH_DATABASE_URL")
    try:
        if not dsn:
            from localstack.servers import PostgresServer, free_port

            server = PostgresServer(
                tmp / "postgres", port=free_port(), superuser=True, durable=not args.no_fsync
            )
            server.start()
            dsn = server.url
        result = asyncio.run(run(dsn, args.arch, args.repeats, tmp))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    runs = result["runs"]
    file_s = statistics.median(r["file_save_s"] + r["file_load_s"] for r in runs)
    pg_s = statistics.median(r["pg_store_s"] + r["pg_load_s"] for r in runs)
    peak = max(max(r["pg_store_peak_extra_mib"], r["pg_load_peak_extra_mib"]) for r in runs)
    ratio = pg_s / file_s
    print(
        f"{args.arch}: {result['weights_mib']:.0f} MiB of weights in {result['parts']} parts;"
        f" store+load through Postgres {pg_s:.2f}s vs save_weights+load_weights {file_s:.2f}s"
        f" (medians of {len(runs)}); peak extra memory {peak:.0f} MiB"
        f" ({peak / result['weights_mib']:.2f}x the weights)"
    )
    print(
        json.dumps(
            {
                "bench": "weights",
                "ratio": round(ratio, 3),
                "target": TARGET,
                "pass": ratio <= TARGET,
                "peak_extra_memory_ratio": round(peak / result["weights_mib"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
