"""The directory of one training's on-disk ``tf.data`` cache (``TRAINER_CACHE_DIR``).

Each training gets its own directory under ``TRAINER_CACHE_DIR``, named after its request:
a cache written under a fixed name would be read back by the next request (which would
then train on the first one's images), and a lock file left by a trainer killed with
``kill -9`` would make every later training fail. A directory left behind by a killed
training of the same request is removed before the request trains again (its lease makes
this trainer the only one training it), and the directory is removed when the training
ends, however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "request-"


def request_cache_dir(root: str, request_id: uuid.UUID) -> Path:
    return Path(root) / f"{PREFIX}{request_id}"


@contextlib.contextmanager
def training_cache_dir(root: str, request_id: uuid.UUID) -> Iterator[str]:
    """``""`` (cache in memory) without a root; else a fresh, private directory, removed
    on exit."""
    if not root:
        yield ""
        return
    path = request_cache_dir(root, request_id)
    if path.exists():
        logger.info("removing the cache of an earlier, interrupted training: %s", path)
        shutil.rmtree(path, ignore_errors=True)
    Path(root).mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=0o700)
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
