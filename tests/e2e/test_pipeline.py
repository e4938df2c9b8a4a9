"""CLI → fetcher → trainer → evaluator → rows, with the real services and the simulator.

Tiny on purpose (32 px, one epoch, a week of images): these tests prove the wiring, the
messages and the rows, not the quality of the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.pipeline import EMPTY_RANGE, LATER_RANGE, TRAIN_RANGE, SessionPipeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY = [
    "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--no-augment",
    "--min-images-per-epoch", "0",
]  # fmt: skip
_trained: dict[str, dict[str, Any]] = {}


def train(pipeline: SessionPipeline, architecture: str) -> dict[str, Any]:
    """Train once per architecture in the session (--wait --json); return the JSON result."""
    if architecture not in _trained:
        start, end = TRAIN_RANGE
        done = pipeline.chouette(
            "train",
            "--start-date",
            start,
            "--end-date",
            end,
            "--arch",
            architecture,
            *TINY,
            "--wait",
            "--json",
            "--timeout",
            "900",
        )
        pipeline.check_alive()
        assert done.returncode == 0, done.stdout + done.stderr
        _trained[architecture] = json.loads(done.stdout)
    return _trained[architecture]


@pytest.mark.parametrize("architecture", ["ResNet50", "ResNet50V2"])
def test_training_request_ends_evaluated_with_rows_everywhere(
    pipeline: SessionPipeline, architecture: str
) -> None:
    result = train(pipeline, architecture)
    assert result["status"] == "succeeded"
    assert result["error"] is None
    evaluation = result["evaluation"]
    assert evaluation["split"] == "test"
    assert evaluation["n_images"] > 0
    assert 0 <= evaluation["accuracy"] <= 1 and 0 <= evaluation["macro_f1"] <= 1
    assert set(evaluation["per_class"]) <= {"vine", "ground", "grass"}
    n = len(evaluation["class_names"])
    assert len(evaluation["confusion_matrix"]) == n
    assert sum(map(sum, evaluation["confusion_matrix"])) == evaluation["n_images"]

    (model,) = pipeline.fetch(
        "SELECT m.*, (SELECT count(*) FROM model_weights w WHERE w.model_id = m.id) AS parts,"
        " (SELECT count(*) FROM training_epochs e WHERE e.model_id = m.id) AS epochs"
        " FROM models m WHERE m.id = $1",
        result["model_id"],
    )
    assert model["architecture"] == architecture
    assert model["status"] == "trained"
    assert model["dataset_id"] == result["dataset_id"]
    assert model["parts"] >= 1 and model["weights_sha256"]
    assert model["epochs"] == 1
    (dataset,) = pipeline.fetch("SELECT * FROM datasets WHERE id = $1", result["dataset_id"])
    assert str(dataset["start_date"]) == TRAIN_RANGE[0]
    assert 15 <= dataset["n_images"] <= 40
    (progress,) = pipeline.fetch(
        "SELECT * FROM request_progress WHERE request_id = $1::uuid", result["request_id"]
    )
    assert (progress["status"], progress["stage"]) == ("succeeded", "done")
    assert progress["architecture"] == architecture
    board = pipeline.fetch("SELECT * FROM leaderboard WHERE model_id = $1", result["model_id"])
    assert len(board) >= 1


def test_evaluating_an_existing_model_on_a_later_range(pipeline: SessionPipeline) -> None:
    trained = train(pipeline, "ResNet50V2")
    start, end = LATER_RANGE
    done = pipeline.chouette(
        "evaluate",
        "--model",
        str(trained["model_id"]),
        "--start-date",
        start,
        "--end-date",
        end,
        "--wait",
        "--json",
        "--timeout",
        "600",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    assert result["model_id"] == trained["model_id"]
    assert result["dataset_id"] not in (None, trained["dataset_id"])
    evaluation = result["evaluation"]
    assert evaluation["dataset_id"] == result["dataset_id"]
    assert evaluation["n_images"] >= 15  # the whole later week, not a split of it
    (row,) = pipeline.fetch(
        "SELECT * FROM evaluation_summary WHERE evaluation_id = $1", evaluation["evaluation_id"]
    )
    assert str(row["start_date"]) == start

    models = json.loads(pipeline.chouette("models", "--json").stdout)["models"]
    (listed,) = [m for m in models if m["model_id"] == trained["model_id"]]
    assert listed["n_evaluations"] >= 2
    assert listed["eval_split"] == "test"  # the registry shows the held-out metrics


def test_a_range_without_images_fails_with_a_clear_message(pipeline: SessionPipeline) -> None:
    start, end = EMPTY_RANGE
    done = pipeline.chouette(
        "train",
        "--start-date",
        start,
        "--end-date",
        end,
        "--arch",
        "ResNet50",
        *TINY,
        "--wait",
        "--timeout",
        "300",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    request_id = done.stdout.splitlines()[0]
    assert "no images" in done.stderr
    status = pipeline.chouette("status", request_id)
    assert status.returncode == 0
    assert "failed" in status.stdout
    assert "no images" in status.stdout and start in status.stdout
    as_json = json.loads(pipeline.chouette("status", request_id, "--json").stdout)
    assert as_json["status"] == "failed"
    assert as_json["stage"] == "fetching"
    assert "no images" in as_json["error"]
    pipeline.check_alive()


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--arch", "ResNet18"], "--arch"),
        (["--arch", "ResNet50", "--epochs", "0"], "--epochs"),
        (["--arch", "ResNet50", "--tags", "vine,weeds"], "--tags"),
        (["--arch", "ResNet50", "--test-fraction", "1"], "--test-fraction"),
    ],
)
def test_bad_requests_are_rejected_at_the_cli(
    pipeline: SessionPipeline, argv: list[str], field: str
) -> None:
    before = pipeline.fetch("SELECT count(*) AS n FROM training_requests")[0]["n"]
    start, end = TRAIN_RANGE
    done = pipeline.chouette("train", "--start-date", start, "--end-date", end, *argv)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and field in done.stderr
    assert pipeline.fetch("SELECT count(*) AS n FROM training_requests")[0]["n"] == before


def test_predict_and_report_read_the_model_from_postgres(
    pipeline: SessionPipeline, tmp_path: Path
) -> None:
    from services.simulator.field import render

    trained = train(pipeline, "ResNet50")
    images = []
    for image_id, tag in (("20210503-vine-01", "vine"), ("20210503-grass-01", "grass")):
        path = tmp_path / f"{tag}.jpg"
        path.write_bytes(render(image_id, tag, 2020))
        images.append(str(path))
    done = pipeline.chouette("predict", "--model", str(trained["model_id"]), *images, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    predictions = json.loads(done.stdout)["predictions"]
    assert [p["image"] for p in predictions] == images
    for p in predictions:
        assert sum(p["probabilities"].values()) == pytest.approx(1, abs=0.01)

    missing = pipeline.chouette("predict", "--model", str(trained["model_id"]), "nope.jpg")
    assert missing.returncode == 2 and "nope.jpg" in missing.stderr

    out = tmp_path / "report"
    report = pipeline.chouette("report", str(trained["model_id"]), "--out", str(out))
    assert report.returncode == 0, report.stderr
    assert (out / "training_curves.png").exists()
    assert "macro F1" in (out / "summary.md").read_text()
