"""predict checks every file before loading TensorFlow: exit 2 naming the file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from chouette.entry import main
from chouette.errors import UsageError
from chouette.predict import read_images


def _jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 120, 30)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue())
    return path


def test_readable_images_come_back_with_their_bytes(tmp_path: Path) -> None:
    good = _jpeg(tmp_path / "a.jpg")
    ((name, data),) = read_images([str(good)])
    assert name == str(good) and data == good.read_bytes()


def test_missing_file_is_named(tmp_path: Path) -> None:
    good = _jpeg(tmp_path / "a.jpg")
    with pytest.raises(UsageError, match=r"IMAGE .*missing\.jpg: cannot read"):
        read_images([str(good), str(tmp_path / "missing.jpg")])


def test_not_an_image_is_named(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("<Error>AccessDenied</Error>")
    with pytest.raises(UsageError, match=r"IMAGE .*notes\.jpg: not a readable image") as err:
        read_images([str(text)])
    assert "0x" not in str(err.value)  # no Python object repr in a user's error line


def test_predict_with_an_unreadable_file_exits_2_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x:x@127.0.0.1:9/none")
    assert main(["predict", "--model", "1", str(tmp_path / "gone.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gone.png" in err


def test_native_stderr_is_held_and_shown_only_on_failure(
    capfd: pytest.CaptureFixture[str],
) -> None:
    import os

    from chouette.predict import native_stderr_held

    with native_stderr_held():
        os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError), native_stderr_held():
        os.write(2, b"E0000 failed call to cuInit\n")
        raise RuntimeError("model failed")
    assert "failed call to cuInit" in capfd.readouterr().err


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("side", [20_000, 10_000])  # above twice Pillow's limit, and between
def test_a_decompression_bomb_is_refused_in_one_line(
    side: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x:x@127.0.0.1:9/none")
    bomb = _png_header(tmp_path / "bomb.png", side, side)
    assert main(["predict", "--model", "1", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"bomb.png: too large to decode ({side} x {side} pixels" in err
