"""``chouette explain``: overlays written from a model stored in PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared import db
from shared.cli.parser import UsageError
from shared.gradcam import Explainer
from shared.settings import Settings
from tests.integration.api import harness
from tests.integration.cli.helpers import chouette
from tests.plugins.datasets import create_dataset, photo

pytestmark = pytest.mark.integration


async def test_explain_writes_one_overlay_per_image(
    pool: db.Pool, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset_id = await create_dataset(pool, per_class={"vine": 1, "ground": 1, "grass": 1})
    model = harness.tiny_model()
    model_id = await harness.store_model(pool, model, dataset_id)
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
    explainer = Explainer(model, harness.SPEC)
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
