"""``chouette explain``: overlays written from a model stored in PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chouette.errors import UsageError
from shared import db
from shared.gradcam import Explainer
from shared.settings import Settings
from tests.integration.chouette.helpers import chouette
from tests.plugins import models
from tests.plugins.datasets import create_dataset, photo

pytestmark = pytest.mark.integration


async def test_explain_writes_one_overlay_per_image(
    pool: db.Pool, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset_id = await create_dataset(pool, per_class={"vine": 1, "ground": 1, "grass": 1})
    model = models.tiny_model()
    model_id = await models.store_model(pool, model, dataset_id)
    (tmp_path / "a").mkdir()
    images = [tmp_path / "vine.jpg", tmp_path / "a" / "vine.jpg", tmp_path / "grass.jpg"]
    blobs = [photo("vine", 0, width=80, height=60), photo("vine", 1), photo("grass", 2)]
    for path, blob in zip(images, blobs, strict=True):
        path.write_bytes(blob)
    out = tmp_path / "overlays"

    code = await chouette(
        settings, "explain", "--model", str(model_id), *map(str, images), "--out", str(out),
        "--class", "grass", "--json",
    )  # fmt: skip

    assert code == 0
    result = json.loads(capsys.readouterr().out)
    explainer = Explainer(model, models.SPEC)
    names = ["vine.gradcam.png", "vine-2.gradcam.png", "grass.gradcam.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for entry, blob, name in zip(result["explanations"], blobs, names, strict=True):
        expected = explainer.explain(blob, "grass")
        assert entry["overlay"] == str(out / name) and entry["explained"] == "grass"
        assert entry["probability"] == pytest.approx(expected.probability, abs=1e-4)
        assert (out / name).read_bytes() == expected.png

    with pytest.raises(UsageError, match="--class: 'weed' is not one of model"):
        await chouette(settings, "explain", "--model", str(model_id), str(images[0]),
                       "--out", str(out), "--class", "weed")  # fmt: skip
    with pytest.raises(UsageError, match="no model 999"):
        await chouette(settings, "explain", "--model", "999", str(images[0]), "--out", str(out))


async def test_report_gallery_shows_the_misclassified_images_with_their_overlays(
    pool: db.Pool, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset_id = await create_dataset(pool, per_class={"vine": 2, "ground": 2, "grass": 2})
    model = models.tiny_model()
    model_id = await models.store_model(pool, model, dataset_id)
    evaluation_id = await models.add_evaluation(pool, model_id, dataset_id, 0.6)
    images = await pool.fetch(
        "SELECT di.sha256, di.tag, i.bytes FROM dataset_images di"
        " JOIN images i ON i.sha256 = di.sha256 WHERE di.dataset_id = $1 ORDER BY di.sha256",
        dataset_id,
    )

    def other(tag: str) -> str:
        return models.CLASSES[(models.CLASSES.index(tag) + 1) % 3]

    wrong = {r["sha256"]: other(r["tag"]) for r in (images[0], images[3])}
    for row in images:
        predicted = wrong.get(row["sha256"], row["tag"])
        probs = {c: (0.8 if c == predicted else 0.1) for c in models.CLASSES}
        probs[predicted] = 0.9 if row["sha256"] == images[3]["sha256"] else 0.8
        await pool.execute(
            "INSERT INTO predictions (evaluation_id, sha256, true_label, predicted, probabilities)"
            " VALUES ($1, $2, $3, $4, $5)",
            evaluation_id, row["sha256"], row["tag"], predicted, probs,
        )  # fmt: skip
    out = tmp_path / "report"

    assert await chouette(settings, "report", str(model_id), "--out", str(out), "--gallery") == 0
    printed = capsys.readouterr().out.splitlines()

    explainer = Explainer(model, models.SPEC)
    first, second = images[3], images[0]  # the most confident mistake first (0.9, then 0.8)
    files = sorted((out / "misclassified").iterdir())
    assert [f.name for f in files] == sorted(
        f"eval{evaluation_id}-{r['sha256'][:12]}.png" for r in (first, second)
    )
    for row in (first, second):
        path = out / "misclassified" / f"eval{evaluation_id}-{row['sha256'][:12]}.png"
        expected = explainer.explain(bytes(row["bytes"]), wrong[row["sha256"]]).png
        assert path.read_bytes() == expected
        assert str(path) in printed
    summary = (out / "summary.md").read_text()
    section = summary[summary.index("## Misclassified images") :]
    table = [line for line in section.splitlines() if line.startswith("| ![")]
    assert len(table) == 2
    assert table[0].startswith(f"| ![{first['sha256'][:12]}](misclassified/eval{evaluation_id}-")
    assert f"| {first['tag']} | {wrong[first['sha256']]} |" in table[0] and "0.900" in table[0]
    assert f"| {second['tag']} | {wrong[second['sha256']]} |" in table[1]
