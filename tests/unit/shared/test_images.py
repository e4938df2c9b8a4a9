"""shared.images: decoding photos the same way in tf.data and eagerly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.images import decode_image, image_dataset, tf_decodable
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
