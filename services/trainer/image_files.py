"""A split's images decoded and resized once, one file each: what the training reads.

The trainer streams a split from PostgreSQL a batch of rows at a time
(``store.split_batches``) into a :class:`SplitWriter`, which decodes and resizes each
batch with ``shared.images.image_dataset`` (the op training used to run on the encoded
bytes in its ``tf.data`` pipeline, so the pixels are the same) and writes each image's
float32 pixels, raw, to ``<folder>/<index>.f32``. The training's ``tf.data`` pipelines
then read images by index (``services/trainer/dataset.py``): neither the encoded nor the
decoded split is ever held in memory, only a batch of it.

The folder lies in the training's own cache directory (``services/trainer/cache_dir.py``),
removed when the training ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from services.trainer.splits import Split
from shared.images import image_dataset, tf_decodable

if TYPE_CHECKING:
    import tensorflow as tf


SUFFIX = ".f32"
DIGITS = 7  # file names sort in index order up to ten million images


def image_path(folder: str | Path, index: int) -> Path:
    return Path(folder) / f"{index:0{DIGITS}d}{SUFFIX}"


class SplitWriter:
    """Decodes, resizes and writes a split's images batch by batch, in arrival order.

    Blocking (TensorFlow and file writes): call :meth:`add` from a worker thread.
    """

    def __init__(self, folder: str | Path, image_size: int, class_names: Sequence[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=False)
        self.image_size = image_size
        self._index = {name: i for i, name in enumerate(class_names)}
        self._labels: list[int] = []

    def __len__(self) -> int:
        return len(self._labels)

    def add(self, rows: Sequence[tuple[bytes, str, str | None]]) -> None:
        """Append a batch of (bytes, tag, format) rows; formats TF cannot read become PNG."""
        if not rows:
            return
        labels = [self._index[tag] for _, tag, _ in rows]
        encoded = [tf_decodable(data, fmt) for data, _, fmt in rows]
        start = len(self._labels)
        for offset, pixels in enumerate(image_dataset(encoded, None, self.image_size)):
            image_path(self.folder, start + offset).write_bytes(
                np.asarray(pixels, np.float32).tobytes()
            )
        self._labels.extend(labels)

    def split(self) -> Split:
        return Split(
            images=(),
            labels=np.array(self._labels, dtype=np.int32),
            folder=str(self.folder),
            image_size=self.image_size,
        )


def read_image(folder: str, image_size: int, index: tf.Tensor) -> tf.Tensor:
    """A ``tf.data`` map function: image ``index`` of ``folder`` → float32 (size, size, 3)."""
    import tensorflow as tf

    name = tf.strings.as_string(index, width=DIGITS, fill="0")
    path = tf.strings.join([folder, "/", name, SUFFIX])
    pixels = tf.io.decode_raw(tf.io.read_file(path), tf.float32)
    return tf.reshape(pixels, (image_size, image_size, 3))
