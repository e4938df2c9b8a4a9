"""Image validation with Pillow: decode fully, reject what a trainer could not use.

Every rejection carries a short reason (``"truncated"``, ``"not an image"``...) that the
dataset row counts, so a person sees why images are missing. An accepted image also gets
its perceptual hash (:func:`dhash`), from the pixels already decoded: the split keeps near
duplicates (re-encoded, slightly brightened or resized copies) on one side.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from typing import Final

from PIL import Image, UnidentifiedImageError

# Smaller images are decoded on the event loop (well under a millisecond): handing them to a
# thread costs more than decoding, and worker threads fighting the loop for the GIL slow
# every socket write. Larger ones (real photos: tens of ms) go to a worker thread.
INLINE_MAX_BYTES: Final = 256 * 1024

# Formats Pillow decodes and the trainer can read (MPO: the JPEG variant of many phones).
ACCEPTED_FORMATS: Final = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})

# JPEGs are decoded at a reduced scale, but never below this many pixels a side: enough for
# a perceptual hash that does not depend on the size the photo was stored at.
HASH_SIDE: Final = 32


class ImageRejected(Exception):
    """One image is unusable; ``reason`` is the short text counted on the dataset."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    phash: int | None = None  # 64-bit dHash (unsigned); None when it could not be computed


def dhash(img: Image.Image) -> int | None:
    """The 64-bit difference hash: the 9x8 grayscale image, one bit per horizontal pair of
    neighbours (left brighter than right). Re-encoding, a change of brightness or of size
    flips few bits; different photos differ in about half of them. None if Pillow cannot
    convert the image to grayscale."""
    try:
        small = img.convert("L").resize((9, 8), Image.Resampling.BOX)
    except (OSError, ValueError):
        return None
    pixels = list(small.getdata())
    bits = 0
    for row in range(8):
        for col in range(8):
            left, right = pixels[row * 9 + col], pixels[row * 9 + col + 1]
            bits = (bits << 1) | (left > right)
    return bits


def validate_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Decode ``data`` completely; return its size and format or raise :class:`ImageRejected`."""
    if not data:
        raise ImageRejected("empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            width, height = img.size
            # Checked before decoding: a small file can claim billions of pixels.
            if width * height > max_pixels:
                raise ImageRejected("decompression bomb", f"{width}x{height} pixels")
            if fmt not in ACCEPTED_FORMATS:
                raise ImageRejected("unsupported format", fmt or "unknown")
            if fmt in ("JPEG", "MPO"):
                # Decoding at 1/8 scale still reads every entropy-coded block, so truncation
                # and corruption show, at a fraction of the cost on large photos.
                # Small photos stay large enough for the perceptual hash.
                img.draft(img.mode, (max(HASH_SIDE, width // 8), max(HASH_SIDE, height // 8)))
                img.load()
                return ImageInfo(width, height, fmt, dhash(img))
            img.verify()  # checksums (PNG); verify() leaves the image unusable: reopen
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            phash = dhash(img)
    except ImageRejected:
        raise
    except UnidentifiedImageError as exc:
        raise ImageRejected("not an image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("decompression bomb", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        truncated = "truncat" in text.lower() or isinstance(exc, EOFError)
        reason = "truncated" if truncated else "corrupt"
        raise ImageRejected(reason, text) from exc
    return ImageInfo(width, height, fmt, phash)


async def check_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """:func:`validate_image` (with the perceptual hash) without blocking the event loop on
    large images."""
    if len(data) <= INLINE_MAX_BYTES:
        return validate_image(data, max_pixels=max_pixels)
    return await asyncio.to_thread(validate_image, data, max_pixels=max_pixels)


def perceptual_hash(data: bytes, *, max_pixels: int) -> int | None:
    """The hash :func:`validate_image` gives (the same decoding), or None for bytes it rejects:
    for images stored before hashes were."""
    try:
        return validate_image(data, max_pixels=max_pixels).phash
    except ImageRejected:
        return None
