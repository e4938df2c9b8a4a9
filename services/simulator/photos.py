"""A folder of labelled photos served as the simulator's catalogue: ``DIR/<tag>/*.jpg``.

Real photos carry no date, so each *source photo* gets one, deterministically from the
seed and its name: about 70 % of the source photos fall on a day of the first season
(``SEASONS[0]``), the rest on a day of the next one (``SEASONS[1]``). Several files cut
from one source photo (tiles named ``p0042_r1c2.jpg``: the source is the part before the
first ``_``) share its day and are seconds apart, as shots of one capture session are. A
file name without ``_`` is a source photo of its own.

Training on the first season and evaluating on the second is then what a user does with
the real API: train on the photos of one period, use the model on a later one.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from services.simulator.field import TAGS, unit_hash

# (first day, last day) of each season; the share of source photos in the first one.
SEASONS: Final = (
    (dt.date(2023, 4, 1), dt.date(2023, 9, 30)),
    (dt.date(2024, 4, 1), dt.date(2024, 9, 30)),
)
FIRST_SEASON_SHARE: Final = 0.7
SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
OFFSET: Final = dt.timezone(dt.timedelta(hours=2))


@dataclass(frozen=True)
class Photo:
    """One file of the folder, with the listing fields the generated catalogue has."""

    image_id: str  # "<tag>--<file stem>", safe in a URL path
    tag: str
    source: str  # the source photo the file was cut from
    taken_at: dt.datetime
    path: Path

    @property
    def ordinal(self) -> int:
        return int.from_bytes(hashlib.sha256(self.image_id.encode()).digest()[:6], "big")

    @property
    def season(self) -> int:
        """0 for the first season, 1 for the next."""
        return 0 if self.taken_at.date() <= SEASONS[0][1] else 1


def source_of(stem: str) -> str:
    """``p0042_r1c2`` → ``p0042``: the source photo a file was cut from."""
    return stem.split("_", 1)[0]


def source_day(source: str, seed: int) -> dt.date:
    """The day a source photo was taken: a season by :data:`FIRST_SEASON_SHARE`, then a day."""
    season = SEASONS[0] if unit_hash(seed, source, "season") < FIRST_SEASON_SHARE else SEASONS[1]
    days = (season[1] - season[0]).days + 1
    return season[0] + dt.timedelta(days=int(unit_hash(seed, source, "day") * days))


def _taken_at(source: str, index: int, seed: int) -> dt.datetime:
    day = source_day(source, seed)
    minute = int(unit_hash(seed, source, "time") * 9 * 60)  # 08:00 .. 16:59
    start = dt.datetime(day.year, day.month, day.day, 8, tzinfo=OFFSET)
    return start + dt.timedelta(minutes=minute, seconds=7 * index)


class PhotoFolder:
    """The photos of ``root`` (``root/<tag>/*.jpg|png``), dated per source photo."""

    def __init__(self, root: Path | str, seed: int) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"photo folder {self.root} does not exist")
        self.seed = seed
        photos: list[Photo] = []
        per_source: dict[str, int] = {}
        for tag in TAGS:
            files = sorted(p for p in (self.root / tag).glob("*") if p.suffix.lower() in SUFFIXES)
            for path in files:
                source = source_of(path.stem)
                index = per_source[source] = per_source.get(source, -1) + 1
                image_id = f"{tag}--{_UNSAFE.sub('-', path.stem)}"
                photos.append(Photo(image_id, tag, source, _taken_at(source, index, seed), path))
        if not photos:
            raise ValueError(f"no photos in {self.root}/<{'|'.join(TAGS)}>/*.jpg")
        photos.sort(key=lambda p: (p.taken_at, p.image_id))
        self.photos: tuple[Photo, ...] = tuple(photos)
        self._by_id = {p.image_id: p for p in photos}

    def catalogue(self, start: dt.date, end: dt.date, tag: str) -> Iterator[Photo]:
        """The photos of ``tag`` taken between ``start`` and ``end`` (inclusive), in time order."""
        for photo in self.photos:
            if photo.tag == tag and start <= photo.taken_at.date() <= end:
                yield photo

    def lookup(self, image_id: str) -> Photo | None:
        return self._by_id.get(image_id)

    def data(self, photo: Photo) -> bytes:
        return _read(photo.path)


@functools.lru_cache(maxsize=4096)
def _read(path: Path) -> bytes:
    return path.read_bytes()
