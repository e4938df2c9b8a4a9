"""shared.images, shared.modeling and the weight stream format, without servers."""

from __future__ import annotations

import io
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from services.trainer.dataset import (
    Split,
    class_weights,
    passes_per_epoch,
    steps_per_epoch,
    training_dataset,
)
from shared.images import decode_image, image_dataset, tf_decodable
from shared.modeling import (
    ModelSpec,
    WeightsUnavailable,
    base_of,
    build_model,
    momentum_for_steps,
)
from tests.plugins.datasets import photo


def encoded(fmt: str, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (size[1], size[0], channels) if channels else (size[1], size[0])
    img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("TIFF", "RGB")]
)
def test_decode_gives_square_float_rgb_0_to_255(fmt: str, mode: str) -> None:
    image = decode_image(encoded(fmt, mode=mode), 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 255.0 and image.max() > 50


def test_decode_rejects_what_is_not_an_image() -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(b"definitely not an image", 32)


def test_pipeline_and_eager_decode_give_the_same_pixels() -> None:
    blobs = [tf_decodable(encoded("TIFF")), photo("vine", 1), photo("grass", 2)]
    pipeline = np.stack([x.numpy() for x in image_dataset(blobs, None, 48)])
    eager = np.stack([decode_image(b, 48) for b in blobs])
    np.testing.assert_array_equal(pipeline, eager)


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


def test_class_weights_balance_counts() -> None:
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights[0] == pytest.approx(4 / 6) and weights[1] == pytest.approx(2.0)
    assert weights[2] == 1.0  # absent class: never used


def test_training_dataset_batches_shuffles_and_augments() -> None:
    classes = ("vine", "ground", "grass")
    rows = [(photo(t, i, width=40, height=30), t, "JPEG") for t in classes for i in range(4)]
    split = Split.from_rows(rows, classes)
    assert split.counts(3) == [4, 4, 4]
    plain = training_dataset(split, 32, 5, augment=False, seed=3)
    batches = list(plain)
    assert [int(x.shape[0]) for x, _ in batches] == [5, 5, 2]
    assert batches[0][0].dtype.name == "float32" and batches[0][0].shape[1:] == (32, 32, 3)
    assert sorted(np.concatenate([y.numpy() for _, y in batches]).tolist()) == sorted(
        split.labels.tolist()
    )
    epoch2 = np.concatenate([y.numpy() for _, y in plain])
    again = np.concatenate(
        [y.numpy() for _, y in training_dataset(split, 32, 5, augment=False, seed=3)]
    )
    assert np.array_equal(np.concatenate([y.numpy() for _, y in batches]), again)  # seeded
    assert epoch2.shape == again.shape

    augmented = training_dataset(split, 32, 12, augment=True, seed=3)
    first = next(iter(augmented))[0].numpy()
    second = next(iter(augmented))[0].numpy()
    unaugmented = next(iter(training_dataset(split, 32, 12, augment=False, seed=3)))[0].numpy()
    assert not np.allclose(first, unaugmented)
    assert not np.allclose(first, second)  # new variants every epoch
    assert first.min() >= -1e-3 and first.max() <= 255.0 + 1e-3


def test_a_small_split_is_shown_several_times_per_epoch_in_new_orders() -> None:
    assert passes_per_epoch(40, 0) == 1 and passes_per_epoch(40, 40) == 1
    assert passes_per_epoch(40, 41) == 2 and passes_per_epoch(40, 160) == 4
    assert passes_per_epoch(400, 160) == 1
    assert steps_per_epoch(40 * passes_per_epoch(40, 160), 16) == 10

    classes = ("vine", "ground", "grass")
    rows = [(photo(t, i, width=40, height=30), t, "JPEG") for t in classes for i in range(3)]
    split = Split.from_rows(rows, classes)
    ds = training_dataset(split, 32, len(split), augment=False, seed=3, passes=3)
    passes = [x.numpy().reshape(len(split), -1).sum(axis=1) for x, _ in ds]
    assert len(passes) == 3  # one batch per pass here: the epoch is 3 x 9 images
    for shown in passes:  # every pass shows every image once
        np.testing.assert_allclose(np.sort(shown), np.sort(passes[0]))
    assert len({tuple(np.argsort(shown)) for shown in passes}) > 1  # in a new order
    labels = np.concatenate([y.numpy() for _, y in ds])
    assert np.bincount(labels).tolist() == [9, 9, 9]


def test_augmented_training_data_is_reproducible_from_the_seed() -> None:
    """Same seed, same images epoch after epoch (a resumed or reused run sees the same data)."""
    classes = ("vine", "ground", "grass")
    rows = [(photo(t, i, width=40, height=30), t, "JPEG") for t in classes for i in range(6)]
    split = Split.from_rows(rows, classes)

    def two_epochs(seed: int) -> list[np.ndarray]:
        ds = training_dataset(split, 32, 4, augment=True, seed=seed)
        return [np.concatenate([x.numpy().ravel() for x, _ in ds]) for _ in range(2)]

    first, again, other = two_epochs(3), two_epochs(3), two_epochs(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # a new variant each epoch
    assert not np.array_equal(first[0], other[0])
