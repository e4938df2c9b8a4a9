"""status, models and report read what the services wrote."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from chouette.errors import UsageError
from shared import db
from shared.messages import (
    MAX_ERROR_CHARS,
    EvaluationRequested,
    ModelReady,
    TrainingDatasetReady,
    TrainingParams,
)
from shared.settings import Settings
from tests.integration.chouette import seed
from tests.integration.chouette.helpers import chouette

pytestmark = pytest.mark.integration


async def test_status_lists_requests_and_shows_one_with_its_error(
    settings: Settings, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    done_id, _, _ = await seed.finished_model(pool, 0.8)
    failed_id = await seed.request(pool)
    await db.record_failure(
        pool,
        request_id=failed_id,
        queue="fetcher",
        stage="fetching",
        error="no images between 2019-01-01 and 2019-01-31 for tags vine, ground, grass",
    )
    assert await chouette(settings, "status") == 0
    listing = capsys.readouterr().out
    assert str(done_id)[:8] in listing and str(failed_id)[:8] in listing
    assert "succeeded" in listing and "failed" in listing

    assert await chouette(settings, "status", str(failed_id)[:8]) == 0
    text = capsys.readouterr().out
    assert "failed" in text
    assert "no images between 2019-01-01 and 2019-01-31" in text

    assert await chouette(settings, "status", str(done_id), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded"
    assert out["evaluation"]["macro_f1"] == pytest.approx(0.8)
    assert out["evaluation"]["confusion_matrix"] == [[2, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert set(out["evaluation"]) >= {"accuracy", "macro_f1", "n_images", "per_class"}

    assert await chouette(settings, "status", "--json") == 0
    listed = json.loads(capsys.readouterr().out)["requests"]
    assert {r["request_id"] for r in listed} == {str(done_id), str(failed_id)}


async def test_status_of_an_unknown_request_is_bad_input(settings: Settings, pool: db.Pool) -> None:
    with pytest.raises(UsageError, match="no request"):
        await chouette(settings, "status", "00000000")
    with pytest.raises(UsageError, match="not a request id"):
        await chouette(settings, "status", "'; DROP TABLE x")


async def test_models_lists_best_first(
    settings: Settings, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    _, weak, _ = await seed.finished_model(pool, 0.41, "ResNet101")
    _, strong, _ = await seed.finished_model(pool, 0.93, "ResNet50V2")
    _, middle, _ = await seed.finished_model(pool, 0.62, "ResNet50")
    # Another date range does not replace the held-out metrics of the row.
    later = await seed.dataset(pool, "2024-07-01", "2024-07-31")
    await seed.evaluation(pool, weak, later, 0.99, split="all")

    assert await chouette(settings, "models", "--json") == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert [r["model_id"] for r in rows] == [strong, middle, weak]
    assert rows[0]["architecture"] == "ResNet50V2"
    assert rows[0]["macro_f1"] == pytest.approx(0.93)
    assert rows[2]["n_evaluations"] == 2
    assert rows[2]["eval_split"] == "test"

    assert await chouette(settings, "models") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].split()[0] == str(strong)
    assert "ResNet50V2" in table[2]


async def test_report_writes_curves_confusion_matrix_and_summary(
    settings: Settings, pool: db.Pool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model_id, evaluation_id = await seed.finished_model(pool, 0.75)
    await pool.execute(
        "UPDATE models SET best_epoch = 2, final_metrics = $2 WHERE id = $1",
        model_id,
        {"stopped": "early_stopping", "epochs_run": 3, "val_loss": 0.5, "final_val_loss": 0.41,
         "final_val_accuracy": 0.875},
    )  # fmt: skip
    out = tmp_path / "report"
    assert await chouette(settings, "report", str(model_id), "--out", str(out)) == 0
    curves = out / "training_curves.png"
    matrix = out / f"confusion_matrix_eval{evaluation_id}.png"
    summary = (out / "summary.md").read_text()
    for png in (curves, matrix):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"# Model {model_id}: ResNet50" in summary
    assert "macro F1 0.750" in summary
    assert "| vine |" in summary
    assert "30 images (vine 10, ground 10, grass 10); train vine 7, ground 7, grass 6;" in summary
    assert "Weights kept: epoch 2 (lowest val_loss); stopped by early stopping after epoch 3" in (
        summary
    )
    assert "loss 0.410, accuracy 0.875" in summary
    assert str(curves) in capsys.readouterr().out
    with pytest.raises(UsageError, match="no model"):
        await chouette(settings, "report", "999")


@pytest.mark.parametrize("where", ["/proc/x", "a file", "under a file"])
async def test_report_to_a_place_it_cannot_write_is_one_line(
    where: str, settings: Settings, pool: db.Pool, tmp_path: Path
) -> None:
    _, model_id, _ = await seed.finished_model(pool, 0.75)
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    out = {"/proc/x": "/proc/x", "a file": str(existing), "under a file": f"{existing}/report"}
    with pytest.raises(UsageError, match=r"^--out: cannot write the report to .*: "):
        await chouette(settings, "report", str(model_id), "--out", out[where])
    assert existing.read_text() == "mine"


def _body(kind: str, request_id: uuid.UUID) -> bytes:
    if kind == "fetcher":
        return EvaluationRequested(request_id=request_id, model_id=3).to_json()
    if kind == "trainer":
        return TrainingDatasetReady(
            request_id=request_id,
            dataset_id=5,
            training=TrainingParams(architecture="ResNet50"),
        ).to_json()
    if kind == "evaluator":
        return ModelReady(request_id=request_id, model_id=4, dataset_id=5).to_json()
    return b"[" * 2000 + "\x00\ud800".encode(errors="surrogatepass")


@pytest.mark.parametrize(("queue", "kind"), [
    ("fetcher", "evaluation"), ("trainer", "training"), ("evaluator", "training"),
    ("garbage", "training"),
])  # fmt: skip
async def test_a_failed_request_with_no_row_is_shown_by_status(
    queue: str, kind: str, settings: Settings, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message for a request nobody recorded (published by hand, its row deleted): the
    service that fails it records the request, so `chouette status ID` says why."""
    request_id = uuid.uuid4()
    await db.record_failure(
        pool,
        request_id=request_id,
        queue=queue,
        stage="evaluating",
        error=f"dataset 5 does not exist {'x' * 100_000}",
        body=_body(queue, request_id),
    )
    assert await chouette(settings, "status", str(request_id)[:13]) == 0
    text = capsys.readouterr().out
    assert f"request   {request_id} ({kind}" in text
    assert "failed" in text and "dataset 5 does not exist xxx" in text
    row = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", request_id)
    assert (row["status"], row["stage"]) == ("failed", "evaluating")
    assert len(row["error"]) == MAX_ERROR_CHARS  # the error is cut, in both tables
    failure = await pool.fetchrow("SELECT * FROM failures WHERE request_id = $1", request_id)
    assert len(failure["error"]) == MAX_ERROR_CHARS
    assert len(failure["body"]) <= 10_000
