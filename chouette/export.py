"""``chouette export MODEL --format keras|savedmodel --out PATH`` (``shared.export``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chouette.connections import open_pool
from chouette.errors import OK, CommandFailed, UsageError
from chouette.predict import native_stderr_held
from chouette.submit import parse_model_id
from shared.errors import PermanentError
from shared.settings import Settings


async def run_export(args: argparse.Namespace, settings: Settings) -> int:
    model_id = parse_model_id(args.model, "MODEL")
    out = Path(args.out)
    if args.format == "savedmodel" and _not_empty(out):
        raise UsageError(f"--out {out}: exists and is not empty (a SavedModel is a folder)")
    async with open_pool(settings) as pool:
        with native_stderr_held():
            from shared.export import export  # lazy: model code (numpy; TensorFlow when called)
            from shared.weight_store import (  # lazy: model code (numpy; TensorFlow when called)
                ModelNotFound,
                load_model,
            )

            try:
                model, spec, _ = await load_model(pool, model_id)
            except ModelNotFound:
                raise UsageError(f"MODEL: no model {model_id} (see `chouette models`)") from None
            except PermanentError as exc:
                raise CommandFailed(str(exc)) from None
            try:
                path = export(model, spec, args.format, out)
            except OSError as exc:
                raise UsageError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    print(path)
    return OK


def _not_empty(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))
