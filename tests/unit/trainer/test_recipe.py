"""The ingredients of the training recipe: schedule, loss, weight decay, augmentations."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from services.trainer.augment import Augmentation, Augmenter
from services.trainer.training import (
    augmentation_of,
    learning_rate_at,
    make_optimizer,
    smoothed_loss,
    warmup_steps,
)
from shared.messages import TrainingParams


def test_warm_up_is_linear_then_cosine_decays_to_zero() -> None:
    def rate(step: int, schedule: str = "cosine") -> float:
        return learning_rate_at(step, total_steps=100, warmup_steps=10, peak=1.0, schedule=schedule)

    assert [rate(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert rate(10) == pytest.approx(1.0)
    assert rate(55) == pytest.approx(0.5)  # half-way through the decay
    assert rate(99) < 0.001 and rate(150) == 0.0
    assert all(rate(s) >= rate(s + 1) for s in range(10, 99))
    assert rate(60, "constant") == 1.0 and rate(0, "constant") == pytest.approx(0.1)
    no_warmup = learning_rate_at(0, total_steps=10, warmup_steps=0, peak=2.0, schedule="cosine")
    assert no_warmup == 2.0


def test_warm_up_takes_at_most_a_fifth_of_the_training() -> None:
    params = TrainingParams(architecture="ResNet50", epochs=40, warmup_epochs=2)
    assert warmup_steps(params, 10) == 20
    assert warmup_steps(params.model_copy(update={"epochs": 5}), 10) == 10
    assert warmup_steps(params.model_copy(update={"epochs": 1}), 3) == 0
    assert warmup_steps(params.model_copy(update={"warmup_epochs": 0}), 10) == 0


def test_label_smoothing_mixes_the_cross_entropy_with_the_uniform_target() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    labels = np.array([0, 1])
    eps = 0.1
    loss = smoothed_loss(eps, 3)
    got = keras.ops.convert_to_numpy(loss(labels, probabilities))
    log_p = np.log(probabilities)
    target = np.full((2, 3), eps / 3) + (1 - eps) * np.eye(3)[labels]
    assert got == pytest.approx(-(target * log_p).sum(axis=1), rel=1e-5)
    assert smoothed_loss(0.0, 3) == "sparse_categorical_crossentropy"


def test_weight_decay_shrinks_weights_by_learning_rate_times_decay() -> None:
    weight = keras.Variable(np.ones((4,), np.float32))
    optimizer = make_optimizer("adam", 0.1, weight_decay=0.5)
    optimizer.apply([tf.zeros((4,))], [weight])
    assert keras.ops.convert_to_numpy(weight) == pytest.approx(np.full(4, 1 - 0.1 * 0.5))
    plain = keras.Variable(np.ones((4,), np.float32))
    make_optimizer("adam", 0.1).apply([tf.zeros((4,))], [plain])
    assert keras.ops.convert_to_numpy(plain) == pytest.approx(np.ones(4))


def _images(n: int = 6, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def _symmetries(image: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(m, k) for m in (image, image[:, ::-1]) for k in range(4)]


def test_geometry_alone_gives_one_of_the_eight_symmetries_of_each_image() -> None:
    images = _images(32)
    only_geometry = Augmentation(geometry=True, light=False, color=False, crop_min_area=1.0)
    out = Augmenter(only_geometry, seed=3)(images)
    out = out.numpy()
    seen = set()
    for original, augmented in zip(images, out, strict=True):
        matches = [i for i, s in enumerate(_symmetries(original)) if np.array_equal(s, augmented)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= 6  # drawn per image, not once per batch


def test_light_colour_and_crop_change_each_image_differently_and_stay_in_range() -> None:
    images = _images(8)
    everything = Augmentation(geometry=True, light=True, color=True, crop_min_area=0.6)
    out = Augmenter(everything, seed=1)(images).numpy()
    assert out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, images)
    # Light keeps a grey image grey and changes its brightness per image.
    grey = np.full((8, 8, 8, 3), 100.0, np.float32)
    lit = Augmenter(Augmentation(geometry=False, light=True, crop_min_area=1.0), seed=2)
    result = lit(grey).numpy()
    assert np.allclose(result[..., 0], result[..., 1], atol=0.5)
    assert len({round(float(v), 1) for v in result[:, 0, 0, 0]}) == 8
    # Colour alone leaves a grey image as it is (no saturation to change, no hue to turn)
    # and turns the hue of a coloured one, each image its own way.
    coloured = Augmenter(
        Augmentation(geometry=False, light=False, color=True, crop_min_area=1.0), 3
    )
    np.testing.assert_allclose(coloured(grey).numpy(), grey, atol=0.5)
    green = np.tile(np.array([60, 140, 50], np.float32), (8, 4, 4, 1))
    turned = coloured(green).numpy()[:, 0, 0]
    assert len({tuple(np.round(p)) for p in turned}) == 8


def test_random_crop_zooms_in_by_at_most_the_minimum_area() -> None:
    # A horizontal ramp: a crop of area a (aspect 3/4..4/3) spans at most sqrt(a * 4/3)
    # of the width, so the ramp's range shrinks accordingly.
    ramp = np.tile(np.linspace(0, 255, 32, dtype=np.float32)[None, :, None], (32, 1, 3))
    images = np.stack([ramp] * 16)
    crop = Augmenter(Augmentation(geometry=False, light=False, crop_min_area=0.5), seed=5)
    out = crop(images).numpy()
    spans = out[:, 16, :, 0].max(axis=1) - out[:, 16, :, 0].min(axis=1)
    assert all(spans >= 255 * math.sqrt(0.5 * 3 / 4) - 12)
    assert spans.min() < 250  # some images were zoomed in


def test_the_same_seed_draws_the_same_augmentations() -> None:
    images = _images()
    a = Augmenter(Augmentation(), seed=9)
    b = Augmenter(Augmentation(), seed=9)
    assert np.array_equal(a(images).numpy(), b(images).numpy())
    assert not np.array_equal(a(images).numpy(), Augmenter(Augmentation(), seed=10)(images))


def test_request_flags_choose_the_augmentations() -> None:
    params = TrainingParams(architecture="ResNet50")
    assert augmentation_of(params) == Augmentation(
        geometry=True, light=False, color=False, crop_min_area=0.6
    )
    changed = params.model_copy(
        update={"augment_light": True, "augment_color": True, "crop_min_area": 1.0}
    )
    assert augmentation_of(changed) == Augmentation(
        geometry=True, light=True, color=True, crop_min_area=1.0
    )
    assert augmentation_of(params.model_copy(update={"augment": False})) is None
    assert not Augmentation(geometry=False, light=False, color=False, crop_min_area=1.0).active
