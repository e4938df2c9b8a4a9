"""The later-range figure beside the held-out test split: model_registry, `chouette models`,
`status`, `report`, and the 031 migration's backfill of earlier evaluations."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from chouette import queries
from shared import db
from shared.settings import Settings
from tests.integration.chouette import seed
from tests.integration.chouette.helpers import chouette

pytestmark = pytest.mark.integration

MIGRATION = Path(db.MIGRATIONS_DIR) / "031_evaluation_excluded.sql"
FLATTER = "photos of the training range flatter the test split"


async def _models(pool: db.Pool) -> dict[str, int]:
    """Three trained models with a test split figure and later date ranges."""
    _, flattered, _ = await seed.finished_model(pool, 0.84, "ResNet50V2")
    _, steady, _ = await seed.finished_model(pool, 0.80, "ResNet50")
    _, old, _ = await seed.finished_model(pool, 0.70, "ResNet101")
    june = await seed.dataset(pool, "2024-06-01", "2024-06-30")
    july = await seed.dataset(pool, "2024-07-01", "2024-07-31")
    # The most recent later range counts, not the best one.
    await seed.evaluation(pool, flattered, june, 0.90, split="all", n_excluded=0)
    await seed.evaluation(pool, flattered, july, 0.72, split="all", n_excluded=5)
    await seed.evaluation(pool, steady, july, 0.78, split="all", n_excluded=0)
    # Evaluated before training images were left out, and some were scored: not a figure.
    await seed.evaluation(pool, old, july, 0.95, split="all", n_excluded=None)
    return {"flattered": flattered, "steady": steady, "old": old, "july": july}


async def test_the_registry_has_the_most_recent_later_range(pool: db.Pool) -> None:
    ids = await _models(pool)
    rows = {r["model_id"]: r for r in await queries.registry(pool, 10)}

    flattered = rows[ids["flattered"]]
    assert float(flattered["macro_f1"]) == pytest.approx(0.84)  # still the test split
    assert flattered["eval_split"] == "test"
    assert float(flattered["later_macro_f1"]) == pytest.approx(0.72)
    assert float(flattered["later_gap"]) == pytest.approx(-0.12)
    assert flattered["later_dataset_id"] == ids["july"]
    assert (str(flattered["later_start_date"]), str(flattered["later_end_date"])) == (
        "2024-07-01",
        "2024-07-31",
    )
    assert (flattered["later_images"], flattered["later_excluded"]) == (6, 5)
    assert flattered["n_evaluations"] == 3
    assert float(rows[ids["steady"]]["later_gap"]) == pytest.approx(-0.02)
    old = rows[ids["old"]]
    assert old["later_macro_f1"] is None and old["later_gap"] is None
    # The order of the rows is still by the held-out figure.
    assert list(rows) == [ids["flattered"], ids["steady"], ids["old"]]


async def test_models_shows_the_later_figure_and_says_when_it_differs(
    settings: Settings, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await _models(pool)

    assert await chouette(settings, "models", "--json") == 0
    listed = {r["model_id"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert listed[ids["flattered"]]["later_macro_f1"] == pytest.approx(0.72)
    assert listed[ids["flattered"]]["later_excluded"] == 5
    assert listed[ids["old"]]["later_macro_f1"] is None

    assert await chouette(settings, "models") == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    later_col = header.index("later_f1")
    assert header[later_col - 1] == "macro_f1"
    first = lines[2].split()
    assert first[0] == str(ids["flattered"])
    assert first[later_col - 1 : later_col + 1] == ["0.840", "0.720"]  # no cell has spaces
    notes = [line for line in lines if line.startswith("model ") and ": " in line]
    assert notes == [
        f"model {ids['flattered']}: later range 2024-07-01..2024-07-31 macro F1 0.720 is 0.120"
        f" below the test split's 0.840: {FLATTER}"
    ]


async def test_status_shows_how_many_training_images_were_left_out(
    settings: Settings, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model_id, _ = await seed.finished_model(pool, 0.8)
    july = await seed.dataset(pool, "2024-07-01", "2024-07-31")
    request_id = await seed.request(pool, "evaluation", model_id=model_id)
    evaluation_id = await seed.evaluation(
        pool, model_id, july, 0.7, request_id, split="all", n_excluded=7
    )
    await db.set_stage(
        pool, request_id, "done", status="succeeded", model_id=model_id, evaluation_id=evaluation_id
    )

    assert await chouette(settings, "status", str(request_id), "--json") == 0
    assert json.loads(capsys.readouterr().out)["evaluation"]["n_excluded"] == 7
    assert await chouette(settings, "status", str(request_id)) == 0
    assert "(all split, 6 images; 7 images of the training range left out)" in (
        capsys.readouterr().out
    )


async def test_report_sets_the_later_range_beside_the_test_split(
    settings: Settings, pool: db.Pool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await _models(pool)
    out = tmp_path / "report"

    assert await chouette(settings, "report", str(ids["flattered"]), "--out", str(out)) == 0

    summary = (out / "summary.md").read_text()
    assert "## Held-out test split and a later date range" in summary
    assert "macro F1 0.720, 6 images, 5 images of the training range left out" in summary
    assert "**Later range 2024-07-01..2024-07-31 macro F1 0.720 is 0.120 below" in summary
    assert "6 images (5 images of the training range left out): accuracy 0.720" in summary
    captured = capsys.readouterr()
    assert FLATTER in captured.err and FLATTER not in captured.out

    assert await chouette(settings, "report", str(ids["old"]), "--out", str(tmp_path / "o")) == 0
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert "- later range: none yet" in summary
    assert "(evaluated before training images were left out: some are among them)" in summary


async def test_the_backfill_vouches_only_for_evaluations_without_training_images(
    pool: db.Pool,
) -> None:
    _, model_id, own_eval = await seed.finished_model(pool, 0.8)
    own = await pool.fetchval("SELECT dataset_id FROM models WHERE id = $1", model_id)
    clean_range = await seed.dataset(pool, "2024-07-01", "2024-07-31")
    overlapping = await seed.dataset(pool, "2024-05-15", "2024-06-15")
    clean = await seed.evaluation(pool, model_id, clean_range, 0.7, split="all", n_excluded=None)
    leaky = await seed.evaluation(pool, model_id, overlapping, 0.9, split="all", n_excluded=None)
    await pool.execute("UPDATE evaluations SET n_excluded = NULL WHERE id = $1", own_eval)
    shas = {name: uuid.uuid4().hex + uuid.uuid4().hex for name in ("trained", "new", "newer")}
    for sha in shas.values():
        await pool.execute(
            "INSERT INTO images (sha256, bytes, byte_size, width, height, format)"
            " VALUES ($1, 'x', 1, 1, 1, 'JPEG')",
            sha,
        )
    members = [
        (own, "trained", "train"),
        (overlapping, "trained", "test"),  # a training image in the overlapping range
        (overlapping, "new", "train"),
        (clean_range, "newer", "val"),
    ]
    for dataset_id, name, split in members:
        await pool.execute(
            "INSERT INTO dataset_images (dataset_id, sha256, tag, source_url, split)"
            " VALUES ($1, $2, 'vine', 'https://example.test/x.jpg', $3)",
            dataset_id,
            shas[name],
            split,
        )
    for evaluation_id, name in ((leaky, "trained"), (leaky, "new"), (clean, "newer")):
        await pool.execute(
            "INSERT INTO predictions (evaluation_id, sha256, true_label, predicted, probabilities)"
            " VALUES ($1, $2, 'vine', 'vine', '{}')",
            evaluation_id,
            shas[name],
        )
    backfill = re.search(r"^UPDATE evaluations.*?;", MIGRATION.read_text(), re.S | re.M)
    assert backfill is not None

    await pool.execute(backfill.group(0))

    found = dict(await pool.fetch("SELECT id, n_excluded FROM evaluations"))
    assert found == {own_eval: 0, clean: 0, leaky: None}
