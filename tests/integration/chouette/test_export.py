"""``chouette export``: files that plain Keras / TensorFlow load without this project and
that predict what the evaluator predicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from chouette.errors import UsageError
from shared import db
from shared.inference import BatchDecoder, Predictor
from shared.modeling import ModelSpec, build_model
from shared.settings import Settings
from tests.integration.chouette.helpers import chouette
from tests.plugins import models
from tests.plugins.datasets import create_dataset, photo

pytestmark = pytest.mark.integration

# Run in a fresh interpreter that never imports this project (its custom layer would then
# be unknown), from a folder outside the repository.
LOAD = """
import json, sys
import numpy as np
x = np.load(sys.argv[2])
if sys.argv[1] == "keras":
    import keras
    out = keras.saving.load_model(sys.argv[3]).predict(x, verbose=0)
else:
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[3])  # kept: its variables live as long as it does
    out = loaded.serve(tf.constant(x)).numpy()
assert not any(m.startswith(("shared", "services")) for m in sys.modules), "imported the project"
print(json.dumps(out.tolist()))
"""


def load_elsewhere(fmt: str, pixels: Path, path: Path, cwd: Path) -> np.ndarray:
    done = subprocess.run(
        [sys.executable, "-I", "-c", LOAD, fmt, str(pixels), str(path)],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return np.asarray(json.loads(done.stdout.strip().splitlines()[-1]), np.float32)


@pytest.mark.slow
async def test_exports_load_without_the_project_and_predict_as_the_evaluator(
    pool: db.Pool, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset_id = await create_dataset(pool, per_class={"vine": 1, "ground": 1, "grass": 1})
    keras.utils.set_random_seed(5)
    spec = ModelSpec(architecture="ResNet50", image_size=32, class_names=models.CLASSES)
    model = build_model(spec)  # v1: its Caffe preprocessing is this project's layer
    model_id = await models.store_model(pool, model, dataset_id, spec)
    blobs = [photo("vine", 0), photo("ground", 1), photo("grass", 2)]
    pixels = BatchDecoder(32)(blobs)
    expected = Predictor(model, 32)(pixels)
    np.save(tmp_path / "x.npy", pixels)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    for fmt, out in (("keras", tmp_path / "m.keras"), ("savedmodel", tmp_path / "saved")):
        assert await chouette(
            settings, "export", str(model_id), "--format", fmt, "--out", str(out)
        ) == 0  # fmt: skip
        assert capsys.readouterr().out.strip() == str(out)
        got = load_elsewhere(fmt, tmp_path / "x.npy", out, elsewhere)
        np.testing.assert_allclose(got, expected, atol=1e-5)

    with pytest.raises(UsageError, match="no model 999"):
        await chouette(settings, "export", "999", "--format", "keras", "--out", str(tmp_path / "n"))
    with pytest.raises(UsageError, match="exists and is not empty"):
        await chouette(settings, "export", str(model_id), "--format", "savedmodel",
                       "--out", str(tmp_path / "saved"))  # fmt: skip
