"""Grad-CAM: where in a photo the model looked for the class it explains.

For a model built by ``shared.modeling.build_model``: the gradient of the class's
probability with respect to the feature maps of the ResNet's last convolution block,
averaged per channel, weights those maps; their positive sum, scaled to 0..1, is the heat
map, drawn over the photo (Selvaraju et al., 2017). The image goes through the same
decode and resize as in training (``shared.images``), the model in inference mode.

The last block differs between the two families of ``keras.applications``: in ResNet
(v1) the block ends with its residual addition and ReLU, ``conv5_block3_out``; in ResNetV2
(pre-activation) the blocks end before their normalization, and the last activated maps
are ``post_relu`` (BatchNorm + ReLU after the last block). Either is the layer right
before global average pooling (unit test for all six networks).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from shared.images import decode_image
from shared.modeling import base_of

if TYPE_CHECKING:
    from shared.modeling import ModelSpec

LAST_CONV_LAYER: Final = {
    "ResNet50": "conv5_block3_out",
    "ResNet101": "conv5_block3_out",
    "ResNet152": "conv5_block3_out",
    "ResNet50V2": "post_relu",
    "ResNet101V2": "post_relu",
    "ResNet152V2": "post_relu",
}
# The overlay's longest side at most (a 4000 px photo gives a 1024 px overlay).
MAX_OVERLAY_SIDE: Final = 1024
OVERLAY_ALPHA: Final = 0.45


@dataclass(frozen=True)
class Explanation:
    class_name: str  # the class explained
    probability: float  # its probability
    predicted: str  # the model's predicted class
    probabilities: dict[str, float]
    heatmap: npt.NDArray[np.float32]  # (h, w) in 0..1 on the last block's grid
    png: bytes  # the overlay


class Explainer:
    """Grad-CAM for one model (the traced gradient function is kept between images)."""

    def __init__(self, model: Any, spec: ModelSpec) -> None:
        import keras
        import tensorflow as tf

        self.image_size = image_size = spec.image_size
        self.classes = spec.class_names
        base = base_of(model)
        layer = base.get_layer(LAST_CONV_LAYER[spec.architecture])
        features = keras.Model(base.inputs, [layer.output, base.output])
        preprocess = model.get_layer("preprocess_tf" if spec.is_v2 else "preprocess_caffe")
        head = model.get_layer("predictions")

        def gradcam(x: Any, class_index: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                maps, pooled = features(preprocess(x), training=False)
                probabilities = head(pooled)
                score = tf.gather(probabilities, class_index, axis=1)
            grads = tape.gradient(score, maps)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))
            return cam, probabilities

        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
        self._call = tf.function(gradcam, input_signature=[spec, tf.TensorSpec([], tf.int32)])

    def explain(self, data: bytes, class_name: str | None = None) -> Explanation:
        """Explain ``class_name`` (default: the predicted class) for one encoded image."""
        pixels = decode_image(data, self.image_size)[None]
        cam, probs = self._call(pixels, np.int32(0))
        probabilities = np.asarray(probs)[0]
        predicted = self.classes[int(np.argmax(probabilities))]
        name = class_name or predicted
        if name not in self.classes:
            raise ValueError(f"class {name!r} is not one of the model's {list(self.classes)}")
        index = self.classes.index(name)
        if index != 0:
            cam, _ = self._call(pixels, np.int32(index))
        heat = np.asarray(cam, dtype=np.float32)[0]
        top = float(heat.max())
        heat = heat / top if top > 0 else np.zeros_like(heat)
        return Explanation(
            class_name=name,
            probability=float(probabilities[index]),
            predicted=predicted,
            probabilities={c: float(p) for c, p in zip(self.classes, probabilities, strict=True)},
            heatmap=heat,
            png=overlay(data, heat),
        )


def overlay(data: bytes, heat: npt.NDArray[np.float32]) -> bytes:
    """The photo (at most ``MAX_OVERLAY_SIDE`` px) with the heat map drawn over it, as PNG."""
    from matplotlib import colormaps  # lazy: matplotlib, only to draw an overlay
    from PIL import Image  # lazy: Pillow, only to draw an overlay

    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)
        photo = img.convert("RGB")
    photo.thumbnail((MAX_OVERLAY_SIDE, MAX_OVERLAY_SIDE))
    heat_img = Image.fromarray(np.uint8(np.clip(heat, 0, 1) * 255), mode="L")
    heat_img = heat_img.resize(photo.size, Image.Resampling.BILINEAR)
    colored = colormaps["jet"](np.asarray(heat_img, dtype=np.float32) / 255.0)[..., :3]
    blended = (1 - OVERLAY_ALPHA) * np.asarray(photo, np.float32) + OVERLAY_ALPHA * 255 * colored
    out = io.BytesIO()
    Image.fromarray(np.uint8(np.clip(blended, 0, 255))).save(out, format="PNG")
    return out.getvalue()
