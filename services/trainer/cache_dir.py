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

``kill -9`` (or the OOM killer) leaves the directory behind, and nothing removed a
temporary one, nor one under ``TRAINER_CACHE_DIR`` whose request never trains again: up to
the whole split resized, per killed training. So a training holds an exclusive ``flock``
on a file in its directory for as long as it uses it (the kernel drops the lock with the
process, whatever kills it), and a trainer starting up removes every such directory of its
user whose lock it can take (:func:`sweep_stale`): its owner is dead. A directory without
the lock file yet is left alone while it is younger than a grace period (its training may
be creating it right now).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "request-"
# Held (flock, exclusive) by the training using the directory.
LOCK_NAME = ".in-use"
# A directory without its lock file younger than this may be in the making: left alone.
UNLOCKED_GRACE_SECONDS = 600.0


def _temporary_root() -> Path:
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """Hold the directory's lock while in use (released by the kernel if we are killed)."""
    fd = os.open(path / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sweep_stale(root: str, *, grace_seconds: float = UNLOCKED_GRACE_SECONDS) -> list[Path]:
    """Remove the cache directories of trainings whose process is gone; returns them.

    Looks under ``root`` (``TRAINER_CACHE_DIR``, may be empty) and in the system's
    temporary directory, at directories of this user only. A directory whose lock another
    process holds is in use and stays."""
    candidates = list(_temporary_root().glob(f"chouette-{PREFIX}*"))
    if root and Path(root).is_dir():
        candidates += Path(root).glob(f"{PREFIX}*")
    removed = []
    for path in candidates:
        try:
            info = path.lstat()
        except OSError:
            continue
        if not path.is_dir() or path.is_symlink() or info.st_uid != os.getuid():
            continue
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            if time.time() - info.st_mtime < grace_seconds:
                continue  # its training may be creating it
            fd = -1
        except OSError:
            continue
        try:
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live training holds it
            logger.info("removing the cache of a training whose process is gone: %s", path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            if fd >= 0:
                os.close(fd)
    return removed


def request_cache_dir(root: str, request_id: uuid.UUID) -> Path:
    return Path(root) / f"{PREFIX}{request_id}"


@contextlib.contextmanager
def training_cache_dir(root: str, request_id: uuid.UUID) -> Iterator[str]:
    """A fresh, private directory for the request's training, removed on exit (under
    ``root``, or a temporary one without a root)."""
    if not root:
        temporary = tempfile.mkdtemp(prefix=f"chouette-{PREFIX}{request_id}-")
        try:
            with _held(Path(temporary)):
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
        with _held(path):
            yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
