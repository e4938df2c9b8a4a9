"""Limits on what one call may send: bytes, images, pixels. Plain checks, plain errors."""

from __future__ import annotations

from dataclasses import dataclass

from shared.images import dimensions


class UploadRejected(Exception):
    """An upload over a limit or not an image: ``status`` 413 or 422, ``message`` for the
    client (names the limit and the setting behind it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int
    max_image_pixels: int
    max_images: int


def check_images(images: list[tuple[str, bytes]], limits: Limits) -> None:
    """Raise :class:`UploadRejected` for the first image (by file name) over a limit."""
    if not images:
        raise UploadRejected(422, "no image: send one or more files in the form field 'images'")
    if len(images) > limits.max_images:
        raise UploadRejected(
            422, f"{len(images)} images in one call, at most {limits.max_images} (API_MAX_IMAGES)"
        )
    for name, data in images:
        if not data:
            raise UploadRejected(422, f"image {name!r} is empty")
        try:
            size = dimensions(data)
        except ValueError:
            raise UploadRejected(422, f"image {name!r} is not a readable image") from None
        if size is None or size[0] * size[1] > limits.max_image_pixels:
            shown = "more than Pillow decodes" if size is None else f"{size[0]} x {size[1]} pixels"
            raise UploadRejected(
                413,
                f"image {name!r} is too large: {shown}, at most {limits.max_image_pixels}"
                " pixels (API_MAX_IMAGE_PIXELS)",
            )
