"""The graph decoder and predictor give exactly what training and ``model.predict`` give."""

import io

import numpy as np
import pytest
from PIL import Image

from services.evaluator import scoring
from shared import images


def _encoded(fmt: str, seed: int, size: tuple[int, int] = (48, 36)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def test_batch_decoder_matches_the_training_decode_pixel_for_pixel() -> None:
    blobs = [_encoded("JPEG", 1), _encoded("PNG", 2), _encoded("TIFF", 3)]
    decoder = scoring.BatchDecoder(32)
    decoder.warm_up()

    batch = decoder(blobs)

    expected = np.stack([images.decode_image(b, 32) for b in blobs])
    assert batch.shape == (3, 32, 32, 3)
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch, expected)


def test_predictor_matches_model_predict() -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    x = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
    predictor = scoring.Predictor(model, 8)
    predictor.warm_up()

    # Inference mode: dropout off, BatchNorm on its moving statistics, so deterministic.
    np.testing.assert_allclose(predictor(x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictor(x[:2]), predictor(x)[:2], rtol=1e-5, atol=1e-6)


def test_test_time_augmentation_averages_the_eight_flips_and_turns() -> None:
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.Flatten(),  # not invariant to turns: each view scores differently
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    views = [np.rot90(m, k, axes=(1, 2)) for m in (x, x[:, :, ::-1]) for k in range(4)]
    expected = np.mean([model.predict(np.ascontiguousarray(v), verbose=0) for v in views], 0)
    averaged = scoring.Predictor(model, 8, tta=True)
    np.testing.assert_allclose(averaged(x), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(scoring.Predictor(model, 8)(x), expected, atol=1e-3)
    # The same figure for a photo taken the other way round.
    turned = np.ascontiguousarray(np.rot90(x[:, ::-1], 1, axes=(1, 2)))
    np.testing.assert_allclose(averaged(turned), averaged(x), rtol=1e-5, atol=1e-6)


def test_batch_decoder_rejects_bytes_that_are_no_image() -> None:
    decoder = scoring.BatchDecoder(32)
    with pytest.raises(scoring.UndecodableImage, match="cannot be decoded"):
        decoder([b"not an image at all"])
