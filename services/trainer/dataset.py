"""The training input: a split's images → batched ``tf.data`` pipeline.

The trainer's splits are on disk (:mod:`services.trainer.image_files`: streamed from
PostgreSQL a batch at a time, decoded and resized once, one file per image); the pipeline
shuffles their *indices* and reads each image when it is needed:

    index ─shuffle(seed)─▶ map(read the resized image, parallel) ─▶ batch
        ─▶ map(augment, one batch at a time: services/trainer/augment.py) ─▶ prefetch

so the memory a training needs does not grow with its dataset (a shuffle buffer of
indices, a few batches in flight). A split held in memory (encoded bytes: tests,
benchmarks) goes through the former pipeline, whose order and pixels are the same:

    encoded bytes ─map(decode_resize, parallel)─▶ cache ─▶ shuffle(seed) ─▶ batch ─▶ …

(``tf.data``'s shuffle draws the same permutation whatever its elements are.)

Decoding is ``shared.images.decode_resize``, the same op the evaluator and
``chouette predict`` use. Augmentation runs on whole batches after the images are read,
so every epoch sees new variants. The augmentation map is sequential: it
draws from one seeded generator, and batches augmented in parallel would take
the draws in a racy order; in order, the same seed gives the same images (the prefetch
still overlaps it with training, and each batch's ops use every core). Labels are class
indices in the order of the model's class names; :func:`class_weights` balances imbalanced
classes.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from services.trainer.augment import Augmentation, Augmenter
from services.trainer.image_files import read_image
from services.trainer.splits import Split
from shared.images import image_dataset

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """``n / (k * count_c)`` for the k classes present (1.0 for absent ones, never used)."""
    counts = Counter(int(y) for y in labels)
    present = [c for c in range(n_classes) if counts.get(c)]
    total = sum(counts.values())
    return {
        c: (total / (len(present) * counts[c]) if counts.get(c) else 1.0) for c in range(n_classes)
    }


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    return max(1, math.ceil(n_images / batch_size))


def passes_per_epoch(n_images: int, min_images: int) -> int:
    """How many times an epoch shows a split of ``n_images`` to show at least ``min_images``."""
    return max(1, math.ceil(min_images / max(1, n_images)))


def _read_from_files(ds: tf.data.Dataset, split: Split, image_size: int) -> tf.data.Dataset:
    """Indices → (image, label), read from the split's files, in order."""
    import tensorflow as tf

    if split.image_size != image_size:
        raise ValueError(
            f"the split's files are {split.image_size} px; {image_size} px were asked for"
        )
    labels = tf.constant(split.labels, dtype=tf.int32)
    folder = split.folder
    return ds.map(
        lambda i: (read_image(folder, image_size, i), tf.gather(labels, i)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _cached(ds: tf.data.Dataset, cache_dir: str, name: str) -> tf.data.Dataset:
    if not cache_dir:
        return ds.cache()
    import os

    os.makedirs(cache_dir, exist_ok=True)
    return ds.cache(os.path.join(cache_dir, name))


def training_dataset(
    split: Split,
    image_size: int,
    batch_size: int,
    *,
    augment: Augmentation | bool,
    seed: int,
    cache_dir: str = "",
    cache_name: str = "train",
    passes: int = 1,
) -> tf.data.Dataset:
    """Decoded, cached, shuffled (seeded, new order each epoch), batched, augmented.

    ``augment``: which augmentations (``True``: the default ones, ``False``: none).
    ``passes``: the split is shown this many times per epoch, each in a new order.
    ``cache_dir``: where a split held in memory caches its decoded images ("": in memory).
    """
    import tensorflow as tf

    if split.folder:
        ds = tf.data.Dataset.range(len(split))
    else:
        ds = image_dataset(list(split.images), split.labels, image_size)
        ds = _cached(ds, cache_dir, cache_name)
    ds = ds.shuffle(max(1, len(split)), seed=seed, reshuffle_each_iteration=True)
    if passes > 1:
        ds = ds.repeat(passes)
    if split.folder:
        ds = _read_from_files(ds, split, image_size)
    ds = ds.batch(batch_size)
    augmentation = Augmentation() if augment is True else augment or None
    if augmentation is not None and augmentation.active:
        augmenter = Augmenter(augmentation, seed)
        ds = ds.map(lambda x, y: (augmenter(x), y))
    return ds.prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(
    split: Split,
    image_size: int,
    batch_size: int,
    *,
    cache_dir: str = "",
    cache_name: str = "val",
) -> tf.data.Dataset:
    """Decoded, cached, batched, in order: for validation and BatchNorm re-estimation."""
    import tensorflow as tf

    if split.folder:
        ds = _read_from_files(tf.data.Dataset.range(len(split)), split, image_size)
    else:
        ds = image_dataset(list(split.images), split.labels, image_size)
        ds = _cached(ds, cache_dir, cache_name)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
