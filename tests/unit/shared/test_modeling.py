"""shared.modeling: the network built from a spec, its preprocessing, its BatchNorm."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from shared.modeling import (
    ModelSpec,
    WeightsUnavailable,
    base_of,
    build_model,
    momentum_for_steps,
)


def test_model_spec_validation() -> None:
    with pytest.raises(ValueError, match="at least two classes"):
        ModelSpec(architecture="ResNet50", image_size=64, class_names=("vine",))
    with pytest.raises(ValueError):
        ModelSpec(architecture="ResNet18", image_size=64, class_names=("a", "b"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ModelSpec(architecture="ResNet50", image_size=16, class_names=("a", "b"))
    spec = ModelSpec(architecture="ResNet50V2", image_size=64, class_names=("a", "b"))
    assert spec.input_shape == (64, 64, 3) and spec.is_v2


@pytest.mark.parametrize("architecture", ["ResNet50", "ResNet50V2"])
def test_model_preprocesses_like_keras_preprocess_input(architecture: str) -> None:
    spec = ModelSpec(architecture=architecture, image_size=32, class_names=("a", "b", "c"))
    model = build_model(spec)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 3)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    module = keras.applications.resnet_v2 if spec.is_v2 else keras.applications.resnet
    expected = module.preprocess_input(x.copy())
    preprocess = model.layers[1]
    np.testing.assert_allclose(np.asarray(preprocess(x)), expected, atol=1e-4)
    assert base_of(model).output_shape == (None, 2048)


def test_imagenet_without_cache_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    from shared import modeling

    monkeypatch.setattr(modeling, "imagenet_cache_path", lambda arch: tmp_path / "x_notop.h5")
    spec = ModelSpec(
        architecture="ResNet101", image_size=32, class_names=("a", "b"), weights="imagenet"
    )
    with pytest.raises(WeightsUnavailable, match="not in the Keras cache"):
        build_model(spec)


def test_weights_path_loads_a_local_base_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINER_WEIGHTS_DIR", str(tmp_path))
    spec = ModelSpec(architecture="ResNet50V2", image_size=32, class_names=("a", "b"))
    source = build_model(spec)
    path = tmp_path / "base.weights.h5"
    base_of(source).save_weights(path)
    loaded = build_model(spec.model_copy(update={"weights": str(path)}))
    for a, b in zip(base_of(source).weights, base_of(loaded).weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        build_model(spec.model_copy(update={"weights": str(tmp_path / "missing.h5")}))


def test_batchnorm_momentum_settles_within_an_epoch() -> None:
    assert momentum_for_steps(1) == 0.5
    assert 0.7 < momentum_for_steps(10) < 0.8
    assert momentum_for_steps(10) ** 10 == pytest.approx(0.05)
    assert momentum_for_steps(10_000) == 0.99
