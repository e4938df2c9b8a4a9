"""The simulator's folder mode: real photos, dated per source photo, with the API's quirks."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image

from services.fetcher.client import ChouetteClient
from services.simulator.photos import FIRST_SEASON_SHARE, SEASONS, PhotoFolder, source_of
from shared.settings import FetcherSettings
from tests.plugins.simulator import SimulatorFactory

SHIPPED = Path(__file__).resolve().parents[3] / "data" / "field-tiles"
ALL_DAYS = (dt.date(2000, 1, 1), dt.date(2100, 1, 1))


def write_folder(root: Path) -> dict[str, bytes]:
    """Three tags; source photo p0001 cut into three tiles (two vine, one ground)."""
    files = {
        "vine/p0001_r0c0.jpg": (40, 120, 40),
        "vine/p0001_r0c1.jpg": (50, 110, 40),
        "ground/p0001_r2c2.jpg": (120, 90, 60),
        "ground/p0002_r0c0.jpg": (130, 95, 60),
        "grass/p0003_r1c1.jpg": (90, 160, 60),
        "grass/lonely.png": (80, 150, 50),
        "grass/notes.txt": None,
    }
    written = {}
    for name, colour in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if colour is None:
            path.write_text("not a photo")
            continue
        out = io.BytesIO()
        Image.new("RGB", (48, 48), colour).save(
            out, format="PNG" if name.endswith("png") else "JPEG"
        )
        path.write_bytes(out.getvalue())
        written[name] = out.getvalue()
    return written


def test_tiles_of_one_source_photo_share_its_day_seconds_apart(tmp_path: Path) -> None:
    write_folder(tmp_path)
    folder = PhotoFolder(tmp_path, seed=7)
    assert len(folder.photos) == 6  # notes.txt is not a photo
    by_source = defaultdict(list)
    for photo in folder.photos:
        by_source[photo.source].append(photo.taken_at)
        assert any(a <= photo.taken_at.date() <= b for a, b in SEASONS)
        assert photo.taken_at.utcoffset() is not None
    tiles = sorted(by_source["p0001"])
    assert len(tiles) == 3 and len({t.date() for t in tiles}) == 1
    assert tiles[-1] - tiles[0] < dt.timedelta(minutes=1)
    assert source_of("lonely") == "lonely"
    # Deterministic from the seed; another seed dates the photos anew.
    assert [p.taken_at for p in PhotoFolder(tmp_path, seed=7).photos] == [
        p.taken_at for p in folder.photos
    ]
    assert [p.taken_at for p in PhotoFolder(tmp_path, seed=8).photos] != [
        p.taken_at for p in folder.photos
    ]


def test_the_shipped_photos_fall_70_30_into_two_seasons_by_source_photo() -> None:
    folder = PhotoFolder(SHIPPED, seed=2020)
    assert len(folder.photos) == 600
    seasons: dict[str, set[int]] = defaultdict(set)
    for photo in folder.photos:
        seasons[photo.source].add(photo.season)
    assert all(len(s) == 1 for s in seasons.values())  # one source photo, one season
    first = sum(1 for s in seasons.values() if s == {0}) / len(seasons)
    assert abs(first - FIRST_SEASON_SHARE) < 0.06
    later = Counter(p.tag for p in folder.photos if p.season == 1)
    assert min(later.values()) >= 30  # every class in the later season


async def test_the_api_serves_the_folder_with_its_quirks(
    tmp_path: Path, simulator_factory: SimulatorFactory
) -> None:
    written = write_folder(tmp_path)
    sim = await simulator_factory(photos_dir=str(tmp_path), seed=7)
    sim.set_faults(link_key="url", timestamp_format="mixed", missing_link_rate=0.0)
    settings = FetcherSettings(_env_file=None, allow_private_hosts=True)  # type: ignore[call-arg]
    async with ChouetteClient.open(sim.settings(), settings) as client:
        listed = {}
        for tag in ("vine", "ground", "grass"):
            listing = await client.list_images(tag, *ALL_DAYS)
            for image in listing.images:
                assert "X-Amz-Signature" in image.url  # a signed-looking link, as the real API
                listed[image.source_key] = (tag, await client.download(image.url), image)
        assert len(listed) == 6
        served = sorted(d.sha256 for _, d, _ in listed.values())
        assert served == sorted(hashlib.sha256(b).hexdigest() for b in written.values())
        # The listing's date range filters on each photo's day.
        photo = PhotoFolder(tmp_path, seed=7).photos[0]
        day = photo.taken_at.date()
        one_day = await client.list_images(photo.tag, day, day)
        assert {i.taken_at for i in one_day.images} >= {photo.taken_at}
        assert all(i.taken_at and i.taken_at.date() == day for i in one_day.images)
