"""Augmentations that model what changes from one field day to the next.

Photos of a vineyard row, taken from above on another day, differ in light (brightness,
contrast), in colour (white balance, saturation, the season's hue), in framing (how close
the camera was, where the row falls) and in orientation (a top-down shot has no "up").
Each batch, every image gets its own draw of:

    geometry   one of the 8 flips/90° rotations                          (``augment_geometry``)
    crop       a random box of ``crop_min_area``..100 % of the image,    (``crop_min_area`` < 1)
               aspect 3/4..4/3, resized back to the input size
    light      brightness x0.75..1.25, contrast x0.75..1.25              (``augment_light``)
    colour     saturation x0.7..1.3, hue ±0.04 of a turn                 (``augment_color``)

Light and colour are off by default: on real crop / weed / soil photos, whose classes differ
mostly by colour and brightness, they lowered the later-season macro F1
(``bench/bench_quality.py``; the README's ablation table).

Images are float RGB 0..255 (``shared.images``) and stay in that range. The draws come
from one ``tf.random.Generator`` seeded with the request's seed, and the trainer applies
this to one batch after another, so the same seed gives the same images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import tensorflow as tf

BRIGHTNESS: Final = 0.25
CONTRAST: Final = 0.25
SATURATION: Final = 0.3
HUE: Final = 0.04
ASPECT: Final = (3 / 4, 4 / 3)
GREY: Final = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations run (all off: the batch passes unchanged)."""

    geometry: bool = True
    light: bool = False
    color: bool = False
    crop_min_area: float = 0.6  # 1.0: no random crop

    @property
    def active(self) -> bool:
        return self.geometry or self.light or self.color or self.crop_min_area < 1


class Augmenter:
    """``augmenter(images)`` → augmented images; a batch ``(n, size, size, 3)`` at a time."""

    def __init__(self, augmentation: Augmentation, seed: int) -> None:
        import tensorflow as tf

        self.augmentation = augmentation
        self.generator = tf.random.Generator.from_seed(seed)

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        a, gen = self.augmentation, self.generator
        images = tf.convert_to_tensor(images, tf.float32)
        if a.geometry:
            images = _dihedral(images, gen)
        if a.crop_min_area < 1:
            images = _resized_crop(images, gen, a.crop_min_area)
        if a.light:
            images = _light(images, gen)
        if a.color:
            images = _colour(images, gen)
        return images


def _uniform(gen: Any, n: Any, low: float, high: float, rank: int = 4) -> tf.Tensor:
    return gen.uniform([n] + [1] * (rank - 1), low, high)


def _dihedral(images: tf.Tensor, gen: Any) -> tf.Tensor:
    """A random one of the 8 symmetries of the square per image: mirror, then turn k times 90°."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    mirrored = tf.where(_uniform(gen, n, 0.0, 1.0) < 0.5, tf.reverse(images, [2]), images)
    turns = tf.stack([tf.image.rot90(mirrored, k) for k in range(4)], axis=1)
    k = gen.uniform([n], 0, 4, dtype=tf.int32)
    return tf.gather(turns, k, batch_dims=1)


def _resized_crop(images: tf.Tensor, gen: Any, min_area: float) -> tf.Tensor:
    """A box of ``min_area``..1 of the area and aspect 3/4..4/3 per image, resized back."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    area = gen.uniform([n], min_area, 1.0)
    log_aspect = gen.uniform([n], math.log(ASPECT[0]), math.log(ASPECT[1]))
    aspect = tf.exp(log_aspect)
    h = tf.minimum(1.0, tf.sqrt(area / aspect))
    w = tf.minimum(1.0, tf.sqrt(area * aspect))
    y0 = gen.uniform([n], 0.0, 1.0) * (1.0 - h)
    x0 = gen.uniform([n], 0.0, 1.0) * (1.0 - w)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(n), size, method="bilinear")


def _light(images: tf.Tensor, gen: Any) -> tf.Tensor:
    """Brightness and contrast, each drawn per image; clipped to 0..255."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    x = images * _uniform(gen, n, 1 - BRIGHTNESS, 1 + BRIGHTNESS)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = mean + (x - mean) * _uniform(gen, n, 1 - CONTRAST, 1 + CONTRAST)
    return tf.clip_by_value(x, 0.0, 255.0)


def _colour(images: tf.Tensor, gen: Any) -> tf.Tensor:
    """Saturation and hue, each drawn per image; clipped to 0..255."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    x = images
    grey = tf.reduce_sum(x * tf.constant(GREY), axis=-1, keepdims=True)
    x = grey + (x - grey) * _uniform(gen, n, 1 - SATURATION, 1 + SATURATION)
    hsv = tf.image.rgb_to_hsv(tf.clip_by_value(x, 0.0, 255.0) / 255.0)
    hue = tf.math.floormod(hsv[..., :1] + _uniform(gen, n, -HUE, HUE), 1.0)
    x = tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1)) * 255.0
    return tf.clip_by_value(x, 0.0, 255.0)
