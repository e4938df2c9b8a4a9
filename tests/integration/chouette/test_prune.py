"""``chouette prune``: a dry run lists, ``--apply`` removes exactly what retention allows."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from shared import db, weight_store
from shared.settings import Settings
from tests.integration.chouette import seed
from tests.integration.chouette.helpers import chouette

pytestmark = pytest.mark.integration

PART = b"x" * 1000


async def _model(pool: db.Pool, *, days_ago: float, status: str = "trained") -> int:
    request_id = await seed.request(pool)
    dataset_id = await seed.dataset(pool)
    model_id = await seed.model(pool, request_id, dataset_id)
    await pool.execute(
        "UPDATE models SET status = $2, trained_at = now() - make_interval(days => $3)"
        " WHERE id = $1",
        model_id,
        status,
        int(days_ago),
    )
    await pool.execute(
        "INSERT INTO model_checkpoints (model_id, epoch, part, bytes) VALUES ($1, 1, 0, $2)",
        model_id,
        PART,
    )
    if status == "trained":
        await pool.execute(
            "INSERT INTO model_weights (model_id, part, bytes) VALUES ($1, 0, $2)", model_id, PART
        )
    return model_id


async def _image(pool: db.Pool, name: str, *, days_ago: int, dataset_id: int | None) -> str:
    sha = hashlib.sha256(name.encode()).hexdigest()
    await pool.execute(
        "INSERT INTO images (sha256, bytes, byte_size, width, height, format, created_at)"
        " VALUES ($1, $2, 100, 8, 8, 'JPEG', now() - make_interval(days => $3))",
        sha,
        b"y" * 100,
        days_ago,
    )
    await pool.execute(
        "INSERT INTO image_sources (source_key, sha256) VALUES ($1, $2)", f"http://h/{name}", sha
    )
    if dataset_id is not None:
        await pool.execute(
            "INSERT INTO dataset_images (dataset_id, sha256, tag, source_url, split)"
            " VALUES ($1, $2, 'vine', 'http://h/x', 'train')",
            dataset_id,
            sha,
        )
    return sha


_COUNTS = {
    "model_checkpoints": "SELECT model_id AS k, count(*) AS n FROM model_checkpoints"
    " WHERE model_id = ANY($1) GROUP BY model_id",
    "model_weights": "SELECT model_id AS k, count(*) AS n FROM model_weights"
    " WHERE model_id = ANY($1) GROUP BY model_id",
}


async def _counts(pool: db.Pool, table: str, ids: list[Any]) -> dict[Any, int]:
    return {r["k"]: int(r["n"]) for r in await pool.fetch(_COUNTS[table], ids)}


async def test_prune_dry_run_then_apply(
    pool: db.Pool, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    old = await _model(pool, days_ago=40)
    recent = await _model(pool, days_ago=2)
    champion = await _model(pool, days_ago=40)
    evaluation_id = await seed.evaluation(
        pool,
        champion,
        await pool.fetchval("SELECT dataset_id FROM models WHERE id = $1", champion),
        0.9,
    )
    await pool.execute(
        "INSERT INTO champions (class_set, model_id, evaluation_id, macro_f1)"
        " VALUES ('grass,ground,vine', $1, $2, 0.9)",
        champion,
        evaluation_id,
    )
    failed = await _model(pool, days_ago=5, status="failed")
    running = await _model(pool, days_ago=0, status="training")
    await pool.execute(
        "UPDATE models SET lease_until = now() + interval '1 minute' WHERE id = $1", running
    )
    kept_dataset = await seed.dataset(pool)
    used = await _image(pool, "used", days_ago=10, dataset_id=kept_dataset)
    orphan = await _image(pool, "orphan", days_ago=10, dataset_id=None)
    fresh = await _image(pool, "fresh", days_ago=0, dataset_id=None)  # a fetch in progress
    models = [old, recent, champion, failed, running]

    assert await chouette(settings, "prune", "--json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["applied"] is False
    assert dry["checkpoints"] == {"count": 4, "bytes": 4 * len(PART)}
    assert dry["weights"] == {"count": 1, "bytes": len(PART)}
    assert dry["images"] == {"count": 1, "bytes": 100}
    assert len(await _counts(pool, "model_checkpoints", models)) == 5  # untouched
    assert await pool.fetchval("SELECT count(*) FROM images") == 3

    assert await chouette(settings, "prune", "--apply") == 0
    assert "removed" in capsys.readouterr().out
    assert await _counts(pool, "model_checkpoints", models) == {running: 1}
    assert await _counts(pool, "model_weights", models) == {recent: 1, champion: 1}
    images = {r["sha256"] for r in await pool.fetch("SELECT sha256 FROM images")}
    assert images == {used, fresh} and orphan not in images
    assert await pool.fetchval("SELECT count(*) FROM image_sources WHERE sha256 = $1", orphan) == 0
    with pytest.raises(weight_store.ModelNotReady, match="removed by `chouette prune`"):
        await weight_store.load_model(pool, old)
    # Rows, metrics and evaluations of pruned models stay.
    assert await pool.fetchval("SELECT status FROM models WHERE id = $1", old) == "trained"

    assert await chouette(settings, "prune", "--apply", "--weights-older-than", "1") == 0
    capsys.readouterr()
    assert await _counts(pool, "model_weights", models) == {champion: 1}


async def test_prune_changes_nothing_without_apply(
    pool: db.Pool, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    old = await _model(pool, days_ago=400)
    assert await chouette(settings, "prune") == 0
    out = capsys.readouterr().out
    assert "dry run: nothing removed" in out
    assert await _counts(pool, "model_weights", [old]) == {old: 1}
