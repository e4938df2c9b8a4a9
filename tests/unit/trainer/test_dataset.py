"""services.trainer.dataset: batches, class weights, passes per epoch, augmentation, and
shuffles that an ImageNet network's seeding (training.seeded_globally) leaves alone."""

from __future__ import annotations

import numpy as np
import pytest

from services.trainer.dataset import (
    Split,
    class_weights,
    passes_per_epoch,
    steps_per_epoch,
    training_dataset,
)
from tests.plugins.datasets import photo


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


def test_an_imagenet_networks_seeding_leaves_later_shuffles_alone() -> None:
    """A network built for one request only (an ImageNet one) seeds its head under the
    request's seed; the same seed must still give the same training order afterwards."""
    import random

    import keras
    import tensorflow as tf

    from services.trainer.training import seeded_globally

    tf.random.set_seed(None)  # as in a trainer process (other tests leave a global seed)

    classes = ("vine", "ground", "grass")
    rows = [(photo(t, i, width=40, height=30), t, "JPEG") for t in classes for i in range(6)]
    split = Split.from_rows(rows, classes)

    def order() -> list[int]:
        ds = training_dataset(split, 32, 18, augment=False, seed=3)
        return [int(y) for _, labels in ds for y in labels.numpy()]

    before = order()
    python_next, numpy_next = random.Random(), np.random.get_state()
    python_next.setstate(random.getstate())
    heads = []
    for _ in range(2):
        with seeded_globally(123):
            heads.append(np.asarray(keras.initializers.GlorotUniform()((4, 3))))
    np.testing.assert_array_equal(heads[0], heads[1])  # the seed holds inside
    assert order() == before
    assert random.random() == python_next.random()  # the other generators are restored
    assert np.array_equal(np.random.get_state()[1], numpy_next[1])
