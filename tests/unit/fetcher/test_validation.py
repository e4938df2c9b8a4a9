"""Image validation: what Pillow decodes is kept, everything else is rejected with a reason."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.fetcher.validation import ImageRejected, validate_image


def encode(fmt: str, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "green").save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_accepts_common_formats(fmt: str) -> None:
    info = validate_image(encode(fmt), max_pixels=10_000)
    assert (info.width, info.height, info.format) == (40, 30, fmt)


def reason(data: bytes, max_pixels: int = 10_000_000) -> str:
    with pytest.raises(ImageRejected) as info:
        validate_image(data, max_pixels=max_pixels)
    return info.value.reason


def test_rejections_carry_a_reason() -> None:
    jpeg = encode("JPEG", (200, 150))
    assert reason(b"") == "empty"
    assert reason(b"<html><body>Access denied</body></html>") == "not an image"
    assert reason(jpeg[: len(jpeg) // 2]) == "truncated"
    assert reason(encode("PNG")[:-30]) in ("truncated", "corrupt")
    assert reason(encode("JPEG", (200, 150)), max_pixels=1000) == "decompression bomb"
    assert reason(encode("PDF")) in ("not an image", "unsupported format")


def test_decompression_bomb_is_rejected_before_decoding() -> None:
    # A 20000 x 20000 grey PNG compresses to a few hundred KB but decodes to 400 MB.
    out = io.BytesIO()
    Image.new("L", (20_000, 20_000)).save(out, format="PNG")
    assert len(out.getvalue()) < 2_000_000
    assert reason(out.getvalue(), max_pixels=50_000_000) == "decompression bomb"
