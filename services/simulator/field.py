"""The simulator's field dataset: a deterministic catalogue of photos and their pixels.

Photos are taken on "field days" between 2020-01-01 and 2022-12-31. How many of each
class a field day yields follows the season (leafy vines in summer, grass in spring and
autumn, bare ground all year), so a date range is small and imbalanced like the real API:
a week gives a few dozen images, some classes may be missing.

Each class has its own look, with enough jitter and noise that a classifier has to learn
it, yet a small ResNet at 32-64 px separates the classes well above chance:

- ``vine``: vertical rows of dark foliage over brown soil, a band of sky on top;
- ``ground``: brown soil with blotches and light stones;
- ``grass``: dense green blades (vertical streaks), with yellowish patches.

Everything derives from ``(seed, image_id)``: the same catalogue and the same bytes on
every machine and every run.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

TAGS = ("vine", "ground", "grass")
FIRST_DAY = dt.date(2020, 1, 1)
LAST_DAY = dt.date(2022, 12, 31)
WIDTH, HEIGHT = 128, 96

# Share of days with a field session, and the most photos of a class on such a day, per month.
FIELD_DAY_RATE = 0.4
MAX_PER_DAY: dict[str, tuple[int, ...]] = {
    #        J  F  M  A  M  J  J  A  S  O  N  D
    "vine": (0, 0, 1, 2, 5, 8, 8, 7, 5, 2, 1, 0),
    "ground": (3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 3, 3),
    "grass": (3, 3, 5, 6, 6, 3, 2, 2, 3, 5, 4, 3),
}
# Entries the real API lists without any link ("it happens").
NATURAL_MISSING_LINK_RATE = 0.03

_ID = re.compile(r"^(\d{8})-(vine|ground|grass)-(\d{2})$")


@dataclass(frozen=True)
class FieldImage:
    image_id: str  # "20210527-vine-03"
    tag: str
    taken_at: dt.datetime  # timezone-aware, local time of the vineyard

    @property
    def ordinal(self) -> int:
        """A stable integer id (for the listing's ``id`` field)."""
        return int.from_bytes(hashlib.sha256(self.image_id.encode()).digest()[:6], "big")


def unit_hash(seed: int, *parts: object) -> float:
    """A deterministic number in [0, 1) for ``parts`` (used for per-image faults)."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _utc_offset(day: dt.date) -> dt.timezone:
    summer = 4 <= day.month <= 10  # close enough to CEST for a simulator
    return dt.timezone(dt.timedelta(hours=2 if summer else 1))


def _counts(day: dt.date, seed: int) -> dict[str, int]:
    rng = random.Random(f"{seed}:{day.isoformat()}")
    if rng.random() >= FIELD_DAY_RATE:
        return dict.fromkeys(TAGS, 0)
    return {tag: rng.randint(0, MAX_PER_DAY[tag][day.month - 1]) for tag in TAGS}


def _image(day: dt.date, tag: str, index: int, seed: int) -> FieldImage:
    image_id = f"{day:%Y%m%d}-{tag}-{index:02d}"
    rng = random.Random(f"{seed}:{image_id}")
    taken = dt.datetime(
        day.year,
        day.month,
        day.day,
        rng.randint(8, 17),
        rng.randint(0, 59),
        rng.randint(0, 59),
        rng.randint(0, 999) * 1000,
        tzinfo=_utc_offset(day),
    )
    return FieldImage(image_id, tag, taken)


def catalogue(start: dt.date, end: dt.date, tag: str, seed: int) -> Iterator[FieldImage]:
    """The photos of ``tag`` taken between ``start`` and ``end`` (inclusive), in time order."""
    day = max(start, FIRST_DAY)
    last = min(end, LAST_DAY)
    while day <= last:
        for index in range(_counts(day, seed).get(tag, 0)):
            yield _image(day, tag, index, seed)
        day += dt.timedelta(days=1)


@functools.lru_cache(maxsize=8192)
def lookup(image_id: str, seed: int) -> FieldImage | None:
    """The photo with this id, or None when the catalogue has no such photo."""
    match = _ID.match(image_id)
    if match is None:
        return None
    try:
        day = dt.datetime.strptime(match[1], "%Y%m%d").date()
    except ValueError:
        return None
    tag, index = match[2], int(match[3])
    if not FIRST_DAY <= day <= LAST_DAY or index >= _counts(day, seed)[tag]:
        return None
    return _image(day, tag, index, seed)


# -- pixels -------------------------------------------------------------------------------


def _smooth_noise(
    rng: np.random.Generator, cells: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """Low-frequency noise in [0, 1]: coarse random cells resized smoothly to ``size``."""
    coarse = rng.random(cells).astype(np.float32)
    img = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img), 0.0, 1.0)


def _colour(rng: np.random.Generator, base: tuple[int, int, int], spread: int) -> np.ndarray:
    return np.array(base, np.float32) + rng.uniform(-spread, spread, 3).astype(np.float32)


def _soil(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    soil = _colour(rng, (125, 95, 65), 20)
    blotch = _smooth_noise(rng, (4, 5), (w, h))[..., None]
    pixels = soil * (0.75 + 0.5 * blotch)
    n_stones = int(rng.integers(3, 12))
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n_stones):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = rng.uniform(1.5, 4.0)
        mask = (yy - cy) ** 2 + ((xx - cx) / 1.4) ** 2 < r * r
        pixels[mask] = _colour(rng, (185, 175, 160), 20)
    return pixels


def _grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    green = _colour(rng, (85, 150, 55), 20)
    # Blades: noise stretched vertically, high frequency across.
    blades = _smooth_noise(rng, (max(2, h // 12), w // 2), (w, h))[..., None]
    yellow = _smooth_noise(rng, (3, 4), (w, h))[..., None]
    pixels = green * (0.55 + 0.7 * blades)
    pixels += (yellow > 0.7) * np.array([45, 20, -10], np.float32)
    return pixels


def _vine(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    pixels = _soil(rng, h, w)
    period = rng.uniform(18, 34)
    width = rng.uniform(0.35, 0.6)
    phase = rng.uniform(0, period)
    xx = np.arange(w, dtype=np.float32)
    rows = (((xx + phase) % period) / period) < width
    leaves = _smooth_noise(rng, (h // 6, w // 6), (w, h))[..., None]
    foliage = _colour(rng, (50, 105, 40), 15) * (0.6 + 0.6 * leaves)
    pixels = np.where(rows[None, :, None] & (leaves > 0.2), foliage, pixels)
    sky_rows = int(h * rng.uniform(0.1, 0.3))
    if sky_rows:
        sky = _colour(rng, (150, 190, 230), 20)
        fade = np.linspace(1.1, 0.9, sky_rows, dtype=np.float32)[:, None, None]
        pixels[:sky_rows] = sky * fade
    return pixels


_PAINTERS = {"vine": _vine, "ground": _soil, "grass": _grass}


@functools.lru_cache(maxsize=8192)
def render(image_id: str, tag: str, seed: int, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """The JPEG bytes of one photo (cached: the same id always gives the same bytes)."""
    digest = hashlib.sha256(f"{seed}:{image_id}:pixels".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    pixels = _PAINTERS[tag](rng, height, width)
    # A few ground photos show some grass and a few grass photos some soil: classes overlap.
    if tag in ("ground", "grass") and rng.random() < 0.25:
        other = _grass(rng, height, width) if tag == "ground" else _soil(rng, height, width)
        patch = _smooth_noise(rng, (3, 4), (width, height))[..., None] > 0.75
        pixels = np.where(patch, other, pixels)
    pixels = pixels * rng.uniform(0.75, 1.25)  # exposure
    pixels += rng.normal(0, rng.uniform(4, 14), pixels.shape).astype(np.float32)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=88)
    return out.getvalue()
