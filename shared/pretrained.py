"""The ImageNet weights of the six ResNet bases: their files, hashes, source and cache.

``keras.applications.<Arch>(include_top=False, weights="imagenet")`` loads
``<arch>_weights_tf_dim_ordering_tf_kernels_notop.h5``, downloaded by
``keras.utils.get_file`` from :data:`KERAS_BASE_URL` into ``$KERAS_HOME/models`` and
checked against the hash in Keras's own table (``keras/src/applications/resnet.py``,
``WEIGHTS_HASHES[...][1]``). :data:`FILES` is that table for the six architectures the
pipeline trains (a unit test compares it with the installed Keras). Keras publishes md5
digests for these files; a 64-hex-digit entry is a sha256, as ``get_file`` reads it.

The trainer (``shared.modeling.build_model``) and ``chouette weights pull`` share:

* the **source** (``TRAINER_WEIGHTS_SOURCE``): Keras's public URL, an http(s) mirror
  serving the same file names, or a local directory holding them;
* the **cache** (``TRAINER_WEIGHTS_CACHE_DIR``, default ``$KERAS_HOME/models``, with
  ``KERAS_HOME`` defaulting to ``~/.keras``): never a shared place such as
  ``/tmp/.keras``, where another user could plant a file (:func:`check_private` refuses
  a cache that another user owns or could write to).

This module imports neither TensorFlow nor Keras: ``chouette weights`` stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

# keras/src/applications/resnet.py: BASE_WEIGHTS_PATH (ResNet*V2 use the same one).
KERAS_BASE_URL: Final = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
SOURCE_SETTING: Final = "TRAINER_WEIGHTS_SOURCE"
CACHE_SETTING: Final = "TRAINER_WEIGHTS_CACHE_DIR"
_CHUNK = 1 << 20


class PretrainedError(Exception):
    """Pretrained weights that cannot be found, fetched or trusted (one-line message)."""


class UnknownArchitecture(PretrainedError, ValueError):
    """No ImageNet weights file is known for this architecture."""


class DownloadFailed(PretrainedError):
    """The source did not deliver the file (unreachable, missing, interrupted)."""


class UnsafeCache(PretrainedError):
    """The cache is in a place other users can write to: a file there cannot be trusted."""


class ChecksumMismatch(PretrainedError):
    """The delivered file is not the expected one; it was not kept."""


@dataclass(frozen=True)
class WeightsFile:
    """One ``include_top=False`` ImageNet weights file as keras.applications knows it."""

    architecture: str
    file_hash: str

    @property
    def file_name(self) -> str:
        return f"{self.architecture.lower()}_weights_tf_dim_ordering_tf_kernels_notop.h5"

    @property
    def algorithm(self) -> str:
        """``sha256`` for a 64-digit hash, else ``md5`` (``keras.utils.get_file``'s "auto")."""
        return "sha256" if len(self.file_hash) == 64 else "md5"


def _table(*entries: tuple[str, str]) -> dict[str, WeightsFile]:
    return {arch: WeightsFile(arch, digest) for arch, digest in entries}


# keras/src/applications/resnet.py WEIGHTS_HASHES[<arch>.lower()][1] (the notop file).
FILES: Final[dict[str, WeightsFile]] = _table(
    ("ResNet50", "4d473c1dd8becc155b73f8504c6f6626"),
    ("ResNet101", "88cf7a10940856eca736dc7b7e228a21"),
    ("ResNet152", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
    ("ResNet50V2", "fac2f116257151a9d068a22e544a4917"),
    ("ResNet101V2", "c0ed64b8031c3730f411d2eb4eea35b5"),
    ("ResNet152V2", "ed17cf2e0169df9d443503ef94b23b33"),
)


def weights_file(architecture: str) -> WeightsFile:
    """The entry of ``architecture`` (case-insensitive), or :class:`UnknownArchitecture`."""
    for name, entry in FILES.items():
        if name.lower() == architecture.lower():
            return entry
    raise UnknownArchitecture(
        f"no ImageNet weights known for {architecture!r}: one of {', '.join(FILES)}"
    )


def default_cache_dir() -> Path:
    """``$KERAS_HOME/models`` (``~/.keras/models`` without KERAS_HOME), as Keras uses it."""
    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    return Path(home).expanduser() / "models"


def cache_dir(configured: str | Path = "") -> Path:
    """The configured cache directory (``TRAINER_WEIGHTS_CACHE_DIR``) or Keras's."""
    return Path(configured).expanduser() if str(configured) else default_cache_dir()


def check_private(directory: Path) -> None:
    """Raise :class:`UnsafeCache` unless only this user (or root) can change ``directory``.

    Keras's md5 digests do not stop a planted file (md5 collisions are cheap), so the
    cache must not be writable by others: the directory and each of its parents must
    belong to this user or root and must not be writable by everyone, except a parent
    with the sticky bit (``/tmp``), where others cannot replace what is not theirs.
    """
    path = directory.resolve()
    me = os.geteuid()
    advice = f"set {CACHE_SETTING} or KERAS_HOME to a directory of this service"
    for place in (path, *path.parents):
        info = place.stat()
        if info.st_uid not in (me, 0):
            raise UnsafeCache(
                f"the weights cache {path} is not safe: {place} belongs to another user"
                f" (uid {info.st_uid}); {advice}"
            )
        others_write = info.st_mode & stat.S_IWOTH
        if others_write and (place == path or not info.st_mode & stat.S_ISVTX):
            raise UnsafeCache(
                f"the weights cache {path} is not safe: {place} is writable by every user"
                f" (mode {stat.S_IMODE(info.st_mode):o}); {advice}"
            )


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://", "file://"))


def origin(source: str, file_name: str) -> str:
    """The URL of ``file_name`` at ``source`` (a base URL or a directory; "" = Keras's URL)."""
    source = source or KERAS_BASE_URL
    if is_url(source):
        return source.rstrip("/") + "/" + file_name
    return (Path(source).expanduser().resolve() / file_name).as_uri()


def describe(source: str) -> str:
    return source or KERAS_BASE_URL


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_valid(path: Path, entry: WeightsFile) -> bool:
    """Whether ``path`` is a file with ``entry``'s hash."""
    return path.is_file() and file_digest(path, entry.algorithm) == entry.file_hash


def cached(entry: WeightsFile, directory: Path) -> Path | None:
    """The cached file of ``entry`` when present and valid."""
    path = directory / entry.file_name
    return path if is_valid(path, entry) else None


@contextlib.contextmanager
def _open_source(url: str, timeout: float) -> Iterator[IO[bytes]]:
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadFailed(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadFailed(f"cannot fetch {url}: {reason}") from None
    with response:
        yield response


def pull(
    entry: WeightsFile, source: str, directory: Path, *, timeout: float = 60.0
) -> tuple[Path, bool]:
    """Put ``entry``'s file in ``directory``, checked; returns (path, whether fetched).

    A valid cached file is kept as is. Otherwise the file is fetched from ``source``
    into a temporary name beside its final one, hashed on the way, and renamed only
    when its hash matches: a wrong or partial file never takes the cache's name.
    Raises :class:`DownloadFailed` or :class:`ChecksumMismatch`.
    """
    target = directory / entry.file_name
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadFailed(f"cannot create the cache directory {directory}: {exc}") from None
    check_private(directory)  # before trusting a file found there
    if is_valid(target, entry):
        return target, False
    url = origin(source, entry.file_name)
    partial = directory / f".{entry.file_name}.{os.getpid()}.part"
    digest = hashlib.new(entry.algorithm)
    try:
        with _open_source(url, timeout) as response, partial.open("wb") as out:
            try:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            except OSError as exc:  # a timeout or a reset in the middle of the file
                raise DownloadFailed(f"download of {url} interrupted: {exc}") from None
        if digest.hexdigest() != entry.file_hash:
            raise ChecksumMismatch(
                f"{url} is not the expected {entry.file_name}: {entry.algorithm}"
                f" {digest.hexdigest()}, expected {entry.file_hash}; not cached"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target, True
