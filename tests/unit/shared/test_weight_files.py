"""Files the trainer opens because a message says so: only the allowed ones.

``--weights PATH`` is read only under ``TRAINER_WEIGHTS_DIR`` and only HDF5 ``*.h5``;
the ImageNet cache is refused where other users could plant a file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from shared import modeling, pretrained
from shared.modeling import ModelSpec, WeightsUnavailable
from shared.pretrained import FILES, WeightsFile
from shared.weight_files import HDF5_SIGNATURE

H5 = HDF5_SIGNATURE + b"\0" * 64


def spec(weights: str) -> ModelSpec:
    return ModelSpec(
        architecture="ResNet50", image_size=32, class_names=("a", "b"), weights=weights
    )


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "weights"
    directory.mkdir()
    monkeypatch.setenv("TRAINER_WEIGHTS_DIR", str(directory))
    return directory


def refused(weights: str) -> str:
    with pytest.raises(WeightsUnavailable) as caught:
        modeling._base_weights(spec(weights))
    return str(caught.value)


def test_without_a_weights_dir_no_path_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAINER_WEIGHTS_DIR", raising=False)
    path = tmp_path / "base.weights.h5"
    path.write_bytes(H5)
    assert "TRAINER_WEIGHTS_DIR" in refused(str(path))


def test_files_under_the_weights_dir_are_accepted(weights_dir: Path) -> None:
    (weights_dir / "sub").mkdir()
    path = weights_dir / "sub" / "base.weights.h5"
    path.write_bytes(H5)
    assert modeling._base_weights(spec(str(path))) == str(path.resolve())
    assert modeling._base_weights(spec("sub/base.weights.h5")) == str(path.resolve())


def test_paths_outside_cannot_be_probed(weights_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.h5"
    outside.write_bytes(H5)
    existing, missing = refused(str(outside)), refused(str(tmp_path / "missing.h5"))
    assert "not under TRAINER_WEIGHTS_DIR" in existing
    assert existing.replace("secret", "missing") == missing  # same answer: nothing learnt
    assert "not under" in refused("/etc/passwd")
    assert "not under" in refused("../secret.h5")
    (weights_dir / "link.h5").symlink_to(outside)
    assert "not under" in refused("link.h5")


def test_only_hdf5_files_of_the_expected_kind(weights_dir: Path) -> None:
    (weights_dir / "notes.txt").write_bytes(H5)
    assert "not a Keras *.h5 file" in refused("notes.txt")
    (weights_dir / "fake.h5").write_bytes(b"#!/bin/sh\n")
    assert "not an HDF5" in refused("fake.h5")
    (weights_dir / "dir.h5").mkdir()
    assert "does not exist" in refused("dir.h5")


# -- the ImageNet cache ---------------------------------------------------------------------


def plant(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file in the cache whose hash Keras's table accepts (as an md5 collision would)."""
    data = b"planted by another user"
    monkeypatch.setitem(FILES, "ResNet50", WeightsFile("ResNet50", hashlib.md5(data).hexdigest()))
    path = directory / FILES["ResNet50"].file_name
    path.write_bytes(data)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    directory.mkdir()
    monkeypatch.setenv("TRAINER_WEIGHTS_CACHE_DIR", str(directory))
    monkeypatch.setenv("TRAINER_WEIGHTS_SOURCE", str(tmp_path / "no-source"))
    return directory


def test_a_private_cache_is_used(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = plant(cache, monkeypatch)
    assert modeling._base_weights(spec("imagenet")) == str(path.resolve())


def test_a_world_writable_cache_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plant(cache, monkeypatch)
    cache.chmod(0o777)
    assert "writable by every user" in refused("imagenet")
    with pytest.raises(pretrained.UnsafeCache):
        pretrained.pull(FILES["ResNet50"], str(cache.parent / "no-source"), cache)


def test_a_cache_under_a_world_writable_parent_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone may replace the cache directory itself
    cache = shared / "cache"
    cache.mkdir()
    monkeypatch.setenv("TRAINER_WEIGHTS_CACHE_DIR", str(cache))
    plant(cache, monkeypatch)
    assert "writable by every user" in refused("imagenet")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_cache_owned_by_another_user_is_refused(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant(cache, monkeypatch)
    os.chown(cache, 65534, 65534)
    assert "belongs to another user" in refused("imagenet")
