"""ImageNet weights: Keras's file table, ``chouette weights pull``, ``--weights imagenet``.

No internet: files are generated here and served from 127.0.0.1 (or a directory). The
real hashes belong to the real files, so tests put the generated file's sha256 in the
table (``pretrained.FILES``); one test checks the table itself against Keras's.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from chouette.entry import main
from shared import modeling, pretrained
from shared.choices import ARCHITECTURES
from shared.modeling import ModelSpec, WeightsUnavailable, base_of, build_model
from shared.pretrained import FILES, WeightsFile

ROOT = Path(__file__).parents[3]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expect(monkeypatch: pytest.MonkeyPatch, architecture: str, digest: str) -> WeightsFile:
    """Make ``digest`` the expected hash of ``architecture``'s file (the real ones are md5)."""
    entry = WeightsFile(architecture, digest)
    monkeypatch.setitem(FILES, architecture, entry)
    return entry


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/keras/"


class Server:
    """A static HTTP server on 127.0.0.1 serving ``root`` (a mirror of Keras's URL)."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:  # /mirror/<name> → <root>/<name>
        return super().translate_path(path.removeprefix("/mirror"))

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    root = tmp_path / "mirror"
    root.mkdir()
    server = Server(root)
    yield server, root
    server.stop()


@pytest.fixture
def trainer_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The trainer's settings point at a private cache; the source is set by each test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRAINER_WEIGHTS_CACHE_DIR", str(cache))
    monkeypatch.setenv("TRAINER_WEIGHTS_SOURCE", closed_port_url())
    return cache


def fake_file(directory: Path, architecture: str, data: bytes) -> Path:
    path = directory / pretrained.weights_file(architecture).file_name
    path.write_bytes(data)
    return path


FAKE = np.random.default_rng(0).bytes(300_000)

# ------------------------------------------------------------------------- the table


def test_table_covers_every_architecture_with_keras_names_and_hashes() -> None:
    from keras.src.applications import resnet

    assert tuple(FILES) == tuple(ARCHITECTURES)
    assert pretrained.KERAS_BASE_URL == resnet.BASE_WEIGHTS_PATH
    for architecture, entry in FILES.items():
        name = architecture.lower()
        assert entry.file_hash == resnet.WEIGHTS_HASHES[name][1]
        assert entry.file_name == f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
        assert entry.algorithm == "md5"  # what Keras publishes for these files
    assert pretrained.weights_file("resnet50v2") is FILES["ResNet50V2"]
    with pytest.raises(pretrained.UnknownArchitecture, match="ResNet18"):
        pretrained.weights_file("ResNet18")


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["ResNet50", "ResNet50V2"])
def test_keras_applications_asks_get_file_for_the_same_file(
    architecture: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras
    from keras.src.applications import resnet

    asked: list[tuple[object, ...]] = []

    def get_file(fname: str, origin: str, **kwargs: object) -> str:
        asked.append((fname, origin, kwargs["file_hash"], kwargs["cache_subdir"]))
        raise RuntimeError("stop before loading")

    monkeypatch.setattr(resnet.file_utils, "get_file", get_file)
    with pytest.raises(RuntimeError, match="stop before loading"):
        getattr(keras.applications, architecture)(
            include_top=False, weights="imagenet", input_shape=(32, 32, 3)
        )
    entry = FILES[architecture]
    assert asked == [
        (entry.file_name, pretrained.origin("", entry.file_name), entry.file_hash, "models")
    ]


def test_sources_and_the_default_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    name = "x_notop.h5"
    assert pretrained.origin("", name) == pretrained.KERAS_BASE_URL + name
    assert pretrained.origin("https://m.example/k", name) == "https://m.example/k/" + name
    assert pretrained.origin("https://m.example/k/", name) == "https://m.example/k/" + name
    assert pretrained.origin(str(tmp_path), name) == (tmp_path / name).as_uri()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert pretrained.cache_dir("") == tmp_path / "kh" / "models"
    assert pretrained.cache_dir(str(tmp_path / "c")) == tmp_path / "c"
    monkeypatch.delenv("KERAS_HOME")
    assert pretrained.cache_dir("") == Path.home() / ".keras" / "models"
    monkeypatch.delenv("TRAINER_WEIGHTS_CACHE_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert modeling.imagenet_cache_path("ResNet101") == (
        tmp_path / "kh" / "models" / FILES["ResNet101"].file_name
    )


# ------------------------------------------------------------------------------- pull


def test_pull_from_a_mirror_verifies_then_caches(
    mirror: tuple[Server, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, root = mirror
    fake_file(root, "ResNet50", FAKE)
    entry = expect(monkeypatch, "ResNet50", sha256(FAKE))
    cache = tmp_path / "cache"
    path, fetched = pretrained.pull(entry, server.url, cache)
    assert fetched and path == cache / entry.file_name and path.read_bytes() == FAKE
    assert [p.name for p in cache.iterdir()] == [entry.file_name]  # no partial file left
    server.stop()
    assert pretrained.pull(entry, server.url, cache) == (path, False)  # cached: no request


def test_pull_refuses_a_file_whose_checksum_differs(
    mirror: tuple[Server, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, root = mirror
    fake_file(root, "ResNet152", FAKE)
    entry = expect(monkeypatch, "ResNet152", sha256(b"the real file"))
    cache = tmp_path / "cache"
    with pytest.raises(pretrained.ChecksumMismatch, match="not the expected") as caught:
        pretrained.pull(entry, server.url, cache)
    assert sha256(FAKE) in str(caught.value) and "\n" not in str(caught.value)
    assert list(cache.iterdir()) == []
    # A corrupt file already under the cache name is replaced, not trusted.
    (cache / entry.file_name).write_bytes(b"truncated")
    entry = expect(monkeypatch, "ResNet152", sha256(FAKE))
    assert pretrained.pull(entry, server.url, cache) == (cache / entry.file_name, True)
    assert (cache / entry.file_name).read_bytes() == FAKE


def test_pull_reports_a_missing_file_or_an_unreachable_source(
    mirror: tuple[Server, Path], tmp_path: Path
) -> None:
    server, _root = mirror
    cache = tmp_path / "cache"
    with pytest.raises(pretrained.DownloadFailed, match="HTTP 404"):
        pretrained.pull(FILES["ResNet101"], server.url, cache)
    with pytest.raises(pretrained.DownloadFailed, match="cannot fetch"):
        pretrained.pull(FILES["ResNet101"], closed_port_url(), cache)
    assert list(cache.iterdir()) == []


# -------------------------------------------------------------------------------- CLI


def test_cli_pull_from_a_directory_and_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source, cache = tmp_path / "carried", tmp_path / "cache"
    source.mkdir()
    fake_file(source, "ResNet50V2", FAKE)
    fake_file(source, "ResNet101V2", FAKE[::-1])
    expect(monkeypatch, "ResNet50V2", sha256(FAKE))
    expect(monkeypatch, "ResNet101V2", sha256(FAKE[::-1]))
    pull = ["weights", "pull", "--source", str(source), "--cache-dir", str(cache)]
    assert main([*pull, "ResNet50V2", "resnet101v2"]) == 0
    out = capsys.readouterr().out
    assert "ResNet50V2" in out and "fetched" in out
    assert (cache / FILES["ResNet50V2"].file_name).read_bytes() == FAKE
    (cache / FILES["ResNet101V2"].file_name).write_bytes(b"damaged")
    assert main(["weights", "list", "--cache-dir", str(cache)]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert rows["ResNet50V2"] == "valid" and rows["ResNet101V2"] == "CORRUPT"
    assert rows["ResNet50"] == "missing"


def test_cli_pull_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source, cache = tmp_path / "carried", tmp_path / "cache"
    source.mkdir()
    fake_file(source, "ResNet50", FAKE)
    expect(monkeypatch, "ResNet50", sha256(b"another file"))
    pull = ["weights", "pull", "--source", str(source), "--cache-dir", str(cache)]
    assert main([*pull, "ResNet50"]) == 1  # checksum
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ResNet50" in err and "not cached" in err
    assert not cache.exists() or list(cache.iterdir()) == []
    assert main([*pull, "ResNet101"]) == 1  # not in the source
    assert capsys.readouterr().err.count("\n") == 1
    assert main([*pull, "ResNet18"]) == 2  # unknown: nothing fetched
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ResNet18" in err
    assert main(["weights", "pull"]) == 2


def test_cli_weights_never_imports_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys; from chouette.entry import main;"
        f" rc = main(['weights', 'list', '--cache-dir', {str(tmp_path)!r}]);"
        " assert rc == 0;"
        " assert not {'tensorflow', 'keras'} & set(sys.modules), 'imported TensorFlow'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------- --weights imagenet


def spec(architecture: str = "ResNet50V2") -> ModelSpec:
    return ModelSpec(
        architecture=architecture, image_size=32, class_names=("a", "b"), weights="imagenet"
    )


def test_offline_and_not_cached_is_a_clear_error(trainer_env: Path) -> None:
    with pytest.raises(WeightsUnavailable) as caught:
        build_model(spec("ResNet101"))
    message = str(caught.value)
    assert "not in the Keras cache" in message and "TRAINER_WEIGHTS_SOURCE" in message
    assert "chouette weights pull ResNet101" in message and "\n" not in message
    assert list(trainer_env.iterdir()) == []


def test_imagenet_refuses_a_download_whose_checksum_differs(
    trainer_env: Path, mirror: tuple[Server, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, root = mirror
    monkeypatch.setenv("TRAINER_WEIGHTS_SOURCE", server.url)
    fake_file(root, "ResNet50V2", FAKE)
    expect(monkeypatch, "ResNet50V2", sha256(b"the real weights"))
    with pytest.raises(WeightsUnavailable, match="refused") as caught:
        build_model(spec())
    assert "TRAINER_WEIGHTS_SOURCE" in str(caught.value)
    assert list(trainer_env.iterdir()) == []  # the wrong file is not left in the cache


def test_no_fallback_to_a_shared_directory(
    trainer_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    def no_download(*args: object, **kwargs: object) -> str:
        raise AssertionError("get_file would fall back to /tmp/.keras")

    monkeypatch.setattr(keras.utils, "get_file", no_download)
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    monkeypatch.setenv("TRAINER_WEIGHTS_CACHE_DIR", str(blocker / "models"))
    with pytest.raises(WeightsUnavailable, match="TRAINER_WEIGHTS_CACHE_DIR or KERAS_HOME"):
        build_model(spec())
    # A cache this process cannot write: a valid file is used as is, else a clear error.
    monkeypatch.setenv("TRAINER_WEIGHTS_CACHE_DIR", str(trainer_env))
    monkeypatch.setattr(modeling.os, "access", lambda path, mode: False)
    with pytest.raises(WeightsUnavailable, match="not writable"):
        build_model(spec())
    trainer_env.mkdir(exist_ok=True)
    entry = expect(monkeypatch, "ResNet50V2", sha256(FAKE))
    fake_file(trainer_env, "ResNet50V2", FAKE)
    assert modeling._base_weights(spec()) == str(trainer_env / entry.file_name)


@pytest.fixture(scope="module")
def notop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """A ResNet50V2 ``*_notop.h5`` in Keras's (legacy h5) format, and its weights."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    base = keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("notop") / FILES["ResNet50V2"].file_name
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, base)
    return path, [w.numpy() for w in base.weights]


def assert_base_has(model: object, weights: list[np.ndarray]) -> None:
    loaded = base_of(model).weights  # type: ignore[arg-type]
    assert len(loaded) == len(weights)
    for variable, expected in zip(loaded, weights, strict=True):
        np.testing.assert_array_equal(variable.numpy(), expected)


@pytest.mark.slow
def test_imagenet_downloads_through_keras_from_a_mirror_and_trains(
    notop: tuple[Path, list[np.ndarray]],
    trainer_env: Path,
    mirror: tuple[Server, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import keras

    path, weights = notop
    server, root = mirror
    (root / path.name).write_bytes(path.read_bytes())
    entry = expect(monkeypatch, "ResNet50V2", sha256(path.read_bytes()))
    monkeypatch.setenv("TRAINER_WEIGHTS_SOURCE", server.url)
    calls: list[dict[str, object]] = []
    real_get_file = keras.utils.get_file

    def get_file(**kwargs: object) -> str:
        calls.append(kwargs)
        return real_get_file(**kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    model = build_model(spec())
    assert [(c["fname"], c["origin"], c["file_hash"]) for c in calls] == [
        (entry.file_name, server.url + entry.file_name, entry.file_hash)
    ]
    cached = trainer_env / entry.file_name
    assert sha256(cached.read_bytes()) == entry.file_hash
    assert_base_has(model, weights)
    # One training step from the pretrained start.
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    before = [v.numpy() for v in base_of(model).trainable_weights]
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    loss = model.train_on_batch(x, np.array([0, 1, 0, 1]))
    assert np.isfinite(loss)
    after = [v.numpy() for v in base_of(model).trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.slow
def test_an_offline_site_builds_from_a_cache_filled_by_pull(
    notop: tuple[Path, list[np.ndarray]],
    trainer_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, weights = notop
    expect(monkeypatch, "ResNet50V2", sha256(path.read_bytes()))
    # `chouette weights pull --source DIR` with the files carried to the site; the
    # trainer's source (TRAINER_WEIGHTS_SOURCE) is unreachable.
    assert main(["weights", "pull", "ResNet50V2", "--source", str(path.parent)]) == 0
    assert_base_has(build_model(spec()), weights)
