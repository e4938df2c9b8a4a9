"""Grad-CAM: the right layer for each network, the map equal to its definition, the overlay."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.choices import ARCHITECTURES
from shared.gradcam import LAST_CONV_LAYER, Explainer
from shared.modeling import ModelSpec, base_of, build_model
from tests.plugins.datasets import photo

CLASSES = ("vine", "ground", "grass")


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_last_convolution_block_is_the_one_before_global_pooling(architecture: str) -> None:
    base = base_of(build_model(ModelSpec(architecture=architecture, image_size=32,
                                         class_names=CLASSES)))  # fmt: skip
    names = [layer.name for layer in base.layers]
    assert names[-1] == "avg_pool"
    assert names[-2] == LAST_CONV_LAYER[architecture]
    assert len(base.get_layer(LAST_CONV_LAYER[architecture]).output.shape) == 4


@pytest.fixture(scope="module")
def resnet50() -> tuple[object, ModelSpec]:
    import keras

    keras.utils.set_random_seed(3)
    spec = ModelSpec(architecture="ResNet50", image_size=64, class_names=CLASSES)
    return build_model(spec), spec


def test_the_heatmap_is_the_gradient_weighted_sum_of_the_last_maps(resnet50: tuple) -> None:
    """Independent of the implementation: on average pooling and a softmax head, the gradient
    of class c's probability over map k is uniform, p_c (W_kc - sum_j p_j W_kj) / HW."""
    import keras

    model, spec = resnet50
    data = photo("vine", 0, width=80, height=60)
    explained = Explainer(model, spec).explain(data, "grass")

    from shared.images import decode_image

    x = decode_image(data, 64)[None]
    base = base_of(model)
    maps_model = keras.Model(base.inputs, base.get_layer("conv5_block3_out").output)
    maps = np.asarray(maps_model(model.get_layer("preprocess_caffe")(x), training=False))[0]
    probs = np.asarray(model(x, training=False))[0]
    w = np.asarray(model.get_layer("predictions").kernel)  # (channels, classes)
    c = CLASSES.index("grass")
    grad = probs[c] * (w[:, c] - w @ probs)
    cam = np.maximum((maps * grad).sum(-1), 0)
    expected = cam / cam.max() if cam.max() > 0 else cam

    assert explained.class_name == "grass" and explained.heatmap.shape == (2, 2)
    np.testing.assert_allclose(explained.heatmap, expected, atol=1e-4)
    assert explained.probability == pytest.approx(float(probs[c]), abs=1e-5)
    assert explained.predicted == CLASSES[int(np.argmax(probs))]


def test_the_overlay_is_a_png_of_the_photo_and_the_class_defaults_to_the_prediction(
    resnet50: tuple,
) -> None:
    model, spec = resnet50
    explained = Explainer(model, spec).explain(photo("ground", 2, width=80, height=60))
    assert explained.class_name == explained.predicted
    with Image.open(io.BytesIO(explained.png)) as img:
        assert img.format == "PNG" and img.size == (80, 60)
    with pytest.raises(ValueError, match="'weed' is not one of the model's"):
        Explainer(model, spec).explain(photo("ground", 2), "weed")
