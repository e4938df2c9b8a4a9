"""A stored model in inference mode: the one path from image bytes to probabilities.

The evaluator scores datasets with it, the API serves requests with it: a
:class:`BatchDecoder` turns encoded images into the training's pixels
(``shared.images.decode_resize``, one graph call per batch) and a :class:`Predictor`
runs the network in inference mode through one traced ``tf.function`` with a free batch
dimension (``shared.modeling.inference_function``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.errors import PermanentError
from shared.images import decode_resize, tf_decodable
from shared.modeling import inference_function


class UndecodableImage(PermanentError):
    """A stored image that neither TensorFlow nor Pillow can decode."""


class Predictor:
    """A Keras model called in inference mode on float32 batches (n, size, size, 3); with
    ``tta``, averaged over the 8 flips/turns of each image (``shared.modeling``)."""

    def __init__(self, model: Any, image_size: int, *, tta: bool = False) -> None:
        self.image_size = image_size
        self.tta = tta
        self._call = inference_function(model, image_size, tta=tta)

    def warm_up(self) -> None:
        """Trace the graph once, before anything is timed."""
        self(np.zeros((1, self.image_size, self.image_size, 3), np.float32))

    def __call__(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = self._call(batch)
        return np.asarray(out, dtype=np.float32)


class BatchDecoder:
    """``shared.images.decode_resize`` (the training decode) over a batch in one graph call.

    The same op, hence the same pixels, as training; but one ``tf.function`` call per batch
    instead of an eager call per image (``shared.images.decode_image``), which costs about
    2 ms of Python and dispatch per image, as much as scoring a small model.
    """

    def __init__(self, image_size: int) -> None:
        import tensorflow as tf

        self.image_size = image_size
        shape = tf.TensorSpec([image_size, image_size, 3], tf.float32)

        def decode_all(blobs: Any) -> Any:
            return tf.map_fn(
                lambda blob: decode_resize(blob, image_size),
                blobs,
                fn_output_signature=shape,
                parallel_iterations=16,
            )

        self._call = tf.function(decode_all, input_signature=[tf.TensorSpec([None], tf.string)])

    def warm_up(self) -> None:
        """Trace the graph once, before anything is timed."""
        self._call.get_concrete_function()

    def __call__(self, blobs: Sequence[bytes]) -> npt.NDArray[np.float32]:
        import tensorflow as tf

        try:
            # TIFF and other formats TensorFlow cannot read are re-encoded first (rare).
            encoded = tf.constant([tf_decodable(blob) for blob in blobs], dtype=tf.string)
            return np.asarray(self._call(encoded), dtype=np.float32)
        except (OSError, tf.errors.InvalidArgumentError) as exc:
            raise UndecodableImage(f"an image cannot be decoded: {_cause(exc)}") from exc


def _cause(exc: Exception) -> str:
    """The reason in a TensorFlow op error, without its graph trace (file paths, nodes):
    ``Invalid PNG data, size 4908``."""
    lines = [line.strip() for line in str(exc).splitlines()]
    reasons = [
        line
        for line in lines
        if line
        and not line.startswith(("File ", "[[", "Graph execution error", "Detected at node"))
    ]
    return reasons[-1] if reasons else type(exc).__name__
