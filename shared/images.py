"""The one image preprocessing path: stored bytes → float32 RGB pixels 0..255, square.

Training (the trainer's ``tf.data`` pipeline), scoring (the evaluator) and
``chouette predict`` all call these functions, so a model sees exactly the same
pixels at training and at inference time:

- :func:`decode_resize` — a TensorFlow op on a scalar string tensor; use it in
  ``tf.data`` ``map`` calls.
- :func:`decode_image` — the same on Python ``bytes``; returns a NumPy array.

Both decode with ``tf.io.decode_image`` (JPEG, PNG, GIF, BMP, WebP; first frame of an
animation; grey and RGBA become RGB) and resize with bilinear, antialiased
interpolation to ``(image_size, image_size)`` without keeping the aspect ratio (the
networks take square inputs; the vineyard photos are all landscape, so every image is
squashed alike). Formats TensorFlow cannot decode (TIFF, …) are converted to PNG
first with Pillow by :func:`tf_decodable`. The model does its own ``preprocess_input``
(see ``shared.modeling``), so these functions return raw pixel values 0..255.

TensorFlow is imported on first use: importing this module is cheap.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

# Formats tf.io.decode_image reads natively (Pillow's names for them).
TF_FORMATS: Final = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP"})

_MAGIC: Final = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


def sniff_format(data: bytes) -> str | None:
    """The image format from the first bytes (Pillow's name), or None if not obvious."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def tf_decodable(data: bytes, image_format: str | None = None) -> bytes:
    """``data`` itself when TensorFlow can decode it, else the image re-encoded as PNG."""
    fmt = (image_format or sniff_format(data) or "").upper()
    if fmt in TF_FORMATS:
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)
        out = io.BytesIO()
        img.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def dimensions(data: bytes) -> tuple[int, int] | None:
    """An encoded image's (width, height) from its header, without decoding the pixels, so
    that a size limit refuses a decompression bomb before anything is allocated; None when
    it is above Pillow's own decompression-bomb limit (twice ``Image.MAX_IMAGE_PIXELS``).

    Raises ``ValueError`` when Pillow does not recognise the bytes as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Image.DecompressionBombError:
        return None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a readable image: {exc}") from None


def decode_resize(data: tf.Tensor, image_size: int) -> tf.Tensor:
    """Scalar string tensor of encoded image bytes → float32 ``(size, size, 3)``, 0..255."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.ensure_shape(image, [None, None, 3])
    image = tf.image.resize(
        tf.cast(image, tf.float32), (image_size, image_size), method="bilinear", antialias=True
    )
    # Antialiased bilinear can overshoot slightly at sharp edges; keep the contract 0..255.
    return tf.clip_by_value(image, 0.0, 255.0)


def decode_image(data: bytes, image_size: int, image_format: str | None = None) -> np.ndarray:
    """Encoded image bytes → ``np.float32`` array ``(size, size, 3)`` with values 0..255.

    Raises ``ValueError`` when the bytes are not an image either TensorFlow or Pillow reads.
    """
    import tensorflow as tf

    try:
        decodable = tf_decodable(data, image_format)
        tensor = decode_resize(tf.constant(decodable), image_size)
    except (OSError, tf.errors.InvalidArgumentError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
    return tensor.numpy()


def decode_images(items: list[bytes], image_size: int) -> np.ndarray:
    """Several encoded images → one ``(n, size, size, 3)`` float32 batch."""
    import numpy as np

    if not items:
        return np.zeros((0, image_size, image_size, 3), np.float32)
    return np.stack([decode_image(b, image_size) for b in items])


def image_dataset(
    items: list[bytes], labels: Any | None, image_size: int, *, parallel: bool = True
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of decoded images (and labels when given), in input order.

    ``items`` should already be :func:`tf_decodable`. The decode runs as a parallel,
    deterministic ``map``; batching, caching and shuffling are left to the caller.
    """
    import tensorflow as tf

    encoded = tf.constant(items, dtype=tf.string) if items else tf.zeros([0], tf.string)
    calls = tf.data.AUTOTUNE if parallel else None
    if labels is None:
        ds = tf.data.Dataset.from_tensor_slices(encoded)
        return ds.map(
            lambda b: decode_resize(b, image_size), num_parallel_calls=calls, deterministic=True
        )
    ds = tf.data.Dataset.from_tensor_slices((encoded, tf.constant(labels, dtype=tf.int32)))
    return ds.map(
        lambda b, y: (decode_resize(b, image_size), y),
        num_parallel_calls=calls,
        deterministic=True,
    )
