"""``chouette predict --model ID IMAGE...``: class probabilities for local images.

Every file is read and checked before TensorFlow is even imported, so a typo in a path
answers at once (exit 2, naming the file). The weights come from Postgres through
``shared.weight_store`` (checksum verified) and the images go through the same
decode + resize as in training (``shared.images``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chouette import render
from chouette.connections import open_pool
from chouette.errors import OK, CommandFailed, UsageError
from chouette.submit import parse_model_id, trained_model
from shared.errors import PermanentError
from shared.settings import Settings


def read_images(paths: list[str]) -> list[tuple[str, bytes]]:
    """The bytes of each file; ``UsageError`` naming the first one that is not a readable image."""
    from PIL import (  # lazy: Pillow, only for the commands that read images
        Image,
        UnidentifiedImageError,
    )

    images = []
    for name in paths:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise UsageError(f"IMAGE {name}: cannot read: {exc.strerror or exc}") from None
        try:
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse those too.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as img:
                    img.verify()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UsageError(
                f"IMAGE {name}: too large to decode"
                f" ({' x '.join(map(str, _size(data)))} pixels, at most"
                f" {Image.MAX_IMAGE_PIXELS} allowed)"
            ) from exc
        except UnidentifiedImageError:
            raise UsageError(f"IMAGE {name}: not a readable image (unknown format)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise UsageError(f"IMAGE {name}: not a readable image ({exc})") from None
        images.append((name, data))
    return images


def _size(data: bytes) -> tuple[int, int]:
    """An image's width and height from its header, without the decompression bomb check."""
    from PIL import Image  # lazy: Pillow, only for the commands that read images

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


async def run_predict(args: argparse.Namespace, settings: Settings) -> int:
    model_id = parse_model_id(args.model)
    images = read_images(args.images)
    async with open_pool(settings) as pool:
        await trained_model(pool, model_id)  # a clear error before TensorFlow loads

        with native_stderr_held():  # TensorFlow's C++ start-up chatter, shown only on failure
            from shared.weight_store import (
                load_model,  # lazy: model code (numpy; TensorFlow when called)
            )

            try:
                model, spec, _row = await load_model(pool, model_id)
            except PermanentError as exc:
                raise CommandFailed(str(exc)) from None
            probabilities = predict_probabilities(
                model, spec, [data for _, data in images], tta=args.tta
            )
    names = list(spec.class_names)
    results: list[dict[str, Any]] = [
        {
            "image": name,
            "predicted": names[max(range(len(names)), key=lambda i: probs[i])],
            "probabilities": {n: round(float(p), 4) for n, p in zip(names, probs, strict=True)},
        }
        for (name, _), probs in zip(images, probabilities, strict=True)
    ]
    if args.json:
        print(render.dumps({"model_id": model_id, "predictions": results}))
    else:
        rows = [
            (r["image"], r["predicted"], *(r["probabilities"][n] for n in names)) for r in results
        ]
        print(render.table(rows, ("image", "predicted", *names)))
    return OK


@contextlib.contextmanager
def native_stderr_held() -> Iterator[None]:
    """Hold what native code writes to file descriptor 2 (TensorFlow logs CPU features,
    missing CUDA drivers and oneDNN notes through absl before any setting applies) and
    replay it only if the block fails, so a user sees a result table, not library noise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def predict_probabilities(
    model: object, spec: object, blobs: list[bytes], *, tta: bool = False
) -> list[list[float]]:
    """Class probabilities as the evaluator scores them (with ``tta``: the mean over each
    image's 8 flips/turns, as the evaluator with ``EVALUATOR_TTA=true``)."""
    import numpy as np  # lazy: only with the model code

    from shared.images import (
        decode_images,  # lazy: numpy and the TensorFlow decode path; only predict pays for it
    )
    from shared.modeling import (
        inference_function,  # lazy: model code (numpy; TensorFlow when called)
    )

    size = spec.image_size  # type: ignore[attr-defined]
    batch = decode_images(blobs, size)
    out = inference_function(model, size, tta=tta)(batch)  # type: ignore[arg-type]
    return [list(map(float, row)) for row in np.asarray(out)]
