"""A stored model as a standard file that Keras or TF Serving loads without this project.

- ``keras``: a ``.keras`` file of Keras' own layers only. The V2 networks already are;
  ResNet v1's Caffe preprocessing (RGB→BGR, minus the ImageNet means: a layer of this
  project) is replaced by the same arithmetic in a standard layer, a 1x1 ``Conv2D`` whose
  kernel swaps the channels and whose bias subtracts the means (exact: one product by 1
  and sums of zeros per value).
- ``savedmodel``: a TensorFlow SavedModel directory (``model.export``) with the serving
  signature ``serve``: what TF Serving and ``tf.saved_model.load`` read.

Both take float32 RGB pixels 0..255 of ``(n, size, size, 3)``, decoded and resized as
``shared.images`` does, and answer the class probabilities in the model's class order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np

from shared.modeling import CAFFE_BGR_MEANS, ModelSpec, base_of

FORMATS: Final = ("keras", "savedmodel")


def standalone(model: Any, spec: ModelSpec) -> Any:
    """``model`` with Keras' own layers only (the same weights, shared)."""
    import keras

    if spec.is_v2:
        return model
    inputs = keras.Input(shape=spec.input_shape, name="image")
    to_bgr = keras.layers.Conv2D(3, 1, name="preprocess_caffe")
    x = to_bgr(inputs)
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for rgb in range(3):
        kernel[0, 0, rgb, 2 - rgb] = 1.0
    to_bgr.set_weights([kernel, -np.asarray(CAFFE_BGR_MEANS, np.float32)])
    x = base_of(model)(x)
    x = model.get_layer("head_dropout")(x)
    outputs = model.get_layer("predictions")(x)
    return keras.Model(inputs, outputs, name=model.name)


def export(model: Any, spec: ModelSpec, fmt: str, out: Path) -> Path:
    """Write ``model`` to ``out`` in ``fmt``; return the path written."""
    if fmt == "keras":
        path = out if out.suffix == ".keras" else out.with_suffix(".keras")
        path.parent.mkdir(parents=True, exist_ok=True)
        standalone(model, spec).save(path)
        return path
    if fmt == "savedmodel":
        out.parent.mkdir(parents=True, exist_ok=True)
        model.export(str(out), format="tf_saved_model", verbose=False)
        return out
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
