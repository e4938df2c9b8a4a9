"""The directory of one training's on-disk cache of resized images (``TRAINER_CACHE_DIR``).

The trainer writes a request's splits there, resized (``services/trainer/image_files.py``),
and trains from those files: nothing of a split is held in memory. Without
``TRAINER_CACHE_DIR`` the directory is a private temporary one (``mkdtemp`` in the
system's temporary directory), removed the same way.

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
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "request-"


def request_cache_dir(root: str, request_id: uuid.UUID) -> Path:
    return Path(root) / f"{PREFIX}{request_id}"


@contextlib.contextmanager
def training_cache_dir(root: str, request_id: uuid.UUID) -> Iterator[str]:
    """A fresh, private directory for the request's training, removed on exit (under
    ``root``, or a temporary one without a root)."""
    if not root:
        temporary = tempfile.mkdtemp(prefix=f"chouette-{PREFIX}{request_id}-")
        try:
            yield temporary
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
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
