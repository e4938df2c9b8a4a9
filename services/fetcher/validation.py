"""Image validation with Pillow: decode fully, reject what a trainer could not use.

Every rejection carries a short reason (``"truncated"``, ``"not an image"``...) that the
dataset row counts, so a person sees why images are missing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

from PIL import Image, UnidentifiedImageError

# Formats Pillow decodes and the trainer can read (MPO: the JPEG variant of many phones).
ACCEPTED_FORMATS: Final = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})


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
            img.verify()
        # verify() checks structure only; a truncated JPEG shows up when decoding the pixels.
        with Image.open(io.BytesIO(data)) as img:
            img.load()
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
    return ImageInfo(width, height, fmt)
