"""``chouette explain --model ID IMAGE... --out DIR``: Grad-CAM overlays of local images.

The images are read and checked before TensorFlow is imported (as ``chouette predict``);
the model comes from PostgreSQL through ``shared.weight_store`` (checksum verified) and
``shared.gradcam`` draws where its last convolution block found the class.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chouette import render
from chouette.connections import open_pool
from chouette.errors import OK, CommandFailed, UsageError
from chouette.predict import native_stderr_held, read_images
from chouette.submit import parse_model_id, trained_model
from shared.errors import PermanentError
from shared.settings import Settings


def overlay_paths(out: Path, names: list[str]) -> list[Path]:
    """``OUT/<stem>.gradcam.png`` per image; a repeated stem gets ``-2``, ``-3``..."""
    seen: dict[str, int] = {}
    paths = []
    for name in names:
        stem = Path(name).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        suffix = "" if seen[stem] == 1 else f"-{seen[stem]}"
        paths.append(out / f"{stem}{suffix}.gradcam.png")
    return paths


def _out_dir(text: str) -> Path:
    out = Path(text)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {text}: cannot create the folder: {exc.strerror or exc}") from None
    return out


async def run_explain(args: argparse.Namespace, settings: Settings) -> int:
    model_id = parse_model_id(args.model)
    images = read_images(args.images)
    out = _out_dir(args.out)
    async with open_pool(settings) as pool:
        row = await trained_model(pool, model_id)
        if args.class_name is not None and args.class_name not in row["class_names"]:
            raise UsageError(
                f"--class: {args.class_name!r} is not one of model {model_id}'s"
                f" {list(row['class_names'])}"
            )

        with native_stderr_held():
            from shared.gradcam import Explainer  # lazy: model code (numpy; TensorFlow when called)
            from shared.weight_store import (
                load_model,  # lazy: model code (numpy; TensorFlow when called)
            )

            try:
                model, spec, _row = await load_model(pool, model_id)
            except PermanentError as exc:
                raise CommandFailed(str(exc)) from None
            explainer = Explainer(model, spec)
            results: list[dict[str, Any]] = []
            for (name, data), path in zip(
                images, overlay_paths(out, [n for n, _ in images]), strict=True
            ):
                explained = explainer.explain(data, args.class_name)
                path.write_bytes(explained.png)
                results.append(
                    {
                        "image": name,
                        "predicted": explained.predicted,
                        "explained": explained.class_name,
                        "probability": round(explained.probability, 4),
                        "overlay": str(path),
                    }
                )
    if args.json:
        print(render.dumps({"model_id": model_id, "explanations": results}))
    else:
        rows = [tuple(r.values()) for r in results]
        print(render.table(rows, ("image", "predicted", "explained", "probability", "overlay")))
    return OK
